//! The file source's worker thread: reads metadata, hashes, keeps the baseline and scans trees.
//!
//! Everything slow lives here, off notify's thread: notify's handler only coalesces and hands
//! [`Change`]s over a bounded queue ([`WORK_QUEUE`]). One thread owns the SQLite connection, so
//! the baseline needs no locking, and a batch of changes is one transaction.
//!
//! Scans compare a tree with the baseline:
//!
//! | scan | when | new paths | gone paths |
//! |---|---|---|---|
//! | start-up | every configured tree, once watches are in place | `file.create` (none on the first start: that builds the baseline) | `file.delete` |
//! | new directory | a directory appeared (created, or moved in) | `file.create` unless already reported | — |
//! | periodic | every `scan_interval`, trees inotify could not watch (watch limit) | `file.create` | `file.delete` |
//! | rescan | the kernel's event queue overflowed | `file.create` | `file.delete` |
//!
//! and a known path whose content changed is a `file.modify`, one whose mode or owner changed a
//! `file.attrib`. Events found by a scan carry `event.module = "scan"` and a `message` saying
//! which scan.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fs, mem, thread};

use globset::{Glob, GlobSet, GlobSetBuilder};
use picket_event::{Event, EventKind, File, FileHash, Timestamp, severity};

use super::baseline::{Baseline, Entry, Kind};
use super::hash::sha256_file;
use super::{Change, DATASET, MODULE, StatusState};
use crate::EventTx;

/// Capacity of the queue from notify's thread to the worker, in changes (64 bytes each, allocated
/// up front: 64 KiB). Deep enough for a burst (`tar x` of a thousand files) while hashing catches
/// up; when it is full, changes are reported at once without a hash (counted as
/// `file.hash_queue_full`). It was 4,096: 192 KiB more resident for bursts a watched tree rarely
/// sees.
pub const WORK_QUEUE: usize = 1024;

/// The baseline is committed when no change came for this long...
const COMMIT_IDLE: Duration = Duration::from_millis(100);

/// ...or when changes have been waiting this long. A crash loses at most this much of the
/// baseline's updates, which the next start-up scan reports again: duplicates, never a miss.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// SHA-256 of zero bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Changes handled per transaction.
const BATCH: usize = 256;

/// Under load (changes again within this long of the last batch), the worker lets the next ones
/// gather this long instead of waking for each: a wake-up from notify's thread costs more than
/// the change's own lstat. A few changes wait (300/s: ~3), far from [`WORK_QUEUE`]; a flood keeps
/// the queue non-empty and is handled without a pause.
const WORK_LINGER: Duration = Duration::from_millis(10);

/// How long after a directory appears it is scanned: notify adds the new directory's watch only
/// after it handled the whole read buffer, and the scan must come after the watch (what is
/// created in between is then seen by one or the other, or both).
pub const NEW_DIR_SETTLE: Duration = Duration::from_millis(50);

/// At most this many new directories wait for their scan; past it one rescan of every tree
/// replaces them.
const MAX_PENDING_DIRS: usize = 1024;

/// Work for the worker.
#[derive(Debug)]
pub(crate) enum Work {
    Change(Change),
    /// A path that appeared but is not reported itself (include globs): if it is a directory,
    /// what is under it may be, so it is scanned like any new directory.
    Appeared(PathBuf),
    /// Rescan every tree, reporting what changed (after the kernel dropped events).
    Rescan,
}

/// Include and exclude globs over whole paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

/// Checks one glob as `sources.file.include` / `exclude` take it.
pub fn check_glob(text: &str) -> Result<(), String> {
    Glob::new(text).map(|_| ()).map_err(|e| e.kind().to_string())
}

fn set(globs: &[String]) -> Result<Option<GlobSet>, String> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| format!("{g:?}: {}", e.kind()))?);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

impl Filter {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Filter, String> {
        Ok(Filter { include: set(include)?, exclude: set(exclude)? })
    }

    /// The path itself matches an exclude glob: a directory so excluded is not scanned.
    pub(crate) fn excluded_here(&self, p: &Path) -> bool {
        self.exclude.as_ref().is_some_and(|x| x.is_match(p))
    }

    /// The path or a directory above it matches an exclude glob.
    pub(crate) fn excluded(&self, p: &Path) -> bool {
        self.exclude.as_ref().is_some_and(|x| p.ancestors().any(|a| x.is_match(a)))
    }

    /// Reported: not under an excluded path, and matching an include glob when there are any.
    pub(crate) fn reported(&self, p: &Path) -> bool {
        !self.excluded(p) && self.include.as_ref().is_none_or(|i| i.is_match(p))
    }

