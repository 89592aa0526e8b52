//! The auth source against real files in a temporary directory: start at the end, follow
//! appends, resume after a restart, rotation, truncation, bad input.
//!
//! Every wait is bounded (`WAIT`), so a broken source fails a test instead of hanging it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picket_capture::auth::AuthSource;
use picket_capture::{CaptureError, Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more happens" is watched for: a few polls.
const QUIET: Duration = Duration::from_millis(800);

struct Running {
    rx: mpsc::Receiver<Box<Event>>,
    drops: Drops,
    status: SourceStatus,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), CaptureError>>,
}

/// Start the source; return once it has polled the files once.
async fn start(files: Vec<PathBuf>, state: &Path) -> Running {
    let (tx, rx) = mpsc::channel(1024);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(AuthSource::NAME, tx, drops.clone());
    let task = tokio::spawn(AuthSource::new(files, state.to_path_buf()).run(out, status.clone(), shutdown));
    let deadline = Instant::now() + WAIT;
    while status_of(&status).is_none() {
        assert!(Instant::now() < deadline, "source never reported a status");
        assert!(!task.is_finished(), "source ended during setup");
        sleep(Duration::from_millis(10)).await;
    }
    Running { rx, drops, status, trigger, task }
}

fn status_of(status: &SourceStatus) -> Option<String> {
    status.snapshot().get(AuthSource::NAME).cloned()
}

impl Running {
    /// The pids (our line numbers) of the events that arrive until it is quiet.
    async fn pids_until_quiet(&mut self) -> Vec<u32> {
        let mut got = Vec::new();
        while let Ok(Some(ev)) = timeout(QUIET, self.rx.recv()).await {
            got.push(ev.process.and_then(|p| p.pid).unwrap());
        }
        got
    }

    /// Wait until `n` events came (or `WAIT` passed), then until quiet; their pids.
    async fn pids(&mut self, n: usize) -> Vec<u32> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) => got.push(ev.process.and_then(|p| p.pid).unwrap()),
                _ => break,
            }
        }
        got.extend(self.pids_until_quiet().await);
        got
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = status_of(&self.status).unwrap_or_default();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never showed {what}: {s:?}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.trigger.trigger();
        let r = timeout(WAIT, self.task).await.expect("source did not stop").expect("task panicked");
        r.expect("source failed");
    }
}

/// A failed sshd login whose pid is `n`: events are told apart by it.
fn line(n: u32) -> String {
    format!("Nov 23 19:37:00 vm sshd[{n}]: Failed password for root from 10.0.0.2 port {n} ssh2\n")
}

fn lines(ns: impl IntoIterator<Item = u32>) -> String {
    ns.into_iter().map(line).collect()
}

fn append(path: &Path, text: impl AsRef<[u8]>) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_ref()).unwrap();
}

struct Dir {
    _tmp: tempfile::TempDir,
    log: PathBuf,
    state: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("auth.log");
    let state = tmp.path().join("state/auth-offsets.json");
    Dir { log, state, _tmp: tmp }
}

#[tokio::test]
async fn the_first_run_starts_at_the_end_and_picks_up_appended_lines() {
    let d = dir();
    append(&d.log, lines([1, 2, 3]));
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids_until_quiet().await, Vec::<u32>::new(), "history is not replayed");
    append(&d.log, lines([4, 5]));
    assert_eq!(src.pids(2).await, vec![4, 5]);
    let status = src.wait_status("running", |s| s.starts_with("running")).await;
    assert_eq!(status, "running (1 file)");
    let ev = {
        append(&d.log, line(6));
        timeout(WAIT, src.rx.recv()).await.unwrap().unwrap()
    };
    assert_eq!(ev.kind, EventKind::AuthFailure);
    assert_eq!(ev.source.unwrap().ip.as_deref(), Some("10.0.0.2"));
    src.stop().await;
}

/// inotify wakes the tailer on each write: lines arrive in milliseconds, not at the next
/// `POLL` tick (250 ms, so ~125 ms on average); writes to other files of the directory do not
/// produce anything.
#[tokio::test]
async fn appended_lines_arrive_at_once_through_inotify_not_at_the_next_tick() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids_until_quiet().await, Vec::<u32>::new());
    let other = d.log.with_file_name("syslog");
    let mut took = Vec::new();
    for n in 0..10u32 {
        append(&other, "unrelated\n");
        // Spread the writes over the tick's phase.
        sleep(Duration::from_millis(37 + u64::from(n) * 11)).await;
        let t = Instant::now();
        append(&d.log, line(100 + n));
        let ev = timeout(WAIT, src.rx.recv()).await.expect("line never arrived").unwrap();
        took.push(t.elapsed());
        assert_eq!(ev.process.and_then(|p| p.pid), Some(100 + n));
    }
    took.sort();
    assert!(
        took[5] < Duration::from_millis(50),
        "median {:?} (a tick-driven tailer takes ~125 ms): {took:?}",
        took[5]
    );
    src.stop().await;
}

#[tokio::test]
async fn a_first_run_that_joins_mid_line_skips_that_line_fragment() {
    let d = dir();
    append(&d.log, line(1));
    append(&d.log, "Nov 23 19:37:00 vm sshd[2]: Failed password for root from 9.9.9.9 port 2");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    append(&d.log, format!(" ssh2\n{}", line(3)));
    assert_eq!(src.pids(1).await, vec![3]);
    src.stop().await;
}

