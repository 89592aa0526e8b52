//! The file-integrity baseline: what every file under the watched trees looked like when picket
//! last saw it, in SQLite (`<data_dir>/baseline.db`).
//!
//! One row per path: type, SHA-256 (regular files up to the hash cap), size, mode, owner, mtime,
//! ctime and inode. The live source keeps it current as it reports changes; the start-up scan
//! compares the trees against it to find what changed while picket was not running.
//!
//! Paths are stored as their raw bytes (a BLOB), so names that are not UTF-8 round-trip, and a
//! tree is a key range: everything under `/srv/www` sorts between `/srv/www/` and `/srv/www0`
//! (`0` is the byte after `/`). Deletion after a scan is mark and sweep: a scan stamps every row
//! it sees with the root's new generation, and rows of that tree left with an older one are gone.
//! So a scan needs no in-memory copy of the tree, whatever its size.
//!
//! Only the file source's worker thread touches the connection; writes are grouped into one
//! transaction per batch of changes ([`Baseline::begin`], [`Baseline::commit`]).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// Kinds of file as stored (and as `file.type` says them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    Other = 3,
}

impl Kind {
    pub(crate) fn of(m: &std::fs::Metadata) -> Kind {
        let ft = m.file_type();
        if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }

    fn from_i64(n: i64) -> Kind {
        match n {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// What is known about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// Hex SHA-256 of a regular file's content; `None` for other kinds, files over the cap and
    /// files that could not be read.
    pub hash: Option<String>,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

impl Entry {
    /// The entry for `m` (from `lstat` or `fstat`), without a hash.
    pub(crate) fn from_meta(m: &std::fs::Metadata) -> Entry {
        Entry {
            kind: Kind::of(m),
            hash: None,
            size: m.len(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()),
            inode: m.ino(),
        }
    }

    /// Same file, same content as far as metadata can tell: same inode, size and mtime. Used to
    /// reuse a stored hash after a rename or a chmod, which change neither.
    pub(crate) fn same_content_meta(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.inode == other.inode
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
    }

    /// As [`Entry::same_content_meta`], and the ctime too. `touch -d` can set mtime back, but
    /// nothing short of changing the clock sets ctime, so the scan rehashes unless both match.
    pub(crate) fn unchanged_since(&self, other: &Entry) -> bool {
        self.same_content_meta(other) && self.ctime_ns == other.ctime_ns
    }
}

/// The baseline database.
#[derive(Debug)]
pub(crate) struct Baseline {
    conn: Connection,
    in_tx: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    type INTEGER NOT NULL,
    hash TEXT,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    gen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roots (
    path BLOB PRIMARY KEY,
    gen INTEGER NOT NULL
) WITHOUT ROWID;
";

fn key(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes))
}

/// The key range `[lo, hi)` of everything strictly under `root`.
fn under(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut lo = key(root).to_vec();
    if lo.last() != Some(&b'/') {
        lo.push(b'/');
    }
    let mut hi = lo.clone();
    if let Some(last) = hi.last_mut() {
        *last = b'/' + 1;
    }
    (lo, hi)
}

fn i(n: u64) -> i64 {
    n.cast_signed()
}

fn u(n: i64) -> u64 {
    n.cast_unsigned()
}

fn row_to_entry(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Entry> {
    Ok(Entry {
        kind: Kind::from_i64(r.get(at)?),
        hash: r.get(at + 1)?,
        size: u(r.get(at + 2)?),
        mode: u32::try_from(r.get::<_, i64>(at + 3)?).unwrap_or(0),
        uid: u32::try_from(r.get::<_, i64>(at + 4)?).unwrap_or(u32::MAX),
        gid: u32::try_from(r.get::<_, i64>(at + 5)?).unwrap_or(u32::MAX),
        mtime_ns: r.get(at + 6)?,
        ctime_ns: r.get(at + 7)?,
        inode: u(r.get(at + 8)?),
    })
}

impl Baseline {
    /// Opens (creating if needed) the baseline at `path`; `None`: an in-memory one, which makes
    /// every start a first start.
    pub(crate) fn open(path: Option<&Path>) -> rusqlite::Result<Baseline> {
        let conn = match path {
            Some(p) => Connection::open(p)?,
            None => Connection::open_in_memory()?,
        };
        // WAL and NORMAL: a power cut may lose the last commits, which costs at most a few
        // duplicate reports at the next start, never a missed change (the scan compares the
        // disk with what was stored).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Baseline { conn, in_tx: false })
    }

    pub(crate) fn begin(&mut self) -> rusqlite::Result<()> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN")?;
            self.in_tx = true;
        }
        Ok(())
    }

    pub(crate) fn commit(&mut self) -> rusqlite::Result<()> {
        if self.in_tx {
            self.in_tx = false;
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    pub(crate) fn get(&self, path: &Path) -> rusqlite::Result<Option<Entry>> {
        let mut st = self.conn.prepare_cached(
            "SELECT type, hash, size, mode, uid, gid, mtime, ctime, inode FROM files WHERE path = ?1",
        )?;
        st.query_row(params![key(path)], |r| row_to_entry(r, 0)).optional()
    }

    pub(crate) fn put(&self, path: &Path, e: &Entry, generation: i64) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO files (path, type, hash, size, mode, uid, gid, mtime, ctime, inode, gen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        st.execute(params![
            key(path),
            e.kind as i64,
            e.hash,
            i(e.size),
            i64::from(e.mode),
            i64::from(e.uid),
            i64::from(e.gid),
            e.mtime_ns,
            e.ctime_ns,
            i(e.inode),
            generation
        ])?;
        Ok(())
    }

    /// Marks `path` as seen by the scan of generation `generation`.
    pub(crate) fn touch(&self, path: &Path, generation: i64) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached("UPDATE files SET gen = ?2 WHERE path = ?1")?;
        st.execute(params![key(path), generation])?;
        Ok(())
    }

    /// Forgets `path` and everything under it.
    pub(crate) fn remove_tree(&self, path: &Path) -> rusqlite::Result<()> {
        let (lo, hi) = under(path);
        let mut st =
            self.conn.prepare_cached("DELETE FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)")?;
        st.execute(params![key(path), lo, hi])?;
        Ok(())
    }

    /// Moves `from` and everything under it to `to` (a rename), replacing what was at `to`.
    pub(crate) fn rename_tree(&self, from: &Path, to: &Path) -> rusqlite::Result<()> {
        self.remove_tree(to)?;
        let (lo, hi) = under(from);
        let rows: Vec<(Vec<u8>, Entry, i64)> = {
            let mut st = self.conn.prepare_cached(
                "SELECT path, type, hash, size, mode, uid, gid, mtime, ctime, inode, gen FROM files
                 WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
            )?;
            st.query_map(params![key(from), lo, hi], |r| Ok((r.get(0)?, row_to_entry(r, 1)?, r.get(10)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        self.remove_tree(from)?;
        let from_len = key(from).len();
        for (old, entry, generation) in rows {
            let mut new = key(to).to_vec();
            new.extend_from_slice(&old[from_len.min(old.len())..]);
            self.put(&path_of(new), &entry, generation)?;
        }
        Ok(())
    }

    /// The generation of the last complete scan of `root`; `None` if it was never scanned.
    pub(crate) fn root_generation(&self, root: &Path) -> rusqlite::Result<Option<i64>> {
        let mut st = self.conn.prepare_cached("SELECT gen FROM roots WHERE path = ?1")?;
        st.query_row(params![key(root)], |r| r.get(0)).optional()
    }

    pub(crate) fn set_root_generation(&self, root: &Path, generation: i64) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached("INSERT OR REPLACE INTO roots (path, gen) VALUES (?1, ?2)")?;
        st.execute(params![key(root), generation])?;
        Ok(())
    }

    /// Roots scanned before that are not among `keep`: they were removed from the config.
    pub(crate) fn forget_roots_except(&self, keep: &[PathBuf]) -> rusqlite::Result<()> {
        let roots: Vec<Vec<u8>> = {
            let mut st = self.conn.prepare("SELECT path FROM roots")?;
            st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        for root in roots {
            let root = path_of(root);
            // A root inside (or around) a kept one shares its rows: leave those.
            if keep.iter().any(|k| k.starts_with(&root) || root.starts_with(k)) {
                continue;
            }
            self.remove_tree(&root)?;
            self.conn.execute("DELETE FROM roots WHERE path = ?1", params![key(&root)])?;
        }
        Ok(())
    }

    /// Rows at or under `root` not stamped with `generation`: not seen by that scan.
    pub(crate) fn stale(&self, root: &Path, generation: i64) -> rusqlite::Result<Vec<(PathBuf, Entry)>> {
        let (lo, hi) = under(root);
        let mut st = self.conn.prepare_cached(
            "SELECT path, type, hash, size, mode, uid, gid, mtime, ctime, inode FROM files
             WHERE (path = ?1 OR (path >= ?2 AND path < ?3)) AND gen != ?4",
        )?;
        st.query_map(params![key(root), lo, hi, generation], |r| {
            Ok((path_of(r.get(0)?), row_to_entry(r, 1)?))
        })?
        .collect()
    }

    /// Number of rows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> rusqlite::Result<u64> {
        self.conn.query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0)).map(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            kind: Kind::File,
            hash: Some(format!("{n:064x}")),
            size: n,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            ctime_ns: 1,
            inode: n,
        }
    }

    #[test]
    fn trees_are_key_ranges_and_siblings_with_a_common_prefix_are_not_inside() {
        let b = Baseline::open(None).unwrap();
        for (n, p) in ["/w/a", "/w/a/x", "/w/a/y/z", "/w/a0", "/w/ab", "/w/a.txt"].iter().enumerate() {
            b.put(Path::new(p), &entry(n as u64), 0).unwrap();
        }
        b.rename_tree(Path::new("/w/a"), Path::new("/w/b")).unwrap();
        assert!(b.get(Path::new("/w/a/x")).unwrap().is_none());
        assert_eq!(b.get(Path::new("/w/b/y/z")).unwrap(), Some(entry(2)));
        assert_eq!(b.get(Path::new("/w/ab")).unwrap(), Some(entry(4)));
        b.remove_tree(Path::new("/w/b")).unwrap();
        assert_eq!(b.len().unwrap(), 3);
        let stale: Vec<PathBuf> = b.stale(Path::new("/w"), 1).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(stale.len(), 3);
    }

    #[test]
    fn non_utf8_paths_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let b = Baseline::open(None).unwrap();
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/w/\xff\xfe"));
        b.put(p, &entry(1), 3).unwrap();
        let stale = b.stale(Path::new("/w"), 4).unwrap();
        assert_eq!(stale[0].0, p);
    }
}
