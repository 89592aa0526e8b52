//! The systemd journal as the auth source's input: `journalctl --follow --output=json` as a child
//! process the source owns, its entries fed to the same per-program parsers as log lines, and the
//! journal cursor of the last entry handed on kept in a file. See the module docs of
//! [`crate::auth`] for when the journal is read instead of the files.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::time::MissedTickBehavior;

use super::lines::{Line, for_each_line};
use super::parse::{ParseOutcome, parse_message};
use crate::{CaptureError, EventTx, SendError, Shutdown, SourceStatus};

/// The `SYSLOG_IDENTIFIER`s read (`journalctl -t`): the programs the parsers know. OpenSSH ≥ 9.8
/// logs from `sshd-session` and `sshd-auth`; PAM's lines come under the calling program's name.
pub const IDENTIFIERS: &[&str] = &["sshd", "sshd-session", "sshd-auth", "dropbear", "sudo", "su"];

/// A JSON line from journalctl longer than this is skipped and counted as
/// `auth.line_too_long`. journalctl prints no field over 4,096 bytes (it writes `null`
/// instead) and only `MESSAGE`, `SYSLOG_IDENTIFIER`, `_PID`, `SYSLOG_PID` and `_EXE` besides its cursor
/// and timestamps, so real entries are far shorter; a `MESSAGE` of 4,096 non-UTF-8 bytes,
/// written as a JSON array of numbers, is about 16 KiB.
pub const MAX_ENTRY: usize = 64 * 1024;

/// The fields journalctl is asked to print, besides the `__CURSOR` and timestamps it always
/// prints.
const OUTPUT_FIELDS: &str = "MESSAGE,SYSLOG_IDENTIFIER,_PID,SYSLOG_PID,_EXE";

/// The executables (file names) that may log under each identifier. `SYSLOG_IDENTIFIER` is
/// whatever the sender says (`logger -t sshd ...`); `_EXE` is the journal's own, read from the
/// sender's /proc. An entry whose `_EXE` is present and not one of these is not parsed (counted
/// as malformed, "sender is not ..."). journald leaves `_EXE` out when the sender exited before
/// it could look, and such entries are still read: a partial defence, see the module docs.
fn trusted_exes(ident: &[u8]) -> &'static [&'static str] {
    match ident {
        b"sshd" | b"sshd-session" | b"sshd-auth" => &["sshd", "sshd-session", "sshd-auth"],
        b"dropbear" => &["dropbear", "dropbearmulti"],
        b"sudo" => &["sudo"],
        // BusyBox's su is the busybox binary itself.
        b"su" => &["su", "busybox"],
        _ => &[],
    }
}

/// A cursor file over this size, or with anything but printable ASCII in it, is corrupt.
const MAX_CURSOR: usize = 1024;

/// Restart delays after journalctl ends: doubling from the first to the last; back to the first
/// once a journalctl ran [`STABLE`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const STABLE: Duration = Duration::from_secs(60);

/// The last line journalctl wrote to stderr is kept (cleaned) up to this many bytes, for the
/// status.
const MAX_STDERR: usize = 300;

/// When the journal is read: `sources.auth.journald`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journald {
    /// The journal when none of the configured files exists at start and a journal is there.
    Auto,
    /// The journal, never the files.
    On,
    /// The files, never the journal.
    Off,
}

impl Journald {
    /// The config spellings, in order.
    pub const NAMES: &'static [&'static str] = &["auto", "on", "off"];

    pub fn parse(s: &str) -> Option<Journald> {
        match s {
            "auto" => Some(Journald::Auto),
            "on" => Some(Journald::On),
            "off" => Some(Journald::Off),
            _ => None,
        }
    }
}

