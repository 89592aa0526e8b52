//! The journal's error type. Every variant carries the journal's path and prints it, so an
//! operator reading `picket: journal /var/lib/picket/journal.db: ...` knows which file to look at.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, and with which journal file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// `open_read_only` on a path where no journal exists.
    #[error("journal {}: no such file", path.display())]
    Missing { path: PathBuf },

    /// Not an SQLite database, not a picket journal, or a damaged one. The file was left exactly
    /// as it was: nothing written, moved or deleted.
    #[error("journal {}: corrupt or not a picket journal (left untouched): {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// Written by a newer picket whose schema this build does not know. Left untouched, so the
    /// newer build can still read it after a downgrade is undone.
    #[error(
        "journal {}: schema version {found} is newer than this build supports ({supported}); \
         upgrade picket or move the file aside (left untouched)",
        path.display()
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },

    /// A write on a journal opened with [`Journal::open_read_only`](crate::Journal::open_read_only).
    #[error("journal {}: opened read-only, cannot {op}", path.display())]
    ReadOnly { path: PathBuf, op: &'static str },

    /// The filesystem is full (`SQLITE_FULL`): nothing of the failed call was written.
    #[error("journal {}: disk full during {op}", path.display())]
    DiskFull { path: PathBuf, op: &'static str },

    /// Any other SQLite error.
    #[error("journal {}: {op}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// Filesystem error outside SQLite (creating the parent directory, reading the header).
    #[error("journal {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// An event could not be serialized (nothing of the batch was written).
    #[error("journal {}: cannot serialize event: {source}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The uplink's seal function refused a batch (nothing was written).
    #[error("journal {}: sealing a batch failed: {reason}", path.display())]
    Seal { path: PathBuf, reason: String },

    /// The `export` callback failed (for example a closed pipe); the export stopped there.
    #[error("journal {}: export output failed: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl JournalError {
    /// The journal file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            JournalError::Missing { path }
            | JournalError::Corrupt { path, .. }
            | JournalError::TooNew { path, .. }
            | JournalError::ReadOnly { path, .. }
            | JournalError::DiskFull { path, .. }
            | JournalError::Sqlite { path, .. }
            | JournalError::Io { path, .. }
            | JournalError::Serialize { path, .. }
            | JournalError::Output { path, .. }
            | JournalError::Seal { path, .. } => path,
        }
    }

    /// Classify an SQLite error: damage and a full disk get their own variants because the
    /// caller handles them differently (stop and tell the operator; buffer in RAM and retry).
    pub(crate) fn sqlite(path: &Path, op: &'static str, e: rusqlite::Error) -> JournalError {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                JournalError::Corrupt { path: path.to_owned(), detail: format!("{op}: {e}") }
            }
            Some(ErrorCode::DiskFull) => JournalError::DiskFull { path: path.to_owned(), op },
            _ => JournalError::Sqlite { path: path.to_owned(), op, source: e },
        }
    }

    pub(crate) fn io(path: &Path, op: &'static str, e: io::Error) -> JournalError {
        JournalError::Io { path: path.to_owned(), op, source: e }
    }

    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> JournalError {
        JournalError::Corrupt { path: path.to_owned(), detail: detail.into() }
    }
}
