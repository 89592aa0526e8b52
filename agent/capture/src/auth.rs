//! Authentication events from the system's auth logs: `auth.failure` and `auth.success` from
//! OpenSSH sshd, dropbear, sudo and su, read by tailing `sources.auth.files`
//! (`/var/log/auth.log`, `/var/log/secure`), or from the systemd journal (see "The systemd
//! journal" below).
//!
//! Two halves: [`parse_line`], a pure byte-level parser (no regex, no allocation but the event
//! it returns, never a panic on any input), and [`AuthSource`], which tails the files and keeps
//! its place in them across restarts.
//!
//! # Line forms
//!
//! The syslog header may be classic (`Nov 23 19:37:00 host sshd[123]: msg`; the year comes from
//! a [`YearHint`], and the time, which carries no zone, is taken as UTC: on devices that log in
//! local time the timestamps are off by the zone offset), ISO as rsyslog's
//! `RSYSLOG_FileFormat` writes it (`2026-11-23T19:37:00.001920+00:00 host sshd[123]: msg`),
//! RFC 5424 (`<34>1 2026-11-23T19:37:00Z host sshd 123 - - msg`), a `<pri>` before a classic
//! header, busybox's `host facility.level tag:` and OpenWrt `logread`'s
//! `Thu Mar 14 10:00:00 2024` form. The tag's program picks the message parser; `sshd-session`
//! and `sshd-auth` (OpenSSH ≥ 9.8) count as `sshd`, and `process.name` is one of `sshd`,
//! `dropbear`, `sudo`, `su`.
//!
//! | program  | message                                                                    | event, `event.action` |
//! |----------|----------------------------------------------------------------------------|-----------------------|
//! | sshd     | `Failed <method> for [invalid user ]<u> from <ip> port <n> ssh2[: <key>]` | failure, `<method>` (`password`, `publickey`, `keyboard-interactive/pam`, `none`, ...) |
//! | sshd     | `Accepted <method> for <u> from <ip> port <n> ssh2[: <key>]`              | success, `<method>` |
//! | sshd     | `Invalid user <u> from <ip>[ port <n>]`                                    | failure, `invalid_user` |
//! | sshd     | `[error: ]maximum authentication attempts exceeded for [invalid user ]<u> from <ip> port <n> ssh2 [preauth]` | failure, `max_attempts` |
//! | sshd     | `Connection closed by` / `Connection reset by` / `Disconnected from` `authenticating user <u> <ip> port <n> [preauth]` (or `invalid user`) | failure, `preauth_disconnect` |
//! | sshd     | `error: PAM: Authentication failure for [illegal user ]<u> from <ip>`     | failure, `pam` |
//! | any      | `pam_unix(<service>:auth): authentication failure; ... rhost=<ip>  user=<u>` | failure, `pam` |
//! | dropbear | `Bad password attempt for '<u>' from <ip>:<port>`                          | failure, `password` |
//! | dropbear | `Login attempt for nonexistent user['<u>'] from <ip>:<port>`               | failure, `invalid_user` |
//! | dropbear | `Password auth succeeded for '<u>' from <ip>:<port>`                       | success, `password` |
//! | dropbear | `Pubkey auth succeeded for '<u>' with [<type> ]key <fp> from <ip>:<port>`  | success, `publickey` |
//! | dropbear | `Pubkey auth bad signature for '<u>' with key <fp> from <ip>:<port>`       | failure, `publickey` |
//! | dropbear | `Max auth tries reached - user '<u>' from <ip>:<port>`                     | failure, `max_attempts` |
//! | dropbear | `Exit before auth from <<ip>:<port>>: (user '<u>', N fails): <why>`        | failure, `max_attempts` if `<why>` is `Max auth tries reached...`, else `preauth_disconnect` |
//! | sudo     | `<u> : N incorrect password attempts ; TTY=.. ; PWD=.. ; USER=.. ; COMMAND=..` | failure, `password` |
//! | sudo     | `<u> : user NOT in sudoers ; ...` (and `command not allowed`, `user NOT authorized on host`) | failure, `not_allowed` |
//! | sudo     | `<u> : TTY=.. ; PWD=.. ; USER=<target> ; COMMAND=<cmd>`                    | success, `command`; `process.command_line` = `<cmd>` |
//! | su       | `FAILED SU (to <target>) <u> on <tty>`                                     | failure, `su`; `user.name` = `<target>` |
//! | su       | `(to <target>) <u> on <tty>`, `Successful su for <target> by <u>`          | success, `su`; `user.name` = `<target>` |
//!
//! dropbear writes IPv6 peers as `[addr]:port` or `addr:port` (split at the last colon); both
//! are read. Addresses are normalized: `::ffff:1.2.3.4` becomes `1.2.3.4`, a `%zone` is
//! dropped, and only literal addresses count: a host name (sshd with `UseDNS yes`, PAM's
//! `rhost`) gives no `source.ip`.
//!
//! `user.name` is the account the authentication was for: the name tried over SSH, the sudo
//! user (who types their own password), su's target account. Who ran su stays in `message`.
//!
//! Deliberately not events: dropbear's `Exit before auth` without a user and sshd's
//! `Connection closed by <ip> port <n> [preauth]` (the client never asked for an account: a
//! scan, not a login); `Received disconnect` (always followed by `Disconnected from`); sshd's
//! `PAM N more authentication failures` summary and `Partial`/`Postponed` userauth; shadow su's
//! `+ tty a:b` / `- tty a:b` duplicates; session open/close lines. They are `NotAuth`.
//!
//! # The trusted end
//!
//! Log lines carry attacker text: the user name offered over SSH (`admin from 1.2.3.4`), a
//! certificate's ID, sudo's working directory and command. Each form is parsed from the end
//! its program writes itself, so crafted text never becomes `source.ip`:
//!
//! * sshd `... for <user> from <ip> port <n> ssh2<tail>`: every ` from ` is tried from the
//!   right, and it counts only if followed by an address, `port`, a number, `ssh2` and a tail
//!   sshd writes (nothing, ` [preauth]`, or `: <key type> <fingerprint>`). For password and
//!   keyboard-interactive lines only the real one can qualify. If two qualify (a certificate
//!   ID and the user name both forged to fit) the line is `Malformed("ambiguous source
//!   address")` rather than a guess.
//! * sshd's preauth disconnects: the address, `port` and number are the last words.
//! * dropbear: the address follows the last ` from ` and contains no space; the user name is
//!   what lies between the quotes before it, quotes inside it included. `Exit before auth`
//!   puts the address first, between `<` and `>`.
//! * PAM: everything up to `user=` is PAM's; the user name is last, so the first `rhost=` is
//!   PAM's.
//! * sudo: the invoking user comes first and is a passwd name; su: the tty and the invoking
//!   user are the last words.
//!
//! Not defended: a local user can write any line to syslog (`logger -t sshd ...`), and a
//! syslog daemon does not check tags. Lines are only as trustworthy as `/dev/log`.
//!
//! # Event fields
//!
//! `event.action` (ECS) names the form of the line: one of the tokens in the table above
//! (sshd's own method name, or `invalid_user`, `max_attempts`, `pam`, `preauth_disconnect`,
//! `not_allowed`, `command`, `su`, `password`, `publickey`), so a policy can tell the lines of one
//! attempt apart. `message` is the line's message part as the program wrote it, e.g.
//! `Failed password for root from 10.0.0.2 port 35128 ssh2`, invalid UTF-8 and control
//! characters replaced by U+FFFD, cut to [`MAX_MESSAGE`] bytes; `user.name` is cleaned the same
//! way and cut to [`MAX_USER`] bytes. `event.dataset` is `picket.auth`, `event.module`
//! `auth-log`, `event.severity` low for failures and info for successes.
//!
//! # One attempt, several events
//!
//! Programs log one failed attempt on several lines, and each line that names an account is an
//! `auth.failure`: a rule that counts attempts must pick its actions. What real logs hold:
//!
//! * sshd, existing user, password: `pam_unix(sshd:auth)` (`pam`), `Failed password` (`password`);
//!   when the client gives up, `Connection closed by authenticating user` (`preauth_disconnect`).
//! * sshd, unknown user: `Invalid user` (`invalid_user`, once per connection, before any
//!   attempt), `pam_unix` without `user=` (`pam`, no `user.name`), then `Failed password for
//!   invalid user` (`password`) per attempt and `Connection closed by invalid user`.
//! * sshd, too many attempts on one connection: `maximum authentication attempts exceeded`
//!   (`max_attempts`) after the last `Failed` line of that connection.
//! * dropbear: `Bad password attempt` (`password`) or `Login attempt for nonexistent user`
//!   (`invalid_user`) per attempt; `Max auth tries reached` / `Exit before auth` at the end.
//! * sudo: `pam_unix(sudo:auth)` (`pam`) per wrong password, then one `N incorrect password
//!   attempts` (`password`) per invocation; su: `pam_unix(su:auth)` (`pam`) and `FAILED SU`
//!   (`su`) per attempt.
//!
//! So one SSH password attempt is exactly one `Failed <method>` line (sshd) or one `Bad password
//! attempt` / `nonexistent user` line (dropbear): count `event.action` in the method names for
//! sshd, and `password`, `publickey`, `invalid_user` for dropbear. One gap: sshd logs a failed
//! non-password method (`publickey`, `keyboard-interactive/pam`) for an existing user at
//! `VERBOSE` until the connection has `MaxAuthTries / 2` failures, so at the default `INFO`
//! level the first ones of a connection leave only PAM's lines (`error: PAM: Authentication
//! failure`, `pam`).

