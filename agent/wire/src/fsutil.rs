//! File helpers for key and id files: create-once atomically, read with a size cap.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Create `dir` (and missing parents) with mode 0700 (less the umask); existing ones are left alone.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Write `dir/name` once: a temp file in the same directory is written, fsynced and then
/// hard-linked to the final name, which fails with `AlreadyExists` instead of replacing a file
/// someone else created meanwhile (rename would silently overwrite a key). Readers never see a
/// partial file. The directory is fsynced so the new name survives a power cut.
pub(crate) fn write_new_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = dir.join(name);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    // Only a crashed earlier process with our pid can have left this name behind.
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = f.write_all(contents).and_then(|()| f.sync_all());
    drop(f);
    let placed = written.and_then(|()| match fs::hard_link(&tmp, &target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: check, then rename (a narrow race, accepted there).
        Err(_) if fs::symlink_metadata(&target).is_ok() => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => fs::rename(&tmp, &target),
    });
    let _ = fs::remove_file(&tmp);
    placed?;
    File::open(dir)?.sync_all()
}

/// Read at most `max` bytes of an open file; a longer file is an error, not silently cut.
pub(crate) fn read_capped(file: &mut File, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("file larger than {max} bytes")));
    }
    Ok(buf)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
