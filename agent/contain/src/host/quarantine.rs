//! quarantine / restore: move a file into a root-only directory with a JSON sidecar, and back.
//!
//! Layout of the quarantine directory (mode 0700, owned by us):
//! - `<id>`: the stored file (exec, setuid, setgid and sticky bits stripped);
//! - `<id>.json`: its [`QuarantineRecord`].
//!
//! The sidecar is written *before* the file moves: after a crash in between, the record of where
//! the file came from exists, never a stored file nobody can place.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{CWD, RenameFlags, renameat_with};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::HostError;

/// Exec bits, setuid, setgid and sticky: what is stripped from a stored file.
const STRIPPED_BITS: u32 = 0o7111;

/// One quarantined file: where it came from and what it was. Serialized as the `<id>.json`
/// sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRecord {
    /// Random id (32 hex digits); also the stored file's name.
    pub id: String,
    /// Absolute path the file was taken from (its directory resolved, the name itself not).
    #[serde(with = "path_text")]
    pub original_path: PathBuf,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits as they were (`st_mode & 0o7777`, setuid etc. included).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: i64,
    /// Hard links the file had. Above 1, other names of the same file remain outside (without
    /// exec bits: the mode belongs to the file, not the name).
    pub links: u64,
    /// Copied across file systems (true) or renamed (false).
    pub cross_filesystem: bool,
    /// When it was quarantined, RFC 3339 UTC.
    pub quarantined_at: String,
}

/// The records in a quarantine directory, plus the sidecars that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineList {
    /// Readable records, oldest first.
    pub records: Vec<QuarantineRecord>,
    /// Sidecars that could not be read or parsed, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Moves the regular file `path` into the quarantine directory `dir` (created 0700 if missing),
/// strips its exec/setuid/setgid bits and writes the sidecar. Symlinks are not followed.
///
/// # Errors
/// [`HostError::NotRegularFile`] for directories, symlinks, devices, fifos and sockets;
/// [`HostError::BadQuarantineDir`] if `dir` is a symlink, not a directory or not ours;
/// [`HostError::Raced`] if the file was swapped while we worked (it is left where it was);
/// [`HostError::Io`] for anything the file system refused.
pub fn quarantine(path: &Path, dir: &Path) -> Result<QuarantineRecord, HostError> {
    let path = absolute_parent(path)?;
    let lmeta = fs::symlink_metadata(&path).map_err(|e| HostError::io("lstat", &path, e))?;
    if let Some(kind) = non_regular_kind(&lmeta.file_type()) {
        return Err(HostError::NotRegularFile { path, kind });
    }
    ensure_dir(dir)?;

    // O_NOFOLLOW: a symlink swapped in after the lstat fails the open instead of being followed.
    // O_NONBLOCK: a fifo swapped in cannot block us (regular files ignore it).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(open_flags())
        .open(&path)
        .map_err(|e| HostError::io("open", &path, e))?;
    let meta = file.metadata().map_err(|e| HostError::io("fstat", &path, e))?;
    if !meta.file_type().is_file() || meta.dev() != lmeta.dev() || meta.ino() != lmeta.ino() {
        return Err(HostError::Raced { path, what: "the path now names another file" });
    }
    let (sha256, size) = hash_file(&file).map_err(|e| HostError::io("read", &path, e))?;
    let mode = meta.mode() & 0o7777;
    let id = new_id();
    let record = QuarantineRecord {
        id: id.clone(),
        original_path: path.clone(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode,
        size,
        sha256,
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        links: meta.nlink(),
        cross_filesystem: false,
        quarantined_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };

    // Strip exec first: from here on nobody can start it, wherever it is.
    set_mode(&file, mode & !STRIPPED_BITS).map_err(|e| HostError::io("chmod", &path, e))?;
    let stored = dir.join(&id);
    let sidecar = sidecar_path(dir, &id);
    let result = write_sidecar(&sidecar, &record).and_then(|()| move_in(&path, &file, &stored, &meta));
    match result {
        Ok(cross_filesystem) => {
            let record = QuarantineRecord { cross_filesystem, ..record };
            if cross_filesystem {
                // Rewrite the sidecar with the final flag; the first one already holds the path.
                write_sidecar(&sidecar, &record)?;
            }
            sync_dir(dir);
            if let Some(parent) = path.parent() {
                sync_dir(parent);
            }
            Ok(record)
        }
        Err(e) => {
            let _ = set_mode(&file, mode);
            let _ = fs::remove_file(&sidecar);
            Err(e)
        }
    }
}

/// Puts quarantined file `id` back at its original path with its original owner, mode and
/// mtime, and removes it from the quarantine directory. Returns its record.
///
/// # Errors
/// [`HostError::UnknownRecord`] for an unknown id, [`HostError::HashMismatch`] if the stored copy
/// changed, [`HostError::RestoreTargetExists`] if anything is at the original path now (nothing is
/// overwritten), [`HostError::Io`] otherwise.
pub fn restore(id: &str, dir: &Path) -> Result<QuarantineRecord, HostError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HostError::UnknownRecord { id: id.to_string(), dir: dir.to_path_buf() });
    }
    let sidecar = sidecar_path(dir, id);
    let record = match read_sidecar(&sidecar) {
        Err(HostError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(HostError::UnknownRecord { id: id.to_string(), dir: dir.to_path_buf() });
        }
        other => other?,
    };
    let stored = dir.join(id);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(open_flags())
        .open(&stored)
        .map_err(|e| HostError::io("open", &stored, e))?;
    let (sha256, _) = hash_file(&file).map_err(|e| HostError::io("read", &stored, e))?;
    if sha256 != record.sha256 {
        return Err(HostError::HashMismatch { id: id.to_string(), expected: record.sha256 });
    }
    let target = record.original_path.clone();
    let exists =
        |path: &Path| HostError::RestoreTargetExists { path: path.to_path_buf(), id: id.to_string() };
    if fs::symlink_metadata(&target).is_ok() {
        return Err(exists(&target));
    }

    // Owner before mode: chown clears setuid/setgid.
    let put_back_attrs = |f: &File| -> io::Result<()> {
        std::os::unix::fs::fchown(f, Some(record.uid), Some(record.gid))?;
        set_mode(f, record.mode)
    };
    put_back_attrs(&file).map_err(|e| HostError::io("chown/chmod", &stored, e))?;
    match rename_noreplace(&stored, &target) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            let _ = set_mode(&file, record.mode & !STRIPPED_BITS);
            return Err(exists(&target));
        }
        Err(Errno::XDEV) => {
            let copy = || -> io::Result<()> {
                let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target)?;
                copy_from_start(&file, &mut out)?;
                put_back_attrs(&out)?;
                out.set_modified(mtime_of(&record))?;
                out.sync_all()
            };
            if let Err(e) = copy() {
                let _ = set_mode(&file, record.mode & !STRIPPED_BITS);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(exists(&target));
                }
                // Do not leave a half-written file at the original path.
                let _ = fs::remove_file(&target);
                return Err(HostError::io("copy back to", &target, e));
            }
            fs::remove_file(&stored).map_err(|e| HostError::io("unlink", &stored, e))?;
        }
        Err(e) => {
            let _ = set_mode(&file, record.mode & !STRIPPED_BITS);
            return Err(HostError::io("rename back to", &target, e.into()));
        }
    }
    fs::remove_file(&sidecar).map_err(|e| HostError::io("unlink", &sidecar, e))?;
    sync_dir(dir);
    if let Some(parent) = target.parent() {
        sync_dir(parent);
    }
    Ok(record)
}

