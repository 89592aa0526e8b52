//! The safety layer as a state machine: [`Containment`] over a fake backend and a hand-driven
//! clock. Modes, protected targets, budgets, TTL expiry, restarts (re-apply and expire), the
//! worker, failures, and `picket actions revert` from another connection. The real backends are
//! tested in `net.rs`, `host.rs` and end to end in agent/picket/tests/contain.rs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use picket_contain::actuator::{
    self, ActionContext, Backend, BackendError, Containment, ManualClock, Options, Prepared, RevertError,
};
use picket_contain::host::{DeniedExec, KillOutcome, LockOptions, LockRecord, ProcInfo, QuarantineRecord};
use picket_contain::net::Isolation;
use picket_contain::safety::{ActionKind, SharedAddrs};
use picket_contain::state::{RecordState, STATE_FILE};
use picket_event::Event;
use picket_policy::{ActionRequest, Mode};

/// The kernel, /proc and /etc/shadow as a few maps.
#[derive(Debug, Default)]
struct Fake {
    s: Mutex<FakeState>,
    /// While set, kill waits (to fill the worker's queue).
    hold: AtomicBool,
}

#[derive(Debug, Default)]
struct FakeState {
    blocked: BTreeMap<IpAddr, Option<Duration>>,
    isolated: Option<Isolation>,
    procs: HashMap<i32, ProcInfo>,
    killed: Vec<(i32, u64, bool)>,
    users: HashMap<String, u32>,
    locked: HashMap<String, LockRecord>,
    unlocked: Vec<String>,
    quarantined: HashMap<String, PathBuf>,
    restored: Vec<PathBuf>,
    denials: Vec<PathBuf>,
    gateways: Vec<IpAddr>,
    /// Every network call fails with this (nft missing).
    net_error: Option<String>,
}

impl Fake {
    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.s.lock().unwrap()
    }
    fn net(&self) -> Result<std::sync::MutexGuard<'_, FakeState>, BackendError> {
        let s = self.st();
        match &s.net_error {
            Some(e) => Err(BackendError::Failed(e.clone())),
            None => Ok(s),
        }
    }
}