/// `journalctl` on `PATH` (or in `/usr/bin`, `/bin`), if it is there.
pub(super) fn find_journalctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("journalctl"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the journal input needs.
#[derive(Clone, Debug)]
pub(super) struct JournalInput {
    pub(super) journalctl: PathBuf,
    /// `journalctl -D`: a journal directory instead of the system journal.
    pub(super) dir: Option<PathBuf>,
    pub(super) cursor_path: PathBuf,
}

impl JournalInput {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.journalctl);
        c.arg("--no-pager").arg("--output=json").arg(format!("--output-fields={OUTPUT_FIELDS}"));
        if let Some(d) = &self.dir {
            c.arg("--directory").arg(d);
        }
        for id in IDENTIFIERS {
            c.arg(format!("--identifier={id}"));
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// How the status names the input.
    fn describe(&self) -> String {
        match &self.dir {
            Some(d) => format!("journal {}", d.display()),
            None => "journal".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One entry.

/// A field as journalctl's JSON writes it: a string, an array of byte values (not UTF-8, or
/// with control characters), an array of such values (the field occurs more than once), or
/// `null` (over 4,096 bytes).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Field {
    Text(String),
    Bytes(Vec<u8>),
    Other(serde::de::IgnoredAny),
}

impl Field {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Field::Text(s) => Some(s.as_bytes()),
            Field::Bytes(b) => Some(b),
            Field::Other(serde::de::IgnoredAny) => None,
        }
    }
}

/// The fields of an entry we read; serde skips the others.
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "__CURSOR")]
    cursor: Option<String>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<Field>,
    #[serde(rename = "MESSAGE")]
    message: Option<Field>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    ident: Option<Field>,
    #[serde(rename = "_PID")]
    pid: Option<Field>,
    #[serde(rename = "SYSLOG_PID")]
    syslog_pid: Option<Field>,
    #[serde(rename = "_EXE")]
    exe: Option<Field>,
}

/// One JSON line from journalctl: what it came to, and its cursor (`None` when the line is
/// not an entry).
pub(super) fn parse_entry(line: &[u8]) -> (ParseOutcome, Option<String>) {
    let Ok(e) = serde_json::from_slice::<Entry>(line) else {
        return (ParseOutcome::Malformed("not a journal entry"), None);
    };
    let cursor = e.cursor.clone().filter(|c| valid_cursor(c));
    (entry_outcome(&e), cursor)
}

