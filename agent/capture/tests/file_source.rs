//! The file source against real inotify: a temporary directory, real files, the real queue.
//!
//! Every wait is bounded (`WAIT`), so a broken source fails a test instead of hanging it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picket_capture::file::{FileOptions, FileSource};
use picket_capture::{CaptureError, Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind, severity};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(400);

struct Running {
    rx: mpsc::Receiver<Box<Event>>,
    drops: Drops,
    status: SourceStatus,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), CaptureError>>,
}

/// Start the source on `paths` with a queue of `capacity`; return once it has its watches and
/// finished its start-up scan.
async fn start(paths: Vec<PathBuf>, capacity: usize) -> Running {
    start_with(FileOptions::new(paths), capacity).await
}

async fn start_with(opts: FileOptions, capacity: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(FileSource::NAME, tx, drops.clone());
    let task = tokio::spawn(FileSource::with_options(opts).run(out, status.clone(), shutdown));
    let deadline = Instant::now() + WAIT;
    while !status_of(&status).is_some_and(|s| s.starts_with("running") && !s.contains("start-up scan")) {
        assert!(Instant::now() < deadline, "source never reported running: {:?}", status_of(&status));
        assert!(!task.is_finished(), "source ended during setup: {:?}", status_of(&status));
        sleep(Duration::from_millis(10)).await;
    }
    Running { rx, drops, status, trigger, task }
}

fn status_of(status: &SourceStatus) -> Option<String> {
    status.snapshot().get(FileSource::NAME).cloned()
}

impl Running {
    /// The next event for which `pred` holds, skipping others; panics after `WAIT`.
    async fn next_where(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return *ev,
                Ok(Some(_)) => {}
                Ok(None) => panic!("queue closed while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The next event, whatever it is.
    async fn next(&mut self) -> Event {
        self.next_where("event", |_| true).await
    }

    /// Everything that arrives until nothing has for `QUIET`.
    async fn until_quiet(&mut self) -> Vec<Event> {
        let mut evs = Vec::new();
        while let Ok(Some(ev)) = timeout(QUIET, self.rx.recv()).await {
            evs.push(*ev);
        }
        evs
    }

    /// Shut down and check that `run` ends promptly and cleanly.
    async fn stop(self) {
        self.trigger.trigger();
        let res =
            timeout(Duration::from_secs(2), self.task).await.expect("run did not end within 2 s of shutdown");
        res.expect("run panicked").expect("run returned an error");
    }
}

fn path_of(ev: &Event) -> &str {
    &ev.file.as_ref().expect("file event has file.*").path
}

fn is(ev: &Event, kind: EventKind, path: &Path) -> bool {
    ev.kind == kind && path_of(ev) == path.to_str().unwrap()
}

fn summary(evs: &[Event]) -> Vec<(EventKind, String)> {
    evs.iter().map(|e| (e.kind, path_of(e).to_string())).collect()
}

#[tokio::test]
async fn file_written_in_watched_dir_becomes_create_then_modify_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;
    let f = dir.path().join("a.txt");

    fs::write(&f, "hello").unwrap();

    let create = src.next().await;
    assert!(is(&create, EventKind::FileCreate, &f), "{create:?}");
    let modify = src.next().await;
    assert!(is(&modify, EventKind::FileModify, &f), "{modify:?}");
    assert_eq!(modify.event.dataset.as_deref(), Some("picket.file"));
    assert_eq!(modify.event.module.as_deref(), Some("inotify"));
    assert_eq!(modify.event.severity, severity::INFO);
    let file = modify.file.as_ref().unwrap();
    let meta = fs::symlink_metadata(&f).unwrap();
    assert_eq!(file.r#type.as_deref(), Some("file"));
    assert_eq!(file.size, Some(5));
    assert_eq!(file.inode, Some(std::os::unix::fs::MetadataExt::ino(&meta)));
    assert_eq!(file.mode.as_deref(), Some(format!("{:04o}", meta.permissions().mode() & 0o7777).as_str()));
    assert!(file.uid.is_some() && file.gid.is_some() && file.mtime.is_some(), "{file:?}");
    // One write sequence is one event.
    let rest = src.until_quiet().await;
    assert!(rest.is_empty(), "unexpected extra events: {:?}", summary(&rest));
    src.stop().await;
}

#[tokio::test]
async fn many_writes_to_one_open_file_are_one_modify() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("log");
    fs::write(&f, "").unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;

    let mut h = fs::OpenOptions::new().append(true).open(&f).unwrap();
    for i in 0..100 {
        writeln!(h, "line {i}").unwrap();
    }
    drop(h);

    let evs = src.until_quiet().await;
    assert_eq!(summary(&evs), vec![(EventKind::FileModify, f.to_str().unwrap().to_string())]);
    src.stop().await;
}

#[tokio::test]
async fn rename_is_one_event_with_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    fs::write(&old, "x").unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;

