//! File integrity monitoring against the real thing: inotify on a temporary directory, a real
//! SQLite baseline file, hashes checked against the `sha256sum` binary.
//!
//! Every wait is bounded and polls; nothing asserts how long something took.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use picket_capture::file::{FileOptions, FileSource};
use picket_capture::{CaptureError, Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(500);

struct Running {
    rx: mpsc::Receiver<Box<Event>>,
    drops: Drops,
    status: SourceStatus,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), CaptureError>>,
}

/// Starts the source; returns once its watches are in place and the start-up scan is done.
async fn start(opts: FileOptions, capacity: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(FileSource::NAME, tx, drops.clone());
    let task = tokio::spawn(FileSource::with_options(opts).run(out, status.clone(), shutdown));
    let deadline = Instant::now() + WAIT;
    while !status_of(&status).is_some_and(|s| s.starts_with("running") && !s.contains("start-up scan")) {
        assert!(Instant::now() < deadline, "source never finished starting: {:?}", status_of(&status));
        assert!(!task.is_finished(), "source ended during setup: {:?}", status_of(&status));
        sleep(Duration::from_millis(10)).await;
    }
    Running { rx, drops, status, trigger, task }
}

fn status_of(status: &SourceStatus) -> Option<String> {
    status.snapshot().get(FileSource::NAME).cloned()
}

impl Running {
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

    async fn until_quiet(&mut self) -> Vec<Event> {
        let mut evs = Vec::new();
        while let Ok(Some(ev)) = timeout(QUIET, self.rx.recv()).await {
            evs.push(*ev);
        }
        evs
    }

    async fn stop(self) {
        self.trigger.trigger();
        let res = timeout(Duration::from_secs(5), self.task).await.expect("run did not end after shutdown");
        res.expect("run panicked").expect("run returned an error");
    }
}

fn path_of(ev: &Event) -> &str {
    &ev.file.as_ref().expect("file event has file.*").path
}

fn is(ev: &Event, kind: EventKind, path: &Path) -> bool {
    ev.kind == kind && path_of(ev) == path.to_str().unwrap()
}

fn hash_of(ev: &Event) -> Option<&str> {
    ev.file.as_ref()?.hash.as_ref().map(|h| h.sha256.as_str())
}

fn module_of(ev: &Event) -> &str {
    ev.event.module.as_deref().unwrap_or("")
}

/// What the real `sha256sum` says.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// Deterministic bytes that are not all alike.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251).to_le_bytes()[0] ^ seed ^ (i >> 8).to_le_bytes()[0]).collect()
}

#[tokio::test]
async fn create_modify_chmod_rename_delete_carry_sha256sum_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = start(FileOptions::new(vec![dir.path().to_path_buf()]), 256).await;
    let f = dir.path().join("payload.bin");

    // create + write: the modify carries the hash of what was written.
    fs::write(&f, content(3 << 20, 7)).unwrap();
    src.next_where("create", |e| is(e, EventKind::FileCreate, &f)).await;
    let ev = src.next_where("modify", |e| is(e, EventKind::FileModify, &f)).await;
    assert_eq!(hash_of(&ev), Some(sha256sum(&f).as_str()), "{ev:?}");
    assert_eq!(module_of(&ev), "inotify");
    assert_eq!(ev.file.as_ref().unwrap().size, Some(3 << 20));

    // modify: a new hash.
    fs::write(&f, b"second version\n").unwrap();
    let ev = src.next_where("second modify", |e| is(e, EventKind::FileModify, &f)).await;
    assert_eq!(hash_of(&ev), Some(sha256sum(&f).as_str()));

    // chmod: attrib with the mode, and the (unchanged) hash.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o750)).unwrap();
    let ev = src.next_where("attrib", |e| is(e, EventKind::FileAttrib, &f)).await;
    assert_eq!(ev.file.as_ref().unwrap().mode.as_deref(), Some("0750"));
    assert_eq!(hash_of(&ev), Some(sha256sum(&f).as_str()));

    // rename: both paths, the hash of the file at its new path.
    let g = dir.path().join("renamed.bin");
    fs::rename(&f, &g).unwrap();
    let ev = src.next_where("rename", |e| is(e, EventKind::FileRename, &f)).await;
    assert_eq!(ev.file.as_ref().unwrap().target_path.as_deref(), Some(g.to_str().unwrap()));
    assert_eq!(hash_of(&ev), Some(sha256sum(&g).as_str()));

    // delete.
    fs::remove_file(&g).unwrap();
    src.next_where("delete", |e| is(e, EventKind::FileDelete, &g)).await;
    let rest = src.until_quiet().await;
    assert!(rest.is_empty(), "unexpected extra events: {rest:?}");
    assert_eq!(src.drops.total(), 0, "{:?}", src.drops.snapshot());
    src.stop().await;
}

