//! Tailing the auth logs: line assembly with a bounded buffer, rotation and truncation, and the
//! persisted offsets. Blocking I/O only; the source runs [`Tailer::poll`] on tokio's blocking pool.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memchr::memchr;
use picket_event::Timestamp;
use serde::{Deserialize, Serialize};

use super::parse::{ParseOutcome, YearHint, parse_line};
use crate::{EventTx, SendError};

/// A line longer than this is skipped up to its newline and counted as `auth.line_too_long`.
/// Real auth lines are under 1 KiB; sshd caps its own messages at 1 KiB before escaping.
pub const MAX_LINE: usize = 16 * 1024;

/// One `pread` at most this big; the buffer is allocated once per source.
const READ_CHUNK: usize = 64 * 1024;

/// At most this much is read from one file per poll, so a flood in one log cannot starve the
/// others or delay shutdown; the rest is read on the next poll.
const MAX_READ_PER_POLL: u64 = 8 * 1024 * 1024;

/// After a rename rotation the old file is still read this long: the logger writes to it until
/// logrotate's postrotate signal makes it reopen the path.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Version of the state file's layout.
const STATE_VERSION: u32 = 1;

/// The state file: one entry per configured path.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    files: Vec<FileState>,
}

/// Where reading of one file stopped: always just after a newline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileState {
    path: PathBuf,
    dev: u64,
    ino: u64,
    offset: u64,
}

/// Read the state file. A missing file is a first run; an unreadable one is reported and then
/// treated as a first run (start at the end, rather than replay history as new events).
pub(super) fn load_state(path: &Path) -> (BTreeMap<PathBuf, FileState>, Option<String>) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (BTreeMap::new(), None),
        Err(e) => return (BTreeMap::new(), Some(format!("cannot read {}: {e}", path.display()))),
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(s) if s.version == STATE_VERSION => {
            (s.files.into_iter().map(|f| (f.path.clone(), f)).collect(), None)
        }
        Ok(s) => (BTreeMap::new(), Some(format!("{}: unknown state version {}", path.display(), s.version))),
        Err(e) => {
            (BTreeMap::new(), Some(format!("{} is corrupt ({e}); starting at the end", path.display())))
        }
    }
}

/// Write the state file atomically: a temporary file beside it, then rename. Not fsynced: a
/// process crash cannot lose it; a power loss may lose the last offsets (the logs are usually
/// on the same storage and lose their last lines too).
fn save_state(path: &Path, files: &[FileState]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let state = StateFile { version: STATE_VERSION, files: files.to_vec() };
    let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    fs::write(&tmp, json)?;
    fs::rename(&tmp, path)
}

/// What a poll produced, counted for the status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) events: u64,
    pub(super) malformed: u64,
    pub(super) too_long: u64,
}

/// What the line sink says after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The pipeline is gone: stop, and do not count this line as read.
    Stop,
}

/// A line, or the fact that one was too long.
#[derive(Debug)]
enum Line<'a> {
    Complete(&'a [u8]),
    TooLong,
}

/// One open log file and the line being assembled.
#[derive(Debug)]
struct Reader {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read so far.
    pos: u64,
    /// End of the last whole line handed on: what is persisted.
    committed: u64,
    /// The start of a line whose newline has not come yet; never more than [`MAX_LINE`].
    partial: Vec<u8>,
    /// Discarding up to the next newline (a line over [`MAX_LINE`], or the tail of a line we
    /// started in the middle of).
    skipping: bool,
    /// Whether the line being skipped is counted as too long (not if we merely joined late).
    skip_counts: bool,
}

impl Reader {
    /// Open `path`, checking it is still the file `(dev, ino)`, reading from `offset`. An
    /// offset that is not just after a newline starts by skipping to the next one, so the tail
    /// of a line is never parsed as a line of its own.
    fn open(path: &Path, offset: Option<u64>) -> io::Result<Reader> {
        let file = File::open(path)?;
        Reader::from_file(file, offset)
    }

    /// `offset` `None` means the end of the file.
    fn from_file(file: File, offset: Option<u64>) -> io::Result<Reader> {
        let meta = file.metadata()?;
        let len = meta.len();
        let offset = offset.unwrap_or(len).min(len);
        let mut skipping = false;
        if offset > 0 {
            let mut b = [0u8; 1];
            let n = file.read_at(&mut b, offset - 1)?;
            skipping = n == 1 && b[0] != b'\n';
        }
        Ok(Reader {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            pos: offset,
            committed: offset,
            partial: Vec::new(),
            skipping,
            skip_counts: false,
        })
    }

    /// Start again at 0 (the file was truncated in place).
    fn rewind(&mut self) {
        self.pos = 0;
        self.committed = 0;
        self.partial.clear();
        self.skipping = false;
    }