    fs::rename(&old, &new).unwrap();

    let ev = src.next().await;
    assert_eq!(ev.kind, EventKind::FileRename, "{ev:?}");
    let file = ev.file.as_ref().unwrap();
    assert_eq!(file.path, old.to_str().unwrap());
    assert_eq!(file.target_path.as_deref(), Some(new.to_str().unwrap()));
    assert_eq!(file.size, Some(1), "metadata comes from the new path");
    let rest = src.until_quiet().await;
    assert!(rest.is_empty(), "unexpected extra events: {:?}", summary(&rest));
    src.stop().await;
}

#[tokio::test]
async fn file_moved_out_of_the_watched_tree_is_a_delete_and_moved_in_is_a_create() {
    let root = tempfile::tempdir().unwrap();
    let watched = root.path().join("watched");
    let outside = root.path().join("outside");
    fs::create_dir(&watched).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(watched.join("leaving"), "x").unwrap();
    fs::write(outside.join("arriving"), "y").unwrap();
    let mut src = start(vec![watched.clone()], 64).await;

    fs::rename(watched.join("leaving"), outside.join("leaving")).unwrap();
    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileDelete, &watched.join("leaving")), "{ev:?}");

    fs::rename(outside.join("arriving"), watched.join("arriving")).unwrap();
    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileCreate, &watched.join("arriving")), "{ev:?}");
    assert_eq!(ev.file.as_ref().unwrap().size, Some(1));
    src.stop().await;
}

#[tokio::test]
async fn delete_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("doomed");
    fs::write(&f, "x").unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;

    fs::remove_file(&f).unwrap();

    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileDelete, &f), "{ev:?}");
    let file = ev.file.as_ref().unwrap();
    assert_eq!(
        (file.size, file.inode, file.mode.as_ref()),
        (None, None, None),
        "a deleted file has no metadata"
    );
    let rest = src.until_quiet().await;
    assert!(rest.is_empty(), "unexpected extra events: {:?}", summary(&rest));
    src.stop().await;
}

#[tokio::test]
async fn chmod_is_attrib() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("script");
    fs::write(&f, "#!/bin/sh\n").unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;

    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();

    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileAttrib, &f), "{ev:?}");
    assert_eq!(ev.file.as_ref().unwrap().mode.as_deref(), Some("4755"));
    src.stop().await;
}

#[tokio::test]
async fn subdirectory_created_after_start_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = start(vec![dir.path().to_path_buf()], 64).await;
    let sub = dir.path().join("sub");

    fs::create_dir(&sub).unwrap();
    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileCreate, &sub), "{ev:?}");
    assert_eq!(ev.file.as_ref().unwrap().r#type.as_deref(), Some("dir"));
    // notify adds the new directory's watch right after reporting it; inotify cannot do it
    // atomically, so give it a moment (files created in that gap are a documented limit).
    sleep(Duration::from_millis(100)).await;

    let f = sub.join("inner.txt");
    fs::write(&f, "x").unwrap();
    src.next_where("create in subdirectory", |e| is(e, EventKind::FileCreate, &f)).await;
    src.next_where("modify in subdirectory", |e| is(e, EventKind::FileModify, &f)).await;
    src.stop().await;
}

