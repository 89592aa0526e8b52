//! Host containment: kill, quarantine, lock_account, deny_exec.
