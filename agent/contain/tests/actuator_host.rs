//! [`Containment`] over the real [`HostBackend`], only on what these tests create (PRODUCT.md,
//! "Safety when testing containment"): nftables inside a network namespace made here, a `sleep`
//! started here, a file written here. The state machine itself is tested with a fake in
//! `actuator.rs`; this checks the glue to the real host. Without root, nft or iproute2 the tests
//! print a loud SKIPPED line and pass.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use picket_contain::actuator::{self, ActionContext, Containment, HostBackend, ManualClock, Options};
use picket_contain::net::NetOptions;
use picket_contain::state::STATE_FILE;
use picket_event::Event;
use picket_policy::{ActionRequest, Mode};

fn can_run(test: &str) -> bool {
    let ok = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success());
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let (nft, ip) = (ok("nft", "--version"), ok("ip", "-V"));
    if !(root && nft && ip) {
        eprintln!(
            "\n!!!!! SKIPPED (needs root + nftables + iproute2): {test} (root={root}, nft={nft}, ip={ip})\n"
        );
    }
    root && nft && ip
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_ruleset() -> String {
    let (ok, text) = run(&["nft", "list", "ruleset"]);
    assert!(ok);
    text
}

/// A namespace made here, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("picket-t-act-{tag}-{}", std::process::id());
        assert!(run(&["ip", "netns", "add", &name]).0);
        Netns(name)
    }
    fn nft(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["ip", "netns", "exec", &self.0, "nft"];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ctx() -> ActionContext {
    ActionContext { rule_id: "r-host".into(), mode: Mode::Enforce, severity: 73, process_start_time: None }
}

fn outcome(events: &[Event]) -> String {
    let last = events.last().expect("events");
    let a = last.action.as_ref().unwrap();
    format!("{}{}", a.outcome, a.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())
}

fn open(dir: &std::path::Path, ns: &Netns, clock: &ManualClock) -> Containment {
    let mut o = Options::new(dir.join(STATE_FILE), "dev".into());
    o.protected.allow_root = true; // the `sleep` below runs as root, like the test
    o.protected.cidrs = vec!["10.254.250.0/24".parse().unwrap()];
    o.kill_grace = Duration::from_secs(1);
    o.quarantine_dir = dir.join("quarantine");
    let backend =
        Arc::new(HostBackend::new(NetOptions { netns: Some(ns.0.clone()), ..NetOptions::default() }));
    Containment::open(o, backend, Arc::new(clock.clone())).unwrap()
}

#[test]
fn isolation_expires_on_time_and_a_block_lost_to_a_reboot_comes_back() {
    if !can_run("isolation_expires_on_time_and_a_block_lost_to_a_reboot_comes_back") {
        return;
    }
    let host_before = host_ruleset();
    let ns = Netns::new("iso");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let mut c = open(dir.path(), &ns, &clock);

    let ev = c.apply(&ActionRequest::IsolateHost { ttl: Some(Duration::from_secs(60)) }, &ctx());
    assert_eq!(outcome(&ev), "succeeded");
    let (isolated, chain) = ns.nft(&["list", "chain", "inet", "picket", "iso_in"]);
    assert!(isolated, "no isolation chain");
    assert!(chain.contains("policy drop"), "{chain}");
    let (_, allow) = ns.nft(&["list", "set", "inet", "picket", "iso_allow4"]);
    assert!(allow.contains("10.254.250.0/24"), "protected network not kept open:\n{allow}");

    let ev = c.apply(
        &ActionRequest::BlockIp { ip: "203.0.113.77".parse().unwrap(), ttl: Duration::from_secs(600) },
        &ctx(),
    );
    assert_eq!(outcome(&ev), "succeeded");

    clock.advance(Duration::from_secs(60));
    let ev = c.tick();
    assert_eq!(outcome(&ev), "expired");
    assert!(!ns.nft(&["list", "chain", "inet", "picket", "iso_in"]).0, "still isolated after the TTL");

    // "Reboot": the kernel's state is gone; the next start puts the block back, TTL left.
    drop(c);
    assert!(ns.nft(&["delete", "table", "inet", "picket"]).0);
    clock.advance(Duration::from_secs(100));
    let mut c = open(dir.path(), &ns, &clock);
    let ev = c.restore();
    assert_eq!(outcome(&ev), "reapplied");
    let (_, set) = ns.nft(&["list", "set", "inet", "picket", "block4"]);
    assert!(set.contains("203.0.113.77") && set.contains("timeout 7m20s"), "{set}");

    // picket actions revert, from "another process" (its own backend on the same namespace).
    let id = ev[0].action.as_ref().unwrap().id.unwrap();
    let other = HostBackend::new(NetOptions { netns: Some(ns.0.clone()), ..NetOptions::default() });
    actuator::revert(&dir.path().join(STATE_FILE), id, &other, SystemTime::now()).unwrap();
    let (_, set) = ns.nft(&["list", "set", "inet", "picket", "block4"]);
    assert!(!set.contains("203.0.113.77"), "{set}");
    assert_eq!(outcome(&c.tick()), "reverted");

    drop(c);
    drop(ns);
    assert_eq!(host_ruleset(), host_before, "the host's own ruleset changed");
}

#[test]
fn a_process_the_test_started_is_killed_and_a_file_it_wrote_is_quarantined_and_restored() {
    if !can_run("a_process_the_test_started_is_killed_and_a_file_it_wrote_is_quarantined_and_restored") {
        return;
    }
    let ns = Netns::new("host");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let mut c = open(dir.path(), &ns, &clock);

    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let reap = Reap(&mut child);
    let ev = c.apply(&ActionRequest::Kill { pid, tree: true }, &ctx());
    assert_eq!(outcome(&ev), "succeeded");
    let status = reap.0.wait().unwrap();
    assert!(!status.success(), "sleep was not killed: {status:?}");
    drop(reap);

    let files = tempfile::tempdir().unwrap();
    let f: PathBuf = files.path().join("dropped.bin");
    std::fs::write(&f, b"\x7fELF not really").unwrap();
    let ev = c.apply(&ActionRequest::Quarantine { path: f.display().to_string() }, &ctx());
    assert_eq!(outcome(&ev), "succeeded");
    assert!(!f.exists());
    let id = ev[0].action.as_ref().unwrap().id.unwrap();
    let other = HostBackend::new(NetOptions::default());
    actuator::revert(&dir.path().join(STATE_FILE), id, &other, SystemTime::now()).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"\x7fELF not really");
    assert_eq!(outcome(&c.tick()), "reverted");
}