#[tokio::test]
async fn missing_path_is_reported_once_and_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-there");
    let mut src = start(vec![missing.clone(), dir.path().to_path_buf()], 64).await;

    let st = status_of(&src.status).unwrap();
    assert_eq!(
        st,
        format!(
            "running (1 of 2 paths; {} does not exist (create it or change sources.file.paths))",
            missing.display()
        )
    );
    // The other path is watched...
    let f = dir.path().join("a");
    fs::write(&f, "x").unwrap();
    src.next_where("create", |e| is(e, EventKind::FileCreate, &f)).await;
    // ...and the missing one is neither retried nor reported again.
    sleep(QUIET).await;
    assert_eq!(status_of(&src.status).unwrap(), st);
    assert_eq!(src.drops.total(), 0);
    src.stop().await;
}

#[tokio::test]
async fn no_watchable_path_makes_the_source_unavailable_and_run_returns_ok() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("watch");
    let (tx, _rx) = mpsc::channel(4);
    let status = SourceStatus::default();
    let (_trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(FileSource::NAME, tx, Drops::default());

    let res = timeout(WAIT, FileSource::new(vec![missing.clone()]).run(out, status.clone(), shutdown)).await;

    assert!(matches!(res, Ok(Ok(()))), "{res:?}");
    assert_eq!(
        status_of(&status).unwrap(),
        format!("unavailable: {} does not exist (create it or change sources.file.paths)", missing.display())
    );
}

#[tokio::test]
async fn empty_path_list_is_idle_and_run_returns_ok() {
    let (tx, _rx) = mpsc::channel(4);
    let status = SourceStatus::default();
    let (_trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(FileSource::NAME, tx, Drops::default());

    let res = timeout(WAIT, FileSource::new(Vec::new()).run(out, status.clone(), shutdown)).await;

    assert!(matches!(res, Ok(Ok(()))), "{res:?}");
    assert_eq!(status_of(&status).unwrap(), "idle: no paths configured");
}

#[tokio::test]
async fn full_queue_counts_drops_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let src = start(vec![dir.path().to_path_buf()], 1).await;

    // Nobody reads the queue: the first event fills it, the rest must be dropped and counted
    // (shed as `shed.file.<kind>`: with the queue past its shedding marks, routine file events
    // are shed before they would find it full).
    for i in 0..50 {
        fs::write(dir.path().join(format!("f{i}")), "x").unwrap();
    }

    let deadline = Instant::now() + WAIT;
    loop {
        let full = src.drops.total();
        // 50 creates and 50 modifies, one of which fits in the queue.
        if full >= 99 {
            assert_eq!(full, 99, "{:?}", src.drops.snapshot());
            break;
        }
        assert!(Instant::now() < deadline, "drops after {WAIT:?}: {:?}", src.drops.snapshot());
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(src.rx.len(), 1);
    // Still responsive: shutdown ends it promptly.
    src.stop().await;
}

#[tokio::test]
async fn shutdown_ends_run_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let src = start(vec![dir.path().to_path_buf()], 8).await;
    let started = Instant::now();
    src.stop().await;
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn closed_pipeline_ends_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = start(vec![dir.path().to_path_buf()], 8).await;
    let Running { rx, trigger, task, .. } = src;

    drop(rx);

    let res = timeout(Duration::from_secs(2), task).await.expect("run did not notice the closed pipeline");
    assert!(matches!(res, Ok(Ok(()))), "{res:?}");
    drop(trigger);
}

#[tokio::test]
async fn a_single_file_can_be_watched() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwd");
    fs::write(&f, "root:x:0:0::/root:/bin/sh\n").unwrap();
    let mut src = start(vec![f.clone()], 8).await;

    fs::write(&f, "root:x:0:0::/root:/bin/sh\nevil:x:0:0::/:/bin/sh\n").unwrap();

    let ev = src.next().await;
    assert!(is(&ev, EventKind::FileModify, &f), "{ev:?}");

    // Unlinking a watched file also changes its link count (IN_ATTRIB); only the delete is news.
    fs::remove_file(&f).unwrap();
    let evs = src.until_quiet().await;
    assert_eq!(summary(&evs), vec![(EventKind::FileDelete, f.to_str().unwrap().to_string())]);
    src.stop().await;
}