    /// `change` as seen through the filter: a rename with one side filtered out is the delete or
    /// the create the other side is.
    pub(crate) fn apply(&self, c: Change) -> Option<Change> {
        if self.include.is_none() && self.exclude.is_none() {
            return Some(c);
        }
        match (c.kind, c.target) {
            (EventKind::FileRename, Some(to)) => match (self.reported(&c.path), self.reported(&to)) {
                (true, true) => Some(Change { target: Some(to), ..c }),
                (true, false) => Some(Change::new(EventKind::FileDelete, c.path, c.dir)),
                (false, true) => Some(Change::new(EventKind::FileCreate, to, c.dir)),
                (false, false) => None,
            },
            (_, target) => self.reported(&c.path).then_some(Change { target, ..c }),
        }
    }
}

/// Why a scan runs; says how to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanWhy {
    Startup,
    NewDir,
    Periodic,
    Rescan,
}

impl ScanWhy {
    fn message(self) -> &'static str {
        match self {
            ScanWhy::Startup => "found by the start-up scan: changed while picket was not running",
            ScanWhy::NewDir => "found by the scan of a new directory",
            ScanWhy::Periodic => "found by a periodic scan (inotify watch limit reached)",
            ScanWhy::Rescan => "found by a rescan after the kernel's event queue overflowed",
        }
    }
}

/// Everything the worker needs.
#[derive(Debug)]
pub(crate) struct Worker {
    pub rx: Receiver<Work>,
    pub out: EventTx,
    pub baseline: Baseline,
    pub roots: Vec<PathBuf>,
    pub filter: Filter,
    pub hash_max: u64,
    pub scan_interval: Duration,
    pub status: Arc<Mutex<StatusState>>,
    pub stop: Arc<AtomicBool>,
    /// New directories waiting for their scan, oldest first, with the time they are due.
    pub pending_dirs: VecDeque<(PathBuf, Instant)>,
}

/// Counts a per-file problem (a monitored process can cause any number of them).
fn count(out: &EventTx, reason: &str) {
    out.count_drop(reason, 1);
}

