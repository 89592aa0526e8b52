//! The auth source reading the systemd journal: real journal files written by
//! `systemd-journal-remote` (from journal export format) in a temporary directory, read by the
//! real `journalctl --follow` the source runs (`sources.auth.journal_dir`). systemd need not be
//! PID 1. Checks the events and their fields, the journal's own timestamps and PIDs, that the
//! first run starts at the end, that the cursor resumes after a restart without repeats, that
//! entries appended while running are followed (also into a new journal file), that attacker
//! text in `MESSAGE` never becomes the source, and that journalctl is killed on shutdown and
//! restarted (with its stderr in the status) when it fails.
//!
//! Needs `journalctl` and `systemd-journal-remote` (Debian packages systemd and
//! systemd-journal-remote; scripts/test-deps.sh); without them each test prints SKIP and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use picket_capture::auth::{AuthSource, Journald};
use picket_capture::{CaptureError, Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

/// The journal's time of our first entry (2025-11-24T16:00:00.123456Z), in microseconds.
const T0: u64 = 1_764_000_000_123_456;
const BOOT_ID: &str = "0123456789abcdef0123456789abcdef";

fn tools() -> Option<PathBuf> {
    let journalctl = ["/usr/bin/journalctl", "/bin/journalctl"].iter().any(|p| Path::new(p).exists());
    let remote = ["/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match (journalctl, remote) {
        (true, Some(r)) => Some(r),
        _ => {
            eprintln!(
                "SKIP: needs journalctl and systemd-journal-remote (apt-get install systemd \
                 systemd-journal-remote; see scripts/test-deps.sh)"
            );
            None
        }
    }
}

/// One journal entry: time offset (µs after T0, also the monotonic time), identifier, pid,
/// message bytes.
struct Entry<'a>(u64, &'a str, u32, &'a [u8]);

/// Append `entries` to `dir/file` with systemd-journal-remote, from journal export format (the
/// message as a binary field, so any bytes go through).
fn append(remote: &Path, dir: &Path, file: &str, entries: &[Entry<'_>]) {
    let mut export = Vec::new();
    for Entry(dt, ident, pid, msg) in entries {
        write!(
            export,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT_ID}\n\
             SYSLOG_IDENTIFIER={ident}\n_PID={pid}\nSYSLOG_PID={pid}\n_HOSTNAME=victim\nMESSAGE\n",
            T0 + dt,
            1_000_000 + dt
        )
        .unwrap();
        export.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        export.extend_from_slice(msg);
        export.extend_from_slice(b"\n\n");
    }
    let mut child = Command::new(remote)
        .arg(format!("--output={}", dir.join(file).display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-journal-remote");
    child.stdin.take().unwrap().write_all(&export).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "journal-remote: {}", String::from_utf8_lossy(&out.stderr));
}

struct Running {
    rx: mpsc::Receiver<Box<Event>>,
    status: SourceStatus,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), CaptureError>>,
}

fn status_of(status: &SourceStatus) -> String {
    status.snapshot().get(AuthSource::NAME).cloned().unwrap_or_default()
}

/// Start the source on journal directory `jdir` (no files configured: it must not matter).
fn start(jdir: &Path, cursor: &Path) -> Running {
    let (tx, rx) = mpsc::channel(1024);
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(AuthSource::NAME, tx, Drops::default());
    let src = AuthSource::new(vec![PathBuf::from("/nonexistent/auth.log")], cursor.with_extension("offsets"))
        .with_journal(Journald::On, Some(jdir.to_path_buf()), cursor.to_path_buf());
    let task = tokio::spawn(src.run(out, status.clone(), shutdown));
    Running { rx, status, trigger, task }
}

impl Running {
    /// Wait until `n` events came (or `WAIT` passed), then until quiet.
    async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) => got.push(*ev),
                _ => break,
            }
        }
        while let Ok(Some(ev)) = timeout(QUIET, self.rx.recv()).await {
            got.push(*ev);
        }
        got
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status_of(&self.status);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never showed {what}: {s:?}");
            assert!(!self.task.is_finished(), "source ended: {s:?}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.trigger.trigger();
        timeout(WAIT, self.task).await.expect("source stops on shutdown").unwrap().unwrap();
    }
}