impl Backend for Fake {
    fn block(&self, ip: IpAddr, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.net()?.blocked.insert(ip, ttl);
        Ok(())
    }
    fn unblock(&self, ip: IpAddr) -> Result<(), BackendError> {
        self.net()?.blocked.remove(&ip);
        Ok(())
    }
    fn blocked(&self) -> Result<Vec<IpAddr>, BackendError> {
        Ok(self.net()?.blocked.keys().copied().collect())
    }
    fn isolate(&self, iso: &Isolation) -> Result<(), BackendError> {
        self.net()?.isolated = Some(iso.clone());
        Ok(())
    }
    fn release(&self) -> Result<(), BackendError> {
        self.net()?.isolated = None;
        Ok(())
    }
    fn is_isolated(&self) -> Result<bool, BackendError> {
        Ok(self.net()?.isolated.is_some())
    }
    fn kill_refusal(&self, pid: i32) -> Option<String> {
        (pid <= 1).then(|| "pid 1 (init) is never killed".to_string())
    }
    fn process_info(&self, pid: i32) -> Option<ProcInfo> {
        self.st().procs.get(&pid).cloned()
    }
    fn kill(
        &self,
        pid: i32,
        start_time: u64,
        tree: bool,
        _grace: Duration,
    ) -> Result<KillOutcome, BackendError> {
        while self.hold.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut s = self.st();
        match s.procs.get(&pid) {
            Some(p) if p.start_time != start_time => {
                return Err(BackendError::Failed(format!("pid {pid} is another process now")));
            }
            None => return Err(BackendError::Failed(format!("no process with pid {pid}"))),
            Some(_) => {}
        }
        s.procs.remove(&pid);
        s.killed.push((pid, start_time, tree));
        Ok(KillOutcome { signalled: vec![pid], ended_by_term: vec![pid], ..KillOutcome::default() })
    }
    fn user_uid(&self, user: &str) -> Option<u32> {
        self.st().users.get(user).copied()
    }
    fn own_uid(&self) -> u32 {
        4242
    }
    fn lock_account(&self, user: &str, _: &LockOptions) -> Result<LockRecord, BackendError> {
        let mut s = self.st();
        let uid =
            *s.users.get(user).ok_or_else(|| BackendError::Failed(format!("no local user {user:?}")))?;
        let record = LockRecord {
            user: user.into(),
            uid,
            password_was_locked: false,
            password_was_empty: false,
            previous_expire: None,
            ended_pids: vec![],
            still_alive: vec![],
            locked_at: "2026-01-01T00:00:00Z".into(),
        };
        s.locked.insert(user.into(), record.clone());
        Ok(record)
    }
    fn unlock_account(&self, user: &str, record: &LockRecord) -> Result<(), BackendError> {
        let mut s = self.st();
        assert_eq!(s.locked.remove(user).as_ref(), Some(record), "unlocked with another record");
        s.unlocked.push(user.into());
        Ok(())
    }
    fn quarantine(&self, path: &Path, _dir: &Path) -> Result<QuarantineRecord, BackendError> {
        let mut s = self.st();
        let id = format!("{:032x}", s.quarantined.len() + 1);
        s.quarantined.insert(id.clone(), path.to_path_buf());
        Ok(QuarantineRecord {
            id,
            original_path: path.to_path_buf(),
            uid: 1000,
            gid: 1000,
            mode: 0o755,
            size: 1,
            sha256: "00".repeat(32),
            mtime: 0,
            mtime_nsec: 0,
            links: 1,
            cross_filesystem: false,
            quarantined_at: "2026-01-01T00:00:00Z".into(),
        })
    }
    fn restore(&self, id: &str, _dir: &Path) -> Result<(), BackendError> {
        let mut s = self.st();
        let p = s.quarantined.remove(id).ok_or_else(|| BackendError::Failed(format!("no record {id}")))?;
        s.restored.push(p);
        Ok(())
    }
    fn set_exec_denials(&self, paths: &[PathBuf]) -> Result<(), BackendError> {
        let mut v = paths.to_vec();
        v.sort();
        self.st().denials = v;
        Ok(())
    }
    fn denied_execs(&self) -> Vec<DeniedExec> {
        Vec::new()
    }
    fn default_gateways(&self) -> Vec<IpAddr> {
        self.st().gateways.clone()
    }
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A containment over a fake host, state in a temp dir.
struct Rig {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
    clock: ManualClock,
    c: Containment,
}

fn options(dir: &Path) -> Options {
    let mut o = Options::new(dir.join(STATE_FILE), "dev-1".into());
    o.protected.cidrs = vec!["10.9.0.0/16".parse().unwrap()];
    o.protected.broker = SharedAddrs::new(vec![ip("192.0.2.10")]);
    o.protected.process_names = vec!["sshd".into()];
    o.protected.paths = vec![PathBuf::from("/usr/bin")];
    o
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake::default());
        fake.st().gateways = vec![ip("192.168.1.1")];
        let clock = ManualClock::new(t0());
        let c = Containment::open(options(dir.path()), fake.clone(), Arc::new(clock.clone())).unwrap();
        Rig { dir, fake, clock, c }
    }

    /// The agent restarts on the same state file; with `reboot`, the kernel's state is gone.
    fn restart(&mut self, reboot: bool) -> Vec<Event> {
        if reboot {
            let mut s = self.fake.st();
            s.blocked.clear();
            s.isolated = None;
        }
        self.c = Containment::open(options(self.dir.path()), self.fake.clone(), Arc::new(self.clock.clone()))
            .unwrap();
        self.c.restore()
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join(STATE_FILE)
    }
}

fn ctx(mode: Mode) -> ActionContext {
    ActionContext { rule_id: "r-test".into(), mode, severity: 73, process_start_time: None }
}

fn block(addr: &str, secs: u64) -> ActionRequest {
    ActionRequest::BlockIp { ip: ip(addr), ttl: Duration::from_secs(secs) }
}

/// (event.action, action.outcome) of each event.
fn outcomes(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let a = e.action.as_ref().expect("an action event");
            (e.event.action.clone().unwrap_or_default(), a.outcome.clone())
        })
        .collect()
}

