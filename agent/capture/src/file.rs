//! File integrity monitoring: `file.create`, `file.modify`, `file.delete`, `file.rename` and
//! `file.attrib` for every configured tree, watched recursively through inotify (read by its own
//! thread, `file/inotify.rs`), with the SHA-256 of regular files, a baseline in SQLite, and scans that find what
//! inotify could not see.
//!
//! ```text
//!  "picket-inotify" thread            worker thread ("picket-fim")                 pipeline
//!  inotify ─> Input ─> Coalescer ─> [work queue, WORK_QUEUE] ─> lstat, hash, baseline ─> EventTx
//!                          │ full: event now, no hash                  │ scans: start-up,
//!                          └──────────────────────────────────────────>│ new directory, periodic,
//!                                                                      │ after overflow
//! ```
//!
//! How inotify's events become picket events:
//!
//! | inotify                                   | picket                                          |
//! |-------------------------------------------|-------------------------------------------------|
//! | `IN_CREATE`                               | `file.create` (a directory is then watched and scanned) |
//! | `IN_MODIFY`                               | marks the path written; no event by itself      |
//! | `IN_CLOSE_WRITE`                          | `file.modify` if the path was written           |
//! | written, still open after [`MODIFY_WINDOW`] | `file.modify` (then again per window)         |
//! | `IN_DELETE`; `IN_DELETE_SELF` of a configured path | `file.delete`                          |
//! | `IN_MOVED_FROM` + `IN_MOVED_TO`, same cookie | one `file.rename`, `path` old, `target_path` new |
//! | `IN_MOVED_FROM` alone (moved out of the watched trees); `IN_MOVE_SELF` of a configured path | `file.delete` |
//! | `IN_MOVED_TO` alone (moved in)            | `file.create` (a directory is then watched and scanned) |
//! | `IN_ATTRIB`                               | `file.attrib` (dropped if the path is gone: an unlink's link-count change) |
//! | opens and reads                           | not asked for                                   |
//! | overflow (`IN_Q_OVERFLOW`)                | drop counted as `file.os_queue_overflow`, then every tree is rescanned |
//! | a watch over the inotify limit            | drop counted as `file.watch_limit`; that tree is scanned every `scan_interval` and `picket status` says so |
//! | other errors reading inotify or adding a watch | drop counted as `file.os_error`            |
//!
//! Debouncing: one write sequence (open, many writes, close) is one `file.modify`, opening a file
//! for writing without writing to it is none, and a modify or attrib queued right behind the same
//! one for the same path is folded into it. A rename is paired from its two halves by inotify's
//! cookie; a half whose partner never comes within [`RENAME_WINDOW`] is reported as what it looks
//! like from inside the watched trees (gone, or new). Include and exclude globs
//! ([`FileOptions`]) filter paths before anything is read; a rename with one side filtered out is
//! the delete or create of the other side.
//!
//! **Hashes and metadata.** The worker `lstat`s the path and hashes regular files up to
//! [`FileOptions::hash_max_bytes`] ([`sha256_file`]: no symlink followed, no FIFO blocked on).
//! `file.hash.sha256`, `size`, `inode`, `mode`, `uid`, `gid` and `mtime` then describe the
//! content that was hashed. A rename or chmod reuses the stored hash when inode, size and mtime
//! are unchanged. Files that vanish or cannot be read are reported without a hash and counted
//! (`file.hash_vanished`, `file.hash_unreadable`); paths that are not UTF-8 are reported lossily
//! and counted (`file.non_utf8_path`).
//!
//! **Baseline and scans** (the table is in `file/worker.rs`, the whole story in docs/fim.md):
//! the start-up scan reports what changed while picket was not running (`event.module =
//! "scan"`); the first start builds the baseline silently. A directory that appears is scanned
//! [`NEW_DIR_SETTLE`] later, after its watch was added, so files made in it before the watch
//! existed are reported too.
//!
//! Why the queues are bounded: a process on the device decides how many file events happen, and
//! it may be hostile (`while true; do touch x; done`). The agent must keep its memory cap and keep
//! its other sources flowing, so this source never waits on the pipeline: [`EventTx::send`] drops
//! and counts when the queue is full, and `picket status` shows the count. The work queue holds
//! [`WORK_QUEUE`] changes; past it a change is reported at once without a hash (counted as
//! `file.hash_queue_full`), so a flood costs hashes, not events. The coalescer keeps one unpaired
//! rename half and at most [`MAX_WRITTEN`] paths with writes not yet reported.
//!
//! Known limits: a watched root that is itself moved or deleted is not watched again when it
//! reappears (the next start-up scan reports its contents); between two periodic scans of a
//! degraded tree, a file changed and changed back is not seen.