/// A tmpfs mounted for one test, so a fanotify mount mark covers nothing else; unmounted on drop.
struct TestTmpfs(tempfile::TempDir);

impl TestTmpfs {
    fn mount() -> Option<TestTmpfs> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::Builder::new().prefix("picket-test-mnt-").tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0755", "picket-test"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("\n!!!!! SKIPPED (cannot mount a tmpfs at {})\n", dir.path().display());
            return None;
        }
        let t = TestTmpfs(dir);
        let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        assert_ne!(dev(t.0.path()), dev(t.0.path().parent()?), "tmpfs not mounted");
        Some(t)
    }
}

impl Drop for TestTmpfs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(self.0.path()).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

#[test]
fn deny_exec_stops_the_binary_until_it_is_reverted() {
    if !can_run("deny_exec_stops_the_binary_until_it_is_reverted") {
        return;
    }
    let Some(tmpfs) = TestTmpfs::mount() else { return };
    let evil = tmpfs.0.path().join("evil");
    std::fs::copy("/bin/true", &evil).unwrap();
    let runs = || {
        // ETXTBSY: another test thread may be forking while the copy was open for writing.
        for _ in 0..50 {
            match Command::new(&evil).status() {
                Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return false,
                Err(e) => panic!("{e}"),
                Ok(s) => return s.success(),
            }
        }
        panic!("text file busy");
    };
    assert!(runs());
    let ns = Netns::new("deny");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let mut c = open(dir.path(), &ns, &clock);
    let ev = c.apply(&ActionRequest::DenyExec { path: evil.display().to_string() }, &ctx());
    assert_eq!(outcome(&ev), "succeeded");
    assert!(!runs(), "evil still runs");
    let enforced = c.tick();
    assert!(
        enforced.iter().any(|e| e.action.as_ref().is_some_and(|a| a.outcome == "enforced")),
        "no enforced event: {enforced:?}"
    );
    let id = ev[0].action.as_ref().unwrap().id.unwrap();
    let other = HostBackend::new(NetOptions::default());
    actuator::revert(&dir.path().join(STATE_FILE), id, &other, SystemTime::now()).unwrap();
    assert!(!runs(), "only the agent drops the rule, on its next tick");
    assert_eq!(outcome(&c.tick()), "reverted");
    assert!(runs(), "evil still denied after the revert");
    drop(c);
}