/// The records in `dir`, oldest first. A missing directory is an empty list.
///
/// # Errors
/// [`HostError::Io`] if the directory exists but cannot be read.
pub fn list_quarantine(dir: &Path) -> Result<QuarantineList, HostError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(QuarantineList::default()),
        Err(e) => return Err(HostError::io("read dir", dir, e)),
    };
    let mut list = QuarantineList::default();
    for entry in entries {
        let entry = entry.map_err(|e| HostError::io("read dir", dir, e))?;
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match read_sidecar(&path) {
            Ok(record) => list.records.push(record),
            Err(e) => list.unreadable.push((path, e.to_string())),
        }
    }
    list.records.sort_by(|a, b| (&a.quarantined_at, &a.id).cmp(&(&b.quarantined_at, &b.id)));
    Ok(list)
}

/// Renames (same file system) or copies + fsyncs + unlinks (across). Returns whether it copied.
fn move_in(path: &Path, file: &File, stored: &Path, meta: &fs::Metadata) -> Result<bool, HostError> {
    match fs::rename(path, stored) {
        Ok(()) => {
            let now = fs::symlink_metadata(stored).map_err(|e| HostError::io("lstat", stored, e))?;
            if now.dev() != meta.dev() || now.ino() != meta.ino() {
                // Swapped between our open and the rename: put back whatever we moved.
                let _ = rename_noreplace(stored, path);
                return Err(HostError::Raced { path: path.to_path_buf(), what: "swapped before the rename" });
            }
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(Errno::XDEV.raw_os_error()) => {
            let copy = || -> io::Result<()> {
                let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(stored)?;
                copy_from_start(file, &mut out)?;
                set_mode(&out, (meta.mode() & 0o7777) & !STRIPPED_BITS)?;
                out.sync_all()
            };
            if let Err(e) = copy() {
                let _ = fs::remove_file(stored);
                return Err(HostError::io("copy to quarantine", stored, e));
            }
            // Unlink only if the path still names the file we copied.
            let still = fs::symlink_metadata(path).map_err(|e| HostError::io("lstat", path, e))?;
            if still.dev() != meta.dev() || still.ino() != meta.ino() {
                let _ = fs::remove_file(stored);
                return Err(HostError::Raced { path: path.to_path_buf(), what: "swapped during the copy" });
            }
            fs::remove_file(path).map_err(|e| {
                let _ = fs::remove_file(stored);
                HostError::io("unlink", path, e)
            })?;
            Ok(true)
        }
        Err(e) => Err(HostError::io("rename into quarantine", path, e)),
    }
}

/// Creates `dir` 0700 if missing; refuses a symlink, a non-directory, or one owned by someone
/// else; tightens its mode to 0700.
fn ensure_dir(dir: &Path) -> Result<(), HostError> {
    let bad =
        |detail: &str| HostError::BadQuarantineDir { dir: dir.to_path_buf(), detail: detail.to_string() };
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        return Err(HostError::io("create", dir, e));
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| HostError::io("lstat", dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(bad("is a symlink"));
    }
    if !meta.is_dir() {
        return Err(bad("is not a directory"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(bad("is owned by another user"));
    }
    if meta.mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(|e| HostError::io("chmod", dir, e))?;
    }
    Ok(())
}

fn non_regular_kind(t: &fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_symlink() {
        Some("symlink")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_fifo() {
        Some("fifo")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// `path` made absolute with its directory resolved (so restore finds the real place), the final
/// name kept as is (it is never followed).
fn absolute_parent(path: &Path) -> Result<PathBuf, HostError> {
    let name = path.file_name().ok_or_else(|| HostError::NotRegularFile {
        path: path.to_path_buf(),
        kind: "path without a file name",
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent.canonicalize().map_err(|e| HostError::io("resolve", &parent, e))?;
    Ok(parent.join(name))
}

fn open_flags() -> i32 {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    i32::try_from(flags.bits()).unwrap_or(0)
}

fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(mode))
}

/// sha256 and length of the whole file, read from offset 0.
pub(crate) fn hash_file(file: &File) -> io::Result<(String, u64)> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok((hex(&hasher.finalize()), offset))
}

fn copy_from_start(from: &File, to: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match from.read_at(&mut buf, offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        offset += n as u64;
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<(), Errno> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        // File systems without RENAME_NOREPLACE: link() never replaces either.
        Err(Errno::INVAL) => {
            fs::hard_link(from, to).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            fs::remove_file(from).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        }
        other => other,
    }
}

fn sidecar_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes the sidecar through a temporary file, fsync and rename, so it is whole or absent.
fn write_sidecar(path: &Path, record: &QuarantineRecord) -> Result<(), HostError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| HostError::BadRecord { path: path.to_path_buf(), detail: e.to_string() })?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        HostError::io("write", path, e)
    })
}