fn reason(ev: &Event) -> String {
    let a = ev.action.as_ref().unwrap();
    a.reason.clone().or(a.error.clone()).unwrap_or_default()
}

fn pair(a: &str, o: &str) -> (String, String) {
    (a.to_string(), o.to_string())
}

#[test]
fn monitor_mode_journals_a_dry_run_and_changes_nothing() {
    let mut r = Rig::new();
    let ev = r.c.apply(&block("203.0.113.7", 3600), &ctx(Mode::Monitor));
    assert_eq!(outcomes(&ev), vec![pair("block_ip", "dry_run")]);
    let a = ev[0].action.as_ref().unwrap();
    assert_eq!((a.mode.as_str(), a.target.as_str(), a.ttl_secs), ("monitor", "203.0.113.7", Some(3600)));
    assert_eq!(ev[0].source.as_ref().unwrap().ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(ev[0].rule.as_ref().unwrap().id, "r-test");
    assert!(r.fake.st().blocked.is_empty());
    assert!(actuator::list(&r.state_path(), true, 100).unwrap().is_empty(), "a dry run keeps no state");
}

#[test]
fn enforce_journals_the_intent_then_the_outcome_and_records_what_is_in_force() {
    let mut r = Rig::new();
    let Prepared::Act { intent, act } = r.c.prepare(&block("203.0.113.7", 3600), &ctx(Mode::Enforce)) else {
        panic!("expected an act")
    };
    // The intent exists before anything changed on the host.
    assert_eq!(intent.action.as_ref().unwrap().outcome, "intent");
    assert!(r.fake.st().blocked.is_empty());
    let id = intent.action.as_ref().unwrap().id.unwrap();
    let outcome = r.c.execute(act).expect("a block runs inline");
    let a = outcome.action.as_ref().unwrap();
    assert_eq!((a.outcome.as_str(), a.id), ("succeeded", Some(id)));
    assert_eq!(a.until, Some((t0() + Duration::from_secs(3600)).into()));
    assert_eq!(r.fake.st().blocked.get(&ip("203.0.113.7")), Some(&Some(Duration::from_secs(3600))));
    assert!(outcome.message.as_ref().unwrap().contains("block_ip 203.0.113.7 for 3600s: succeeded"));

    let rows = actuator::list(&r.state_path(), false, 0).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id, rows[0].action, rows[0].state), (id, ActionKind::BlockIp, RecordState::Active));
    assert_eq!((rows[0].target.as_str(), rows[0].rule_id.as_str()), ("203.0.113.7", "r-test"));
}

#[test]
fn protected_targets_are_refused_with_the_reason_in_both_modes() {
    let mut r = Rig::new();
    {
        let mut s = r.fake.st();
        let p = |pid, comm: &str, uid| ProcInfo {
            pid,
            ppid: 1,
            start_time: 100,
            uid,
            euid: uid,
            comm: comm.into(),
            exe: Some(PathBuf::from(format!("/usr/sbin/{comm}"))),
            is_kernel_thread: false,
            state: 'S',
        };
        s.procs.insert(50, p(50, "sshd", 1000));
        s.procs.insert(60, p(60, "cron", 0));
        s.users.insert("root".into(), 0);
        s.users.insert("svc".into(), 4242);
    }
    let data_file = r.dir.path().join("journal.db").display().to_string();
    let cases: Vec<(ActionRequest, &str)> = vec![
        (block("127.0.0.1", 60), "loopback"),
        (block("10.9.3.4", 60), "protected network 10.9.0.0/16"),
        (block("192.0.2.10", 60), "broker"),
        (block("192.168.1.1", 60), "default gateway"),
        (ActionRequest::Kill { pid: 1, tree: false }, "init"),
        (ActionRequest::Kill { pid: 50, tree: true }, "protected process name"),
        (ActionRequest::Kill { pid: 60, tree: false }, "root"),
        (ActionRequest::LockAccount { user: "root".into(), ttl: None }, "root"),
        (ActionRequest::LockAccount { user: "svc".into(), ttl: None }, "picket runs as"),
        (ActionRequest::Quarantine { path: "/usr/bin/sh".into() }, "protected path /usr/bin"),
        (ActionRequest::Quarantine { path: data_file }, "protected path"),
        (ActionRequest::DenyExec { path: "/tmp/*".into() }, "glob"),
        (ActionRequest::Quarantine { path: "relative/x".into() }, "absolute"),
    ];
    for mode in [Mode::Monitor, Mode::Enforce] {
        for (req, why) in &cases {
            let ev = r.c.apply(req, &ctx(mode));
            assert_eq!(ev.len(), 1, "{req:?}");
            assert_eq!(ev[0].action.as_ref().unwrap().outcome, "refused", "{req:?} in {mode:?}");
            assert!(reason(&ev[0]).contains(why), "{req:?}: {}", reason(&ev[0]));
        }
    }
    let s = r.fake.st();
    assert!(s.blocked.is_empty() && s.killed.is_empty() && s.locked.is_empty() && s.quarantined.is_empty());
    drop(s);
    assert!(actuator::list(&r.state_path(), true, 100).unwrap().is_empty());
}