mod baseline;
mod hash;
mod inotify;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use picket_event::EventKind;
use tokio::time::MissedTickBehavior;

pub use hash::{Hashed, sha256_file};
pub use inotify::READ_LINGER;
pub use worker::{NEW_DIR_SETTLE, WORK_QUEUE, check_glob};

use inotify::{Inotify, Notice, ReaderThread, WatchError, WatchErrorKind};
use worker::{Filter, Work, Worker};

use crate::{CaptureError, EventTx, Shutdown, SourceStatus};

/// How often pending state (unpaired rename halves, files still open for writing) is looked at.
/// Five wake-ups a second when idle is cheap even on small devices.
pub const TICK: Duration = Duration::from_millis(200);

/// How long a rename's first half waits for its second before it is reported as a delete. The
/// kernel queues both halves back to back, so this only has to cover our own scheduling.
pub const RENAME_WINDOW: Duration = Duration::from_millis(100);

/// A file written to but still open is reported this long after its first unreported write, and
/// then at most once per window: a writer that never closes (a log, or an attacker holding the
/// descriptor) is still seen, without one event per `write()`.
pub const MODIFY_WINDOW: Duration = Duration::from_secs(1);

/// At most this many paths with writes not yet reported are remembered (a few hundred KB at
/// worst). Past it, a write is reported at once instead of coalesced: nothing is lost, the flood
/// is bounded by the pipeline queue.
pub const MAX_WRITTEN: usize = 1024;

/// The baseline's file name inside `agent.data_dir`.
pub const BASELINE_FILE: &str = "baseline.db";

/// Default of [`FileOptions::hash_max_bytes`]: 32 MiB covers every config file, script and most
/// binaries; hashing a larger file on every write would cost more than it tells.
pub const DEFAULT_HASH_MAX_BYTES: u64 = 32 << 20;

/// Default of [`FileOptions::scan_interval`].
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// After a kernel queue overflow, at most one rescan per this long.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// How long shutdown waits for the worker to commit the baseline.
const WORKER_STOP_WAIT: Duration = Duration::from_millis(1500);

const DATASET: &str = "picket.file";
const MODULE: &str = "inotify";

/// What the file source watches and how (`[sources.file]`).
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Directories (watched recursively) or single files. Relative paths are taken from the
    /// current directory.
    pub paths: Vec<PathBuf>,
    /// Globs over whole paths; when any are given, only matching paths are reported. `*` also
    /// matches `/`: `*.conf` is every `.conf` file, `/etc/**` everything under `/etc`.
    pub include: Vec<String>,
    /// Globs over whole paths never reported; a matching directory is not scanned.
    pub exclude: Vec<String>,
    /// Regular files up to this size are hashed; larger ones are reported without a hash.
    pub hash_max_bytes: u64,
    /// Period of the scans of trees that inotify cannot watch (watch limit reached).
    pub scan_interval: Duration,
    /// The baseline database; `None`: in memory, so every start is a first start.
    pub baseline: Option<PathBuf>,
}

impl FileOptions {
    /// Defaults for everything but the paths; an in-memory baseline.
    pub fn new(paths: Vec<PathBuf>) -> FileOptions {
        FileOptions {
            paths,
            include: Vec::new(),
            exclude: Vec::new(),
            hash_max_bytes: DEFAULT_HASH_MAX_BYTES,
            scan_interval: DEFAULT_SCAN_INTERVAL,
            baseline: None,
        }
    }
}

/// The file source: watches the configured trees and emits `file.*` events.
#[derive(Debug, Clone)]
pub struct FileSource {
    opts: FileOptions,
}

impl FileSource {
    /// The source's name in status and drop counters.
    pub const NAME: &'static str = "file";

    /// Watch `paths` with default options and an in-memory baseline.
    pub fn new(paths: Vec<PathBuf>) -> FileSource {
        FileSource { opts: FileOptions::new(paths) }
    }

    pub fn with_options(opts: FileOptions) -> FileSource {
        FileSource { opts }
    }

