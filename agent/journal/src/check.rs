//! Looking at a journal file without changing it.
//!
//! Opening a damaged file read-write lets SQLite "repair" things: roll back a hot journal,
//! create `-wal`/`-shm` sidecars, and our migrations would then write into it. The evidence an
//! operator (or a forensic analyst: this is a security agent) needs would be gone. So before any
//! read-write open we look at the file read-only, and preferably `immutable=1`, which makes
//! SQLite skip locking and the WAL entirely and therefore create nothing next to the file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::JournalError;
use crate::schema::{self, APPLICATION_ID, SCHEMA_VERSION};

/// What [`inspect`] found at a path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing there.
    Absent,
    /// A 0-byte file or an SQLite database with no schema at all: safe to initialize.
    Fresh,
    /// A picket journal at this schema version (≤ [`SCHEMA_VERSION`]).
    Journal { version: u32 },
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const HEADER_LEN: usize = 100;
/// How many `quick_check` complaints to put in the error; one usually says it all.
const MAX_PROBLEMS: usize = 3;

pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Length of the `-wal` file, 0 when there is none.
pub(crate) fn wal_len(path: &Path) -> u64 {
    fs::metadata(wal_path(path)).map_or(0, |m| m.len())
}

/// Classify the file at `path`, changing nothing on disk: header, identity (`application_id`),
/// schema version, then `PRAGMA quick_check`, which reads every page once (about 70 ms for a
/// 64 MiB journal in the page cache, 2 s from a cold virtio disk). Errors are `Corrupt` (with
/// what is wrong), `TooNew`, or I/O and SQLite errors that say the file could not be read at all.
pub(crate) fn inspect(path: &Path) -> Result<Existing, JournalError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(JournalError::io(path, "stat", e)),
    };
    if !meta.is_file() {
        return Err(JournalError::corrupt(path, "not a regular file"));
    }
    let len = meta.len();
    if len == 0 {
        // What a crash between creating the file and the first commit leaves; SQLite treats it
        // as an empty database, and so do we.
        return Ok(Existing::Fresh);
    }
    check_header(path, len)?;

    let conn = open_reader(path)?;
    let sql = |op| move |e| JournalError::sqlite(path, op, e);
    let app_id: i64 =
        conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql("read application id"))?;
    let version = schema::user_version(&conn, path)?;
    let objects: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql("read schema"))?;
    if app_id != APPLICATION_ID {
        if app_id == 0 && version == 0 && objects == 0 {
            return Ok(Existing::Fresh);
        }
        return Err(JournalError::corrupt(
            path,
            format!(
                "not a picket journal: SQLite database with application_id {app_id:#x}, \
                 user_version {version}, {objects} schema objects"
            ),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    quick_check(&conn, path)?;
    Ok(Existing::Journal { version })
}

/// The 100-byte SQLite header: magic, page size, and (when no WAL holds newer pages) whether the
/// file is as long as the header says.
fn check_header(path: &Path, len: u64) -> Result<(), JournalError> {
    let mut header = [0u8; HEADER_LEN];
    let mut f = fs::File::open(path).map_err(|e| JournalError::io(path, "open", e))?;
    let got = read_up_to(&mut f, &mut header).map_err(|e| JournalError::io(path, "read header", e))?;
    if got < SQLITE_MAGIC.len() || header[..SQLITE_MAGIC.len()] != SQLITE_MAGIC[..] {
        return Err(JournalError::corrupt(path, "not an SQLite database (no \"SQLite format 3\" header)"));
    }
    if got < HEADER_LEN {
        return Err(JournalError::corrupt(
            path,
            format!("truncated: {len} bytes, shorter than the SQLite header"),
        ));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => return Err(JournalError::corrupt(path, format!("invalid page size {n} in the SQLite header"))),
    };
    // With a non-empty WAL the main file may legitimately lag (a checkpoint was interrupted and
    // will be redone from the WAL), so only judge the length when there is no WAL.
    if wal_len(path) == 0 {
        if !len.is_multiple_of(page_size) {
            return Err(JournalError::corrupt(
                path,
                format!("truncated: {len} bytes is not a whole number of {page_size}-byte pages"),
            ));
        }
        let be32 =
            |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        // The in-header page count is only valid when "version-valid-for" matches the change
        // counter (older writers did not maintain it).
        let pages = u64::from(be32(28));
        if pages != 0 && be32(24) == be32(92) && len < pages * page_size {
            return Err(JournalError::corrupt(
                path,
                format!("truncated: header says {pages} pages of {page_size} bytes, file has {len} bytes"),
            ));
        }
    }
    Ok(())
}

fn read_up_to(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn quick_check(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let mut problems = Vec::new();
    let mut stmt =
        conn.prepare("PRAGMA quick_check").map_err(|e| JournalError::sqlite(path, "quick_check", e))?;
    let mut rows = stmt.query([]).map_err(|e| JournalError::sqlite(path, "quick_check", e))?;
    while let Some(row) = rows.next().map_err(|e| JournalError::sqlite(path, "quick_check", e))? {
        let line: String = row.get(0).unwrap_or_else(|e| e.to_string());
        if line == "ok" {
            continue;
        }
        problems.push(line);
        if problems.len() == MAX_PROBLEMS {
            break;
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(JournalError::corrupt(path, format!("quick_check: {}", problems.join("; "))))
    }
}

/// A read-only connection that creates nothing on disk.
///
/// With no `-wal` file, nobody has the journal open (SQLite removes the WAL on the last clean
/// close, a crash leaves it), so the main file is complete: open it `immutable=1`, which takes no
/// locks and creates no `-wal`/`-shm`. With a WAL present (an agent is running, or crashed), its
/// frames hold committed data, so open normally read-only: SQLite reads the WAL through the
/// existing `-shm`.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, JournalError> {
    // Existence, not length: a running writer may have just reset its WAL to nothing, and it
    // could checkpoint into the main file under an immutable reader's feet.
    let immutable = !wal_path(path).exists();
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri(path, immutable), flags)
        .map_err(|e| JournalError::sqlite(path, "open read-only", e))?;
    conn.busy_timeout(crate::BUSY_TIMEOUT).map_err(|e| JournalError::sqlite(path, "set busy timeout", e))?;
    Ok(conn)
}

/// `file:` URI for `path` with every byte outside the unreserved set percent-encoded, so paths
/// containing `?`, `#` or `%` (or non-UTF-8 bytes) name the right file.
fn uri(path: &Path, immutable: bool) -> String {
    use std::fmt::Write;
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    // "file:///abs" for absolute paths (empty authority), "file:rel" for relative ones.
    let mut s = String::from(if path.is_absolute() { "file://" } else { "file:" });
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s.push_str("?mode=ro");
    if immutable {
        s.push_str("&immutable=1");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_characters_sqlite_would_interpret() {
        assert_eq!(uri(Path::new("/a b/j?.db"), false), "file:///a%20b/j%3F.db?mode=ro");
        assert_eq!(uri(Path::new("rel#/x%"), true), "file:rel%23/x%25?mode=ro&immutable=1");
    }
}