//! # Tailing, offsets, rotation
//!
//! Every [`POLL`] each file is `stat`ed and read with `pread` into one 64 KiB buffer, at most
//! 8 MiB per file per poll. A line waits for its newline in a buffer of at most [`MAX_LINE`]
//! bytes; a longer one is discarded up to its newline and counted as the drop
//! `auth.line_too_long`. Lines that do not parse are counted as malformed and named in the
//! status (`running (2 files; 3 malformed lines skipped)`); they are not events, so not drops.
//!
//! * First run (no offset saved for the path): start at the end; history is not replayed. If
//!   the end is mid-line, that line is skipped.
//! * After each poll the offsets are written to `state_path` (JSON: path, dev, inode, offset
//!   per file; a temporary file, then rename). The offset is always just after a newline, so a
//!   restart neither repeats nor skips a line, and never starts inside a 1 MB line.
//! * Restart, same inode: resume at the offset (from 0 if the file is now shorter). Different
//!   inode: read the old file on from the offset if logrotate left it at `<path>.1` (or `.0`),
//!   then the new file from its start.
//! * Rename rotation while running: the old file is read to its end, then for
//!   five seconds more while the logger still writes to it, and the new file from its
//!   start. copytruncate (size below our position, same inode): read again from 0.
//! * A missing file is waited for (`... not found, waiting`) and read from its start when it
//!   appears; a file we may not read is named (`permission denied`); if every file is
//!   unreadable the status is `unavailable: ...`. Polling goes on either way.
//! * The year of a classic timestamp is the file's mtime year; a line whose month is later than
//!   the mtime's month is from the year before (December lines in a January file).
//!
//! **Latency.** inotify on the files' directories wakes the tailer (its own thread,
//! `picket-auth`, which reads the inotify descriptor itself) as soon as a logger writes
//! to one of the files (a brute-force line reaches the policy engine within a millisecond, which
//! containment's 2 ms bar needs); the [`POLL`] tick stays as the fallback that survives rotation,
//! NFS and an inotify that could not be set up.
//!
//! Not done: lines written
//! between our last read and a copytruncate's copy are only in the copy and are missed, as is
//! a copytruncate whose file regrew past our offset before the next poll; offsets of a file
//! still being drained after rotation are not saved (a restart then skips its last lines);
//! `login`, `pam_sss` and other PAM modules.
//!
//! # The systemd journal
//!
//! On a systemd host without a syslog daemon there are no auth files: the same messages are only
//! in the journal. `sources.auth.journald` chooses the input, once, at start:
//!
//! * `auto` (default): the journal when none of the configured files exists and a journal is
//!   there (`sources.auth.journal_dir` exists, or journald runs: `/run/systemd/journal/socket`)
//!   and `journalctl` is on `PATH`; otherwise the files, as above.
//! * `on`: the journal, never the files (`unavailable` when there is no `journalctl`).
//! * `off`: the files, never the journal.
//!
//! **Never both.** Where rsyslog (Debian's default) copies the journal into `/var/log/auth.log`,
//! every line is in both places, and reading both would count each attempt twice; the files
//! stay the primary input there. A file that appears after start does not switch the input
//! (a switch mid-stream could repeat or skip lines): a restart decides again.
//!
//! The source runs `journalctl --follow --output=json --output-fields=MESSAGE,SYSLOG_IDENTIFIER,
//! _PID,SYSLOG_PID --identifier=sshd ...` (the identifiers in [`JOURNAL_IDENTIFIERS`];
//! `--directory` with `journal_dir`) as a child process it owns: killed on shutdown and when the
//! task is dropped, restarted with a back-off (1 s doubling to 60 s, reset after a minute of
//! running) when it ends, the last line of its stderr shown in the status. Each JSON line is one
//! entry: `MESSAGE` (a string, or an array of bytes when it is not UTF-8 or holds control
//! characters) goes to the program's parser exactly as a file line's message part does, with
//! `SYSLOG_IDENTIFIER` as the program, `_PID` (the journal's own, from the sender's credentials;
//! else `SYSLOG_PID`) as `process.pid` and `__REALTIME_TIMESTAMP` as the time, so the
//! trusted-end rules hold unchanged. An entry that is not JSON, has no usable `MESSAGE`
//! (journalctl writes `null` for one over 4,096 bytes, and an array of values for a field given
//! twice) or no timestamp is counted as malformed; a JSON line over [`JOURNAL_MAX_ENTRY`] bytes
//! is skipped and counted as `auth.line_too_long`.
//!
//! **Cursor.** The `__CURSOR` of the last entry handed on is written to `auth-journal.cursor` in
//! the data dir (a temporary file, then rename) every [`POLL`] when it moved and on shutdown;
//! a restart and every journalctl restart resume with `--after-cursor`, so no entry is read
//! twice or missed. A first run (no cursor file, or one that is not a cursor) asks journalctl
//! for the newest matching entry and starts after it, saving that cursor at once: history is
//! not replayed, as with the files. (journalctl's own `--cursor-file` is not used: it writes the
//! file only when journalctl exits cleanly, which a follower killed on shutdown does not.)
//!
//! `SYSLOG_IDENTIFIER` is the sender's word; the journal's own `_EXE` must name the program the
//! identifier does (sshd, sshd-session or sshd-auth for the sshd identifiers, dropbear, sudo, su
//! or BusyBox), so `logger -t sshd ...` is counted as malformed, not parsed. An entry without
//! `_EXE` (journald could not read the sender's /proc because it had already exited) is still
//! read. `unix_chkpwd` and `login` have no parser, so they are not read.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{CaptureError, EventTx, Shutdown, SourceStatus};

