//! The file source's inotify: one descriptor with a watch on every directory of the configured
//! trees (and on configured single files), read by its own thread (`picket-inotify`).
//!
//! What it asks the kernel for is only what the coalescer uses: create, write, close after
//! writing, delete, the two halves of a rename, attributes, and, on a configured path itself, its
//! own deletion or move. Not opens and reads: the worker opens every changed file to hash it, and
//! an `IN_OPEN` watch would wake this thread once more for each of its own reads.
//!
//! | kernel event                         | [`Input`] / [`Notice`]                           |
//! |--------------------------------------|--------------------------------------------------|
//! | `IN_CREATE`                          | `Created` (a directory is then watched, recursively) |
//! | `IN_MODIFY`                          | `Written`                                        |
//! | `IN_CLOSE_WRITE`                     | `ClosedWrite`                                    |
//! | `IN_DELETE`; `IN_DELETE_SELF` of a configured path | `Removed`                          |
//! | `IN_MOVED_FROM`                      | `RenameFrom` with the cookie (a directory's watches are removed) |
//! | `IN_MOVED_TO`                        | `RenameTo` with the cookie (a directory is watched again under its new name) |
//! | `IN_MOVE_SELF` of a configured path  | `RenameFrom` without a cookie: a delete, as seen from the trees |
//! | `IN_ATTRIB`                          | `Attrib`                                         |
//! | `IN_Q_OVERFLOW`                      | `Overflow`                                       |
//! | `IN_IGNORED`                         | the watch is forgotten                           |
//! | a new directory over the watch limit | `WatchLimit`                                     |
//! | another error reading or watching    | `OsError`                                        |
//!
//! **Wake-ups.** The thread sleeps in `poll` until the kernel has events. Under load it would
//! wake for nearly every one; instead, woken again within [`READ_LINGER`] of the last time, it
//! lets events gather for that long first and reads them all at once (the kernel also merges a
//! repeated event, a write storm on one file, while they wait), then hands them to the coalescer
//! under one lock. A file event is at most that much later; it has no deadline tighter than the
//! coalescer's own windows.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use super::{Input, Shared, lock};

/// Under load, how long the reader lets events gather before reading them (see the module docs).
pub const READ_LINGER: Duration = Duration::from_millis(10);

/// Bytes read per `read` from the descriptor: ~60 events with short names.
const READ_BUF: usize = 4096;

/// What the reader hands to [`Shared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    Input(Input),
    /// The kernel's queue overflowed: events were lost, the trees must be rescanned.
    Overflow,
    /// A directory under this path could not be watched: the watch limit is reached.
    WatchLimit(PathBuf),
    /// Another error reading events or adding a watch.
    OsError,
}

/// Why a configured path could not be watched.
#[derive(Debug)]
pub(crate) struct WatchError {
    pub kind: WatchErrorKind,
    /// The path the error is about: the configured path or a directory under it.
    pub at: PathBuf,
}

#[derive(Debug)]
pub(crate) enum WatchErrorKind {
    NotFound,
    Denied,
    /// `fs.inotify.max_user_watches` reached.
    Limit,
    Io(io::Error),
}

impl WatchError {
    fn new(at: &Path, e: Errno) -> WatchError {
        let kind = match e {
            Errno::NOENT | Errno::NOTDIR => WatchErrorKind::NotFound,
            Errno::ACCESS | Errno::PERM => WatchErrorKind::Denied,
            Errno::NOSPC => WatchErrorKind::Limit,
            e => WatchErrorKind::Io(e.into()),
        };
        WatchError { kind, at: at.to_path_buf() }
    }

    fn io(at: &Path, e: &io::Error) -> WatchError {
        match e.raw_os_error() {
            Some(n) => WatchError::new(at, Errno::from_raw_os_error(n)),
            None => WatchError {
                kind: WatchErrorKind::Io(io::Error::new(e.kind(), e.to_string())),
                at: at.into(),
            },
        }
    }
}

/// What every watch reports.
fn mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::MODIFY
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ATTRIB
        | WatchFlags::DONT_FOLLOW
}

/// A watched directory or file.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    /// A configured path (not a directory found under one): its own deletion and move count.
    root: bool,
}

