//! SHA-256 of executables (`process.hash.sha256`), off the reader thread, and what kind of file a
//! program runs from (`process.fileless`).
//!
//! The reader looks the program's file version up in a shared cache ([`HashCache`], keyed by
//! [`FileKey`]: device, inode, size, mtime and ctime, so any write gives a new key; ctime cannot
//! be set from user space). A hit fills the hash at once. A miss hands the event, with the
//! program already open, to the hasher thread through a bounded queue ([`QUEUE`]). The program
//! is the file fanotify saw execve open (its fd, kept: for a `#!` script the script itself,
//! readable though the process is gone or the file deleted), else `/proc/PID/exe` (the file
//! running, memfds and deleted files included). The hasher hashes up to [`MAX_HASH_BYTES`], fills
//! the cache and sends the event on. While any event waits in the hasher, the reader sends every
//! later event through the same queue too (without hashing it), so the source's order is kept: a
//! program's `process.start` never arrives after its `process.exit`. When the queue is full the
//! event goes on at once without a hash, counted in the status line (`N without hash (hasher
//! busy)`); only then can an event overtake one waiting in the queue. A file larger than [`MAX_HASH_BYTES`] (by its
//! size) is not read at all.
//!
//! The hasher checks the opened file against the key the reader looked up (fstat, before and
//! after reading): a program replaced in between (the process exec'd again before
//! `/proc/PID/exe` was opened, or the file was written while read) is sent without a hash and
//! nothing is cached, counted as `N without hash (program changed)`. Once the reader stops (the
//! [`Hasher`] is dropped), the jobs still queued, and the one being read, go on without a hash at
//! once (counted as `stopped`), so shutdown never waits for hashing.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use picket_event::{Event, FileHash};
use sha2::{Digest, Sha256};

use crate::EventTx;

/// Files larger than this are not hashed.
pub const MAX_HASH_BYTES: u64 = 64 << 20;
/// File versions whose hash is remembered.
pub const MAX_CACHED: usize = 4096;
/// Events waiting for the hasher.
pub const QUEUE: usize = 64;