#[test]
fn budgets_skip_the_excess_with_the_reason_and_free_up_after_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let clock = ManualClock::new(t0());
    let mut o = options(dir.path());
    o.budgets.set(ActionKind::BlockIp, 3);
    let mut c = Containment::open(o, fake.clone(), Arc::new(clock.clone())).unwrap();
    for i in 0..5 {
        let ev = c.apply(&block(&format!("203.0.113.{}", 10 + i), 60), &ctx(Mode::Enforce));
        let want = if i < 3 {
            vec![pair("block_ip", "intent"), pair("block_ip", "succeeded")]
        } else {
            vec![pair("block_ip", "skipped")]
        };
        assert_eq!(outcomes(&ev), want, "block {i}");
        if i >= 3 {
            assert!(reason(&ev[0]).contains("at most 3 block_ip per minute"), "{}", reason(&ev[0]));
        }
    }
    // Monitor mode does not use the budget up.
    assert_eq!(outcomes(&c.apply(&block("203.0.113.99", 60), &ctx(Mode::Monitor)))[0].1, "dry_run");
    assert_eq!(fake.st().blocked.len(), 3);
    clock.advance(Duration::from_secs(60));
    assert_eq!(outcomes(&c.apply(&block("203.0.113.20", 60), &ctx(Mode::Enforce)))[1].1, "succeeded");
}

#[test]
fn a_repeated_block_renews_the_same_record_and_never_shortens_it() {
    let mut r = Rig::new();
    let first = r.c.apply(&block("203.0.113.7", 3600), &ctx(Mode::Enforce));
    let id = first[0].action.as_ref().unwrap().id;
    r.clock.advance(Duration::from_secs(600));
    let again = r.c.apply(&block("203.0.113.7", 60), &ctx(Mode::Enforce));
    let a = again[1].action.as_ref().unwrap();
    assert_eq!((a.outcome.as_str(), a.id), ("succeeded", id));
    assert_eq!(a.ttl_secs, Some(3000), "the 3000 s left beat the 60 s asked");
    assert_eq!(actuator::list(&r.state_path(), true, 100).unwrap().len(), 1);
}

#[test]
fn ttls_run_out_on_tick_blocks_inline_isolation_and_locks_too() {
    let mut r = Rig::new();
    r.fake.st().users.insert("alice".into(), 1001);
    r.c.apply(&block("203.0.113.7", 60), &ctx(Mode::Enforce));
    r.c.apply(&ActionRequest::IsolateHost { ttl: Some(Duration::from_secs(120)) }, &ctx(Mode::Enforce));
    r.c.apply(
        &ActionRequest::LockAccount { user: "alice".into(), ttl: Some(Duration::from_secs(120)) },
        &ctx(Mode::Enforce),
    );
    {
        let s = r.fake.st();
        let iso = s.isolated.as_ref().expect("isolated");
        let allow: Vec<String> = iso.allow.iter().map(ToString::to_string).collect();
        assert_eq!(
            allow,
            ["10.9.0.0/16", "192.0.2.10/32"],
            "protected networks and the broker stay reachable"
        );
        assert!(iso.dhcp);
        assert!(s.locked.contains_key("alice"));
    }
    r.clock.advance(Duration::from_secs(59));
    assert!(r.c.tick().is_empty());
    r.clock.advance(Duration::from_secs(1));
    let ev = r.c.tick();
    assert_eq!(outcomes(&ev), vec![pair("block_ip", "expired")]);
    assert!(r.fake.st().blocked.is_empty());
    r.clock.advance(Duration::from_secs(60));
    let ev = r.c.tick();
    assert_eq!(outcomes(&ev), vec![pair("isolate_host", "expired"), pair("lock_account", "expired")]);
    let s = r.fake.st();
    assert!(s.isolated.is_none());
    assert_eq!(s.unlocked, ["alice"]);
    drop(s);
    assert!(actuator::list(&r.state_path(), false, 0).unwrap().is_empty(), "nothing in force");
    assert!(r.c.tick().is_empty(), "expired once");
}