    /// Runs until `shutdown` fires or the pipeline closes, then returns `Ok(())`.
    ///
    /// Paths that cannot be watched are named in the status (`running (1 of 2 paths; ...)`) and
    /// skipped. If none can be, or none are configured, the status says so and this returns
    /// `Ok(())` at once: a missing watch directory must not take the agent down. Trees over the
    /// inotify watch limit are scanned periodically instead (`running (degraded: ...)`).
    pub async fn run(
        self,
        out: EventTx,
        status: SourceStatus,
        mut shutdown: Shutdown,
    ) -> Result<(), CaptureError> {
        let opts = self.opts;
        if opts.paths.is_empty() {
            status.set(Self::NAME, "idle: no paths configured");
            return Ok(());
        }
        let filter = Filter::new(&opts.include, &opts.exclude).map_err(|message| CaptureError::Failed {
            source_name: Self::NAME,
            message: format!("bad include/exclude glob: {message}"),
        })?;

        let state = Arc::new(Mutex::new(StatusState::new(status.clone(), opts.scan_interval)));
        let (work_tx, work_rx) = sync_channel(WORK_QUEUE);
        let shared = Arc::new(Mutex::new(Shared::new(
            out.clone(),
            Arc::clone(&state),
            work_tx,
            filter.clone(),
            opts.paths.clone(),
        )));
        let paths = opts.paths.clone();
        // Adding recursive watches walks the trees: blocking, and slow for big ones.
        let setup = tokio::task::spawn_blocking(move || watch_paths(&paths));
        let setup = tokio::select! {
            () = shutdown.wait() => {
                // The walk finishes on its own and closes its descriptor; stop sending now.
                lock(&shared).close();
                return Ok(());
            }
            r = setup => r,
        };
        let reader = match setup {
            Ok(Setup::Watching { inotify, skipped, degraded }) => {
                let mut st = lock(&state);
                st.setup = (!skipped.is_empty()).then(|| {
                    format!(
                        "{} of {} paths; {}",
                        opts.paths.len() - skipped.len(),
                        opts.paths.len(),
                        skipped.join("; ")
                    )
                });
                st.degraded.extend(degraded);
                st.publish();
                drop(st);
                match ReaderThread::spawn(inotify, Arc::clone(&shared)) {
                    Ok(r) => r,
                    Err(e) => {
                        lock(&shared).close();
                        return Err(CaptureError::Failed {
                            source_name: Self::NAME,
                            message: format!("starting the inotify thread: {e}"),
                        });
                    }
                }
            }
            Ok(Setup::Unavailable(why)) => {
                lock(&shared).close();
                status.set(Self::NAME, format!("unavailable: {why}"));
                return Ok(());
            }
            Err(e) => {
                lock(&shared).close();
                return Err(CaptureError::Failed {
                    source_name: Self::NAME,
                    message: format!("adding watches: {e}"),
                });
            }
        };

        // The worker: opened baseline, then the start-up scans, then changes as they come.
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (out, state, stop) = (out.clone(), Arc::clone(&state), Arc::clone(&stop));
            let roots = opts.paths.clone();
            let baseline_path = opts.baseline.clone();
            let (hash_max, scan_interval) = (opts.hash_max_bytes, opts.scan_interval);
            std::thread::Builder::new().name("picket-fim".into()).spawn(move || {
                let baseline = match baseline::Baseline::open(baseline_path.as_deref()) {
                    Ok(b) => b,
                    Err(e) => {
                        let mut st = lock(&state);
                        st.baseline_note = Some(format!(
                            "baseline {} unusable ({e}), kept in memory",
                            baseline_path.as_deref().unwrap_or(Path::new("")).display()
                        ));
                        st.publish();
                        drop(st);
                        match baseline::Baseline::open(None) {
                            Ok(b) => b,
                            Err(_) => return,
                        }
                    }
                };
                Worker {
                    rx: work_rx,
                    out,
                    baseline,
                    roots,
                    filter,
                    hash_max,
                    scan_interval,
                    status: state,
                    stop,
                    pending_dirs: Default::default(),
                }
                .run();
            })
        };
        let worker = match worker {
            Ok(w) => w,
            Err(e) => {
                lock(&shared).close();
                return Err(CaptureError::Failed {
                    source_name: Self::NAME,
                    message: format!("starting the worker thread: {e}"),
                });
            }
        };

        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = tick.tick() => {
                    if out.is_closed() {
                        break;
                    }
                    if worker.is_finished() {
                        // Only a baseline that cannot even be kept in memory ends it early.
                        lock(&shared).close();
                        return Err(CaptureError::Failed {
                            source_name: Self::NAME,
                            message: "the worker thread ended (baseline unusable)".into(),
                        });
                    }
                    lock(&shared).tick(Instant::now());
                }
            }
        }
        // The inotify thread is told to stop (and not waited for: a new tree it is walking ends
        // on its own; it sends nothing after `close`); what is still pending here is handed to
        // the worker, which reports it (unhashed, it is stopping), commits the baseline and ends.
        stop.store(true, Ordering::Relaxed);
        drop(reader.stop());
        lock(&shared).close();
        let join = tokio::task::spawn_blocking(move || worker.join());
        let _ = tokio::time::timeout(WORKER_STOP_WAIT, join).await;
        Ok(())
    }
}