/// One version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileKey {
    /// The same key [`FileKey::from_metadata`] gives (the field types of `stat` differ by
    /// architecture; the values fit).
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap, clippy::unnecessary_cast)]
    pub fn from_stat(st: &rustix::fs::Stat) -> FileKey {
        FileKey {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    pub fn from_metadata(md: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// file version → SHA-256 (`None`: larger than [`MAX_HASH_BYTES`]); the oldest entry goes first
/// past [`MAX_CACHED`].
#[derive(Debug, Default)]
pub struct HashCache {
    map: HashMap<FileKey, Option<[u8; 32]>>,
    order: VecDeque<FileKey>,
}

impl HashCache {
    pub fn get(&self, key: &FileKey) -> Option<Option<[u8; 32]>> {
        self.map.get(key).copied()
    }

    pub fn insert(&mut self, key: FileKey, hash: Option<[u8; 32]>) {
        if self.map.insert(key, hash).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > MAX_CACHED {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// SHA-256 of what `file` holds, if it is at most `max` bytes.
pub fn sha256_file(file: &mut File, max: u64) -> std::io::Result<Option<[u8; 32]>> {
    sha256_file_until(file, max, &AtomicBool::new(false))
}

/// [`sha256_file`], giving up (an `Interrupted` error) once `stop` is set, checked between
/// chunks.
pub fn sha256_file_until(file: &mut File, max: u64, stop: &AtomicBool) -> std::io::Result<Option<[u8; 32]>> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += u64::try_from(n).unwrap_or(u64::MAX);
        if total > max {
            return Ok(None);
        }
        h.update(&buf[..n]);
    }
    Ok(Some(h.finalize().into()))
}

pub fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in hash {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Set `process.hash.sha256` on `ev`.
pub fn set_hash(ev: &mut Event, hash: &[u8; 32]) {
    if let Some(p) = ev.process.as_mut() {
        p.hash = Some(FileHash { sha256: hex(hash) });
    }
}

/// Why a program's file is not an ordinary file on a filesystem (`process.fileless_reason`):
/// `memfd` (`memfd_create`, run with `fexecve`), `deleted` (removed after, or while, it was
/// started), `dev_shm` (a file under /dev/shm, a tmpfs every user may write). `resolved` is
/// /proc/PID/exe (or fanotify's path); `executable` the path it was started by.
pub fn fileless_reason(resolved: Option<&str>, executable: Option<&str>) -> Option<&'static str> {
    if resolved.is_some_and(|r| r.starts_with("/memfd:")) {
        return Some("memfd");
    }
    if resolved.is_some_and(|r| r.ends_with(" (deleted)")) {
        return Some("deleted");
    }
    if resolved.into_iter().chain(executable).any(|p| p.starts_with("/dev/shm/")) {
        return Some("dev_shm");
    }
    None
}

/// An event for the hasher: a `process.start` waiting for its program's hash, or (`hash` `None`)
/// an event queued behind one, only to keep the order.
#[derive(Debug)]
pub struct Job {
    /// Boxed: the queue's [`QUEUE`] slots are allocated up front, 64 × 2 KB inline.
    pub event: Box<Event>,
    pub hash: Option<(FileKey, File)>,
}

/// Events the hasher sent without a hash, by why.
#[derive(Debug, Default)]
pub struct HashCounts {
    /// The opened file was not the version looked up (replaced, or written while read).
    pub changed: AtomicU64,
    /// Still queued (or being read) when the reader stopped.
    pub stopped: AtomicU64,
}

/// The reader's end of the hasher.
#[derive(Debug)]
pub struct Hasher {
    pub cache: Arc<Mutex<HashCache>>,
    pub counts: Arc<HashCounts>,
    jobs: SyncSender<Job>,
    stop: Arc<AtomicBool>,
    /// Jobs queued and not yet sent on.
    pending: Arc<AtomicUsize>,
}

impl Hasher {
    /// Start the hasher thread: it ends when the [`Hasher`] is dropped, after sending the jobs
    /// still queued without a hash.
    pub fn start(out: EventTx) -> std::io::Result<Hasher> {
        let cache = Arc::new(Mutex::new(HashCache::default()));
        let counts = Arc::new(HashCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let (jobs, rx) = sync_channel(QUEUE);
        let (c, n, s, p) = (Arc::clone(&cache), Arc::clone(&counts), Arc::clone(&stop), Arc::clone(&pending));
        std::thread::Builder::new()
            .name("picket-hash".into())
            .spawn(move || run(&rx, &c, &out, &n, &s, &p))?;
        Ok(Hasher { cache, counts, jobs, stop, pending })
    }

    /// The cached hash of `key`: `Some(Some(h))` known, `Some(None)` too large, `None` unknown.
    pub fn cached(&self, key: &FileKey) -> Option<Option<[u8; 32]>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key)
    }

    /// Whether events wait in the hasher (then later ones must queue behind them).
    pub fn busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Queue `job`; gives the event back when the queue is full (or the thread is gone).
    pub fn submit(&self, job: Job) -> Option<Event> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.jobs.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                Some(*j.event)
            }
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The file's current version, if it can be stat'ed.
fn key_of(file: &File) -> Option<FileKey> {
    file.metadata().ok().map(|md| FileKey::from_metadata(&md))
}

fn run(
    rx: &Receiver<Job>,
    cache: &Mutex<HashCache>,
    out: &EventTx,
    counts: &HashCounts,
    stop: &AtomicBool,
    pending: &AtomicUsize,
) {
    while let Ok(mut job) = rx.recv() {
        let Some((key, mut file)) = job.hash.take() else {
            // Queued only to keep the order.
            let sent = out.send(*job.event);
            pending.fetch_sub(1, Ordering::AcqRel);
            if sent == Err(crate::SendError::Closed) {
                return;
            }
            continue;
        };
        let known = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key);
        let hash = match known {
            Some(h) => h,
            None if stop.load(Ordering::Relaxed) => {
                counts.stopped.fetch_add(1, Ordering::Relaxed);
                None
            }
            // Not the version the reader looked up: its hash must not go under that key.
            None if key_of(&file) != Some(key) => {
                counts.changed.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => match sha256_file_until(&mut file, MAX_HASH_BYTES, stop) {
                Ok(h) if key_of(&file) == Some(key) => {
                    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, h);
                    h
                }
                Ok(_) => {
                    counts.changed.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && stop.load(Ordering::Relaxed) => {
                    counts.stopped.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(_) => None,
            },
        };
        drop(file);
        if let Some(h) = hash {
            set_hash(&mut job.event, &h);
        }
        let sent = out.send(*job.event);
        pending.fetch_sub(1, Ordering::AcqRel);
        if sent == Err(crate::SendError::Closed) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fileless_reasons() {
        assert_eq!(fileless_reason(Some("/memfd:x (deleted)"), Some("/dev/fd/3")), Some("memfd"));
        assert_eq!(fileless_reason(Some("/tmp/x (deleted)"), Some("/tmp/x")), Some("deleted"));
        assert_eq!(fileless_reason(Some("/dev/shm/x"), Some("/dev/shm/x")), Some("dev_shm"));
        assert_eq!(fileless_reason(None, Some("/dev/shm/y")), Some("dev_shm"));
        assert_eq!(fileless_reason(Some("/usr/bin/true"), Some("/bin/true")), None);
        assert_eq!(fileless_reason(None, None), None);
    }

    #[test]
    fn cache_is_bounded_and_hashes_match_sha256sum() {
        let mut c = HashCache::default();
        let k = |i: u64| FileKey { dev: 1, ino: i, size: 0, mtime: (0, 0), ctime: (0, 0) };
        for i in 0..(MAX_CACHED as u64 + 10) {
            c.insert(k(i), None);
        }
        assert_eq!(c.len(), MAX_CACHED);
        assert_eq!(c.get(&k(0)), None, "oldest went first");
        assert_eq!(c.get(&k(MAX_CACHED as u64 + 9)), Some(None));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let h = sha256_file(&mut File::open(&p).unwrap(), 1 << 20).unwrap().unwrap();
        assert_eq!(hex(&h), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_file(&mut File::open(&p).unwrap(), 2).unwrap(), None, "over the cap");
    }

    fn job(file: File, key: FileKey) -> Job {
        let ev =
            Event::new(picket_event::EventKind::ProcessStart, picket_event::Timestamp::from_unix_nanos(0));
        Job { event: Box::new(ev), hash: Some((key, file)) }
    }

    #[test]
    fn replaced_programs_are_not_hashed_or_cached_and_stop_skips_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"program a").unwrap();
        std::fs::write(&b, b"program b").unwrap();
        let key_a = FileKey::from_metadata(&std::fs::metadata(&a).unwrap());
        let key_b = FileKey::from_metadata(&std::fs::metadata(&b).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let out = EventTx::new("process", tx, crate::Drops::default());
        let cache = Mutex::new(HashCache::default());
        let counts = HashCounts::default();
        let stop = AtomicBool::new(false);
        let (jobs, jobs_rx) = sync_channel(4);
        // A's key, B's file (the process exec'd B between the stat and the open); then B right.
        jobs.send(job(File::open(&b).unwrap(), key_a)).unwrap();
        jobs.send(job(File::open(&b).unwrap(), key_b)).unwrap();
        drop(jobs);
        run(&jobs_rx, &cache, &out, &counts, &stop, &AtomicUsize::new(8));
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok(), "both sent");
        assert_eq!(cache.lock().unwrap().get(&key_a), None, "nothing cached under A's key");
        assert!(cache.lock().unwrap().get(&key_b).is_some_and(|h| h.is_some()));
        assert_eq!(counts.changed.load(Ordering::Relaxed), 1);

        // Stopped: queued jobs go on at once, unhashed and uncached.
        std::fs::write(dir.path().join("c"), b"program c").unwrap();
        let c = dir.path().join("c");
        let key_c = FileKey::from_metadata(&std::fs::metadata(&c).unwrap());
        stop.store(true, Ordering::Relaxed);
        let (jobs, jobs_rx) = sync_channel(4);
        jobs.send(job(File::open(&c).unwrap(), key_c)).unwrap();
        drop(jobs);
        run(&jobs_rx, &cache, &out, &counts, &stop, &AtomicUsize::new(8));
        assert!(rx.try_recv().is_ok(), "sent");
        assert_eq!(cache.lock().unwrap().get(&key_c), None);
        assert_eq!(counts.stopped.load(Ordering::Relaxed), 1);
        let mut f = File::open(&c).unwrap();
        assert_eq!(
            sha256_file_until(&mut f, 1 << 20, &stop).unwrap_err().kind(),
            std::io::ErrorKind::Interrupted
        );
    }
}
