//! Host containment: kill, quarantine, lock_account, deny_exec.
//!
//! Every action here changes the host, so each one comes with its reversal (where one exists), a
//! last line of refusals that no caller can switch off, and an error that names the pid, path or
//! user it was about. Nothing here panics. The fuller safety layer (modes, protected names,
//! budgets, TTLs, journaling) sits on top of this module and uses [`process_info`] and
//! [`ancestors`] for its own checks.
//!
//! # kill — [`kill`]
//!
//! `kill(pid, start_time, tree, grace)` sends SIGTERM, waits up to `grace`, then SIGKILLs what is
//! still alive. The caller passes the start time (field 22 of `/proc/PID/stat`, clock ticks since
//! boot) it saw in the event; if the pid now belongs to another process the kill is refused.
//! Signals go through a pidfd, so a pid that is recycled between the check and the signal cannot
//! be hit. With `tree = true` the descendants go too: the whole tree is first frozen with SIGSTOP
//! (so nobody can fork a replacement while we work), then signalled children first, then thawed
//! with SIGCONT so SIGTERM handlers can run. Refused outright: PID 1 (and 0), kernel threads,
//! picket itself and its ancestors ([`kill_refusal`]).
//!
//! *Reversal:* none — a killed process stays dead. The record ([`KillOutcome`]) says which pids
//! ended on SIGTERM and which needed SIGKILL.
//!
//! # quarantine — [`quarantine`], [`restore`], [`list_quarantine`]
//!
//! Moves a regular file into a root-only directory (mode 0700, created if missing) under a random
//! id, strips exec, setuid, setgid and sticky bits from the stored copy, and writes a JSON sidecar
//! (`<id>.json`: original path, owner, mode, size, sha256, time). Same filesystem: one `rename`;
//! across filesystems: copy, fsync, then unlink. Directories, symlinks (never followed), devices,
//! fifos and sockets are refused.
//!
//! *Reversal:* [`restore`] checks the stored bytes still hash to the recorded sha256, puts the
//! file back at its original path with its original owner, mode and mtime, and refuses if
//! anything exists at that path now.
//!
//! # lock_account — [`lock_account`], [`unlock_account`]
//!
//! Locks the password (`usermod -L`, a `!` in front of the hash), expires the account
//! (`chage -E 1`, so key-based logins are refused too), and ends the user's sessions by killing
//! every process whose real or effective uid is the user's (freeze, SIGTERM, SIGKILL after the
//! grace period). uid 0 and system accounts (below `UID_MIN` of `/etc/login.defs`) are refused
//! unless the caller explicitly allows them.
//!
//! *Reversal:* [`unlock_account`] with the [`LockRecord`] from the lock: it unlocks the password
//! only if the lock was what locked it, and sets the expiry back to exactly what it was. The
//! `/etc/shadow` line after unlock is the line before lock. Ended sessions are not brought back.
//!
//! # deny_exec — [`ExecGuard`]
//!
//! A fanotify group (`FAN_CLASS_CONTENT`, `FAN_OPEN_EXEC_PERM`) on the given mounts, served by its
//! own thread. Each exec is matched against path globs (`/tmp/**`, `**/evil`) and a set of
//! sha256 hashes ([`ExecMatcher`]); a match is answered `FAN_DENY` (the exec fails with EPERM) and
//! reported as a [`DeniedExec`] through a bounded channel. If the decision cannot be made in time
//! (deadline, file too big to hash, any error) the exec is **allowed** and counted as
//! `failed_open`: a device must never lock itself up. The matcher can be replaced at runtime.
//!
//! *Reversal:* dropping (or [`ExecGuard::stop`]ping) the guard closes the fanotify group; the
//! kernel then allows every pending and future exec.

mod account;
mod error;
mod exec;
mod glob;
mod kill;
mod proc;
mod quarantine;

pub use account::{LockOptions, LockRecord, lock_account, unlock_account};
pub use error::{HostError, Refusal};
pub use exec::{DeniedExec, ExecCounters, ExecGuard, ExecGuardConfig, ExecMatcher};
pub use glob::Glob;
pub use kill::{KillOutcome, kill, kill_refusal};
pub use proc::{ProcInfo, ancestors, process_info};
pub use quarantine::{QuarantineList, QuarantineRecord, list_quarantine, quarantine, restore};