impl Worker {
    pub(crate) fn run(mut self) {
        let roots = self.roots.clone();
        if let Err(e) = self.baseline.forget_roots_except(&roots) {
            self.sql_error(&e);
        }
        for root in &roots {
            if self.stopping() {
                break;
            }
            self.scan(root, ScanWhy::Startup);
        }
        lock(&self.status).scanning = false;
        lock(&self.status).publish();

        let mut next_periodic = Instant::now() + self.scan_interval;
        // Changes are committed to the baseline when the queue goes idle, or at least every
        // COMMIT_EVERY: one commit per trickling event would cost more than the rest of its work.
        let mut uncommitted_since: Option<Instant> = None;
        let mut last_batch = Instant::now() - WORK_LINGER;
        loop {
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            if uncommitted_since.is_some() {
                wake = wake.min(now + COMMIT_IDLE);
            }
            if let Some((_, due)) = self.pending_dirs.front() {
                wake = wake.min(*due);
            }
            if !lock(&self.status).degraded.is_empty() {
                wake = wake.min(next_periodic);
            }
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(first) => {
                    let drained = self.batch(first);
                    let since = *uncommitted_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= COMMIT_EVERY {
                        self.commit();
                        uncommitted_since = None;
                    }
                    if drained && now.saturating_duration_since(last_batch) < WORK_LINGER && !self.stopping()
                    {
                        thread::sleep(WORK_LINGER);
                    }
                    last_batch = now;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.commit();
                    uncommitted_since = None;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.stopping() || self.out.is_closed() {
                // Whatever is still queued is reported (without hashes) before the thread ends.
                while let Ok(w) = self.rx.try_recv() {
                    self.batch(w);
                }
                break;
            }
            self.due_dir_scans();
            if Instant::now() >= next_periodic {
                next_periodic = Instant::now() + self.scan_interval;
                let degraded: Vec<PathBuf> = lock(&self.status).degraded.iter().cloned().collect();
                for root in degraded {
                    self.scan(&root, ScanWhy::Periodic);
                }
            }
        }
        if let Err(e) = self.baseline.commit() {
            self.sql_error(&e);
        }
    }

    fn commit(&mut self) {
        if let Err(e) = self.baseline.commit() {
            self.sql_error(&e);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn sql_error(&self, _e: &rusqlite::Error) {
        count(&self.out, "baseline_error");
    }

    /// One transaction: `first` and whatever else is queued, up to [`BATCH`]. True when that
    /// emptied the queue.
    fn batch(&mut self, first: Work) -> bool {
        let mut items = Vec::with_capacity(BATCH);
        items.push(first);
        let mut drained = false;
        while items.len() < BATCH {
            match self.rx.try_recv() {
                Ok(w) => items.push(w),
                Err(_) => {
                    drained = true;
                    break;
                }
            }
        }
        if let Err(e) = self.baseline.begin() {
            self.sql_error(&e);
        }
        let mut rescan = false;
        let mut items = items.into_iter().peekable();
        while let Some(w) = items.next() {
            match w {
                Work::Rescan => rescan = true,
                Work::Appeared(path) => {
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        self.queue_dir_scan(path);
                    }
                }
                Work::Change(c) => {
                    // Debounce: a modify or attrib immediately followed by the same one for the
                    // same path says nothing the second does not (whose hash is read later).
                    let repeated = matches!(c.kind, EventKind::FileModify | EventKind::FileAttrib)
                        && matches!(items.peek(), Some(Work::Change(n)) if n.kind == c.kind && n.path == c.path);
                    if !repeated {
                        self.apply(c);
                    }
                }
            }
        }
        if rescan {
            for root in self.roots.clone() {
                self.scan(&root, ScanWhy::Rescan);
            }
        }
        drained
    }

    fn due_dir_scans(&mut self) {
        let now = Instant::now();
        while self.pending_dirs.front().is_some_and(|(_, due)| *due <= now) {
            if self.stopping() {
                return;
            }
            if let Some((dir, _)) = self.pending_dirs.pop_front() {
                self.scan(&dir, ScanWhy::NewDir);
            }
        }
    }

    fn queue_dir_scan(&mut self, dir: PathBuf) {
        if self.pending_dirs.iter().any(|(d, _)| dir.starts_with(d)) {
            return;
        }
        if self.pending_dirs.len() >= MAX_PENDING_DIRS {
            self.pending_dirs.clear();
            count(&self.out, "scan_queue_full");
            for root in self.roots.clone() {
                self.pending_dirs.push_back((root, Instant::now() + NEW_DIR_SETTLE));
            }
            return;
        }
        self.pending_dirs.push_back((dir, Instant::now() + NEW_DIR_SETTLE));
    }

    /// The entry for `path` (whose `lstat` is `meta`), hashing a regular file unless `reuse`
    /// holds a hash for the same content.
    fn entry(&self, path: &Path, meta: &fs::Metadata, reuse: Option<&Entry>) -> Entry {
        let mut e = Entry::from_meta(meta);
        if e.kind != Kind::File {
            return e;
        }
        if let Some(old) = reuse
            && old.hash.is_some()
            && old.same_content_meta(&e)
        {
            e.hash.clone_from(&old.hash);
            return e;
        }
        if self.hash_max == 0 || e.size > self.hash_max {
            return e;
        }
        if e.size == 0 {
            // The digest of nothing is a constant: no need to open the file (a new file is
            // usually still empty at its create; its close-write brings the real hash).
            e.hash = Some(EMPTY_SHA256.to_string());
            return e;
        }
        if self.stopping() {
            // Shutting down: report now, the next start-up scan hashes it.
            return e;
        }
        match sha256_file(path, self.hash_max) {
            Ok(h) => {
                let mut fresh = Entry::from_meta(&h.meta);
                fresh.hash = h.sha256;
                fresh
            }
            Err(err) => {
                count(&self.out, hash_error_reason(&err));
                e
            }
        }
    }

    /// A live change: read the path, hash it, update the baseline, report.
    fn apply(&mut self, c: Change) {
        let Change { kind, path, target, dir } = c;
        let res = match kind {
            EventKind::FileDelete => {
                let res = self.baseline.remove_tree(&path);
                self.emit(kind, &path, None, None, dir, None);
                res
            }
            EventKind::FileRename => {
                let Some(to) = target else { return };
                let res = self.baseline.rename_tree(&path, &to);
                let old = self.baseline.get(&to).ok().flatten();
                let entry = fs::symlink_metadata(&to).ok().map(|m| self.entry(&to, &m, old.as_ref()));
                if let Some(e) = &entry {
                    self.record(&to, e);
                }
                self.emit(kind, &path, Some(&to), entry.as_ref(), dir, None);
                res
            }
            _ => {
                let meta = fs::symlink_metadata(&path).ok();
                // An attribute change on a path that is already gone is the link-count change of
                // an unlink; the delete that follows says it better.
                if kind == EventKind::FileAttrib && meta.is_none() {
                    return;
                }
                let old = if kind == EventKind::FileModify {
                    None
                } else {
                    self.baseline.get(&path).ok().flatten()
                };
                let entry = meta.map(|m| self.entry(&path, &m, old.as_ref()));
                if let Some(e) = &entry {
                    self.record(&path, e);
                    if kind == EventKind::FileCreate && e.kind == Kind::Dir {
                        // Files made in it before its watch existed are found by this scan.
                        self.queue_dir_scan(path.clone());
                    }
                }
                self.emit(kind, &path, None, entry.as_ref(), dir, None);
                Ok(())
            }
        };
        if let Err(e) = res {
            self.sql_error(&e);
        }
    }

    fn record(&self, path: &Path, e: &Entry) {
        if let Err(err) = self.baseline.put(path, e, 0) {
            self.sql_error(&err);
        }
    }

    fn emit(
        &self,
        kind: EventKind,
        path: &Path,
        target: Option<&Path>,
        entry: Option<&Entry>,
        dir: bool,
        scan: Option<ScanWhy>,
    ) {
        if path.to_str().is_none() || target.is_some_and(|t| t.to_str().is_none()) {
            // Reported lossily (`file.path` is a string); counted so it shows.
            count(&self.out, "non_utf8_path");
        }
        let ev = file_event(kind, path, target, entry, dir, scan);
        // Full: dropped and counted by `send`. Closed: the loop notices.
        let _ = self.out.send(ev);
    }

    /// Compares the tree at `root` with the baseline and reports the differences (see the
    /// module doc for which scan reports what).
    pub(crate) fn scan(&mut self, root: &Path, why: ScanWhy) {
        if let Err(e) = self.baseline.begin() {
            self.sql_error(&e);
        }
        if let Err(e) = self.scan_inner(root, why) {
            self.sql_error(&e);
        }
        if let Err(e) = self.baseline.commit() {
            self.sql_error(&e);
        }
    }

    fn scan_inner(&mut self, root: &Path, why: ScanWhy) -> rusqlite::Result<()> {
        let sweep = why != ScanWhy::NewDir;
        let previous = if sweep { self.baseline.root_generation(root)? } else { None };
        // The first scan of a tree builds its baseline: there is nothing to compare with.
        let silent = why == ScanWhy::Startup && previous.is_none();
        let generation = if sweep { previous.unwrap_or(0) + 1 } else { 0 };

        match fs::symlink_metadata(root) {
            Ok(_) => {}
            // Gone: everything under it was deleted (the sweep reports it).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Cannot tell what is there: report nothing rather than a tree of deletes.
            Err(_) => {
                count(&self.out, "scan_unreadable");
                return Ok(());
            }
        }

        let mut unreadable: Vec<PathBuf> = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        let mut first = true;
        while let Some(path) = stack.pop() {
            if self.stopping() {
                return Ok(());
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue, // vanished while scanning: the sweep or a live event says so
            };
            if !first && self.filter.excluded_here(&path) {
                continue;
            }
            let root_itself = mem::replace(&mut first, false);
            if self.filter.reported(&path) {
                self.scan_one(&path, &meta, why, silent, generation, root_itself && why == ScanWhy::NewDir)?;
            }
            if meta.is_dir() {
                match fs::read_dir(&path) {
                    Ok(rd) => {
                        for entry in rd.flatten() {
                            stack.push(entry.path());
                        }
                    }
                    Err(_) => {
                        count(&self.out, "scan_unreadable");
                        unreadable.push(path);
                    }
                }
            }
        }

        if sweep {
            for (path, entry) in self.baseline.stale(root, generation)? {
                if self.stopping() {
                    return Ok(());
                }
                if unreadable.iter().any(|u| path.starts_with(u)) {
                    continue;
                }
                self.baseline.remove_tree(&path)?;
                if !silent && self.filter.reported(&path) {
                    self.emit(EventKind::FileDelete, &path, None, None, entry.kind == Kind::Dir, Some(why));
                }
            }
            self.baseline.set_root_generation(root, generation)?;
        }
        Ok(())
    }

    fn scan_one(
        &mut self,
        path: &Path,
        meta: &fs::Metadata,
        why: ScanWhy,
        silent: bool,
        generation: i64,
        known_new_dir: bool,
    ) -> rusqlite::Result<()> {
        let old = self.baseline.get(path)?;
        let now = Entry::from_meta(meta);
        if let Some(o) = &old
            && o.unchanged_since(&now)
        {
            if generation != 0 {
                self.baseline.touch(path, generation)?;
            }
            return Ok(());
        }
        let new = self.entry(path, meta, None);
        let kind = match &old {
            _ if known_new_dir => None,
            None => Some(EventKind::FileCreate),
            Some(o) => {
                let content = o.kind != new.kind
                    || match new.kind {
                        Kind::Dir => false,
                        Kind::File if o.hash.is_some() && new.hash.is_some() => o.hash != new.hash,
                        _ => o.size != new.size || o.mtime_ns != new.mtime_ns || o.inode != new.inode,
                    };
                let attrib = o.mode != new.mode || o.uid != new.uid || o.gid != new.gid;
                if content {
                    Some(EventKind::FileModify)
                } else if attrib {
                    Some(EventKind::FileAttrib)
                } else {
                    None
                }
            }
        };
        self.baseline.put(path, &new, generation)?;
        if let Some(kind) = kind
            && !silent
        {
            self.emit(kind, path, None, Some(&new), new.kind == Kind::Dir, Some(why));
        }
        Ok(())
    }
}

fn hash_error_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "hash_vanished",
        io::ErrorKind::PermissionDenied => "hash_unreadable",
        // ELOOP: replaced by a symlink since the lstat; not followed, not hashed.
        _ if e.raw_os_error() == Some(libc::ELOOP) => "hash_symlink",
        _ => "hash_error",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The picket event for one change with what was read about it (`None`: nothing, e.g. deleted).
pub(crate) fn file_event(
    kind: EventKind,
    path: &Path,
    target: Option<&Path>,
    entry: Option<&Entry>,
    dir: bool,
    scan: Option<ScanWhy>,
) -> Event {
    let mut file = File {
        path: path.to_string_lossy().into_owned(),
        target_path: target.map(|t| t.to_string_lossy().into_owned()),
        ..File::default()
    };
    match entry {
        Some(e) => {
            file.r#type = Some(e.kind.as_str().to_string());
            // ECS: size only means something for regular files.
            file.size = (e.kind == Kind::File).then_some(e.size);
            file.inode = Some(e.inode);
            file.mode = Some(format!("{:04o}", e.mode));
            file.uid = Some(e.uid);
            file.gid = Some(e.gid);
            file.mtime = Some(Timestamp::from_unix_nanos(e.mtime_ns));
            file.hash = e.hash.clone().map(|sha256| FileHash { sha256 });
        }
        // inotify tells a directory from everything else, but not a file from a symlink.
        None => file.r#type = dir.then(|| "dir".to_string()),
    }
    let mut ev = Event::new(kind, Timestamp::now());
    ev.event.severity = severity::INFO;
    ev.event.dataset = Some(DATASET.to_string());
    ev.event.module = Some(scan.map_or(MODULE, |_| "scan").to_string());
    ev.message = scan.map(|s| s.message().to_string());
    ev.file = Some(file);
    ev
}

/// The event for a change reported without the worker (its queue was full): metadata from
/// `lstat`, no hash.
pub(crate) fn unhashed_event(c: &Change) -> Option<Event> {
    let read_from = match c.kind {
        EventKind::FileDelete => None,
        EventKind::FileRename => c.target.as_deref(),
        _ => Some(c.path.as_path()),
    };
    let entry = read_from.and_then(|p| fs::symlink_metadata(p).ok()).map(|m| Entry::from_meta(&m));
    if c.kind == EventKind::FileAttrib && entry.is_none() {
        return None;
    }
    Some(file_event(c.kind, &c.path, c.target.as_deref(), entry.as_ref(), c.dir, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn rename(from: &str, to: &str) -> Change {
        Change { kind: EventKind::FileRename, path: p(from), target: Some(p(to)), dir: false }
    }

    #[test]
    fn a_rename_across_the_filter_is_the_delete_or_create_of_the_visible_side() {
        let f = Filter::new(&["*.conf".into()], &["/w/cache".into()]).unwrap();
        let kind_path = |c: Option<Change>| c.map(|c| (c.kind, c.path, c.target));
        assert_eq!(
            kind_path(f.apply(rename("/w/a.conf", "/w/b.conf"))),
            Some((EventKind::FileRename, p("/w/a.conf"), Some(p("/w/b.conf"))))
        );
        assert_eq!(
            kind_path(f.apply(rename("/w/a.conf", "/w/cache/a.conf"))),
            Some((EventKind::FileDelete, p("/w/a.conf"), None))
        );
        assert_eq!(
            kind_path(f.apply(rename("/w/a.tmp", "/w/a.conf"))),
            Some((EventKind::FileCreate, p("/w/a.conf"), None))
        );
        assert_eq!(kind_path(f.apply(rename("/w/a.tmp", "/w/b.tmp"))), None);
        assert!(f.excluded(Path::new("/w/cache/deep/x.conf")) && !f.reported(Path::new("/w/cache/x.conf")));
        assert!(Filter::new(&["a[".into()], &[]).is_err());
    }
}