/// What `picket status` shows for the file source, put together from setup, the worker's scans
/// and the watch limit.
#[derive(Debug)]
pub(crate) struct StatusState {
    sink: SourceStatus,
    /// `W of N paths; why the others are skipped`, when some are.
    setup: Option<String>,
    /// The start-up scans are still running.
    scanning: bool,
    /// Trees scanned every `interval` because inotify ran out of watches.
    degraded: std::collections::BTreeSet<PathBuf>,
    interval: Duration,
    baseline_note: Option<String>,
}

impl StatusState {
    fn new(sink: SourceStatus, interval: Duration) -> StatusState {
        StatusState {
            sink,
            setup: None,
            scanning: true,
            degraded: Default::default(),
            interval,
            baseline_note: None,
        }
    }

    fn text(&self) -> String {
        let mut notes: Vec<String> = Vec::new();
        notes.extend(self.setup.clone());
        if self.scanning {
            notes.push("start-up scan against the baseline".into());
        }
        if !self.degraded.is_empty() {
            let n = self.degraded.len();
            notes.push(format!(
                "degraded: inotify watch limit reached, {n} tree{} scanned every {}s \
                 (raise fs.inotify.max_user_watches)",
                if n == 1 { "" } else { "s" },
                self.interval.as_secs()
            ));
        }
        notes.extend(self.baseline_note.clone());
        if notes.is_empty() { "running".to_string() } else { format!("running ({})", notes.join("; ")) }
    }

    fn publish(&self) {
        self.sink.set(FileSource::NAME, self.text());
    }
}

/// What adding the watches came to.
enum Setup {
    /// At least one path is watched or scanned.
    Watching {
        inotify: Inotify,
        /// Why each skipped path is skipped.
        skipped: Vec<String>,
        /// Paths over the watch limit: scanned periodically.
        degraded: Vec<PathBuf>,
    },
    /// Nothing could be watched; why, naming each path.
    Unavailable(String),
}

fn watch_paths(paths: &[PathBuf]) -> Setup {
    let mut inotify = match Inotify::new() {
        Ok(i) => i,
        Err(e) => {
            return Setup::Unavailable(format!(
                "cannot start inotify: {e} (check fs.inotify.max_user_instances)"
            ));
        }
    };
    let mut skipped = Vec::new();
    let mut degraded = Vec::new();
    for path in paths {
        // Symlinks below the path are never followed: a link to `/` inside a watched tree would
        // otherwise spend the whole watch budget. A path that fails half-way is unwatched, so
        // it is either watched whole, or scanned, or reported as skipped.
        if let Err(e) = inotify.watch(path) {
            if matches!(e.kind, WatchErrorKind::Limit) {
                degraded.push(path.clone());
            } else {
                skipped.push(describe_watch_error(path, &e));
            }
        }
    }
    if skipped.len() == paths.len() {
        Setup::Unavailable(skipped.join("; "))
    } else {
        Setup::Watching { inotify, skipped, degraded }
    }
}