    /// Read what is there (up to [`MAX_READ_PER_POLL`]) and hand on each whole line.
    fn read(&mut self, buf: &mut [u8], sink: &mut dyn FnMut(Line<'_>, YearHint) -> Flow) -> io::Result<Flow> {
        let mut budget = MAX_READ_PER_POLL;
        let mut year = None;
        while budget > 0 {
            let n = self.file.read_at(buf, self.pos)?;
            if n == 0 {
                break;
            }
            let year = match year {
                Some(y) => y,
                None => {
                    let mtime = self.file.metadata()?.modified()?;
                    *year.insert(YearHint::from_timestamp(Timestamp::from(mtime)))
                }
            };
            if self.feed(&buf[..n], year, sink) == Flow::Stop {
                return Ok(Flow::Stop);
            }
            budget = budget.saturating_sub(n as u64);
        }
        Ok(Flow::Continue)
    }

    /// Split `data` (read at `self.pos`) into lines.
    fn feed(
        &mut self,
        data: &[u8],
        year: YearHint,
        sink: &mut dyn FnMut(Line<'_>, YearHint) -> Flow,
    ) -> Flow {
        let mut i = 0;
        while i < data.len() {
            let nl = memchr(b'\n', &data[i..]);
            if self.skipping {
                match nl {
                    Some(n) => {
                        i += n + 1;
                        self.skipping = false;
                        if self.skip_counts && sink(Line::TooLong, year) == Flow::Stop {
                            return self.stop();
                        }
                        self.committed = self.pos + i as u64;
                    }
                    None => i = data.len(),
                }
                continue;
            }
            let Some(n) = nl else {
                let rest = &data[i..];
                if self.partial.len() + rest.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                    self.skip_counts = true;
                } else {
                    self.partial.extend_from_slice(rest);
                }
                i = data.len();
                continue;
            };
            let piece = &data[i..i + n];
            let flow = if self.partial.len() + piece.len() > MAX_LINE {
                self.partial.clear();
                sink(Line::TooLong, year)
            } else if self.partial.is_empty() {
                sink(Line::Complete(piece), year)
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(piece);
                let flow = sink(Line::Complete(&line), year);
                line.clear();
                self.partial = line;
                flow
            };
            if flow == Flow::Stop {
                return self.stop();
            }
            i += n + 1;
            self.committed = self.pos + i as u64;
        }
        self.pos += data.len() as u64;
        Flow::Continue
    }

    /// Forget what was read past the last handed-on line.
    fn stop(&mut self) -> Flow {
        self.pos = self.committed;
        self.partial.clear();
        self.skipping = false;
        Flow::Stop
    }
}

/// What we know about one configured path, for the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathState {
    NotYetLooked,
    Reading,
    Missing,
    Denied,
    Error(String),
}

/// One configured path: the file open under it, and a rotated-away one still being drained.
#[derive(Debug)]
struct FileTail {
    path: PathBuf,
    cur: Option<Reader>,
    old: Option<(Reader, Instant)>,
    state: PathState,
    /// Where the last run stopped in this path's file, until the file is opened.
    saved: Option<FileState>,
    /// The path had no file when first looked at: a file that appears later is new, and read
    /// from its start.
    from_start: bool,
}