/// The descriptor and what each of its watches stands for.
#[derive(Debug)]
pub(crate) struct Inotify {
    fd: OwnedFd,
    watches: HashMap<i32, Watched>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(Inotify { fd, watches: HashMap::new(), buf: vec![MaybeUninit::uninit(); READ_BUF] })
    }

    /// Watch a configured path: a directory with everything under it (symlinks are not
    /// followed, except the path itself), or a single file. All or nothing: on an error the
    /// watches this call added are removed again.
    pub fn watch(&mut self, path: &Path) -> Result<(), WatchError> {
        let root_mask = mask() | WatchFlags::DELETE_SELF | WatchFlags::MOVE_SELF;
        // The configured path itself may be a symlink (to the tree meant); follow that one.
        let wd = inotify::add_watch(&self.fd, path, root_mask.difference(WatchFlags::DONT_FOLLOW))
            .map_err(|e| WatchError::new(path, e))?;
        self.watches.insert(wd, Watched { path: path.to_path_buf(), root: true });
        let is_dir = std::fs::metadata(path).map_err(|e| WatchError::io(path, &e))?.is_dir();
        if !is_dir {
            return Ok(());
        }
        if let Err(e) = self.walk(path, &mut |_| {}) {
            self.unwatch_under(path);
            return Err(e);
        }
        Ok(())
    }

    /// Watch every directory below `dir` (not `dir` itself), depth first. Stops at the first
    /// watch that fails; directories that vanish or cannot be listed while walking are skipped
    /// (a vanished one is not an error, an unreadable one cannot be watched either: its
    /// `add_watch` reports that).
    fn walk(&mut self, dir: &Path, added: &mut impl FnMut(&Path)) -> Result<(), WatchError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries.flatten() {
                // d_type from the directory entry: a symlink is not a directory here.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let sub = entry.path();
                match inotify::add_watch(&self.fd, &sub, mask() | WatchFlags::ONLYDIR) {
                    Ok(wd) => {
                        self.watches.insert(wd, Watched { path: sub.clone(), root: false });
                        added(&sub);
                        stack.push(sub);
                    }
                    Err(Errno::NOENT | Errno::NOTDIR) => {} // gone, or replaced, since listed
                    Err(e) => return Err(WatchError::new(&sub, e)),
                }
            }
        }
        Ok(())
    }

    /// A directory appeared (created or moved in): watch it and everything under it.
    fn watch_new_dir(&mut self, dir: &Path, notices: &mut Vec<Notice>) {
        let result = match inotify::add_watch(&self.fd, dir, mask() | WatchFlags::ONLYDIR) {
            Ok(wd) => {
                self.watches.insert(wd, Watched { path: dir.to_path_buf(), root: false });
                self.walk(dir, &mut |_| {})
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(()),
            Err(e) => Err(WatchError::new(dir, e)),
        };
        match result {
            Ok(()) => {}
            Err(WatchError { kind: WatchErrorKind::Limit, at }) => notices.push(Notice::WatchLimit(at)),
            Err(WatchError { kind: WatchErrorKind::NotFound, .. }) => {}
            Err(_) => notices.push(Notice::OsError),
        }
    }

    /// Remove the watches on `path` and everything under it (a directory moved out of sight, or
    /// a configured path that failed half-way).
    fn unwatch_under(&mut self, path: &Path) {
        let fd = &self.fd;
        self.watches.retain(|wd, w| {
            let under = w.path.starts_with(path);
            if under {
                let _ = inotify::remove_watch(fd, *wd);
            }
            !under
        });
    }

    /// Read everything queued (the descriptor does not block) and turn it into notices.
    pub fn read(&mut self, notices: &mut Vec<Notice>) {
        // Directories that appeared or left, acted on after the batch is read (the reader
        // borrows the buffer); events already queued for them still resolve, by descriptor.
        let mut appeared: Vec<PathBuf> = Vec::new();
        let mut left: Vec<PathBuf> = Vec::new();
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(Errno::AGAIN | Errno::INTR) => break,
                Err(_) => {
                    notices.push(Notice::OsError);
                    break;
                }
            };
            let flags = ev.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                notices.push(Notice::Overflow);
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                self.watches.remove(&ev.wd());
                continue;
            }
            let Some(w) = self.watches.get(&ev.wd()) else { continue };
            let path = match ev.file_name() {
                Some(name) => w.path.join(OsStr::from_bytes(name.to_bytes())),
                None => w.path.clone(),
            };
            if ev.file_name().is_none() && !w.root {
                // A directory's own events (only `IN_IGNORED` is asked for): nothing to report.
                continue;
            }
            translate(flags, path, ev.cookie(), notices, &mut |p, came| {
                if came { appeared.push(p) } else { left.push(p) }
            });
        }
        for p in left {
            self.unwatch_under(&p);
        }
        for p in appeared {
            self.watch_new_dir(&p, notices);
        }
    }
}