fn entry_outcome(e: &Entry) -> ParseOutcome {
    let Some(ident) = e.ident.as_ref().and_then(Field::bytes) else {
        // journalctl was asked for these identifiers only; a missing one is not ours to read.
        return ParseOutcome::Malformed("no SYSLOG_IDENTIFIER");
    };
    if let Some(exe) = e.exe.as_ref().and_then(Field::bytes) {
        let name = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
        let trusted = trusted_exes(ident);
        if !trusted.is_empty() && !trusted.iter().any(|t| t.as_bytes() == name) {
            return ParseOutcome::Malformed("sender is not the program its identifier names (_EXE)");
        }
    }
    let Some(msg) = e.message.as_ref() else { return ParseOutcome::Malformed("no MESSAGE") };
    let Some(msg) = msg.bytes() else {
        return ParseOutcome::Malformed("MESSAGE over 4096 bytes or given more than once");
    };
    let Some(micros) = e.realtime.as_ref().and_then(Field::bytes).and_then(parse_u64) else {
        return ParseOutcome::Malformed("bad __REALTIME_TIMESTAMP");
    };
    let Some(nanos) = i64::try_from(micros).ok().and_then(|m| m.checked_mul(1000)) else {
        return ParseOutcome::Malformed("bad __REALTIME_TIMESTAMP");
    };
    // `_PID` is the journal's own (from the sender's credentials), `SYSLOG_PID` what the
    // program wrote.
    let pid = [&e.pid, &e.syslog_pid]
        .into_iter()
        .find_map(|f| f.as_ref().and_then(Field::bytes).and_then(parse_u64))
        .and_then(|p| u32::try_from(p).ok());
    parse_message(ident, pid, nanos, msg)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn valid_cursor(c: &str) -> bool {
    !c.is_empty() && c.len() <= MAX_CURSOR && c.bytes().all(|b| b.is_ascii_graphic())
}

// ---------------------------------------------------------------------------------------------
// The cursor file.

/// The saved cursor: `Ok(None)` on a first run, `Err` (with the reason) for a file that is not
/// a cursor, which is then treated as a first run.
fn load_cursor(path: &Path) -> (Option<String>, Option<String>) {
    match fs::read(path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let c = text.trim_end_matches('\n');
            if b.len() <= MAX_CURSOR + 1 && valid_cursor(c) {
                (Some(c.to_string()), None)
            } else {
                (None, Some(format!("{} is not a journal cursor; starting at the end", path.display())))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
        Err(e) => (None, Some(format!("cannot read {}: {e}; starting at the end", path.display()))),
    }
}

/// A temporary file beside it, then rename (as the file offsets are saved).
fn save_cursor(path: &Path, cursor: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    fs::write(&tmp, format!("{cursor}\n"))?;
    fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------------------------
// The child.

/// What the reading thread and the source share.
#[derive(Debug, Default)]
struct Shared {
    /// The cursor of the last entry handed on (or passed over).
    cursor: Option<String>,
    events: u64,
    malformed: u64,
    too_long: u64,
    /// The last line journalctl wrote to stderr.
    stderr: Option<String>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running journalctl: killed and reaped when dropped, so neither an error path nor a dropped
/// task leaves it behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read journalctl's entries until its stdout ends; `true` if the pipeline closed.
fn read_entries(stdout: impl io::Read, out: &EventTx, shared: &SharedRef) -> bool {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    let mut closed = false;
    let _ = for_each_line(&mut r, MAX_ENTRY, |line| {
        match line {
            Line::TooLong => {
                lock(shared).too_long += 1;
                out.count_drop("line_too_long", 1);
            }
            Line::Complete(bytes) => {
                let (outcome, cursor) = parse_entry(bytes);
                match outcome {
                    ParseOutcome::Event(ev) => {
                        // Full: dropped and counted by `send`. Closed: stop without moving the
                        // cursor past this entry.
                        if out.send(ev) == Err(SendError::Closed) {
                            closed = true;
                            return ControlFlow::Break(());
                        }
                        lock(shared).events += 1;
                    }
                    ParseOutcome::NotAuth => {}
                    ParseOutcome::Malformed(_) => lock(shared).malformed += 1,
                }
                if cursor.is_some() {
                    lock(shared).cursor = cursor;
                }
            }
        }
        ControlFlow::Continue(())
    });
    closed
}

/// Keep the last line of journalctl's stderr.
fn read_stderr(stderr: impl io::Read, shared: &SharedRef) {
    let mut r = BufReader::new(stderr);
    let _ = for_each_line(&mut r, 4096, |line| {
        if let Line::Complete(b) = line {
            let text = String::from_utf8_lossy(b);
            let text = text.trim();
            if !text.is_empty() {
                let mut t: String =
                    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
                if t.len() > MAX_STDERR {
                    let mut cut = MAX_STDERR;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t.truncate(cut);
                }
                lock(shared).stderr = Some(t);
            }
        }
        ControlFlow::Continue(())
    });
}

/// The cursor of the newest matching entry now, for a first run: the journal is read from
/// there on (history is not replayed, as the files start at their end). `Ok(None)`: no
/// matching entry yet, so every entry that comes is new.
fn tail_cursor(input: &JournalInput) -> Result<Option<String>, String> {
    let mut c = input.command();
    c.arg("--lines=1");
    let out = c.output().map_err(|e| format!("cannot run {}: {e}", input.journalctl.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(format!("journalctl {}: {last}", out.status));
    }
    let line = out.stdout.split(|&b| b == b'\n').find(|l| !l.is_empty());
    Ok(line.and_then(|l| parse_entry(l).1))
}

/// Where a journalctl starts reading.
enum Start {
    After(String),
    All,
}

/// How one journalctl ended.
enum Ended {
    Shutdown,
    PipelineClosed,
    Exited(String),
}

/// Runs until `shutdown` fires or the pipeline closes; saves the cursor and returns `Ok(())`.
pub(super) async fn run(
    input: JournalInput,
    out: EventTx,
    status: SourceStatus,
    mut shutdown: Shutdown,
) -> Result<(), CaptureError> {
    const NAME: &str = super::AuthSource::NAME;
    let shared: SharedRef = Arc::new(Mutex::new(Shared::default()));
    let (saved, note) = load_cursor(&input.cursor_path);
    lock(&shared).cursor.clone_from(&saved);
    let mut saver = Saver { written: saved, note };
    let mut backoff = BACKOFF_FIRST;
    let mut shown = String::new();
    let mut set_status = |line: String| {
        if line != shown {
            status.set(NAME, line.clone());
            shown = line;
        }
    };
    set_status(format!("starting ({})", input.describe()));
    loop {
        let current = lock(&shared).cursor.clone();
        let start = match current {
            Some(c) => Ok(Start::After(c)),
            None => {
                let q = input.clone();
                match tokio::task::spawn_blocking(move || tail_cursor(&q)).await {
                    Ok(Ok(Some(c))) => {
                        lock(&shared).cursor = Some(c.clone());
                        Ok(Start::After(c))
                    }
                    Ok(Ok(None)) => Ok(Start::All),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(format!("journalctl: {e}")),
                }
            }
        };
        let ended = match start {
            Err(e) => Ended::Exited(e),
            Ok(start) => {
                saver.persist(&input, &shared).await;
                let mut c = input.command();
                c.arg("--follow");
                match start {
                    Start::After(cur) => c.arg(format!("--after-cursor={cur}")),
                    Start::All => c.arg("--lines=all"),
                };
                match c.spawn() {
                    Err(e) => Ended::Exited(format!("cannot run {}: {e}", input.journalctl.display())),
                    Ok(child) => {
                        let started = Instant::now();
                        let ended = follow(child, &input, &out, &shared, &mut shutdown, &mut saver, |line| {
                            set_status(line);
                        })
                        .await;
                        if started.elapsed() >= STABLE {
                            backoff = BACKOFF_FIRST;
                        }
                        ended
                    }
                }
            }
        };
        saver.persist(&input, &shared).await;
        let why = match ended {
            Ended::Shutdown | Ended::PipelineClosed => return Ok(()),
            Ended::Exited(why) => why,
        };
        if why.contains("cursor") {
            // journalctl refused the saved cursor (`Failed to seek to cursor`): start at the end.
            lock(&shared).cursor = None;
        }
        set_status(format!("unavailable: {}: {why}; retrying in {} s", input.describe(), backoff.as_secs()));
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follow one journalctl until it ends, shutdown, or the pipeline closes.
async fn follow(
    mut child: Child,
    input: &JournalInput,
    out: &EventTx,
    shared: &SharedRef,
    shutdown: &mut Shutdown,
    saver: &mut Saver,
    mut set_status: impl FnMut(String),
) -> Ended {
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Ended::Exited("journalctl without pipes".into());
    };
    let mut guard = ChildGuard(child);
    lock(shared).stderr = None;
    let err_shared = Arc::clone(shared);
    let err_thread = std::thread::spawn(move || read_stderr(stderr, &err_shared));
    let (out2, shared2) = (out.clone(), Arc::clone(shared));
    let mut reader = tokio::task::spawn_blocking(move || read_entries(stdout, &out2, &shared2));
    let mut tick = tokio::time::interval(super::POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shut = false;
    let closed = loop {
        tokio::select! {
            () = shutdown.wait(), if !shut => {
                // The reader drains what journalctl already wrote, then sees the end.
                let _ = guard.0.kill();
                shut = true;
            }
            r = &mut reader => break r.unwrap_or(false),
            _ = tick.tick() => {
                saver.persist(input, shared).await;
                set_status(status_line(input, shared, saver.note.as_deref()));
            }
        }
    };
    let _ = guard.0.kill();
    let exit = guard.0.wait();
    let _ = err_thread.join();
    if shut || shutdown.is_triggered() {
        return Ended::Shutdown;
    }
    if closed {
        return Ended::PipelineClosed;
    }
    let stderr = lock(shared).stderr.clone();
    let mut why = match exit {
        Ok(st) => format!("journalctl ended ({st})"),
        Err(e) => format!("journalctl ended ({e})"),
    };
    if let Some(s) = stderr {
        why.push_str(": ");
        why.push_str(&s);
    }
    Ended::Exited(why)
}

/// The cursor as last written, and why it could not be, for the status.
#[derive(Debug)]
struct Saver {
    written: Option<String>,
    note: Option<String>,
}

impl Saver {
    /// Write the cursor if it moved since the last write.
    async fn persist(&mut self, input: &JournalInput, shared: &SharedRef) {
        let Some(cur) = lock(shared).cursor.clone() else { return };
        if self.written.as_deref() == Some(cur.as_str()) {
            return;
        }
        let path = input.cursor_path.clone();
        let c = cur.clone();
        match tokio::task::spawn_blocking(move || save_cursor(&path, &c)).await {
            Ok(Ok(())) => {
                self.written = Some(cur);
                self.note = None;
            }
            Ok(Err(e)) => {
                self.note = Some(format!(
                    "cannot save the journal cursor to {}: {e} (a restart may repeat entries)",
                    input.cursor_path.display()
                ));
            }
            Err(_) => {}
        }
    }
}

/// `running (journal /x; 3 malformed entries skipped; journalctl: <its last stderr line>)`.
fn status_line(input: &JournalInput, shared: &SharedRef, note: Option<&str>) -> String {
    let s = lock(shared);
    let mut line = format!("running ({}", input.describe());
    if s.malformed > 0 {
        line.push_str(&format!(
            "; {} malformed entr{} skipped",
            s.malformed,
            if s.malformed == 1 { "y" } else { "ies" }
        ));
    }
    if s.too_long > 0 {
        line.push_str(&format!(
            "; {} over-long entr{} skipped",
            s.too_long,
            if s.too_long == 1 { "y" } else { "ies" }
        ));
    }
    if let Some(e) = &s.stderr {
        line.push_str("; journalctl: ");
        line.push_str(e);
    }
    if let Some(n) = note {
        line.push_str("; ");
        line.push_str(n);
    }
    line.push(')');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> picket_event::Event {
        match parse_entry(line.as_bytes()).0 {
            ParseOutcome::Event(e) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn an_entry_becomes_an_event_with_the_journal_fields() {
        let ev = event(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764000000123456","SYSLOG_IDENTIFIER":"sshd","_PID":"77","SYSLOG_PID":"78","MESSAGE":"Failed password for root from 10.0.0.2 port 35128 ssh2"}"#,
        );
        assert_eq!(ev.kind, picket_event::EventKind::AuthFailure);
        assert_eq!(ev.timestamp.unix_nanos(), 1_764_000_000_123_456_000);
        assert_eq!(ev.process.as_ref().unwrap().pid, Some(77));
        assert_eq!(ev.source.as_ref().unwrap().ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(parse_entry(br#"{"__CURSOR":"s=1;i=2","MESSAGE":"x"}"#).1.as_deref(), Some("s=1;i=2"));
    }

    #[test]
    fn byte_array_messages_are_read_and_cleaned() {
        let msg: Vec<String> =
            b"Failed password for r\x1boot\xff from 10.0.0.3 port 1 ssh2".iter().map(u8::to_string).collect();
        let ev = event(&format!(
            r#"{{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"sshd","MESSAGE":[{}]}}"#,
            msg.join(",")
        ));
        assert_eq!(ev.user.unwrap().name.as_deref(), Some("r\u{fffd}oot\u{fffd}"));
        assert_eq!(ev.source.unwrap().ip.as_deref(), Some("10.0.0.3"));
    }

    #[test]
    fn garbage_and_odd_entries_are_malformed() {
        for line in [
            &b"not json"[..],
            b"{\"MESSAGE\":\"x\"",
            br#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"sshd","MESSAGE":null}"#,
            br#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"sshd","MESSAGE":["a","b"]}"#,
            br#"{"__REALTIME_TIMESTAMP":"x","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"a"}"#,
            br#"{"__REALTIME_TIMESTAMP":"99999999999999999999","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"a"}"#,
            br#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":"a"}"#,
            br#"[1,2,3]"#,
        ] {
            assert!(
                matches!(parse_entry(line).0, ParseOutcome::Malformed(_)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let other = br#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"cron","MESSAGE":"Failed password for root from 1.2.3.4 port 1 ssh2"}"#;
        assert_eq!(parse_entry(other).0, ParseOutcome::NotAuth);
    }

    #[test]
    fn a_sender_that_is_not_the_named_program_is_not_believed() {
        let fake = br#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"sshd","_EXE":"/usr/bin/logger","MESSAGE":"Failed password for root from 1.2.3.4 port 1 ssh2"}"#;
        assert!(matches!(parse_entry(fake).0, ParseOutcome::Malformed(m) if m.contains("_EXE")));
        for (ident, exe) in [
            ("sshd", "/usr/sbin/sshd"),
            ("sshd-session", "/usr/lib/openssh/sshd-session"),
            ("su", "/bin/busybox"),
        ] {
            let real = format!(
                r#"{{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"{ident}","_EXE":"{exe}","MESSAGE":"Failed password for root from 1.2.3.4 port 1 ssh2"}}"#
            );
            assert!(
                !matches!(parse_entry(real.as_bytes()).0, ParseOutcome::Malformed(_)),
                "{ident} from {exe} is believed"
            );
        }
        // No `_EXE` (the sender exited before journald looked): read, as documented.
        let bare = br#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Failed password for root from 1.2.3.4 port 1 ssh2"}"#;
        assert!(matches!(parse_entry(bare).0, ParseOutcome::Event(_)));
    }

    proptest::proptest! {
        /// Whatever journalctl (or something pretending to be it) prints, a line is an outcome.
        #[test]
        fn any_line_is_an_outcome_never_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            ident in "(sshd|sudo|su|dropbear|sshd-session|x)",
        ) {
            let _ = parse_entry(&bytes);
            let text: Vec<String> = msg.iter().map(u8::to_string).collect();
            let line = format!(
                r#"{{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"{ident}","MESSAGE":[{}]}}"#,
                text.join(",")
            );
            let _ = parse_entry(line.as_bytes());
            let _ = parse_message(ident.as_bytes(), Some(1), 0, &msg);
        }
    }

    #[test]
    fn cursor_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/c");
        assert_eq!(load_cursor(&p), (None, None));
        save_cursor(&p, "s=ab;i=1").unwrap();
        assert_eq!(load_cursor(&p), (Some("s=ab;i=1".into()), None));
        fs::write(&p, b"s=a b\n").unwrap();
        assert!(load_cursor(&p).1.is_some());
    }
}