/// A status line for a path that could not be watched: the path as configured, what went wrong
/// and what to do about it.
fn describe_watch_error(path: &Path, err: &WatchError) -> String {
    let shown = path.display();
    // Name the directory that failed when it is not the configured path.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let sub = (err.at != absolute && err.at != path).then_some(&err.at);
    let on = sub.map(|p| format!(" on {}", p.display())).unwrap_or_default();
    match &err.kind {
        WatchErrorKind::NotFound => match sub {
            None => format!("{shown} does not exist (create it or change sources.file.paths)"),
            Some(p) => format!("{shown}: {} disappeared while adding watches", p.display()),
        },
        WatchErrorKind::Denied => {
            format!("{shown}: permission denied{on} (give picket read access or change sources.file.paths)")
        }
        WatchErrorKind::Limit => format!(
            "{shown}: inotify watch limit reached{on} (raise fs.inotify.max_user_watches or watch a smaller tree)"
        ),
        WatchErrorKind::Io(e) => format!("{shown}: {e}{on}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the inotify thread and the ticker share. The lock is held for one batch of inotify
/// events (coalescing and non-blocking hand-overs) or one tick, so neither side waits long.
#[derive(Debug)]
struct Shared {
    coalescer: Coalescer,
    /// `None` once the source stopped: late inotify batches then do nothing, and the pipeline's
    /// sender is released without waiting for the inotify thread to exit.
    out: Option<EventTx>,
    /// To the worker; `None` once stopped.
    work: Option<SyncSender<Work>>,
    filter: Filter,
    roots: Vec<PathBuf>,
    status: Arc<Mutex<StatusState>>,
    /// The kernel dropped events (or a new directory's scan could not be queued): rescan every
    /// tree at the next tick.
    rescan_pending: bool,
    last_rescan: Option<Instant>,
}

impl Shared {
    fn new(
        out: EventTx,
        status: Arc<Mutex<StatusState>>,
        work: SyncSender<Work>,
        filter: Filter,
        roots: Vec<PathBuf>,
    ) -> Shared {
        Shared {
            coalescer: Coalescer::default(),
            out: Some(out),
            work: Some(work),
            filter,
            roots,
            status,
            rescan_pending: false,
            last_rescan: None,
        }
    }

    fn is_closed(&self) -> bool {
        self.out.is_none()
    }

    fn on_notice(&mut self, notice: Notice, now: Instant) {
        let Some(out) = self.out.clone() else { return };
        match notice {
            Notice::Overflow => {
                // The kernel dropped events and does not say how many: count the occurrence,
                // and find what was missed by rescanning.
                out.count_drop("os_queue_overflow", 1);
                self.rescan_pending = true;
            }
            Notice::Input(input) => {
                let mut changes = Vec::new();
                self.coalescer.push(input, now, &mut |c| changes.push(c));
                for c in changes {
                    self.dispatch(&out, c);
                }
            }
            Notice::WatchLimit(at) => {
                out.count_drop("watch_limit", 1);
                // The tree holding the directory that could not be watched is scanned from now
                // on; all of them should it be under none (it always is).
                let roots: Vec<PathBuf> = match self.roots.iter().find(|r| at.starts_with(r)) {
                    Some(r) => vec![r.clone()],
                    None => self.roots.clone(),
                };
                let mut st = lock(&self.status);
                let before = st.degraded.len();
                st.degraded.extend(roots);
                if st.degraded.len() != before {
                    st.publish();
                }
            }
            Notice::OsError => out.count_drop("os_error", 1),
        }
    }

    /// Hands a change to the worker; when its queue is full, reports it at once without a hash.
    fn dispatch(&mut self, out: &EventTx, change: Change) {
        let Some(work) = &self.work else { return };
        let appeared = match change.kind {
            EventKind::FileCreate => Some(change.path.clone()),
            EventKind::FileRename => change.target.clone(),
            _ => None,
        };
        let Some(change) = self.filter.apply(change) else {
            // Not reported itself, but a new directory may hold paths that are.
            if let Some(p) = appeared.filter(|p| !self.filter.excluded(p))
                && work.try_send(Work::Appeared(p)).is_err()
            {
                self.rescan_pending = true;
            }
            return;
        };
        match work.try_send(Work::Change(change)) {
            Ok(()) => {}
            Err(TrySendError::Full(Work::Change(c))) => {
                out.count_drop("hash_queue_full", 1);
                if c.kind == EventKind::FileCreate || c.kind == EventKind::FileRename {
                    // A new directory would not get its scan: rescan everything instead.
                    self.rescan_pending = true;
                }
                if let Some(ev) = worker::unhashed_event(&c) {
                    let _ = out.send(ev);
                }
            }
            Err(_) => {}
        }
    }

    fn tick(&mut self, now: Instant) {
        let Some(out) = self.out.clone() else { return };
        let mut changes = Vec::new();
        self.coalescer.tick(now, &mut |c| changes.push(c));
        for c in changes {
            self.dispatch(&out, c);
        }
        let due = self.last_rescan.is_none_or(|t| now.saturating_duration_since(t) >= RESCAN_EVERY);
        if self.rescan_pending
            && due
            && let Some(work) = &self.work
            && work.try_send(Work::Rescan).is_ok()
        {
            self.rescan_pending = false;
            self.last_rescan = Some(now);
        }
    }

    /// Hand over what is pending and stop sending.
    fn close(&mut self) {
        if let Some(out) = self.out.clone() {
            let mut changes = Vec::new();
            self.coalescer.flush_all(&mut |c| changes.push(c));
            for c in changes {
                self.dispatch(&out, c);
            }
        }
        self.out = None;
        self.work = None;
    }
}

/// An inotify event reduced to what the coalescer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    Created { path: PathBuf, dir: bool },
    Written(PathBuf),
    ClosedWrite(PathBuf),
    Removed { path: PathBuf, dir: bool },
    Attrib(PathBuf),
    RenameFrom { path: PathBuf, cookie: Option<usize> },
    RenameTo { path: PathBuf, cookie: Option<usize> },
}

/// One picket file event, before its metadata is read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    kind: EventKind,
    path: PathBuf,
    /// For `file.rename`: the new path.
    target: Option<PathBuf>,
    /// inotify said it is a directory (used when the path can no longer be read).
    dir: bool,
}

impl Change {
    fn new(kind: EventKind, path: PathBuf, dir: bool) -> Change {
        Change { kind, path, target: None, dir }
    }
}

/// The first half of a rename, waiting for its second.
#[derive(Debug)]
struct PendingFrom {
    path: PathBuf,
    cookie: Option<usize>,
    since: Instant,
}

/// Pairs rename halves and folds writes into one `file.modify`. A state machine without I/O:
/// time comes in as an argument, changes go out through `emit`.
#[derive(Debug, Default)]
struct Coalescer {
    /// At most one: inotify queues a rename's halves back to back.
    pending_from: Option<PendingFrom>,
    /// Paths written to and not yet reported, with the time of the first such write.
    written: BTreeMap<PathBuf, Instant>,
}

impl Coalescer {
    fn push(&mut self, input: Input, now: Instant, emit: &mut impl FnMut(Change)) {
        match input {
            Input::RenameFrom { path, cookie } => {
                self.flush_from(emit);
                self.pending_from = Some(PendingFrom { path, cookie, since: now });
            }
            Input::RenameTo { path, cookie } => {
                let paired = self.pending_from.take_if(|p| p.cookie.is_some() && p.cookie == cookie);
                match paired {
                    Some(from) => self.renamed(from.path, path, emit),
                    None => {
                        // Moved in from outside the watched trees.
                        self.flush_from(emit);
                        emit(Change::new(EventKind::FileCreate, path, false));
                    }
                }
            }
            Input::Created { path, dir } => {
                self.flush_from(emit);
                emit(Change::new(EventKind::FileCreate, path, dir));
            }
            Input::Written(path) => {
                self.flush_from(emit);
                if !self.written.contains_key(&path) {
                    if self.written.len() < MAX_WRITTEN {
                        self.written.insert(path, now);
                    } else {
                        emit(Change::new(EventKind::FileModify, path, false));
                    }
                }
            }
            Input::ClosedWrite(path) => {
                self.flush_from(emit);
                // Opened for writing but not written: not a modification.
                if self.written.remove(&path).is_some() {
                    emit(Change::new(EventKind::FileModify, path, false));
                }
            }
            Input::Removed { path, dir } => {
                self.flush_from(emit);
                self.forget_under(&path);
                emit(Change::new(EventKind::FileDelete, path, dir));
            }
            Input::Attrib(path) => {
                self.flush_from(emit);
                emit(Change::new(EventKind::FileAttrib, path, false));
            }
        }
    }

    /// Report what has waited long enough.
    fn tick(&mut self, now: Instant, emit: &mut impl FnMut(Change)) {
        if self.pending_from.as_ref().is_some_and(|p| now.saturating_duration_since(p.since) >= RENAME_WINDOW)
        {
            self.flush_from(emit);
        }
        self.written.retain(|path, since| {
            if now.saturating_duration_since(*since) >= MODIFY_WINDOW {
                emit(Change::new(EventKind::FileModify, path.clone(), false));
                false
            } else {
                true
            }
        });
    }

    /// Report everything pending (on shutdown).
    fn flush_all(&mut self, emit: &mut impl FnMut(Change)) {
        self.flush_from(emit);
        for (path, _) in std::mem::take(&mut self.written) {
            emit(Change::new(EventKind::FileModify, path, false));
        }
    }

    /// An unpaired `From`: the path left the watched trees, which from here is a delete.
    fn flush_from(&mut self, emit: &mut impl FnMut(Change)) {
        if let Some(from) = self.pending_from.take() {
            self.forget_under(&from.path);
            emit(Change::new(EventKind::FileDelete, from.path, false));
        }
    }

    fn renamed(&mut self, from: PathBuf, to: PathBuf, emit: &mut impl FnMut(Change)) {
        // Unreported writes follow the file (or, for a directory, the files under it); whatever
        // was at the target before is gone.
        self.forget_under(&to);
        let moved: Vec<PathBuf> = self.written.keys().filter(|p| p.starts_with(&from)).cloned().collect();
        for old in moved {
            if let (Some(since), Ok(rest)) = (self.written.remove(&old), old.strip_prefix(&from)) {
                let new = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                self.written.insert(new, since);
            }
        }
        emit(Change { kind: EventKind::FileRename, path: from, target: Some(to), dir: false });
    }

    fn forget_under(&mut self, path: &Path) {
        self.written.retain(|p, _| !p.starts_with(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Drops;
    use std::io;
    use tokio::sync::mpsc;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// Feed inputs at the given offsets (ms from a start instant), then tick at `tick_ms`.
    fn run(inputs: Vec<(u64, Input)>, tick_ms: Option<u64>) -> Vec<(EventKind, PathBuf, Option<PathBuf>)> {
        let t0 = Instant::now();
        let mut c = Coalescer::default();
        let mut out = Vec::new();
        let mut emit = |ch: Change| out.push((ch.kind, ch.path, ch.target));
        for (ms, input) in inputs {
            c.push(input, t0 + Duration::from_millis(ms), &mut emit);
        }
        if let Some(ms) = tick_ms {
            c.tick(t0 + Duration::from_millis(ms), &mut emit);
        }
        out
    }

    #[test]
    fn paired_halves_are_one_rename() {
        let out = run(
            vec![
                (0, Input::RenameFrom { path: p("/w/a"), cookie: Some(7) }),
                (0, Input::RenameTo { path: p("/w/b"), cookie: Some(7) }),
            ],
            Some(5000),
        );
        assert_eq!(out, vec![(EventKind::FileRename, p("/w/a"), Some(p("/w/b")))]);
    }

    #[test]
    fn a_from_half_alone_becomes_a_delete_after_the_window_not_before() {
        let inputs = vec![(0, Input::RenameFrom { path: p("/w/a"), cookie: Some(1) })];
        assert!(run(inputs.clone(), Some(10)).is_empty());
        assert_eq!(run(inputs, Some(150)), vec![(EventKind::FileDelete, p("/w/a"), None)]);
    }

    #[test]
    fn a_from_half_alone_is_reported_before_the_next_event_to_keep_order() {
        let out = run(
            vec![
                (0, Input::RenameFrom { path: p("/w/a"), cookie: Some(1) }),
                (1, Input::Created { path: p("/w/a"), dir: false }),
            ],
            None,
        );
        assert_eq!(
            out,
            vec![(EventKind::FileDelete, p("/w/a"), None), (EventKind::FileCreate, p("/w/a"), None)]
        );
    }

    #[test]
    fn a_to_half_alone_is_a_create() {
        let out = run(vec![(0, Input::RenameTo { path: p("/w/b"), cookie: Some(3) })], Some(5000));
        assert_eq!(out, vec![(EventKind::FileCreate, p("/w/b"), None)]);
    }

    #[test]
    fn a_write_sequence_is_one_modify_at_close() {
        let mut inputs = vec![(0, Input::Created { path: p("/w/a"), dir: false })];
        inputs.extend((0..50).map(|i| (i, Input::Written(p("/w/a")))));
        inputs.push((60, Input::ClosedWrite(p("/w/a"))));
        let out = run(inputs, Some(5000));
        assert_eq!(
            out,
            vec![(EventKind::FileCreate, p("/w/a"), None), (EventKind::FileModify, p("/w/a"), None)]
        );
    }

    #[test]
    fn closing_without_writing_is_not_a_modify() {
        assert!(run(vec![(0, Input::ClosedWrite(p("/w/a")))], Some(5000)).is_empty());
    }

    #[test]
    fn a_file_held_open_is_reported_after_the_modify_window() {
        let inputs = vec![(0, Input::Written(p("/w/log")))];
        assert!(run(inputs.clone(), Some(500)).is_empty());
        assert_eq!(run(inputs, Some(1000)), vec![(EventKind::FileModify, p("/w/log"), None)]);
    }

    #[test]
    fn unreported_writes_follow_a_rename_and_vanish_with_a_delete() {
        let out = run(
            vec![
                (0, Input::Written(p("/w/d/f"))),
                (0, Input::Written(p("/w/g"))),
                (1, Input::RenameFrom { path: p("/w/d"), cookie: Some(9) }),
                (1, Input::RenameTo { path: p("/w/e"), cookie: Some(9) }),
                (2, Input::Removed { path: p("/w/g"), dir: false }),
                (3, Input::ClosedWrite(p("/w/e/f"))),
            ],
            Some(5000),
        );
        assert_eq!(
            out,
            vec![
                (EventKind::FileRename, p("/w/d"), Some(p("/w/e"))),
                (EventKind::FileDelete, p("/w/g"), None),
                (EventKind::FileModify, p("/w/e/f"), None),
            ]
        );
    }

    #[test]
    fn written_paths_are_capped_and_overflow_is_reported_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::default();
        let mut n = 0;
        for i in 0..MAX_WRITTEN + 10 {
            c.push(Input::Written(PathBuf::from(format!("/w/{i}"))), t0, &mut |_| n += 1);
        }
        assert_eq!(c.written.len(), MAX_WRITTEN);
        assert_eq!(n, 10);
        c.flush_all(&mut |_| n += 1);
        assert_eq!(n, MAX_WRITTEN + 10);
    }

    #[test]
    fn overflow_and_errors_are_counted_as_drops_and_the_watch_limit_degrades_its_tree() {
        let (tx, _rx) = mpsc::channel(4);
        let drops = Drops::default();
        let status = SourceStatus::default();
        let state = Arc::new(Mutex::new(StatusState::new(status.clone(), Duration::from_secs(60))));
        lock(&state).scanning = false;
        let (work_tx, work_rx) = sync_channel(8);
        let roots = vec![p("/w"), p("/v")];
        let mut shared = Shared::new(
            EventTx::new("file", tx, drops.clone()),
            Arc::clone(&state),
            work_tx,
            Filter::default(),
            roots,
        );
        let now = Instant::now();
        shared.on_notice(Notice::Overflow, now);
        shared.on_notice(Notice::WatchLimit(p("/v/deep/dir")), now);
        shared.on_notice(Notice::WatchLimit(p("/v/other")), now);
        shared.on_notice(Notice::OsError, now);
        let d = drops.snapshot();
        assert_eq!(d.get("file.os_queue_overflow"), Some(&1));
        assert_eq!(d.get("file.watch_limit"), Some(&2));
        assert_eq!(d.get("file.os_error"), Some(&1));
        assert_eq!(
            status.snapshot()["file"],
            "running (degraded: inotify watch limit reached, 1 tree scanned every 60s (raise fs.inotify.max_user_watches))"
        );
        assert_eq!(lock(&state).degraded.iter().collect::<Vec<_>>(), vec![&p("/v")]);
        // The overflow asks the worker for a rescan at the next tick.
        shared.tick(now);
        assert!(matches!(work_rx.try_recv(), Ok(Work::Rescan)));
    }

    #[test]
    fn watch_errors_name_the_path_and_what_to_do() {
        let err = |kind, at: &str| WatchError { kind, at: p(at) };
        let denied = err(WatchErrorKind::Denied, "/x/private");
        assert_eq!(
            describe_watch_error(Path::new("/x"), &denied),
            "/x: permission denied on /x/private (give picket read access or change sources.file.paths)"
        );
        let denied_root = err(WatchErrorKind::Denied, "/x");
        assert!(describe_watch_error(Path::new("/x"), &denied_root).starts_with("/x: permission denied ("));
        let missing = err(WatchErrorKind::NotFound, "./picket-data/watch");
        assert_eq!(
            describe_watch_error(Path::new("./picket-data/watch"), &missing),
            "./picket-data/watch does not exist (create it or change sources.file.paths)"
        );
        let gone = err(WatchErrorKind::NotFound, "/x/sub");
        assert_eq!(
            describe_watch_error(Path::new("/x"), &gone),
            "/x: /x/sub disappeared while adding watches"
        );
        let limit = err(WatchErrorKind::Limit, "/x");
        assert!(describe_watch_error(Path::new("/x"), &limit).contains("raise fs.inotify.max_user_watches"));
        let other = err(WatchErrorKind::Io(io::Error::from_raw_os_error(5 /* EIO */)), "/x/d");
        assert!(describe_watch_error(Path::new("/x"), &other).ends_with(" on /x/d"));
    }
}
