//! deny_exec: a fanotify exec-permission guard that fails open.
//!
//! One fanotify group (`FAN_CLASS_CONTENT`) with `FAN_OPEN_EXEC_PERM` marks on whole mounts. The
//! kernel holds every exec on those mounts until this guard answers, so the guard thread must
//! always answer, and answer fast:
//!
//! - path globs are checked first (no I/O beyond one readlink);
//! - hashes only if there are hash rules, only up to `max_hash_bytes`, with a cache keyed by
//!   (dev, inode, size, mtime, ctime) so a binary is hashed once until it changes;
//! - if the deadline (measured from the read of the event batch) passes, or anything fails, the
//!   answer is ALLOW and `failed_open` is counted: a device must never lock itself up.
//!
//! Stopping closes the group, which makes the kernel allow every exec still waiting.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno as NixErrno;
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};
use sha2::{Digest, Sha256};

use super::error::HostError;
use super::glob::Glob;
use super::quarantine::hex;

/// Hash cache entries before it is cleared (each ~100 bytes).
const HASH_CACHE_MAX: usize = 1024;

/// Read size while hashing; the deadline is checked between reads.
const HASH_CHUNK: usize = 64 * 1024;

/// What to deny: path globs and sha256 hashes of binaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecMatcher {
    globs: Vec<Glob>,
    hashes: HashSet<[u8; 32]>,
}

impl ExecMatcher {
    /// A matcher that denies nothing.
    pub fn new() -> ExecMatcher {
        ExecMatcher::default()
    }

    /// Also deny executables whose path matches `glob` (see [`Glob`]).
    ///
    /// # Errors
    /// [`HostError::BadRule`] for a malformed glob.
    pub fn deny_path(mut self, glob: &str) -> Result<ExecMatcher, HostError> {
        self.globs.push(Glob::new(glob)?);
        Ok(self)
    }

    /// Also deny executables whose content has this sha256 (64 hex digits).
    ///
    /// # Errors
    /// [`HostError::BadRule`] unless `sha256` is 64 hex digits.
    pub fn deny_sha256(mut self, sha256: &str) -> Result<ExecMatcher, HostError> {
        let bad = || HostError::BadRule { rule: sha256.to_string(), detail: "not 64 hex digits".to_string() };
        if sha256.len() != 64 {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            let pair = sha256.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        self.hashes.insert(digest);
        Ok(self)
    }

    /// The first glob matching `path`.
    pub fn match_path(&self, path: &Path) -> Option<&Glob> {
        self.globs.iter().find(|g| g.matches(path))
    }

    /// Whether `sha256` is denied.
    pub fn denies_hash(&self, sha256: &[u8; 32]) -> bool {
        self.hashes.contains(sha256)
    }
}

/// How an [`ExecGuard`] runs.
#[derive(Debug, Clone)]
pub struct ExecGuardConfig {
    /// Mount points to guard; each is marked with `FAN_MARK_MOUNT`, i.e. the whole mount that
    /// contains the path (a path that is not a mount point still marks its mount).
    pub marks: Vec<PathBuf>,
    /// The initial rules.
    pub matcher: ExecMatcher,
    /// Longest time to decide one exec before allowing it anyway. 80 ms by default: a human
    /// barely notices, a boot script calling a thousand binaries is slowed by at most that each.
    pub deadline: Duration,
    /// Files larger than this are not hashed (allowed, counted as `failed_open` when hash rules
    /// exist). 16 MiB by default: sha256 runs at a few hundred MB/s on small cores.
    pub max_hash_bytes: u64,
    /// Capacity of the [`DeniedExec`] channel; records beyond it are dropped and counted.
    pub record_capacity: usize,
}

impl ExecGuardConfig {
    /// Guard `marks` with `matcher` and the default deadline, hash cap and channel capacity.
    pub fn new(marks: Vec<PathBuf>, matcher: ExecMatcher) -> ExecGuardConfig {
        ExecGuardConfig {
            marks,
            matcher,
            deadline: Duration::from_millis(80),
            max_hash_bytes: 16 * 1024 * 1024,
            record_capacity: 256,
        }
    }
}

/// An exec that was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedExec {
    /// The process that tried to exec.
    pub pid: i32,
    /// The executable (empty if its path could not be read).
    pub path: PathBuf,
    /// The rule: `path:<glob>` or `sha256:<hex>`.
    pub rule: String,
}