mod journal;
mod lines;
mod parse;
mod tail;

pub use journal::{IDENTIFIERS as JOURNAL_IDENTIFIERS, Journald, MAX_ENTRY as JOURNAL_MAX_ENTRY};
pub use lines::{Line, for_each_line};
pub use parse::{MAX_MESSAGE, MAX_USER, ParseOutcome, YearHint, parse_line, parse_message};
pub use tail::MAX_LINE;

/// inotify on the directories of the auth files, read by the tailer's own thread: it wakes for a
/// change to a file with one of the files' names, and sleeps through the rest of the directory.
struct Watch {
    fd: OwnedFd,
    names: Vec<Vec<u8>>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watch {
    /// `None` when inotify cannot be set up (the tick still polls).
    fn new(files: &[PathBuf]) -> Option<Watch> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let mask = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::ATTRIB;
        for d in dirs {
            // A missing directory is fine: the tick keeps looking.
            let _ = inotify::add_watch(&fd, d.as_path(), mask);
        }
        let names = files.iter().filter_map(|f| f.file_name().map(|n| n.as_bytes().to_vec())).collect();
        Some(Watch { fd, names, buf: vec![MaybeUninit::uninit(); 4096] })
    }

    /// Wait until one of our files changed, `stop` is signalled, or `timeout` passed.
    fn wait(&mut self, stop: &OwnedFd, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let ts = Timespec::try_from(left).ok();
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN), PollFd::new(stop, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(0) => return,
                Ok(_) if !fds[1].revents().is_empty() => return,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
            if self.ours() {
                return;
            }
        }
    }

    /// Read what inotify queued; whether any of it names one of our files (or the queue
    /// overflowed, when anything may have been missed).
    fn ours(&mut self) -> bool {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut hit = false;
        let mut r = Reader::new(&self.fd, &mut self.buf);
        while let Ok(ev) = r.next() {
            hit |= ev.events().contains(ReadFlags::QUEUE_OVERFLOW)
                || ev.file_name().is_some_and(|n| self.names.iter().any(|m| m.as_slice() == n.to_bytes()));
        }
        // (The loop ends at EAGAIN: the descriptor does not block.)
        hit
    }
}

