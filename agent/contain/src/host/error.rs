//! One error type for the host actions, with the pid, path or user each one was about.

use std::io;
use std::path::PathBuf;

/// Why an action was refused before it touched anything. Stable names, so they can be journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// PID 1 (or 0): the init process, whose death takes the machine down.
    Init,
    /// A kernel thread (PF_KTHREAD, no executable).
    KernelThread,
    /// picket's own process.
    OwnProcess,
    /// An ancestor of picket's own process.
    OwnAncestor,
    /// uid 0 for an account action.
    Root,
    /// A system account (uid below UID_MIN) while system accounts were not allowed.
    SystemAccount {
        /// The account's uid.
        uid: u32,
        /// UID_MIN in force.
        uid_min: u32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Init => f.write_str("pid 1 (init) is never killed"),
            Refusal::KernelThread => f.write_str("kernel threads are never killed"),
            Refusal::OwnProcess => f.write_str("picket never kills itself"),
            Refusal::OwnAncestor => f.write_str("picket never kills its own ancestors"),
            Refusal::Root => f.write_str("root (uid 0) is never locked unless explicitly allowed"),
            Refusal::SystemAccount { uid, uid_min } => write!(
                f,
                "uid {uid} is a system account (below UID_MIN {uid_min}) and system accounts were not allowed"
            ),
        }
    }
}

/// Errors of the host actions.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A built-in refusal: the target is one the host module never acts on.
    #[error("refused to act on pid {pid}: {reason}")]
    RefusedProcess {
        /// Target pid.
        pid: i32,
        /// Why.
        reason: Refusal,
    },
    /// The pid belongs to another process than the one the caller saw (PID reuse).
    #[error("pid {pid} now has start time {found}, not {expected}: it is another process, not killed")]
    StartTimeMismatch {
        /// Target pid.
        pid: i32,
        /// Start time the caller saw.
        expected: u64,
        /// Start time now.
        found: u64,
    },
    /// No such process (it exited, or never existed).
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// Target pid.
        pid: i32,
    },
    /// A syscall against a process failed.
    #[error("{op} on pid {pid}: {source}")]
    Process {
        /// What was being done.
        op: &'static str,
        /// Target pid.
        pid: i32,
        /// Cause.
        source: io::Error,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// quarantine refuses anything but a regular file.
    #[error("{} is a {kind}, not a regular file: not quarantined", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is (directory, symlink, ...).
        kind: &'static str,
    },
    /// The file at the path changed while it was being quarantined.
    #[error("{} changed while being quarantined: {what}", path.display())]
    Raced {
        /// The path.
        path: PathBuf,
        /// What changed.
        what: &'static str,
    },
    /// restore refuses to overwrite whatever is at the original path now.
    #[error("{} exists again: not overwritten by restore of {id}", path.display())]
    RestoreTargetExists {
        /// The original path.
        path: PathBuf,
        /// Quarantine id.
        id: String,
    },
    /// No record with this id in the quarantine directory.
    #[error("no quarantine record {id:?} in {}", dir.display())]
    UnknownRecord {
        /// Quarantine id.
        id: String,
        /// Quarantine directory.
        dir: PathBuf,
    },
    /// A quarantine sidecar could not be read or written.
    #[error("quarantine record {}: {detail}", path.display())]
    BadRecord {
        /// The sidecar.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The quarantined bytes no longer hash to the recorded sha256.
    #[error("quarantined copy {id} no longer matches its sha256 {expected}: not restored")]
    HashMismatch {
        /// Quarantine id.
        id: String,
        /// The recorded sha256.
        expected: String,
    },
    /// The quarantine directory is not safe to use.
    #[error("quarantine directory {}: {detail}", dir.display())]
    BadQuarantineDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No such local user.
    #[error("no local user {user:?} in /etc/passwd")]
    UnknownUser {
        /// User name.
        user: String,
    },
    /// A built-in refusal for an account action.
    #[error("refused to lock user {user:?}: {reason}")]
    RefusedUser {
        /// User name.
        user: String,
        /// Why.
        reason: Refusal,
    },
    /// A user name that could be mistaken for an option or does not fit /etc/passwd.
    #[error("invalid user name {user:?}")]
    InvalidUser {
        /// User name.
        user: String,
    },
    /// An account tool (usermod, chage) failed.
    #[error("`{command}` for user {user:?} failed: {detail}")]
    Command {
        /// The command line (no secrets: none is ever passed).
        command: String,
        /// User name.
        user: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// The account tool ran but /etc/shadow does not show the expected result.
    #[error("user {user:?}: {detail}")]
    AccountState {
        /// User name.
        user: String,
        /// What is wrong.
        detail: String,
    },
    /// fanotify could not be set up.
    #[error("fanotify {op} {}: {source}", path.display())]
    Fanotify {
        /// What was being done.
        op: &'static str,
        /// The mount or path (empty for init).
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A deny rule could not be parsed.
    #[error("invalid exec rule {rule:?}: {detail}")]
    BadRule {
        /// The rule text.
        rule: String,
        /// What is wrong.
        detail: String,
    },
}

impl HostError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        HostError::Io { op, path: path.into(), source }
    }
}