#[tokio::test]
async fn files_made_at_once_in_a_new_subdirectory_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = start(FileOptions::new(vec![dir.path().to_path_buf()]), 1024).await;

    // No pause between mkdir and the writes: some land before notify adds the new watch, and
    // the scan of the new directory must find those.
    let sub = dir.path().join("sub");
    let deeper = sub.join("a/b");
    fs::create_dir_all(&deeper).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..20 {
        let f = if i % 2 == 0 { sub.join(format!("f{i}")) } else { deeper.join(format!("f{i}")) };
        fs::write(&f, format!("file {i}")).unwrap();
        expected.insert(f.to_str().unwrap().to_string(), sha256sum(&f));
    }

    // Each file's final content is reported with its hash: by the scan of the new directory,
    // or live (a create seen live may carry the hash of the still empty file, its modify the
    // final one).
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match timeout(left, src.rx.recv()).await {
            Ok(Some(ev)) => ev,
            _ => panic!(
                "not reported with their final hash after {WAIT:?}: {:?}",
                expected.keys().filter(|p| !seen.contains(*p)).collect::<Vec<_>>()
            ),
        };
        let path = path_of(&ev).to_string();
        if matches!(ev.kind, EventKind::FileCreate | EventKind::FileModify)
            && expected.get(&path).is_some_and(|h| hash_of(&ev) == Some(h.as_str()))
        {
            seen.insert(path);
        }
    }
    // And the new directory is watched from now on.
    let later = deeper.join("later");
    fs::write(&later, "x").unwrap();
    src.next_where("modify in the new directory", |e| is(e, EventKind::FileModify, &later)).await;
    src.stop().await;
}

#[tokio::test]
async fn changes_made_while_stopped_are_reported_at_the_next_start_as_found_by_scan() {
    let data = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    fs::write(root.join("same"), "unchanged").unwrap();
    fs::write(root.join("edited"), "before").unwrap();
    fs::write(root.join("chmodded"), "#!/bin/sh\n").unwrap();
    fs::write(root.join("removed"), "x").unwrap();
    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("dir/inner"), "inner").unwrap();
    let opts = || {
        let mut o = FileOptions::new(vec![root.to_path_buf()]);
        o.baseline = Some(data.path().join("baseline.db"));
        o
    };

    // First start: builds the baseline, reports nothing.
    let mut src = start(opts(), 256).await;
    let first = src.until_quiet().await;
    assert!(first.is_empty(), "the first start only builds the baseline: {first:?}");
    src.stop().await;
    assert!(data.path().join("baseline.db").exists());

    // While stopped. `edited` keeps its size, and its mtime is set back: only the hash tells.
    let mtime = fs::metadata(root.join("edited")).unwrap().modified().unwrap();
    fs::write(root.join("edited"), "after!").unwrap();
    fs::File::options().write(true).open(root.join("edited")).unwrap().set_modified(mtime).unwrap();
    fs::set_permissions(root.join("chmodded"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(root.join("removed")).unwrap();
    fs::write(root.join("added"), "new").unwrap();
    fs::remove_dir_all(root.join("dir")).unwrap();

    let mut src = start(opts(), 256).await;
    let evs = src.until_quiet().await;
    let got: BTreeSet<(EventKind, String)> = evs
        .iter()
        .map(|e| {
            assert_eq!(module_of(e), "scan", "{e:?}");
            assert!(e.message.as_deref().unwrap_or("").contains("start-up scan"), "{e:?}");
            (e.kind, path_of(e).strip_prefix(root.to_str().unwrap()).unwrap().to_string())
        })
        .collect();
    let want: BTreeSet<(EventKind, String)> = [
        (EventKind::FileModify, "/edited"),
        (EventKind::FileAttrib, "/chmodded"),
        (EventKind::FileDelete, "/removed"),
        (EventKind::FileCreate, "/added"),
        (EventKind::FileDelete, "/dir"),
        (EventKind::FileDelete, "/dir/inner"),
    ]
    .into_iter()
    .map(|(k, p)| (k, p.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(evs.len(), want.len(), "each change once: {evs:?}");
    let edited = evs.iter().find(|e| e.kind == EventKind::FileModify).unwrap();
    assert_eq!(hash_of(edited), Some(sha256sum(&root.join("edited")).as_str()));
    let chmodded = evs.iter().find(|e| e.kind == EventKind::FileAttrib).unwrap();
    assert_eq!(chmodded.file.as_ref().unwrap().mode.as_deref(), Some("0755"));
    let added = evs.iter().find(|e| e.kind == EventKind::FileCreate).unwrap();
    assert_eq!(hash_of(added), Some(sha256sum(&root.join("added")).as_str()));

    // Live changes keep the baseline current: a third start after them reports nothing new.
    fs::write(root.join("added"), "changed while running").unwrap();
    src.next_where("live modify", |e| e.kind == EventKind::FileModify).await;
    src.stop().await;
    let mut src = start(opts(), 256).await;
    let third = src.until_quiet().await;
    assert!(third.is_empty(), "nothing changed while stopped: {third:?}");
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_files_created_quickly_are_reported_or_counted_as_lost() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut src = start(FileOptions::new(vec![dir.path().to_path_buf()]), 4096).await;

    let root = dir.path().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..N {
            fs::write(root.join(format!("f{i:05}")), i.to_string()).unwrap();
        }
    });

    // Reported: distinct paths with a create (live or found by a rescan after an overflow).
    let mut reported = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match timeout(QUIET * 4, src.rx.recv()).await {
            Ok(Some(ev)) => {
                if ev.kind == EventKind::FileCreate {
                    reported.insert(path_of(&ev).to_string());
                }
            }
            Ok(None) => panic!("queue closed"),
            Err(_) if writer.is_finished() => break,
            Err(_) => {}
        }
        if reported.len() >= N {
            break;
        }
        assert!(Instant::now() < deadline, "still receiving after 120 s: {} reported", reported.len());
    }
    writer.await.unwrap();
    let drops = src.drops.snapshot();
    let lost: u64 = drops.values().sum();
    eprintln!("reported {} of {N}, drops {drops:?}", reported.len());
    assert!(reported.len() as u64 + lost >= N as u64, "reported {} + counted {lost} < {N}", reported.len());
    src.stop().await;
}