#[test]
fn after_a_reboot_what_is_still_in_force_is_reapplied_and_what_ran_out_is_undone() {
    let mut r = Rig::new();
    r.fake.st().users.insert("alice".into(), 1001);
    r.c.apply(&block("203.0.113.1", 3600), &ctx(Mode::Enforce));
    r.c.apply(&block("203.0.113.2", 60), &ctx(Mode::Enforce));
    r.c.apply(&block("2001:db8::3", 3600), &ctx(Mode::Enforce));
    r.c.apply(&ActionRequest::IsolateHost { ttl: None }, &ctx(Mode::Enforce));
    r.c.apply(
        &ActionRequest::LockAccount { user: "alice".into(), ttl: Some(Duration::from_secs(1800)) },
        &ctx(Mode::Enforce),
    );
    r.clock.advance(Duration::from_secs(120));

    let ev = r.restart(true);
    let mut got = outcomes(&ev);
    got.sort();
    assert_eq!(
        got,
        vec![
            pair("block_ip", "expired"),
            pair("block_ip", "reapplied"),
            pair("block_ip", "reapplied"),
            pair("isolate_host", "reapplied")
        ]
    );
    {
        let s = r.fake.st();
        // Back with the TTL that was left, not a fresh one.
        assert_eq!(s.blocked.get(&ip("203.0.113.1")), Some(&Some(Duration::from_secs(3480))));
        assert!(s.blocked.contains_key(&ip("2001:db8::3")));
        assert!(!s.blocked.contains_key(&ip("203.0.113.2")));
        assert!(s.isolated.is_some());
        assert!(s.locked.contains_key("alice"), "a lock survives reboots by itself");
    }
    // A plain restart (kernel state kept) re-applies nothing and says nothing.
    assert!(r.restart(false).is_empty());

    // Down for longer than the lock's TTL: undone at the next start, with its lock record.
    r.clock.advance(Duration::from_secs(3600));
    let ev = r.restart(true);
    let mut got = outcomes(&ev);
    got.sort();
    assert_eq!(
        got,
        vec![
            pair("block_ip", "expired"),
            pair("block_ip", "expired"),
            pair("isolate_host", "reapplied"),
            pair("lock_account", "expired")
        ]
    );
    assert_eq!(r.fake.st().unlocked, ["alice"]);
}

#[test]
fn a_lock_interrupted_before_its_outcome_is_marked_failed_at_the_next_start() {
    let mut r = Rig::new();
    r.fake.st().users.insert("alice".into(), 1001);
    let Prepared::Act { .. } =
        r.c.prepare(&ActionRequest::LockAccount { user: "alice".into(), ttl: None }, &ctx(Mode::Enforce))
    else {
        panic!()
    };
    // Crash: the act never ran.
    let ev = r.restart(false);
    assert_eq!(outcomes(&ev), vec![pair("lock_account", "failed")]);
    assert!(reason(&ev[0]).contains("check by hand"));
}