/// Without inotify: sleep until `stop` or `timeout`.
fn sleep_or_stop(stop: &OwnedFd, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let ts = Timespec::try_from(timeout).ok();
    let _ = poll(&mut [PollFd::new(stop, PollFlags::IN)], ts.as_ref());
}

/// The tailer's thread: poll the files every [`POLL`] and whenever inotify says one of them
/// changed, until `stop` or the pipeline closes; then save the offsets.
fn tail_files(
    files: Vec<PathBuf>,
    state_path: PathBuf,
    out: EventTx,
    status: SourceStatus,
    stop: &OwnedFd,
) -> Result<(), CaptureError> {
    let mut watch = Watch::new(&files);
    let mut tailer = tail::Tailer::new(files, state_path, out.clone());
    let mut shown = String::new();
    let mut next = Instant::now();
    loop {
        if out.is_closed() {
            break;
        }
        tailer.poll();
        let line = tailer.status_line();
        if line != shown {
            status.set(AuthSource::NAME, line.clone());
            shown = line;
        }
        if tailer.closed {
            break;
        }
        // The tick keeps its period whatever inotify does; a late one is not made up.
        let now = Instant::now();
        if next <= now {
            next = if next + POLL > now { next + POLL } else { now + POLL };
        }
        let left = next - now;
        match &mut watch {
            Some(w) => w.wait(stop, left),
            None => sleep_or_stop(stop, left),
        }
        if stopped(stop) {
            break;
        }
    }
    tailer.persist();
    Ok(())
}

