//! SHA-256 of a file's content, read safely from a tree others control.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Read buffer: large enough that the syscall cost vanishes next to hashing, small enough for a
/// router's memory.
const BUF: usize = 64 * 1024;

/// What hashing a path came to.
#[derive(Debug)]
pub struct Hashed {
    /// `fstat` of the file that was read, so the metadata reported is that of the content hashed
    /// (the path may have been replaced between `lstat` and `open`).
    pub meta: fs::Metadata,
    /// Lowercase hex, as `sha256sum` prints it; `None` when the file is not a regular file or is
    /// larger than the cap (also when it grew past the cap while being read).
    pub sha256: Option<String>,
}

/// Hashes the regular file at `path` if it is at most `max_bytes` long.
///
/// Call it only for paths `lstat` says are regular files: opening a device node can have side
/// effects (opening `/dev/watchdog` arms it), so the source never opens what it has not seen to
/// be a regular file first.
///
/// Opened with `O_NOFOLLOW` (a symlink is never followed: an attacker could point one at a
/// device or a huge file) and `O_NONBLOCK` (a FIFO swapped in after the `lstat` must not hang
/// the worker); what was opened is checked with `fstat` before a byte is read.
pub fn sha256_file(path: &Path, max_bytes: u64) -> io::Result<Hashed> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > max_bytes {
        return Ok(Hashed { meta, sha256: None });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total: u64 = 0;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n as u64);
        if total > max_bytes {
            return Ok(Hashed { meta, sha256: None });
        }
        hasher.update(&buf[..n]);
    }
    Ok(Hashed { meta, sha256: Some(hex(&hasher.finalize())) })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_has_the_well_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        fs::write(&p, "").unwrap();
        let h = sha256_file(&p, 10).unwrap();
        assert_eq!(
            h.sha256.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn symlinks_are_not_followed_and_big_files_are_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 100]).unwrap();
        assert!(sha256_file(&big, 99).unwrap().sha256.is_none());
        assert!(sha256_file(&big, 100).unwrap().sha256.is_some());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        let err = sha256_file(&link, 1000).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(sha256_file(&fifo, 1000).unwrap().sha256.is_none(), "a FIFO is opened without blocking");
    }
}
