//! The two error types: [`WireError`] for local problems (key files, ids, sealing) and [`Reject`]
//! for messages received from elsewhere, whose `as_str()` is a stable counter name.

use std::io;
use std::path::PathBuf;

use crate::KeyId;

/// A local error: a key or id file that cannot be used, an invalid id, a batch that cannot be
/// sealed. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} has mode {mode:o}, too open for a key file (private keys: no group or other access; \
         public keys: not writable by group or others): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{}: not a usable Ed25519 PKCS#8 key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("invalid id {id:?}: {reason}")]
    BadId { id: String, reason: &'static str },
    #[error("{}:{line}: {reason}", path.display())]
    PubKeyFile { path: PathBuf, line: usize, reason: String },
    /// A public key line that does not parse ([`crate::Keyring::parse_line`]; `load_dir` reports
    /// the same reason as [`WireError::PubKeyFile`] with file and line).
    #[error("bad public key line: {0}")]
    PubKeyLine(String),
    #[error("cannot seal batch: {0}")]
    BadBatch(String),
}

impl WireError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WireError {
        let path = path.into();
        move |source| WireError::Io { path, source }
    }
}

/// Why a received batch or ack was refused. Checked in this order; the first failure wins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("device {device:?} has no enrolled key {key_id}")]
    UnknownKey { device: String, key_id: KeyId },
    #[error("signature does not verify")]
    BadSignature,
    #[error("body does not match the signed body hash")]
    BodyHashMismatch,
    #[error("bad body: {0}")]
    BadBody(&'static str),
}

impl Reject {
    /// Stable snake_case reason for counters and reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::TooLarge { .. } => "too_large",
            Reject::Malformed(_) => "malformed",
            Reject::UnsupportedVersion(_) => "unsupported_version",
            Reject::UnknownDevice(_) => "unknown_device",
            Reject::UnknownKey { .. } => "unknown_key",
            Reject::BadSignature => "bad_signature",
            Reject::BodyHashMismatch => "body_hash_mismatch",
            Reject::BadBody(_) => "bad_body",
        }
    }
}