impl FileTail {
    fn poll(&mut self, buf: &mut [u8], sink: &mut dyn FnMut(Line<'_>, YearHint) -> Flow) -> Flow {
        // The rotated-away file first: its lines are older than the new file's.
        if let Some((old, since)) = &mut self.old {
            let flow = old.read(buf, sink).unwrap_or(Flow::Continue);
            if flow == Flow::Stop {
                return flow;
            }
            if since.elapsed() > DRAIN_GRACE {
                self.old = None;
            }
        }
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                let first = self.state == PathState::NotYetLooked;
                self.state = match e.kind() {
                    io::ErrorKind::NotFound => PathState::Missing,
                    io::ErrorKind::PermissionDenied => PathState::Denied,
                    _ => PathState::Error(e.to_string()),
                };
                if first && self.state == PathState::Missing {
                    self.from_start = true;
                }
                // Renamed away and not yet recreated: the open file is still the log.
                return match &mut self.cur {
                    Some(r) => r.read(buf, sink).unwrap_or(Flow::Continue),
                    None => Flow::Continue,
                };
            }
        };
        let same = self.cur.as_ref().is_some_and(|r| r.dev == meta.dev() && r.ino == meta.ino());
        if same {
            let r = self.cur.as_mut().expect("checked above");
            if meta.len() < r.pos {
                // copytruncate: the file was emptied in place; what is in it now is new.
                r.rewind();
            }
            self.state = PathState::Reading;
            return self.read_cur(buf, sink);
        }
        if let Some(mut old) = self.cur.take() {
            // Rotated (rename + create): finish the old file, keep reading it for a while, and
            // read the new one from its start.
            if old.read(buf, sink).unwrap_or(Flow::Continue) == Flow::Stop {
                self.cur = Some(old);
                return Flow::Stop;
            }
            self.old = Some((old, Instant::now()));
            return self.open_cur(Some(0), buf, sink);
        }
        // First open in this run.
        let start = match self.saved.take() {
            Some(s) if s.dev == meta.dev() && s.ino == meta.ino() => {
                // Resume; a file now shorter than the offset was truncated while we were away.
                Some(if meta.len() < s.offset { 0 } else { s.offset })
            }
            Some(s) => {
                // Rotated while we were away: finish the old file if logrotate left it at `.1`.
                self.old = rotated_sibling(&self.path, &s).map(|r| (r, Instant::now()));
                if let Some((old, _)) = &mut self.old
                    && old.read(buf, sink).unwrap_or(Flow::Continue) == Flow::Stop
                {
                    return Flow::Stop;
                }
                Some(0)
            }
            None if self.from_start => Some(0),
            None => None,
        };
        self.open_cur(start, buf, sink)
    }

    fn open_cur(
        &mut self,
        start: Option<u64>,
        buf: &mut [u8],
        sink: &mut dyn FnMut(Line<'_>, YearHint) -> Flow,
    ) -> Flow {
        match Reader::open(&self.path, start) {
            Ok(r) => {
                self.cur = Some(r);
                self.state = PathState::Reading;
                self.read_cur(buf, sink)
            }
            Err(e) => {
                self.state = match e.kind() {
                    io::ErrorKind::PermissionDenied => PathState::Denied,
                    io::ErrorKind::NotFound => PathState::Missing,
                    _ => PathState::Error(e.to_string()),
                };
                Flow::Continue
            }
        }
    }

    fn read_cur(&mut self, buf: &mut [u8], sink: &mut dyn FnMut(Line<'_>, YearHint) -> Flow) -> Flow {
        let Some(r) = &mut self.cur else { return Flow::Continue };
        match r.read(buf, sink) {
            Ok(flow) => flow,
            Err(e) => {
                self.state = PathState::Error(e.to_string());
                Flow::Continue
            }
        }
    }

    fn file_state(&self) -> Option<FileState> {
        match &self.cur {
            Some(r) => {
                Some(FileState { path: self.path.clone(), dev: r.dev, ino: r.ino, offset: r.committed })
            }
            None => self.saved.clone(),
        }
    }

    fn note(&self) -> Option<String> {
        let p = self.path.display();
        match &self.state {
            PathState::Reading | PathState::NotYetLooked => None,
            PathState::Missing => Some(format!("{p} not found, waiting")),
            PathState::Denied => Some(format!(
                "{p}: permission denied (run picket as root or give it read access, e.g. group adm)"
            )),
            PathState::Error(e) => Some(format!("{p}: {e}")),
        }
    }
}

/// The file logrotate renamed `path` to (`path.1`, or `path.0`), if it is the one `saved`
/// describes, opened at the saved offset.
fn rotated_sibling(path: &Path, saved: &FileState) -> Option<Reader> {
    for suffix in [".1", ".0"] {
        let mut p = OsString::from(path.as_os_str());
        p.push(suffix);
        let Ok(file) = File::open(PathBuf::from(p)) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if meta.dev() == saved.dev && meta.ino() == saved.ino {
            return Reader::from_file(file, Some(saved.offset)).ok();
        }
    }
    None
}

/// All configured paths, the parser and the state file: one poll reads every file once.
#[derive(Debug)]
pub(super) struct Tailer {
    tails: Vec<FileTail>,
    state_path: PathBuf,
    written: Vec<FileState>,
    out: EventTx,
    buf: Vec<u8>,
    pub(super) counters: Counters,
    state_note: Option<String>,
    /// When the offsets were last written; see [`PERSIST_EVERY`].
    persisted_at: std::time::Instant,
    pub(super) closed: bool,
}

/// How often a running tailer writes its offsets (always at shutdown too). Writing them after
/// every read cost ~5 % of the whole agent's CPU at 500 lines/s (a write and a rename-over, which
/// ext4 flushes). After a crash at most this much is read again: a line counted twice rather
/// than one missed.
const PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Tailer {
    pub(super) fn new(files: Vec<PathBuf>, state_path: PathBuf, out: EventTx) -> Tailer {
        let (mut saved, state_note) = load_state(&state_path);
        let tails = files
            .into_iter()
            .map(|path| FileTail {
                saved: saved.remove(&path),
                path,
                cur: None,
                old: None,
                state: PathState::NotYetLooked,
                from_start: false,
            })
            .collect::<Vec<_>>();
        let written = tails.iter().filter_map(FileTail::file_state).collect();
        Tailer {
            tails,
            state_path,
            written,
            out,
            buf: vec![0; READ_CHUNK],
            counters: Counters::default(),
            state_note,
            persisted_at: std::time::Instant::now(),
            closed: false,
        }
    }

    /// Read every file once, send the events, then persist the offsets if they moved and the
    /// last write is [`PERSIST_EVERY`] old.
    pub(super) fn poll(&mut self) {
        let out = &self.out;
        let counters = &mut self.counters;
        let mut sink = |line: Line<'_>, year: YearHint| -> Flow {
            match line {
                Line::TooLong => {
                    counters.too_long += 1;
                    out.count_drop("line_too_long", 1);
                }
                Line::Complete(bytes) => match parse_line(bytes, year) {
                    ParseOutcome::Event(ev) => {
                        counters.events += 1;
                        // Full: dropped and counted by `send`.
                        if out.send(ev) == Err(SendError::Closed) {
                            return Flow::Stop;
                        }
                    }
                    ParseOutcome::NotAuth => {}
                    ParseOutcome::Malformed(_) => counters.malformed += 1,
                },
            }
            Flow::Continue
        };
        for tail in &mut self.tails {
            if tail.poll(&mut self.buf, &mut sink) == Flow::Stop {
                self.closed = true;
                break;
            }
        }
        if self.closed || self.persisted_at.elapsed() >= PERSIST_EVERY {
            self.persist();
        }
    }

    /// Write the offsets if they changed since the last write.
    pub(super) fn persist(&mut self) {
        let now: Vec<FileState> = self.tails.iter().filter_map(FileTail::file_state).collect();
        if now == self.written {
            return;
        }
        match save_state(&self.state_path, &now) {
            Ok(()) => {
                self.written = now;
                self.persisted_at = std::time::Instant::now();
                self.state_note = None;
            }
            Err(e) => {
                self.state_note = Some(format!(
                    "cannot save offsets to {}: {e} (a restart will start at the end)",
                    self.state_path.display()
                ));
            }
        }
    }

    /// `running (2 files; 3 malformed lines skipped)`, `running (waiting for ...)`,
    /// `unavailable: ...`.
    pub(super) fn status_line(&self) -> String {
        let total = self.tails.len();
        let reading = self.tails.iter().filter(|t| t.cur.is_some()).count();
        let mut notes: Vec<String> = self.tails.iter().filter_map(FileTail::note).collect();
        if reading == 0 && self.tails.iter().all(|t| t.state == PathState::Denied) {
            return format!("unavailable: {}", notes.join("; "));
        }
        let mut head = if reading == 0 {
            let waiting: Vec<String> = self.tails.iter().map(|t| t.path.display().to_string()).collect();
            notes.clear();
            format!("waiting for {}", waiting.join(", "))
        } else if reading == total {
            format!("{total} file{}", if total == 1 { "" } else { "s" })
        } else {
            format!("{reading} of {total} files")
        };
        let c = self.counters;
        if c.malformed > 0 {
            notes.push(format!("{} malformed line{} skipped", c.malformed, plural(c.malformed)));
        }
        if c.too_long > 0 {
            notes.push(format!("{} over-long line{} skipped", c.too_long, plural(c.too_long)));
        }
        notes.extend(self.state_note.clone());
        for n in notes {
            head.push_str("; ");
            head.push_str(&n);
        }
        format!("running ({head})")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut Reader, data: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        let mut sink = |l: Line<'_>, _: YearHint| {
            got.push(match l {
                Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong => "<too long>".to_string(),
            });
            Flow::Continue
        };
        reader.feed(data, YearHint::year(2026), &mut sink);
        got
    }

    fn reader() -> (tempfile::TempDir, Reader) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"").unwrap();
        let r = Reader::open(&p, Some(0)).unwrap();
        (dir, r)
    }

    #[test]
    fn lines_are_joined_across_reads_and_committed_at_their_newline() {
        let (_d, mut r) = reader();
        assert_eq!(lines(&mut r, b"ab"), Vec::<String>::new());
        assert_eq!(r.committed, 0);
        assert_eq!(lines(&mut r, b"c\nde"), vec!["abc"]);
        assert_eq!(r.committed, 4);
        assert_eq!(lines(&mut r, b"f\n"), vec!["def"]);
        assert_eq!(r.committed, 8);
    }

    #[test]
    fn an_over_long_line_is_skipped_to_its_newline_and_counted_once() {
        let (_d, mut r) = reader();
        let big = vec![b'x'; MAX_LINE + 10];
        assert!(lines(&mut r, &big).is_empty());
        assert!(r.partial.capacity() <= MAX_LINE);
        assert!(lines(&mut r, &big).is_empty());
        assert_eq!(lines(&mut r, b"tail\nok\n"), vec!["<too long>", "ok"]);
    }
}