fn read_sidecar(path: &Path) -> Result<QuarantineRecord, HostError> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| HostError::io("read", path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| HostError::BadRecord { path: path.to_path_buf(), detail: e.to_string() })
}

fn sync_dir(dir: &Path) {
    // Best effort: the data is already fsynced; this makes the rename durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn mtime_of(record: &QuarantineRecord) -> SystemTime {
    let nanos = u64::try_from(record.mtime_nsec).unwrap_or(0);
    let time = match u64::try_from(record.mtime) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(record.mtime.unsigned_abs())),
    };
    time.and_then(|t| t.checked_add(Duration::from_nanos(nanos))).unwrap_or(UNIX_EPOCH)
}

/// 32 hex digits from getrandom; falls back to time and pid if getrandom fails.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_ok_and(|n| n == 16) {
        return hex(&bytes);
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:024x}{:08x}", std::process::id())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Paths as JSON strings: UTF-8 paths as themselves (they are absolute, so they start with `/`),
/// anything else as `hex:` and the bytes, so a name that is not UTF-8 cannot dodge quarantine.
mod path_text {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format!("hex:{}", hex(path.as_os_str().as_bytes()))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let text = String::deserialize(d)?;
        let Some(digits) = text.strip_prefix("hex:") else { return Ok(PathBuf::from(text)) };
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| digits.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| serde::de::Error::custom("bad hex path"))?;
        Ok(PathBuf::from(OsString::from_vec(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_round_trip_through_the_sidecar() {
        let path = PathBuf::from(OsString::from_vec(b"/tmp/\xffevil".to_vec()));
        let record = QuarantineRecord {
            id: "00".into(),
            original_path: path.clone(),
            uid: 1,
            gid: 2,
            mode: 0o4755,
            size: 3,
            sha256: "ab".into(),
            mtime: 5,
            mtime_nsec: 6,
            links: 1,
            cross_filesystem: false,
            quarantined_at: "2026-01-01T00:00:00Z".into(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("hex:2f746d702fff6576696c"));
        let back: QuarantineRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