fn stopped(stop: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(stop, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(n) if n > 0)
}

/// How often the files are looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The auth-log source.
#[derive(Debug, Clone)]
pub struct AuthSource {
    files: Vec<PathBuf>,
    state_path: PathBuf,
    journald: Journald,
    journal_dir: Option<PathBuf>,
    cursor_path: Option<PathBuf>,
}

/// Which input a run reads.
#[derive(Debug)]
enum Input {
    Files,
    Journal(journal::JournalInput),
    Unavailable(String),
}

impl AuthSource {
    /// The source's name in status and drop counters.
    pub const NAME: &'static str = "auth";

    /// Tail `files` (`sources.auth.files`), keeping offsets in `state_path`; the journal is not
    /// read (see [`AuthSource::with_journal`]).
    pub fn new(files: Vec<PathBuf>, state_path: PathBuf) -> AuthSource {
        AuthSource { files, state_path, journald: Journald::Off, journal_dir: None, cursor_path: None }
    }

    /// When to read the systemd journal instead of the files (`sources.auth.journald`), from
    /// which directory (`sources.auth.journal_dir`; `None`: the system journal), keeping the
    /// journal cursor in `cursor_path`.
    #[must_use]
    pub fn with_journal(
        mut self,
        journald: Journald,
        dir: Option<PathBuf>,
        cursor_path: PathBuf,
    ) -> AuthSource {
        self.journald = journald;
        self.journal_dir = dir;
        self.cursor_path = Some(cursor_path);
        self
    }