#[tokio::test]
async fn include_and_exclude_globs_choose_what_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("cache")).unwrap();
    let mut opts = FileOptions::new(vec![root.to_path_buf()]);
    opts.include = vec!["*.conf".into(), "*/keys/*".into()];
    opts.exclude = vec![format!("{}/cache", root.display()), "*.swp".into()];
    let mut src = start(opts, 64).await;

    fs::write(root.join("a.txt"), "no").unwrap();
    fs::write(root.join("cache/b.conf"), "excluded dir").unwrap();
    fs::write(root.join("c.conf.swp"), "excluded").unwrap();
    fs::create_dir(root.join("keys")).unwrap();
    fs::write(root.join("keys/id"), "yes").unwrap();
    fs::write(root.join("app.conf"), "yes").unwrap();

    let evs = src.until_quiet().await;
    let paths: BTreeSet<String> = evs.iter().map(|e| path_of(e).to_string()).collect();
    let want: BTreeSet<String> = [root.join("keys/id"), root.join("app.conf")]
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, want, "{evs:?}");
    src.stop().await;
}

#[tokio::test]
async fn symlinks_fifos_big_files_and_odd_names_are_reported_without_crashing() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut opts = FileOptions::new(vec![root.to_path_buf()]);
    opts.hash_max_bytes = 1000;
    let mut src = start(opts, 256).await;

    // A symlink to something huge is reported as a symlink, never followed or hashed.
    let link = root.join("link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let ev = src.next_where("symlink create", |e| is(e, EventKind::FileCreate, &link)).await;
    assert_eq!(ev.file.as_ref().unwrap().r#type.as_deref(), Some("symlink"));
    assert_eq!(hash_of(&ev), None);

    // A FIFO does not block the worker.
    let fifo = root.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let ev = src.next_where("fifo create", |e| is(e, EventKind::FileCreate, &fifo)).await;
    assert_eq!(ev.file.as_ref().unwrap().r#type.as_deref(), Some("other"));

    // Over the cap: metadata, no hash.
    let big = root.join("big");
    fs::write(&big, vec![1u8; 1001]).unwrap();
    let ev = src.next_where("big modify", |e| is(e, EventKind::FileModify, &big)).await;
    assert_eq!((ev.file.as_ref().unwrap().size, hash_of(&ev)), (Some(1001), None));

    // A name that is not UTF-8: reported lossily, and counted.
    let odd = root.join(OsStr::from_bytes(b"odd-\xff"));
    fs::write(&odd, "x").unwrap();
    let ev =
        src.next_where("odd name", |e| e.kind == EventKind::FileModify && path_of(e).contains("odd-")).await;
    assert_eq!(hash_of(&ev), Some(sha256sum(&odd).as_str()));
    assert!(src.drops.snapshot().get("file.non_utf8_path").copied().unwrap_or(0) >= 1);

    // Still working.
    let after = root.join("after");
    fs::write(&after, "x").unwrap();
    src.next_where("modify after", |e| is(e, EventKind::FileModify, &after)).await;
    src.stop().await;
}

/// Runs inside a user namespace (see the test below) where the inotify watch limit is tiny.
const IN_USERNS: &str = "PICKET_FIM_TEST_IN_USERNS";

/// The inotify watch limit, for real: the test binary re-runs this test in a new user namespace
/// (`unshare -U -r`), whose `user.max_inotify_watches` it lowers to 4 without touching the host's.
/// A tree with more directories than that cannot be watched, so it is scanned periodically; the
/// status says so, and a change in it is still reported (found by scan). The same happens to a
/// watched tree that grows past the limit while running.
#[test]
fn a_tree_over_the_watch_limit_is_scanned_periodically_and_status_says_so() {
    if std::env::var_os(IN_USERNS).is_none() {
        let exe = std::env::current_exe().unwrap();
        let probe = Command::new("unshare").args(["-U", "-r", "true"]).status();
        if !probe.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot create a user namespace here (unshare -U -r)");
            return;
        }
        let out = Command::new("unshare")
            .args(["-U", "-r"])
            .arg(exe)
            .args([
                "--exact",
                "a_tree_over_the_watch_limit_is_scanned_periodically_and_status_says_so",
                "--nocapture",
            ])
            .env(IN_USERNS, "1")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "inner run failed:\n{text}");
        return;
    }

    if let Err(e) = fs::write("/proc/sys/user/max_inotify_watches", "4") {
        eprintln!("skipped: cannot lower user.max_inotify_watches in a user namespace here: {e}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let small = tempfile::tempdir().unwrap();
        let big = tempfile::tempdir().unwrap();
        let grow = tempfile::tempdir().unwrap();
        for i in 0..10 {
            fs::create_dir(big.path().join(format!("d{i}"))).unwrap();
        }
        let roots = vec![small.path().to_path_buf(), big.path().to_path_buf(), grow.path().to_path_buf()];
        let mut opts = FileOptions::new(roots);
        opts.scan_interval = Duration::from_secs(1);
        let mut src = start(opts, 256).await;
        // At start: `big` needs 11 watches and cannot have them.
        let st = status_of(&src.status).unwrap();
        assert!(
            st.starts_with("running (degraded: inotify watch limit reached, 1 tree scanned every 1s"),
            "{st}"
        );
        // The small tree is still watched live.
        let live = small.path().join("live");
        fs::write(&live, "x").unwrap();
        let ev = src.next_where("live modify", |e| is(e, EventKind::FileModify, &live)).await;
        assert_eq!(module_of(&ev), "inotify");
        // The big one is scanned: a new file there is found.
        let deep = big.path().join("d7/dropped");
        fs::write(&deep, "found").unwrap();
        let ev = src.next_where("file found by periodic scan", |e| is(e, EventKind::FileCreate, &deep)).await;
        assert_eq!(module_of(&ev), "scan");
        assert_eq!(hash_of(&ev), Some(sha256sum(&deep).as_str()));

        // Later: `grow` (watched, 2 of 4 watches in use) gets new directories until one cannot
        // be watched; from then on it is scanned too, and a file in the unwatched one is found.
        for d in ["a", "b", "c", "d"] {
            fs::create_dir(grow.path().join(d)).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        while !status_of(&src.status).unwrap().contains("2 trees scanned every 1s") {
            assert!(Instant::now() < deadline, "status: {:?}", status_of(&src.status));
            sleep(Duration::from_millis(20)).await;
        }
        assert!(src.drops.snapshot().get("file.watch_limit").copied().unwrap_or(0) >= 1);
        let late = grow.path().join("d/late");
        fs::write(&late, "late").unwrap();
        let ev = src
            .next_where("file in an unwatched new directory", |e| {
                is(e, EventKind::FileCreate, &late) || is(e, EventKind::FileModify, &late)
            })
            .await;
        assert_eq!(hash_of(&ev), Some(sha256sum(&late).as_str()), "{ev:?}");
        src.stop().await;
    });
}