#[test]
fn nft_failing_is_a_failed_outcome_with_the_error_and_the_next_block_works_again() {
    let mut r = Rig::new();
    r.fake.st().net_error = Some("nft program \"nft\" not found".into());
    let ev = r.c.apply(&block("203.0.113.7", 60), &ctx(Mode::Enforce));
    assert_eq!(outcomes(&ev), vec![pair("block_ip", "intent"), pair("block_ip", "failed")]);
    assert!(ev[1].action.as_ref().unwrap().error.as_ref().unwrap().contains("not found"));
    let rows = actuator::list(&r.state_path(), true, 10).unwrap();
    assert_eq!(rows[0].state, RecordState::Failed);
    r.fake.st().net_error = None;
    let ev = r.c.apply(&block("203.0.113.7", 60), &ctx(Mode::Enforce));
    assert_eq!(outcomes(&ev)[1].1, "succeeded");
}

#[test]
fn revert_from_another_process_undoes_it_and_the_agent_journals_that_once() {
    let mut r = Rig::new();
    let ev = r.c.apply(&block("203.0.113.7", 3600), &ctx(Mode::Enforce));
    let id = ev[0].action.as_ref().unwrap().id.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("x.bin");
    let ev = r.c.apply(&ActionRequest::Quarantine { path: file.display().to_string() }, &ctx(Mode::Enforce));
    assert_eq!(outcomes(&ev)[1].1, "succeeded", "{:?}", ev[1].message);
    let qid = ev[0].action.as_ref().unwrap().id.unwrap();
    assert!(r.c.tick().is_empty());

    // `picket actions revert`: its own connection, its own backend handle on the same host.
    let rec = actuator::revert(&r.state_path(), id, r.fake.as_ref(), t0()).unwrap();
    assert_eq!(rec.state, RecordState::Reverted);
    assert!(r.fake.st().blocked.is_empty());
    actuator::revert(&r.state_path(), qid, r.fake.as_ref(), t0()).unwrap();
    assert_eq!(r.fake.st().restored, [file]);
    let again = actuator::revert(&r.state_path(), id, r.fake.as_ref(), t0()).unwrap_err();
    assert!(matches!(again, RevertError::NotInForce { state: "reverted", .. }), "{again}");
    assert!(matches!(
        actuator::revert(&r.state_path(), 999, r.fake.as_ref(), t0()),
        Err(RevertError::State(_))
    ));

    let ev = r.c.tick();
    assert_eq!(outcomes(&ev), vec![pair("block_ip", "reverted"), pair("quarantine", "reverted")]);
    assert!(r.c.tick().is_empty());
}

#[test]
fn deny_rules_follow_the_state_including_a_revert_from_another_process() {
    let mut r = Rig::new();
    let ev = r.c.apply(&ActionRequest::DenyExec { path: "/tmp/evil".into() }, &ctx(Mode::Enforce));
    assert_eq!(outcomes(&ev), vec![pair("deny_exec", "intent"), pair("deny_exec", "succeeded")]);
    r.c.apply(&ActionRequest::DenyExec { path: "/dev/shm/x".into() }, &ctx(Mode::Enforce));
    assert_eq!(r.fake.st().denials, [PathBuf::from("/dev/shm/x"), PathBuf::from("/tmp/evil")]);
    let id = ev[0].action.as_ref().unwrap().id.unwrap();
    actuator::revert(&r.state_path(), id, r.fake.as_ref(), t0()).unwrap();
    let ev = r.c.tick();
    assert_eq!(outcomes(&ev), vec![pair("deny_exec", "reverted")]);
    assert_eq!(r.fake.st().denials, [PathBuf::from("/dev/shm/x")]);
    // After a restart the running rules come back from the state file.
    r.fake.st().denials.clear();
    let ev = r.restart(false);
    assert_eq!(outcomes(&ev), vec![pair("deny_exec", "reapplied")]);
    assert_eq!(r.fake.st().denials, [PathBuf::from("/dev/shm/x")]);
}