/// One kernel event as inputs for the coalescer. `dirs(path, true)` for a directory that
/// appeared, `dirs(path, false)` for one that moved away.
fn translate(
    flags: ReadFlags,
    path: PathBuf,
    cookie: u32,
    notices: &mut Vec<Notice>,
    dirs: &mut impl FnMut(PathBuf, bool),
) {
    let dir = flags.contains(ReadFlags::ISDIR);
    let cookie = Some(usize::try_from(cookie).unwrap_or(usize::MAX));
    let mut push = |i: Input| notices.push(Notice::Input(i));
    if flags.contains(ReadFlags::MOVED_FROM) {
        if dir {
            dirs(path.clone(), false);
        }
        push(Input::RenameFrom { path: path.clone(), cookie });
    }
    if flags.contains(ReadFlags::MOVED_TO) {
        if dir {
            dirs(path.clone(), true);
        }
        push(Input::RenameTo { path: path.clone(), cookie });
    }
    if flags.contains(ReadFlags::MOVE_SELF) {
        push(Input::RenameFrom { path: path.clone(), cookie: None });
    }
    if flags.contains(ReadFlags::CREATE) {
        if dir {
            dirs(path.clone(), true);
        }
        push(Input::Created { path: path.clone(), dir });
    }
    if flags.intersects(ReadFlags::DELETE | ReadFlags::DELETE_SELF) {
        push(Input::Removed { path: path.clone(), dir });
    }
    if flags.contains(ReadFlags::MODIFY) {
        push(Input::Written(path.clone()));
    }
    if flags.contains(ReadFlags::CLOSE_WRITE) {
        push(Input::ClosedWrite(path.clone()));
    }
    if flags.contains(ReadFlags::ATTRIB) {
        push(Input::Attrib(path));
    }
}

/// The reader thread and how to stop it.
#[derive(Debug)]
pub(crate) struct ReaderThread {
    stop: OwnedFd,
    thread: JoinHandle<()>,
}

impl ReaderThread {
    /// Read `ino` on a thread of its own until [`ReaderThread::stop`], handing what it reads to
    /// `shared`.
    pub fn spawn(mut ino: Inotify, shared: Arc<Mutex<Shared>>) -> io::Result<ReaderThread> {
        let stop = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        let their_stop = stop.try_clone()?;
        let thread = std::thread::Builder::new().name("picket-inotify".into()).spawn(move || {
            use rustix::event::{PollFd, PollFlags, poll};
            let mut notices = Vec::new();
            let mut last_wake: Option<Instant> = None;
            loop {
                let mut fds = [PollFd::new(&ino.fd, PollFlags::IN), PollFd::new(&their_stop, PollFlags::IN)];
                match poll(&mut fds, None) {
                    Ok(_) if !fds[1].revents().is_empty() => break,
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(_) => break,
                }
                let now = Instant::now();
                if last_wake.is_some_and(|t| now.saturating_duration_since(t) < READ_LINGER) {
                    // Busy: let this wake-up's events gather with the next ones.
                    std::thread::sleep(READ_LINGER);
                }
                last_wake = Some(now);
                ino.read(&mut notices);
                if notices.is_empty() {
                    continue;
                }
                let mut sh = lock(&shared);
                if sh.is_closed() {
                    break;
                }
                let now = Instant::now();
                for n in notices.drain(..) {
                    sh.on_notice(n, now);
                }
            }
        })?;
        Ok(ReaderThread { stop, thread })
    }