    /// The files or the journal, never both: decided once, at start.
    fn input(&self) -> Input {
        let journal = |journalctl| {
            Input::Journal(journal::JournalInput {
                journalctl,
                dir: self.journal_dir.clone(),
                cursor_path: self
                    .cursor_path
                    .clone()
                    .unwrap_or_else(|| self.state_path.with_extension("cursor")),
            })
        };
        match self.journald {
            Journald::Off => Input::Files,
            Journald::On => match journal::find_journalctl() {
                Some(j) => journal(j),
                None => Input::Unavailable("journalctl not found (sources.auth.journald = \"on\")".into()),
            },
            Journald::Auto => {
                if self.files.iter().any(|f| f.exists()) {
                    return Input::Files;
                }
                let there = match &self.journal_dir {
                    Some(d) => d.is_dir(),
                    // journald is running.
                    None => std::path::Path::new("/run/systemd/journal/socket").exists(),
                };
                match journal::find_journalctl() {
                    Some(j) if there => journal(j),
                    _ => Input::Files,
                }
            }
        }
    }

    /// Runs until `shutdown` fires or the pipeline closes, saves the offsets, returns `Ok(())`.
    /// Missing or unreadable files are named in the status and looked for again every poll.
    pub async fn run(
        self,
        out: EventTx,
        status: SourceStatus,
        mut shutdown: Shutdown,
    ) -> Result<(), CaptureError> {
        match self.input() {
            Input::Files => {}
            Input::Journal(j) => return journal::run(j, out, status, shutdown).await,
            Input::Unavailable(why) => {
                status.set(Self::NAME, format!("unavailable: {why}"));
                return Ok(());
            }
        }
        if self.files.is_empty() {
            status.set(Self::NAME, "idle: no files configured");
            return Ok(());
        }
        // Its own thread: file reads block, and inotify then wakes the thread that reads (no
        // hop through a watcher thread or the blocking pool: a brute-force line reaches the
        // pipeline in one wake-up).
        let stop = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).map_err(|e| {
            CaptureError::Failed { source_name: Self::NAME, message: format!("eventfd: {e}") }
        })?;
        let stop = std::sync::Arc::new(stop);
        let (done_tx, mut done) = tokio::sync::oneshot::channel();
        let thread_stop = stop.clone();
        let (files, state_path) = (self.files, self.state_path);
        std::thread::Builder::new()
            .name("picket-auth".into())
            .spawn(move || {
                let _ = done_tx.send(tail_files(files, state_path, out, status, &thread_stop));
            })
            .map_err(|e| CaptureError::Failed { source_name: Self::NAME, message: format!("thread: {e}") })?;
        tokio::select! {
            r = &mut done => return r.unwrap_or(Ok(())),
            () = shutdown.wait() => {}
        }
        let _ = rustix::io::write(&*stop, &1u64.to_ne_bytes());
        done.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(files: &[PathBuf], journald: Journald, dir: Option<PathBuf>) -> Input {
        AuthSource::new(files.to_vec(), PathBuf::from("/nonexistent/offsets"))
            .with_journal(journald, dir, PathBuf::from("/nonexistent/cursor"))
            .input()
    }

    #[test]
    fn auto_reads_the_journal_only_when_no_file_exists_and_a_journal_is_there() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("auth.log");
        let missing = tmp.path().join("secure");
        let jdir = tmp.path().join("journal");
        std::fs::create_dir(&jdir).unwrap();
        let has_journalctl = journal::find_journalctl().is_some();
        // No file, a journal directory: the journal (if journalctl is installed).
        let got = input(std::slice::from_ref(&missing), Journald::Auto, Some(jdir.clone()));
        assert_eq!(matches!(got, Input::Journal(_)), has_journalctl, "{got:?}");
        // A file exists: the files, never both.
        std::fs::write(&log, b"").unwrap();
        let got = input(&[missing.clone(), log.clone()], Journald::Auto, Some(jdir.clone()));
        assert!(matches!(got, Input::Files), "{got:?}");
        // No journal there: the files (waited for).
        let got = input(std::slice::from_ref(&missing), Journald::Auto, Some(tmp.path().join("none")));
        assert!(matches!(got, Input::Files), "{got:?}");
        // The operator's choice wins either way.
        assert!(matches!(
            input(std::slice::from_ref(&missing), Journald::Off, Some(jdir.clone())),
            Input::Files
        ));
        let got = input(&[log], Journald::On, Some(jdir));
        assert!(matches!(got, Input::Journal(_) | Input::Unavailable(_)), "{got:?}");
        assert_eq!(matches!(got, Input::Journal(_)), has_journalctl);
    }
}