/// Counters of an [`ExecGuard`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecCounters {
    /// Execs allowed because no rule matched.
    pub allowed: u64,
    /// Execs denied.
    pub denied: u64,
    /// Execs allowed because no decision could be made in time or at all (deadline, file too
    /// big to hash, read error, unexpected event).
    pub failed_open: u64,
    /// Denied-exec records dropped because the channel was full or closed.
    pub records_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    failed_open: AtomicU64,
    records_dropped: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running exec guard. Dropping it stops the thread and closes the fanotify group.
#[derive(Debug)]
pub struct ExecGuard {
    matcher: Arc<Mutex<Arc<ExecMatcher>>>,
    counters: Arc<Counters>,
    /// Write end of the stop pipe: closing it wakes the thread.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl ExecGuard {
    /// Creates the fanotify group, marks every mount in `config.marks` and starts the thread.
    /// Returns the guard and the receiving end of the denied-exec channel.
    ///
    /// # Errors
    /// [`HostError::Fanotify`] if the group cannot be created (not root, no kernel support) or a
    /// mount cannot be marked; nothing is left running then.
    pub fn start(config: ExecGuardConfig) -> Result<(ExecGuard, Receiver<DeniedExec>), HostError> {
        let fan_err = |op, path: &Path, e: NixErrno| HostError::Fanotify {
            op,
            path: path.to_path_buf(),
            source: io::Error::from_raw_os_error(e as i32),
        };
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| fan_err("init", Path::new(""), e))?;
        for mark in &config.marks {
            fan.mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                MaskFlags::FAN_OPEN_EXEC_PERM,
                rustix::fs::CWD,
                Some(mark.as_path()),
            )
            .map_err(|e| fan_err("mark", mark, e))?;
        }
        let (stop_rx, stop_tx) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| HostError::Fanotify {
            op: "stop pipe",
            path: PathBuf::new(),
            source: e.into(),
        })?;
        let (records_tx, records_rx) = sync_channel(config.record_capacity);
        let matcher = Arc::new(Mutex::new(Arc::new(config.matcher)));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            fan,
            stop: stop_rx,
            matcher: Arc::clone(&matcher),
            counters: Arc::clone(&counters),
            records: records_tx,
            deadline: config.deadline,
            max_hash_bytes: config.max_hash_bytes,
            cache: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("picket-exec-guard".into())
            .spawn(move || worker.run())
            .map_err(|e| HostError::Fanotify { op: "spawn thread", path: PathBuf::new(), source: e })?;
        Ok((ExecGuard { matcher, counters, stop: Some(stop_tx), thread: Some(thread) }, records_rx))
    }

    /// Replaces the rules; the next exec is decided by the new ones.
    pub fn set_matcher(&self, matcher: ExecMatcher) {
        *self.matcher.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(matcher);
    }

    /// The counters so far.
    pub fn counters(&self) -> ExecCounters {
        let c = &self.counters;
        ExecCounters {
            allowed: c.allowed.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            failed_open: c.failed_open.load(Ordering::Relaxed),
            records_dropped: c.records_dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread and closes the fanotify group; returns the final counters.
    pub fn stop(mut self) -> ExecCounters {
        self.shutdown();
        self.counters()
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Verdict {
    Allow,
    Deny,
    FailOpen,
}

struct Worker {
    fan: Fanotify,
    stop: OwnedFd,
    matcher: Arc<Mutex<Arc<ExecMatcher>>>,
    counters: Arc<Counters>,
    records: SyncSender<DeniedExec>,
    deadline: Duration,
    max_hash_bytes: u64,
    cache: HashMap<FileKey, [u8; 32]>,
}

/// Identity of one version of a file: any write changes mtime/ctime, so a cached hash is never
/// reused for changed content (ctime cannot be set from user space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Worker {
    fn run(mut self) {
        loop {
            let (fan_ready, stop_ready) = {
                let mut fds = [PollFd::new(&self.fan, PollFlags::IN), PollFd::new(&self.stop, PollFlags::IN)];
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(_) => return,
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if stop_ready {
                return; // dropping self.fan releases pending execs as allowed
            }
            if fan_ready {
                self.drain();
            }
        }
    }

    /// Reads and answers events until the queue is empty.
    fn drain(&mut self) {
        loop {
            let events = match self.fan.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => events,
                Err(NixErrno::EINTR) => continue,
                Err(_) => return, // EAGAIN: empty; anything else: poll again
            };
            let batch_start = Instant::now();
            for event in &events {
                self.answer(event, batch_start);
            }
        }
    }

    fn answer(&mut self, event: &FanotifyEvent, batch_start: Instant) {
        let Some(fd) = event.fd() else { return }; // queue overflow notice: nothing to answer
        let verdict = if !event.check_version() || !event.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            Verdict::FailOpen
        } else {
            self.decide(fd, event.pid(), batch_start.checked_add(self.deadline))
        };
        let response = match verdict {
            Verdict::Deny => Response::FAN_DENY,
            Verdict::Allow | Verdict::FailOpen => Response::FAN_ALLOW,
        };
        // Counted before answering, so whoever sees the exec's result also sees the count.
        let counter = match verdict {
            Verdict::Allow => &self.counters.allowed,
            Verdict::FailOpen => &self.counters.failed_open,
            Verdict::Deny => &self.counters.denied,
        };
        Counters::bump(counter);
        if self.fan.write_response(FanotifyResponse::new(fd, response)).is_err() {
            // The kernel keeps the exec waiting until we answer or close the group (stop does);
            // count it as a decision that could not be delivered.
            counter.fetch_sub(1, Ordering::Relaxed);
            Counters::bump(&self.counters.failed_open);
        }
    }

    fn decide(&mut self, fd: BorrowedFd<'_>, pid: i32, deadline: Option<Instant>) -> Verdict {
        let matcher = Arc::clone(&self.matcher.lock().unwrap_or_else(|e| e.into_inner()));
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
        if let Some(glob) = matcher.match_path(&path) {
            self.record(pid, path, format!("path:{glob}"));
            return Verdict::Deny;
        }
        if matcher.hashes.is_empty() {
            return Verdict::Allow;
        }
        let Some(digest) = self.hash(fd, deadline) else { return Verdict::FailOpen };
        if matcher.denies_hash(&digest) {
            self.record(pid, path, format!("sha256:{}", hex(&digest)));
            return Verdict::Deny;
        }
        Verdict::Allow
    }

    /// sha256 of the file behind `fd`, from the cache or read now; `None` if too big, unreadable
    /// or not done by `deadline` (`None`: a deadline too far to represent, i.e. none).
    fn hash(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Option<[u8; 32]> {
        let file = File::from(fd.try_clone_to_owned().ok()?);
        let meta = file.metadata().ok()?;
        if meta.size() > self.max_hash_bytes {
            return None;
        }
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        if let Some(digest) = self.cache.get(&key) {
            return Some(*digest);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut offset = 0u64;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let n = match file.read_at(&mut buf, offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            hasher.update(&buf[..n]);
            offset += n as u64;
            if offset > self.max_hash_bytes {
                return None; // grew while we read
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if self.cache.len() >= HASH_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, digest);
        Some(digest)
    }

    fn record(&self, pid: i32, path: PathBuf, rule: String) {
        match self.records.try_send(DeniedExec { pid, path, rule }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Counters::bump(&self.counters.records_dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_rules_must_be_64_hex_digits() {
        assert!(ExecMatcher::new().deny_sha256("abc").is_err());
        assert!(ExecMatcher::new().deny_sha256(&"g".repeat(64)).is_err());
        let m = ExecMatcher::new().deny_sha256(&"Ab".repeat(32)).unwrap();
        assert!(m.denies_hash(&[0xab; 32]));
        assert!(!m.denies_hash(&[0; 32]));
    }

    #[test]
    fn first_matching_glob_names_the_rule() {
        let m = ExecMatcher::new().deny_path("/tmp/**").unwrap().deny_path("**/evil").unwrap();
        assert_eq!(m.match_path(Path::new("/tmp/evil")).map(Glob::as_str), Some("/tmp/**"));
        assert_eq!(m.match_path(Path::new("/opt/evil")).map(Glob::as_str), Some("**/evil"));
        assert_eq!(m.match_path(Path::new("/usr/bin/true")), None);
    }
}