fn pids(evs: &[Event]) -> Vec<u32> {
    evs.iter().map(|e| e.process.as_ref().and_then(|p| p.pid).unwrap()).collect()
}

/// The pids of the journalctl processes whose command line names `dir`.
fn journalctl_pids(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let s = String::from_utf8_lossy(&c);
                s.contains("journalctl") && s.contains(&needle)
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn journalctls_on(dir: &Path) -> usize {
    journalctl_pids(dir).len()
}

async fn wait_for_file(p: &Path) {
    let deadline = Instant::now() + WAIT;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn journal_entries_are_events_and_the_cursor_resumes_without_repeats() {
    let Some(remote) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let jdir = tmp.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let cursor = tmp.path().join("auth-journal.cursor");

    // History: a first run starts at the end and never reports these.
    append(
        &remote,
        &jdir,
        "x.journal",
        &[
            Entry(0, "sshd", 11, b"Failed password for root from 10.9.9.9 port 1 ssh2"),
            Entry(1, "sshd", 12, b"Failed password for root from 10.9.9.9 port 2 ssh2"),
        ],
    );
    let mut run = start(&jdir, &cursor);
    // The first run saves the newest entry's cursor before it follows.
    wait_for_file(&cursor).await;
    run.wait_status("the journal", |s| s.starts_with("running (journal ")).await;
    assert_eq!(journalctls_on(&jdir), 1, "one journalctl runs");

    append(&remote, &jdir, "x.journal", &[
        Entry(10, "sshd", 101, b"Failed password for root from 10.0.0.2 port 35128 ssh2"),
        Entry(11, "cron", 1, b"Failed password for root from 6.6.6.6 port 1 ssh2"),
        Entry(12, "sudo", 102, b"  bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/sh"),
        Entry(13, "sshd-session", 103, b"Accepted publickey for alice from 2001:db8::7 port 50022 ssh2: ED25519 SHA256:abcdefABCDEF0123456789+/abc"),
        // The user name `admin from 1.2.3.4` as sshd logs it: the source is sshd's address.
        Entry(14, "sshd", 104, b"Failed password for invalid user admin from 1.2.3.4 from 10.0.0.5 port 5555 ssh2"),
        Entry(15, "sshd", 105, b"Invalid user admin from 1.2.3.4 from 10.0.0.5 port 5556"),
        // Not UTF-8 and an escape sequence: journalctl writes MESSAGE as an array of bytes.
        Entry(16, "sshd", 106, b"Failed password for r\x1b[31moot\xff from 10.0.0.6 port 7 ssh2"),
        // Forged text, and a message sshd never writes: passed over, the line after still read.
        Entry(17, "sshd", 107, b"Failed password for root from 1.2.3.4 port 22 ssh2 from evil"),
        Entry(18, "dropbear", 108, b"Bad password attempt for 'root' from 192.168.1.20:40000"),
        // Over journalctl's 4,096-byte field limit: it prints `null`; counted, not an event.
        Entry(19, "sshd", 109, &[b'A'; 5000]),
        Entry(20, "sshd", 110, b"Failed password for root from 10.0.0.11 port 2 ssh2"),
    ]);
    let evs = run.events(8).await;
    assert_eq!(pids(&evs), vec![101, 102, 103, 104, 105, 106, 108, 110], "{evs:#?}");
    let f = &evs[0];
    assert_eq!(f.kind, EventKind::AuthFailure);
    assert_eq!(f.timestamp.unix_nanos(), i64::try_from((T0 + 10) * 1000).unwrap(), "the journal's time");
    assert_eq!(f.user.as_ref().unwrap().name.as_deref(), Some("root"));
    assert_eq!(f.source.as_ref().unwrap().ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(f.source.as_ref().unwrap().port, Some(35128));
    assert_eq!(f.process.as_ref().unwrap().name.as_deref(), Some("sshd"));
    let sudo = &evs[1];
    assert_eq!(sudo.process.as_ref().unwrap().name.as_deref(), Some("sudo"));
    assert_eq!(sudo.user.as_ref().unwrap().name.as_deref(), Some("bob"));
    assert_eq!(sudo.event.action.as_deref(), Some("password"));
    let ok = &evs[2];
    assert_eq!(ok.kind, EventKind::AuthSuccess);
    assert_eq!(ok.process.as_ref().unwrap().name.as_deref(), Some("sshd"));
    assert_eq!(ok.source.as_ref().unwrap().ip.as_deref(), Some("2001:db8::7"));
    for hostile in &evs[3..5] {
        assert_eq!(hostile.source.as_ref().unwrap().ip.as_deref(), Some("10.0.0.5"), "{hostile:?}");
        assert_eq!(hostile.user.as_ref().unwrap().name.as_deref(), Some("admin from 1.2.3.4"));
    }
    let bytes = &evs[5];
    assert_eq!(bytes.user.as_ref().unwrap().name.as_deref(), Some("r\u{fffd}[31moot\u{fffd}"));
    assert_eq!(bytes.source.as_ref().unwrap().ip.as_deref(), Some("10.0.0.6"));
    assert_eq!(evs[6].source.as_ref().unwrap().ip.as_deref(), Some("192.168.1.20"));
    run.wait_status("the malformed entries", |s| s.contains("2 malformed entries skipped")).await;
    run.stop().await;
    assert_eq!(journalctls_on(&jdir), 0, "journalctl is killed on shutdown");

    // Written while the agent is down, into a second journal file: read after the restart,
    // and nothing from before it again.
    append(
        &remote,
        &jdir,
        "y.journal",
        &[
            Entry(40, "sshd", 201, b"Failed password for root from 10.0.0.20 port 1 ssh2"),
            Entry(41, "su", 202, b"FAILED SU (to root) bob on pts/1"),
        ],
    );
    let mut run = start(&jdir, &cursor);
    let evs = run.events(2).await;
    assert_eq!(pids(&evs), vec![201, 202], "{evs:#?}");
    // Appended while running: followed.
    append(
        &remote,
        &jdir,
        "y.journal",
        &[Entry(50, "sshd", 301, b"Failed none for root from 10.0.0.30 port 1 ssh2")],
    );
    let evs = run.events(1).await;
    assert_eq!(pids(&evs), vec![301]);
    // journalctl dies (killed here): restarted after a second from the cursor; what was written
    // meanwhile is read once.
    let pids_now = journalctl_pids(&jdir);
    assert_eq!(pids_now.len(), 1);
    assert!(Command::new("kill").arg("-KILL").arg(&pids_now[0]).status().unwrap().success());
    append(
        &remote,
        &jdir,
        "y.journal",
        &[Entry(60, "sshd", 401, b"Failed password for root from 10.0.0.40 port 1 ssh2")],
    );
    let evs = run.events(1).await;
    assert_eq!(pids(&evs), vec![401], "{evs:#?}");
    let again = journalctl_pids(&jdir);
    assert_eq!(again.len(), 1, "restarted");
    assert_ne!(again, pids_now);
    run.stop().await;
    let mut run = start(&jdir, &cursor);
    assert!(run.events(0).await.is_empty(), "a restart with nothing new repeats nothing");
    run.stop().await;
}

#[tokio::test]
async fn a_failing_journalctl_is_shown_and_restarted() {
    let Some(remote) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let jdir = tmp.path().join("not-yet");
    let cursor = tmp.path().join("auth-journal.cursor");
    let mut run = start(&jdir, &cursor);
    // journalctl's own words, from its stderr.
    let s =
        run.wait_status("the failure", |s| s.starts_with("unavailable: ") && s.contains("retrying")).await;
    assert!(s.contains("not-yet"), "{s}");
    // The directory appears with an entry in it (made aside, then renamed into place).
    let staging = tmp.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    append(
        &remote,
        &staging,
        "x.journal",
        &[Entry(0, "sshd", 1, b"Failed password for root from 10.1.1.1 port 1 ssh2")],
    );
    std::fs::rename(&staging, &jdir).unwrap();
    // Restarted after its back-off; the first run then starts at the end of what is there.
    wait_for_file(&cursor).await;
    run.wait_status("the journal", |s| s.starts_with("running (journal ")).await;
    append(
        &remote,
        &jdir,
        "x.journal",
        &[Entry(5, "sshd", 2, b"Failed password for root from 10.1.1.2 port 1 ssh2")],
    );
    let evs = run.events(1).await;
    assert_eq!(pids(&evs), vec![2]);
    run.stop().await;
}