#[tokio::test]
async fn a_partial_line_is_not_parsed_until_its_newline_arrives() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    let whole = line(7);
    let (head, tail) = whole.split_at(40);
    append(&d.log, head);
    assert_eq!(src.pids_until_quiet().await, Vec::<u32>::new());
    append(&d.log, tail);
    assert_eq!(src.pids(1).await, vec![7]);
    src.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_at_the_saved_offset_with_no_line_twice_and_none_missed() {
    let d = dir();
    append(&d.log, lines([1]));
    let mut src = start(vec![d.log.clone()], &d.state).await;
    append(&d.log, lines([2, 3]));
    assert_eq!(src.pids(2).await, vec![2, 3]);
    src.stop().await;
    assert!(d.state.exists(), "offsets are saved");

    // While the agent is down: whole lines and half a line.
    append(&d.log, lines([4, 5]));
    let six = line(6);
    append(&d.log, &six[..30]);
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids(2).await, vec![4, 5]);
    src.stop().await;

    append(&d.log, &six[30..]);
    append(&d.log, line(7));
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids(2).await, vec![6, 7], "the half line saved before the restart is read whole");
    src.stop().await;
}

#[tokio::test]
async fn rename_rotation_finishes_the_old_file_and_reads_the_new_one_from_its_start() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    append(&d.log, lines([1]));
    assert_eq!(src.pids(1).await, vec![1]);

    // logrotate `create`: rename, the logger still writes to its open file, then a new file.
    let mut writer = OpenOptions::new().append(true).open(&d.log).unwrap();
    let rotated = d.log.with_extension("log.1");
    fs::rename(&d.log, &rotated).unwrap();
    writer.write_all(lines([2]).as_bytes()).unwrap();
    append(&d.log, lines([3, 4]));
    writer.write_all(lines([5]).as_bytes()).unwrap();
    let mut got = src.pids(4).await;
    got.sort_unstable();
    assert_eq!(got, vec![2, 3, 4, 5]);
    append(&d.log, lines([6]));
    assert_eq!(src.pids(1).await, vec![6]);
    src.stop().await;
}

#[tokio::test]
async fn a_rotation_while_stopped_reads_the_rest_of_the_old_file_then_the_new_one() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    append(&d.log, lines([1]));
    assert_eq!(src.pids(1).await, vec![1]);
    src.stop().await;

    append(&d.log, lines([2]));
    fs::rename(&d.log, d.log.with_extension("log.1")).unwrap();
    append(&d.log, lines([3]));
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids(2).await, vec![2, 3]);
    src.stop().await;
}

#[tokio::test]
async fn copytruncate_is_noticed_and_the_file_is_read_again_from_its_start() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    append(&d.log, lines([1, 2, 3]));
    assert_eq!(src.pids(3).await, vec![1, 2, 3]);
    // copytruncate: same inode, emptied in place, then written again.
    OpenOptions::new().write(true).truncate(true).open(&d.log).unwrap();
    sleep(Duration::from_millis(600)).await;
    append(&d.log, lines([4]));
    assert_eq!(src.pids(1).await, vec![4]);
    src.stop().await;
}

#[tokio::test]
async fn a_one_megabyte_line_and_binary_garbage_are_skipped_and_counted() {
    let d = dir();
    append(&d.log, "");
    let mut src = start(vec![d.log.clone()], &d.state).await;
    let mut big = b"Nov 23 19:37:00 vm sshd[9]: Failed password for ".to_vec();
    big.extend(std::iter::repeat_n(b'A', 1 << 20));
    big.extend_from_slice(b" from 9.9.9.9 port 9 ssh2\n");
    append(&d.log, &big);
    append(&d.log, b"\x00\x01\x02\xff\xfe garbage \x1b[2J\n");
    append(&d.log, line(1));
    assert_eq!(src.pids(1).await, vec![1]);
    let s = src.wait_status("counts", |s| s.contains("over-long")).await;
    assert_eq!(s, "running (1 file; 1 malformed line skipped; 1 over-long line skipped)");
    assert_eq!(src.drops.snapshot().get("auth.line_too_long"), Some(&1));
    src.stop().await;

    // The saved offset is past the long line: a restart does not read its tail as a line.
    append(&d.log, line(2));
    let mut src = start(vec![d.log.clone()], &d.state).await;
    assert_eq!(src.pids(1).await, vec![2]);
    src.stop().await;
}

#[tokio::test]
async fn a_missing_file_is_waited_for_and_read_from_its_start_when_it_appears() {
    let d = dir();
    let other = d.log.with_file_name("secure");
    let mut src = start(vec![d.log.clone(), other.clone()], &d.state).await;
    let s = src.wait_status("waiting", |s| s.contains("waiting")).await;
    assert_eq!(s, format!("running (waiting for {}, {})", d.log.display(), other.display()));
    append(&other, lines([1, 2]));
    assert_eq!(src.pids(2).await, vec![1, 2]);
    let s = src.wait_status("one of two", |s| s.contains("1 of 2")).await;
    assert_eq!(s, format!("running (1 of 2 files; {} not found, waiting)", d.log.display()));
    src.stop().await;
}

#[tokio::test]
async fn an_unreadable_file_is_named_in_the_status() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    append(&d.log, lines([1]));
    fs::set_permissions(&d.log, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&d.log).is_ok() {
        // Running as root: permissions do not stop us; nothing to test.
        return;
    }
    let src = start(vec![d.log.clone()], &d.state).await;
    let s = src.wait_status("unavailable", |s| s.starts_with("unavailable")).await;
    assert!(s.contains("permission denied"), "{s}");
    src.stop().await;
}

#[tokio::test]
async fn no_files_configured_leaves_the_source_idle() {
    let d = dir();
    let src = start(vec![], &d.state).await;
    assert_eq!(status_of(&src.status).as_deref(), Some("idle: no files configured"));
    src.stop().await;
}