#[test]
fn slow_actions_run_on_the_worker_and_a_full_queue_is_skipped_and_counted() {
    let mut r = Rig::new();
    let mut o = options(r.dir.path());
    o.budgets.set(ActionKind::Kill, 1000);
    r.c = Containment::open(o, r.fake.clone(), Arc::new(r.clock.clone())).unwrap();
    let (tx, rx) = mpsc::channel();
    r.c.start_worker(Box::new(move |ev| {
        let _ = tx.send(ev);
    }))
    .unwrap();
    let n = actuator::WORKER_QUEUE + 3;
    for pid in 100..100 + i32::try_from(n).unwrap() {
        r.fake.st().procs.insert(
            pid,
            ProcInfo {
                pid,
                ppid: 1,
                start_time: 500,
                uid: 1000,
                euid: 1000,
                comm: "nc".into(),
                exe: None,
                is_kernel_thread: false,
                state: 'S',
            },
        );
    }
    r.fake.hold.store(true, Ordering::Relaxed);
    let mut skipped = 0;
    for pid in 100..100 + u32::try_from(n).unwrap() {
        let c = ActionContext { process_start_time: Some(500), ..ctx(Mode::Enforce) };
        match r.c.prepare(&ActionRequest::Kill { pid, tree: true }, &c) {
            Prepared::Act { intent, act } => {
                assert_eq!(intent.process.as_ref().unwrap().pid, Some(pid));
                if let Some(ev) = r.c.execute(act) {
                    assert_eq!(ev.action.as_ref().unwrap().outcome, "skipped");
                    assert!(reason(&ev).contains("queue is full"));
                    skipped += 1;
                }
            }
            Prepared::Done(ev) => panic!("{:?}", ev.message),
        }
        // Let the worker pick up the first job, so exactly one is in flight.
        if pid == 100 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(skipped >= 1, "the queue never filled");
    assert_eq!(r.c.take_dropped(), skipped);
    r.fake.hold.store(false, Ordering::Relaxed);
    let mut succeeded = 0;
    while let Ok(ev) = rx.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(ev.action.as_ref().unwrap().outcome, "succeeded", "{:?}", ev.message);
        succeeded += 1;
        if succeeded + skipped == u64::try_from(n).unwrap() {
            break;
        }
    }
    assert_eq!(succeeded + skipped, u64::try_from(n).unwrap());
    assert!(r.fake.st().killed.iter().all(|(_, start, tree)| *start == 500 && *tree));
    r.c.shutdown(Duration::from_secs(2));
}

#[test]
fn a_kill_of_a_process_that_is_gone_fails_and_pid_reuse_is_caught() {
    let mut r = Rig::new();
    let ev = r.c.apply(&ActionRequest::Kill { pid: 777, tree: false }, &ctx(Mode::Enforce));
    assert_eq!(outcomes(&ev), vec![pair("kill", "failed")]);
    r.fake.st().procs.insert(
        778,
        ProcInfo {
            pid: 778,
            ppid: 1,
            start_time: 900,
            uid: 1000,
            euid: 1000,
            comm: "nc".into(),
            exe: None,
            is_kernel_thread: false,
            state: 'S',
        },
    );
    // The event saw another process under this pid.
    let c = ActionContext { process_start_time: Some(899), ..ctx(Mode::Enforce) };
    let ev = r.c.apply(&ActionRequest::Kill { pid: 778, tree: false }, &c);
    assert_eq!(outcomes(&ev), vec![pair("kill", "intent"), pair("kill", "failed")]);
    assert!(r.fake.st().procs.contains_key(&778));
}

#[test]
fn a_block_right_after_an_outside_revert_is_a_new_record() {
    let mut r = Rig::new();
    let ev = r.c.apply(&block("203.0.113.7", 3600), &ctx(Mode::Enforce));
    let first = ev[0].action.as_ref().unwrap().id.unwrap();
    actuator::revert(&r.state_path(), first, r.fake.as_ref(), t0()).unwrap();
    // Before the agent's next tick.
    let ev = r.c.apply(&block("203.0.113.7", 3600), &ctx(Mode::Enforce));
    let second = ev[1].action.as_ref().unwrap();
    assert_eq!(second.outcome, "succeeded");
    assert_ne!(second.id, Some(first));
    let rows = actuator::list(&r.state_path(), true, 10).unwrap();
    let states: Vec<(u64, RecordState)> = rows.iter().map(|r| (r.id, r.state)).collect();
    assert_eq!(states, [(first, RecordState::Reverted), (second.id.unwrap(), RecordState::Active)]);
    assert!(r.fake.st().blocked.contains_key(&ip("203.0.113.7")));
}