    /// Ask the thread to stop; returns its handle, to wait for it if wanted.
    pub fn stop(self) -> JoinHandle<()> {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        self.thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn run(flags: ReadFlags, path: &str, cookie: u32) -> (Vec<Notice>, Vec<(PathBuf, bool)>) {
        let mut notices = Vec::new();
        let mut dirs = Vec::new();
        translate(flags, p(path), cookie, &mut notices, &mut |p, a| dirs.push((p, a)));
        (notices, dirs)
    }

    fn input(i: Input) -> Notice {
        Notice::Input(i)
    }

    #[test]
    fn kernel_events_become_coalescer_inputs() {
        assert_eq!(run(ReadFlags::MODIFY, "/w/a", 0).0, vec![input(Input::Written(p("/w/a")))]);
        assert_eq!(run(ReadFlags::CLOSE_WRITE, "/w/a", 0).0, vec![input(Input::ClosedWrite(p("/w/a")))]);
        assert_eq!(run(ReadFlags::ATTRIB, "/w/a", 0).0, vec![input(Input::Attrib(p("/w/a")))]);
        assert_eq!(
            run(ReadFlags::CREATE, "/w/a", 0).0,
            vec![input(Input::Created { path: p("/w/a"), dir: false })]
        );
        assert_eq!(
            run(ReadFlags::DELETE | ReadFlags::ISDIR, "/w/d", 0).0,
            vec![input(Input::Removed { path: p("/w/d"), dir: true })]
        );
        assert_eq!(
            run(ReadFlags::MOVED_FROM, "/w/a", 7).0,
            vec![input(Input::RenameFrom { path: p("/w/a"), cookie: Some(7) })]
        );
        assert_eq!(
            run(ReadFlags::MOVED_TO, "/w/b", 7).0,
            vec![input(Input::RenameTo { path: p("/w/b"), cookie: Some(7) })]
        );
        // A configured path moved away: a rename half that can never pair, so a delete.
        assert_eq!(
            run(ReadFlags::MOVE_SELF, "/w", 0).0,
            vec![input(Input::RenameFrom { path: p("/w"), cookie: None })]
        );
        assert!(run(ReadFlags::OPEN | ReadFlags::CLOSE_NOWRITE, "/w/a", 0).0.is_empty());
    }

    #[test]
    fn directories_that_appear_are_watched_and_those_that_leave_are_not() {
        let (_, dirs) = run(ReadFlags::CREATE | ReadFlags::ISDIR, "/w/new", 0);
        assert_eq!(dirs, vec![(p("/w/new"), true)]);
        let (_, dirs) = run(ReadFlags::MOVED_TO | ReadFlags::ISDIR, "/w/in", 3);
        assert_eq!(dirs, vec![(p("/w/in"), true)]);
        let (_, dirs) = run(ReadFlags::MOVED_FROM | ReadFlags::ISDIR, "/w/out", 3);
        assert_eq!(dirs, vec![(p("/w/out"), false)]);
        let (_, dirs) = run(ReadFlags::CREATE, "/w/file", 0);
        assert!(dirs.is_empty());
    }

    #[test]
    fn a_tree_is_watched_whole_and_a_directory_moved_inside_it_keeps_reporting() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("w");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut ino = Inotify::new().unwrap();
        ino.watch(&root).unwrap();
        assert_eq!(ino.watches.len(), 3);

        std::fs::rename(root.join("a"), root.join("c")).unwrap();
        let mut notices = Vec::new();
        ino.read(&mut notices);
        std::fs::write(root.join("c/b/f"), b"x").unwrap();
        ino.read(&mut notices);
        let f = root.join("c/b/f");
        assert!(notices.contains(&input(Input::Created { path: f.clone(), dir: false })), "{notices:?}");
        assert!(notices.contains(&input(Input::ClosedWrite(f))), "{notices:?}");
        assert_eq!(ino.watches.len(), 3);
    }

    #[test]
    fn a_directory_moved_out_of_the_tree_is_no_longer_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("w");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut ino = Inotify::new().unwrap();
        ino.watch(&root).unwrap();
        std::fs::rename(root.join("a"), tmp.path().join("out")).unwrap();
        let mut notices = Vec::new();
        ino.read(&mut notices);
        let from = root.join("a");
        assert!(
            matches!(notices.as_slice(), [Notice::Input(Input::RenameFrom { path, cookie: Some(_) })] if *path == from),
            "{notices:?}"
        );
        assert_eq!(ino.watches.len(), 1, "only the root is left");
        notices.clear();
        std::fs::write(tmp.path().join("out/b/f"), b"x").unwrap();
        ino.read(&mut notices);
        assert!(notices.is_empty(), "{notices:?}");
    }

    #[test]
    fn reading_a_watched_file_is_not_an_event() {
        // The worker opens and reads every changed file to hash it: that must not come back.
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"content").unwrap();
        let mut ino = Inotify::new().unwrap();
        ino.watch(tmp.path()).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"content");
        let mut notices = Vec::new();
        ino.read(&mut notices);
        assert!(notices.is_empty(), "{notices:?}");
        std::fs::write(&f, b"changed").unwrap();
        ino.read(&mut notices);
        assert!(notices.contains(&input(Input::ClosedWrite(f))), "{notices:?}");
    }

    #[test]
    fn a_missing_path_is_not_found_and_leaves_no_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        let e = ino.watch(&tmp.path().join("missing")).unwrap_err();
        assert!(matches!(e.kind, WatchErrorKind::NotFound), "{e:?}");
        assert!(ino.watches.is_empty());
    }
}
