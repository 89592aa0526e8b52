//! The actions stage: [`Containment`] takes a policy's [`ActionRequest`] and carries it out, or
//! says why not, through the safety layer.
//!
//! # One action, step by step
//!
//! [`Containment::prepare`] decides, without touching the host:
//!
//! 1. **protected target?** → `refused`, with the reason ([`crate::safety`]). Checked in monitor
//!    mode too, so a dry run says what the real run would.
//! 2. **monitor mode** (the rule's mode, else the agent's) → `dry_run`: what would have been done.
//! 3. **budget** for this action type used up this minute → `skipped`.
//! 4. **state**: a `pending` row in `containment.db` (for actions that leave something in force).
//!
//! and returns [`Prepared::Done`] (one event to journal, nothing to run) or [`Prepared::Act`]: an
//! `intent` event to journal *first*, and the act to pass to [`Containment::execute`], which
//! returns the outcome event (`succeeded`, `failed`, `refused`). So the caller journals the
//! decision before the action runs and the outcome after (ARCHITECTURE.md, invariant 4).
//!
//! # Fast and slow actions
//!
//! A block is one netlink transaction (~0.05 ms), done in `execute` on the caller's thread: from
//! the auth-log line to the kernel set nothing waits on an fsync or a process spawn (the intent
//! is queued for the journal, not committed, before the block; the state row is written without
//! fsync). Everything else (isolation runs `nft`, kill waits out a grace period, lock runs
//! `usermod`, quarantine may copy) goes to one worker thread through a bounded queue
//! ([`WORKER_QUEUE`]); `execute` returns `None` and the worker hands the outcome to the `emit`
//! callback given to [`Containment::start_worker`]. A full queue: `skipped`, counted.
//!
//! # Time
//!
//! TTLs run on the wall clock ([`Clock`]). A block's TTL is also held by the kernel (the set
//! element times out by itself); isolation and account locks are undone by [`Containment::tick`],
//! which the caller runs every second or so. After a restart, [`Containment::restore`] re-applies
//! what is still in force (blocks gone after a reboot come back with their remaining TTL,
//! isolation is put back) and undoes what ran out meanwhile.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use picket_contain::actuator::{ActionContext, Containment, HostBackend, Options, Prepared, SystemClock};
//! use picket_policy::{ActionRequest, Mode};
//!
//! let backend = Arc::new(HostBackend::new(Default::default()));
//! let opts = Options::new("/var/lib/picket/containment.db".into(), "device-1".into());
//! let mut c = Containment::open(opts, backend, Arc::new(SystemClock))?;
//! let journal = |ev: picket_event::Event| println!("{}", serde_json::to_string(&ev).unwrap());
//! for ev in c.restore() {
//!     journal(ev);
//! }
//! let req = ActionRequest::BlockIp { ip: "203.0.113.7".parse().unwrap(), ttl: std::time::Duration::from_secs(3600) };
//! let ctx = ActionContext { rule_id: "ssh-brute-force".into(), mode: Mode::Enforce, severity: 73, process_start_time: None };
//! match c.prepare(&req, &ctx) {
//!     Prepared::Done(ev) => journal(*ev),
//!     Prepared::Act { intent, act } => {
//!         journal(*intent);
//!         if let Some(outcome) = c.execute(act) {
//!             journal(outcome);
//!         }
//!     }
//! }
//! # Ok::<(), picket_contain::state::StateError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use picket_event::{ActionDetail, Endpoint, Event, EventKind, File, Process, Timestamp, User, severity};
use picket_policy::{ActionRequest, Mode};

use crate::host::{
    self, DeniedExec, ExecGuard, ExecGuardConfig, ExecMatcher, HostError, KillOutcome, LockOptions,
    LockRecord, ProcInfo, QuarantineRecord,
};
use crate::net::{Isolation, NetContainment, NetError, NetOptions};
use crate::safety::{self, ActionKind, BudgetTracker, Budgets, Protected};
use crate::state::{NewRecord, Record, RecordState, RevertData, StateDb, StateError};

/// Slow actions waiting for the worker. Each is a kill, lock, quarantine, isolation or deny
/// rule: 64 is far more than the budgets let through in a minute, so a full queue means the
/// worker is stuck (a hung `usermod`), and more waiting would not help.
pub const WORKER_QUEUE: usize = 64;

/// How often a failed undo (of an isolation or lock whose TTL ran out) is tried again.
pub const REVERT_RETRY: Duration = Duration::from_secs(60);

/// How often the default gateways are read again.
const GATEWAY_REFRESH: Duration = Duration::from_secs(30);

/// After a failed `nft` setup, how long blocks fail fast with the same error before trying again
/// (a missing `nft` must not cost a spawn on every block).
const NET_RETRY: Duration = Duration::from_secs(5);

/// The wall clock, or a hand-driven one in tests.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn new(t: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(t)))
    }
    pub fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = t;
    }
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a backend call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// A built-in refusal of the host module (PID 1, own process, root account, ...).
    Refused(String),
    /// It was tried and failed; the error text.
    Failed(String),
}

impl BackendError {
    fn text(&self) -> &str {
        match self {
            BackendError::Refused(s) | BackendError::Failed(s) => s,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Refused(s) => write!(f, "refused: {s}"),
            BackendError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<HostError> for BackendError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::RefusedProcess { .. } | HostError::RefusedUser { .. } => {
                BackendError::Refused(e.to_string())
            }
            other => BackendError::Failed(other.to_string()),
        }
    }
}

impl From<NetError> for BackendError {
    fn from(e: NetError) -> Self {
        BackendError::Failed(e.to_string())
    }
}

/// What actually changes the host. [`HostBackend`] is the real one (nftables, /proc, signals,
/// shadow tools, fanotify); tests of the safety layer use a fake. Methods take `&self` so the
/// pipeline thread (blocks) and the worker (everything else) can share one backend.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Gets the network side ready (the nftables table), so the first block is as fast as the rest.
    fn prepare_net(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn block(&self, ip: IpAddr, ttl: Option<Duration>) -> Result<(), BackendError>;
    fn unblock(&self, ip: IpAddr) -> Result<(), BackendError>;
    /// Addresses in the block sets now.
    fn blocked(&self) -> Result<Vec<IpAddr>, BackendError>;
    fn isolate(&self, iso: &Isolation) -> Result<(), BackendError>;
    fn release(&self) -> Result<(), BackendError>;
    fn is_isolated(&self) -> Result<bool, BackendError>;
    /// The host module's last-line refusal for `pid` ([`host::kill_refusal`]).
    fn kill_refusal(&self, pid: i32) -> Option<String>;
    fn process_info(&self, pid: i32) -> Option<ProcInfo>;
    fn kill(
        &self,
        pid: i32,
        start_time: u64,
        tree: bool,
        grace: Duration,
    ) -> Result<KillOutcome, BackendError>;
    /// The uid of local user `user`, if there is one.
    fn user_uid(&self, user: &str) -> Option<u32>;
    /// The uid picket runs as.
    fn own_uid(&self) -> u32;
    fn lock_account(&self, user: &str, options: &LockOptions) -> Result<LockRecord, BackendError>;
    fn unlock_account(&self, user: &str, record: &LockRecord) -> Result<(), BackendError>;
    fn quarantine(&self, path: &Path, dir: &Path) -> Result<QuarantineRecord, BackendError>;
    fn restore(&self, id: &str, dir: &Path) -> Result<(), BackendError>;
    /// Makes `paths` the complete list of executables denied (empty: stop denying).
    fn set_exec_denials(&self, paths: &[PathBuf]) -> Result<(), BackendError>;
    /// Execs denied since the last call.
    fn denied_execs(&self) -> Vec<DeniedExec>;
    fn default_gateways(&self) -> Vec<IpAddr>;
}

/// The real host: [`NetContainment`] for blocks and isolation, the [`host`] module for the rest.
#[derive(Debug)]
pub struct HostBackend {
    net_options: NetOptions,
    /// Blocks, from the pipeline thread; never waits behind an isolation script.
    fast: Mutex<NetSlot>,
    /// Isolation, from the worker.
    slow: Mutex<NetSlot>,
    exec: Mutex<ExecSlot>,
}

#[derive(Debug, Default)]
struct NetSlot {
    net: Option<NetContainment>,
    failed: Option<(Instant, String)>,
}

impl NetSlot {
    fn get(&mut self, options: &NetOptions) -> Result<&mut NetContainment, BackendError> {
        if self.net.is_none() {
            if let Some((at, e)) = &self.failed
                && at.elapsed() < NET_RETRY
            {
                return Err(BackendError::Failed(e.clone()));
            }
            match NetContainment::open(options.clone()) {
                Ok(net) => {
                    self.net = Some(net);
                    self.failed = None;
                }
                Err(e) => {
                    let text = e.to_string();
                    self.failed = Some((Instant::now(), text.clone()));
                    return Err(BackendError::Failed(text));
                }
            }
        }
        self.net.as_mut().ok_or_else(|| BackendError::Failed("nftables not set up".into()))
    }
}

#[derive(Debug, Default)]
struct ExecSlot {
    guard: Option<(ExecGuard, Receiver<DeniedExec>)>,
    paths: Vec<PathBuf>,
    marks: Vec<PathBuf>,
}

impl HostBackend {
    /// A backend that reaches nftables as `net_options` says (`NetOptions::default()` in
    /// production). Nothing is touched until an action asks for it.
    pub fn new(net_options: NetOptions) -> HostBackend {
        HostBackend {
            net_options,
            fast: Mutex::new(NetSlot::default()),
            slow: Mutex::new(NetSlot::default()),
            exec: Mutex::new(ExecSlot::default()),
        }
    }

    fn with_fast<T>(
        &self,
        f: impl FnOnce(&mut NetContainment) -> Result<T, NetError>,
    ) -> Result<T, BackendError> {
        let mut slot = self.fast.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(f(slot.get(&self.net_options)?)?)
    }

    fn with_slow<T>(
        &self,
        f: impl FnOnce(&mut NetContainment) -> Result<T, NetError>,
    ) -> Result<T, BackendError> {
        let mut slot = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(f(slot.get(&self.net_options)?)?)
    }
}

impl Backend for HostBackend {
    fn prepare_net(&self) -> Result<(), BackendError> {
        self.with_fast(|_| Ok(()))
    }
    fn block(&self, ip: IpAddr, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.with_fast(|n| n.block(&[(ip, ttl)]))
    }
    fn unblock(&self, ip: IpAddr) -> Result<(), BackendError> {
        self.with_fast(|n| n.unblock(&[ip]))
    }
    fn blocked(&self) -> Result<Vec<IpAddr>, BackendError> {
        self.with_fast(|n| Ok(n.blocked()?.into_iter().map(|b| b.ip).collect()))
    }
    fn isolate(&self, iso: &Isolation) -> Result<(), BackendError> {
        self.with_slow(|n| n.isolate(iso))
    }
    fn release(&self) -> Result<(), BackendError> {
        self.with_slow(NetContainment::release)
    }
    fn is_isolated(&self) -> Result<bool, BackendError> {
        self.with_slow(NetContainment::is_isolated)
    }
    fn kill_refusal(&self, pid: i32) -> Option<String> {
        host::kill_refusal(pid).map(|r| r.to_string())
    }
    fn process_info(&self, pid: i32) -> Option<ProcInfo> {
        host::process_info(pid)
    }
    fn kill(
        &self,
        pid: i32,
        start_time: u64,
        tree: bool,
        grace: Duration,
    ) -> Result<KillOutcome, BackendError> {
        Ok(host::kill(pid, start_time, tree, grace)?)
    }
    fn user_uid(&self, user: &str) -> Option<u32> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == user).then_some(())?;
            f.nth(1)?.parse().ok()
        })
    }
    fn own_uid(&self) -> u32 {
        rustix::process::getuid().as_raw()
    }
    fn lock_account(&self, user: &str, options: &LockOptions) -> Result<LockRecord, BackendError> {
        Ok(host::lock_account(user, options)?)
    }
    fn unlock_account(&self, user: &str, record: &LockRecord) -> Result<(), BackendError> {
        Ok(host::unlock_account(user, record)?)
    }
    fn quarantine(&self, path: &Path, dir: &Path) -> Result<QuarantineRecord, BackendError> {
        Ok(host::quarantine(path, dir)?)
    }
    fn restore(&self, id: &str, dir: &Path) -> Result<(), BackendError> {
        host::restore(id, dir).map(|_| ()).map_err(Into::into)
    }
    fn set_exec_denials(&self, paths: &[PathBuf]) -> Result<(), BackendError> {
        let mut slot = self.exec.lock().unwrap_or_else(PoisonError::into_inner);
        let mut paths = paths.to_vec();
        paths.sort();
        paths.dedup();
        if paths == slot.paths && (paths.is_empty() || slot.guard.is_some()) {
            return Ok(());
        }
        if paths.is_empty() {
            slot.guard = None;
            slot.paths.clear();
            slot.marks.clear();
            return Ok(());
        }
        let mut matcher = ExecMatcher::new();
        for p in &paths {
            matcher = matcher.deny_path(&p.to_string_lossy())?;
        }
        // A mark on a directory covers the whole mount it is on.
        let mut marks: Vec<PathBuf> =
            paths.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).filter(|d| d.is_dir()).collect();
        marks.sort();
        marks.dedup();
        if marks.is_empty() {
            return Err(BackendError::Failed("none of the denied paths' directories exists".into()));
        }
        match &slot.guard {
            Some((guard, _)) if marks == slot.marks => guard.set_matcher(matcher),
            _ => {
                slot.guard = None;
                let started = ExecGuard::start(ExecGuardConfig::new(marks.clone(), matcher))?;
                slot.guard = Some(started);
                slot.marks = marks;
            }
        }
        slot.paths = paths;
        Ok(())
    }
    fn denied_execs(&self) -> Vec<DeniedExec> {
        let slot = self.exec.lock().unwrap_or_else(PoisonError::into_inner);
        slot.guard.as_ref().map(|(_, rx)| rx.try_iter().collect()).unwrap_or_default()
    }
    fn default_gateways(&self) -> Vec<IpAddr> {
        safety::default_gateways()
    }
}

/// How the actions stage runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `<data_dir>/containment.db`.
    pub state_path: PathBuf,
    /// `host.id` of the events it makes.
    pub host_id: String,
    /// Targets never acted on.
    pub protected: Protected,
    pub budgets: Budgets,
    /// Where quarantined files go (root-only, created if missing).
    pub quarantine_dir: PathBuf,
    /// SIGTERM → SIGKILL grace for kill and for the sessions of a locked account.
    pub kill_grace: Duration,
    /// What isolation keeps besides loopback, the protected networks and the broker: management
    /// access and DHCP. (`allow` is filled in at each isolation from the protected networks and the
    /// broker's addresses then.)
    pub isolation: Isolation,
}

impl Options {
    /// Defaults: nothing protected beyond the built-in targets, default budgets, quarantine in
    /// `quarantine/` beside the state file, 5 s kill grace, isolation with DHCP kept.
    pub fn new(state_path: PathBuf, host_id: String) -> Options {
        let quarantine_dir = state_path.parent().unwrap_or(Path::new(".")).join("quarantine");
        Options {
            state_path,
            host_id,
            protected: Protected::default(),
            budgets: Budgets::default(),
            quarantine_dir,
            kill_grace: Duration::from_secs(5),
            isolation: Isolation { dhcp: true, ..Isolation::default() },
        }
    }
}

/// What the caller knows about the decision behind an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionContext {
    pub rule_id: String,
    /// The mode that applies: the rule's, else the agent's ([`picket_policy::Decision::effective_mode`]).
    pub mode: Mode,
    /// The decision's severity, carried by the action events.
    pub severity: u8,
    /// Start time (clock ticks since boot, field 22 of /proc/PID/stat) of the process the
    /// triggering event names, when the event carries it: a kill is refused if the pid now belongs
    /// to another process. Without it, the start time is read when the action is prepared.
    pub process_start_time: Option<u64>,
}

/// The result of [`Containment::prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to run (`refused`, `skipped`, `dry_run`, or `failed` before acting): journal this.
    Done(Box<Event>),
    /// Journal `intent`, then pass `act` to [`Containment::execute`].
    Act { intent: Box<Event>, act: Act },
}

impl Prepared {
    /// The event to journal now: the final one, or the intent.
    pub fn event(&self) -> &Event {
        match self {
            Prepared::Done(ev) | Prepared::Act { intent: ev, .. } => ev,
        }
    }
}

/// An action that passed the safety checks, ready for [`Containment::execute`].
#[derive(Debug)]
pub struct Act {
    kind: ActionKind,
    target: Target,
    /// `target` as the state file keeps it.
    target_text: String,
    /// The state row; `None` for kill.
    id: Option<u64>,
    /// The row was already in force (a repeated block or lock): renewed, not redone.
    existing: bool,
    ttl: Option<Duration>,
    rule_id: String,
    severity: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Ip(IpAddr),
    Host,
    Pid { pid: i32, start_time: u64, tree: bool },
    Path(PathBuf),
    User(String),
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::Ip(ip) => ip.to_string(),
            Target::Host => "host".into(),
            Target::Pid { pid, .. } => pid.to_string(),
            Target::Path(p) => p.display().to_string(),
            Target::User(u) => u.clone(),
        }
    }

    fn of_record(r: &Record) -> Target {
        match r.action {
            ActionKind::BlockIp => r.target.parse().map_or(Target::Host, Target::Ip),
            ActionKind::IsolateHost => Target::Host,
            ActionKind::Quarantine | ActionKind::DenyExec => Target::Path(PathBuf::from(&r.target)),
            ActionKind::LockAccount => Target::User(r.target.clone()),
            ActionKind::Kill => {
                Target::Pid { pid: r.target.parse().unwrap_or(0), start_time: 0, tree: false }
            }
        }
    }
}

/// Whether the action leaves something in force that gets a state row.
fn recorded(kind: ActionKind) -> bool {
    kind != ActionKind::Kill
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Monitor => "monitor",
        Mode::Enforce => "enforce",
    }
}

/// One action event's content.
struct Step<'a> {
    kind: ActionKind,
    target: &'a Target,
    outcome: &'a str,
    mode: Mode,
    severity: u8,
    rule_id: &'a str,
    id: Option<u64>,
    ttl: Option<Duration>,
    until: Option<SystemTime>,
    reason: Option<String>,
    error: Option<String>,
}

fn step_event(host_id: &str, now: SystemTime, s: Step<'_>) -> Event {
    let mut ev = Event::new(EventKind::Action, Timestamp::from(now));
    ev.host.id = host_id.to_string();
    ev.event.severity = s.severity;
    ev.event.dataset = Some("picket.contain".into());
    ev.event.action = Some(s.kind.as_str().into());
    ev.rule = Some(picket_event::Rule { id: s.rule_id.to_string(), ..Default::default() });
    let target = s.target.text();
    match s.target {
        Target::Ip(ip) => ev.source = Some(Endpoint { ip: Some(ip.to_string()), ..Default::default() }),
        Target::Pid { pid, .. } => {
            ev.process = Some(Process { pid: u32::try_from(*pid).ok(), ..Default::default() });
        }
        Target::Path(p) => ev.file = Some(File { path: p.display().to_string(), ..Default::default() }),
        Target::User(u) => ev.user = Some(User { name: Some(u.clone()), ..Default::default() }),
        Target::Host => {}
    }
    let mut msg = format!("{} {target}", s.kind);
    if let Some(ttl) = s.ttl {
        msg.push_str(&format!(" for {}s", ttl.as_secs()));
    }
    msg.push_str(&format!(": {}", s.outcome.replace('_', " ")));
    if let Some(why) = s.reason.as_ref().or(s.error.as_ref()) {
        msg.push_str(&format!(": {why}"));
    }
    if let Some(id) = s.id {
        msg.push_str(&format!(" (action {id})"));
    }
    ev.message = Some(msg);
    ev.action = Some(ActionDetail {
        outcome: s.outcome.to_string(),
        target,
        mode: mode_str(s.mode).to_string(),
        id: s.id,
        ttl_secs: s.ttl.map(|t| t.as_secs()),
        until: s.until.map(Timestamp::from),
        reason: s.reason,
        error: s.error,
    });
    ev
}

/// Carries out acts and undoes records, with its own state connection: one on the pipeline's
/// thread (blocks, expiry of blocks), one on the worker.
#[derive(Debug)]
struct Exec {
    db: StateDb,
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    options: Arc<Options>,
}

impl Exec {
    fn event(&self, s: Step<'_>) -> Event {
        step_event(&self.options.host_id, self.clock.now(), s)
    }

    fn isolation(&self) -> Isolation {
        let mut allow: Vec<IpNet> = self.options.protected.cidrs.clone();
        allow.extend(self.options.protected.broker.get().into_iter().map(IpNet::from));
        Isolation { allow, ..self.options.isolation.clone() }
    }

    fn deny_paths(&self) -> Result<Vec<PathBuf>, BackendError> {
        let rows = self.db.in_force().map_err(|e| BackendError::Failed(e.to_string()))?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.action == ActionKind::DenyExec
                    && matches!(r.state, RecordState::Pending | RecordState::Active)
            })
            .map(|r| PathBuf::from(r.target))
            .collect())
    }

    /// Carries out `act`; returns the outcome event.
    fn run(&mut self, act: &Act) -> Event {
        let now = self.clock.now();
        let grace = self.options.kill_grace;
        let result: Result<(Option<RevertData>, Option<String>), BackendError> = match &act.target {
            Target::Ip(ip) => self.backend.block(*ip, act.ttl).map(|()| (None, None)),
            Target::Host => self.backend.isolate(&self.isolation()).map(|()| (None, None)),
            Target::Pid { pid, start_time, tree } => {
                self.backend.kill(*pid, *start_time, *tree, grace).and_then(|o| {
                    if o.still_alive.contains(pid) {
                        Err(BackendError::Failed(format!("pid {pid} is still alive after SIGKILL")))
                    } else {
                        Ok((None, Some(kill_summary(&o))))
                    }
                })
            }
            Target::User(_) if act.existing => Ok((None, Some("already locked; TTL renewed".into()))),
            Target::User(user) => {
                let options =
                    LockOptions { allow_root: self.options.protected.allow_root, allow_system: false, grace };
                self.backend.lock_account(user, &options).map(|record| {
                    let note = format!("{} process(es) of the user ended", record.ended_pids.len());
                    (Some(RevertData::Lock { record }), Some(note))
                })
            }
            Target::Path(path) if act.kind == ActionKind::Quarantine => {
                let dir = self.options.quarantine_dir.clone();
                self.backend.quarantine(path, &dir).map(|r| {
                    let note = format!("stored as {} in {} (sha256 {})", r.id, dir.display(), r.sha256);
                    (Some(RevertData::Quarantine { id: r.id, dir }), Some(note))
                })
            }
            Target::Path(_) => self
                .deny_paths()
                .and_then(|paths| self.backend.set_exec_denials(&paths))
                .map(|()| (None, None)),
        };
        // The outcome is stamped when the host change is done, before the state is written.
        let done_at = self.clock.now();
        let until = act.ttl.and_then(|t| now.checked_add(t));
        let step = |outcome, reason, error| Step {
            kind: act.kind,
            target: &act.target,
            outcome,
            mode: Mode::Enforce,
            severity: act.severity,
            rule_id: &act.rule_id,
            id: act.id,
            ttl: act.ttl,
            until,
            reason,
            error,
        };
        match result {
            Ok((revert, mut note)) => {
                if let Some(id) = act.id {
                    // A new block's row is written now, after the kernel has it (see prepare).
                    let recorded = if act.kind == ActionKind::BlockIp && !act.existing {
                        self.db.insert(&self.new_record(act, id, now, RecordState::Active, None))
                    } else {
                        self.db.activate(id, now, act.ttl, revert.as_ref())
                    };
                    if let Err(e) = recorded {
                        note = Some(format!("done, but not recorded in the containment state: {e}"));
                    }
                }
                step_event(&self.options.host_id, done_at, step("succeeded", note, None))
            }
            Err(e) => {
                if let Some(id) = act.id
                    && !act.existing
                {
                    let _ = if act.kind == ActionKind::BlockIp {
                        self.db.insert(&self.new_record(act, id, now, RecordState::Failed, Some(e.text())))
                    } else {
                        self.db.set_state(id, RecordState::Failed, Some(e.text()), Some(now), false)
                    };
                }
                match e {
                    BackendError::Refused(why) => {
                        step_event(&self.options.host_id, done_at, step("refused", Some(why), None))
                    }
                    BackendError::Failed(err) => {
                        step_event(&self.options.host_id, done_at, step("failed", None, Some(err)))
                    }
                }
            }
        }
    }

    fn new_record<'a>(
        &self,
        act: &'a Act,
        id: u64,
        since: SystemTime,
        state: RecordState,
        note: Option<&'a str>,
    ) -> NewRecord<'a> {
        NewRecord {
            id,
            action: act.kind,
            target: &act.target_text,
            rule_id: &act.rule_id,
            state,
            since,
            ttl: act.ttl,
            note,
        }
    }

    /// Undoes record `r`, whose TTL ran out; returns the event.
    fn expire(&mut self, r: &Record) -> Event {
        let now = self.clock.now();
        let result = undo_on_host(&self.db, self.backend.as_ref(), r, true);
        let target = Target::of_record(r);
        let (outcome, state, reason, error) = match &result {
            Ok(()) => ("expired", RecordState::Expired, Some("its TTL ran out".to_string()), None),
            // A block whose element could not be deleted still leaves the kernel set when its
            // timeout (the same TTL) runs out.
            Err(e) if r.action == ActionKind::BlockIp => (
                "expired",
                RecordState::Expired,
                Some(format!("its TTL ran out (the kernel drops it; unblock said: {})", e.text())),
                None,
            ),
            Err(e) => ("revert_failed", RecordState::RevertFailed, None, Some(e.text().to_string())),
        };
        let note = reason.as_deref().or(error.as_deref()).unwrap_or(outcome).to_string();
        let _ = self.db.set_state(r.id, state, Some(&note), Some(now), false);
        self.event(Step {
            kind: r.action,
            target: &target,
            outcome,
            mode: Mode::Enforce,
            severity: severity::LOW,
            rule_id: &r.rule_id,
            id: Some(r.id),
            ttl: r.ttl,
            until: r.until,
            reason,
            error,
        })
    }
}

/// Undoes `r` on the host. A deny_exec rule is dropped from the running guard only by the agent
/// (`in_agent`); from `picket actions revert` the state change is enough, the agent's next tick
/// applies it.
fn undo_on_host(db: &StateDb, backend: &dyn Backend, r: &Record, in_agent: bool) -> Result<(), BackendError> {
    let missing =
        |what: &str| BackendError::Failed(format!("no {what} kept for action {}: undo by hand", r.id));
    match (&r.action, &r.revert) {
        (ActionKind::BlockIp, _) => {
            let ip: IpAddr =
                r.target.parse().map_err(|_| BackendError::Failed(format!("bad address {:?}", r.target)))?;
            backend.unblock(ip)
        }
        (ActionKind::IsolateHost, _) => backend.release(),
        (ActionKind::LockAccount, Some(RevertData::Lock { record })) => {
            backend.unlock_account(&r.target, record)
        }
        (ActionKind::LockAccount, _) => Err(missing("lock record")),
        (ActionKind::Quarantine, Some(RevertData::Quarantine { id, dir })) => backend.restore(id, dir),
        (ActionKind::Quarantine, _) => Err(missing("quarantine id")),
        (ActionKind::DenyExec, _) if in_agent => {
            let rest: Vec<PathBuf> = db
                .in_force()
                .map_err(|e| BackendError::Failed(e.to_string()))?
                .into_iter()
                .filter(|o| {
                    o.action == ActionKind::DenyExec
                        && o.id != r.id
                        && matches!(o.state, RecordState::Pending | RecordState::Active)
                })
                .map(|o| PathBuf::from(o.target))
                .collect();
            backend.set_exec_denials(&rest)
        }
        (ActionKind::DenyExec | ActionKind::Kill, _) => Ok(()),
    }
}

fn kill_summary(o: &KillOutcome) -> String {
    let list = |v: &[i32]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    let mut s = format!("{} process(es) signalled", o.signalled.len());
    if !o.ended_by_term.is_empty() {
        s.push_str(&format!("; ended by SIGTERM: {}", list(&o.ended_by_term)));
    }
    if !o.ended_by_kill.is_empty() {
        s.push_str(&format!("; needed SIGKILL: {}", list(&o.ended_by_kill)));
    }
    if !o.still_alive.is_empty() {
        s.push_str(&format!("; still alive: {}", list(&o.still_alive)));
    }
    s
}

/// Where events made off the caller's thread go (the worker's outcomes): the agent sends them to
/// its journal queue.
pub type Emit = Box<dyn Fn(Event) + Send>;

enum Job {
    Act(Act),
    Expire(Record),
}

#[derive(Debug)]
struct Worker {
    tx: SyncSender<Job>,
    stopping: Arc<AtomicBool>,
    done: Receiver<()>,
    thread: JoinHandle<()>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Act(a) => write!(f, "Act({:?})", a.kind),
            Job::Expire(r) => write!(f, "Expire({})", r.id),
        }
    }
}

/// The actions stage: safety checks, state, and the host changes (through a [`Backend`]).
#[derive(Debug)]
pub struct Containment {
    options: Arc<Options>,
    clock: Arc<dyn Clock>,
    backend: Arc<dyn Backend>,
    exec: Exec,
    worker: Option<Worker>,
    budgets: BudgetTracker,
    gateways: Vec<IpAddr>,
    gateways_read: Option<SystemTime>,
    dropped: u64,
    /// The blocks in force, as the state file has them: read on the block path instead of the
    /// file. Reloaded whenever the file changed elsewhere (a revert) and after expiry.
    blocks: HashMap<IpAddr, BlockEntry>,
    /// The next record id (one process, the agent, creates records).
    next_id: u64,
}

/// A record in force, as far as renewing it goes (blocks: kept in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockEntry {
    id: u64,
    until: Option<SystemTime>,
    ttl: Option<Duration>,
}

impl Containment {
    /// Opens the state file (creating it) and gets ready. Nothing on the host changes until
    /// [`Containment::restore`] or an action. Picket's own files (its executable, the state
    /// file's directory, the quarantine directory) are added to the protected paths.
    pub fn open(
        mut options: Options,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
    ) -> Result<Containment, StateError> {
        if let Some(dir) = options.state_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = StateDb::open(&options.state_path)?;
        let mut own = vec![options.quarantine_dir.clone()];
        own.extend(options.state_path.parent().map(Path::to_path_buf));
        own.extend(std::env::current_exe().ok());
        for p in own {
            let p = std::path::absolute(&p).unwrap_or(p);
            if !options.protected.paths.contains(&p) {
                options.protected.paths.push(p);
            }
        }
        let options = Arc::new(options);
        let next_id = db.max_id()? + 1;
        let exec = Exec {
            db,
            backend: Arc::clone(&backend),
            clock: Arc::clone(&clock),
            options: Arc::clone(&options),
        };
        Ok(Containment {
            options,
            clock,
            backend,
            exec,
            worker: None,
            budgets: BudgetTracker::default(),
            gateways: Vec::new(),
            gateways_read: None,
            dropped: 0,
            blocks: HashMap::new(),
            next_id,
        }
        .with_blocks_loaded())
    }

    fn with_blocks_loaded(mut self) -> Containment {
        self.reload_blocks();
        self
    }

    fn reload_blocks(&mut self) {
        let Ok(rows) = self.exec.db.in_force() else { return };
        self.blocks = rows
            .into_iter()
            .filter(|r| {
                r.action == ActionKind::BlockIp
                    && matches!(r.state, RecordState::Pending | RecordState::Active)
            })
            .filter_map(|r| {
                Some((r.target.parse().ok()?, BlockEntry { id: r.id, until: r.until, ttl: r.ttl }))
            })
            .collect();
    }

    /// The options in force (with picket's own paths added to the protected ones).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Runs slow actions on a worker thread from now on; their outcomes go to `emit`. Without a
    /// worker, [`Containment::execute`] runs every action on the caller's thread.
    pub fn start_worker(&mut self, emit: Emit) -> Result<(), StateError> {
        if self.worker.is_some() {
            return Ok(());
        }
        let mut exec = Exec {
            db: StateDb::open(&self.options.state_path)?,
            backend: Arc::clone(&self.backend),
            clock: Arc::clone(&self.clock),
            options: Arc::clone(&self.options),
        };
        let (tx, rx) = sync_channel::<Job>(WORKER_QUEUE);
        let (done_tx, done) = sync_channel::<()>(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("picket-contain".into())
            .spawn(move || {
                for job in rx {
                    let ev = if stop.load(Ordering::Relaxed) {
                        match job {
                            Job::Act(act) => skipped_at_stop(&mut exec, &act),
                            // Stays `expiring`; the next start undoes it.
                            Job::Expire(_) => continue,
                        }
                    } else {
                        match job {
                            Job::Act(act) => exec.run(&act),
                            Job::Expire(r) => exec.expire(&r),
                        }
                    };
                    emit(ev);
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| StateError::Sqlite {
                path: self.options.state_path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        self.worker = Some(Worker { tx, stopping, done, thread });
        Ok(())
    }

    /// Stops the worker: actions still queued are journaled as `skipped`, the one running may
    /// finish within `wait`; after that the thread is left to end on its own.
    pub fn shutdown(&mut self, wait: Duration) {
        if let Some(w) = self.worker.take() {
            w.stopping.store(true, Ordering::Relaxed);
            drop(w.tx);
            if w.done.recv_timeout(wait).is_ok() {
                let _ = w.thread.join();
            }
        }
    }

    /// Actions not carried out because the worker queue was full, since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn gateways(&mut self, now: SystemTime) -> &[IpAddr] {
        let stale =
            self.gateways_read.is_none_or(|t| now.duration_since(t).map_or(true, |d| d >= GATEWAY_REFRESH));
        if stale {
            self.gateways = self.backend.default_gateways();
            self.gateways_read = Some(now);
        }
        &self.gateways
    }

    /// Checks `req` against the safety layer and the mode, and records it; see the module docs.
    pub fn prepare(&mut self, req: &ActionRequest, ctx: &ActionContext) -> Prepared {
        let now = self.clock.now();
        let (kind, target, ttl) = match req {
            ActionRequest::BlockIp { ip, ttl } => {
                (ActionKind::BlockIp, Target::Ip(ip.to_canonical()), (!ttl.is_zero()).then_some(*ttl))
            }
            ActionRequest::Kill { pid, tree } => {
                let pid = i32::try_from(*pid).unwrap_or(i32::MAX);
                (
                    ActionKind::Kill,
                    Target::Pid { pid, start_time: ctx.process_start_time.unwrap_or(0), tree: *tree },
                    None,
                )
            }
            ActionRequest::DenyExec { path } => {
                (ActionKind::DenyExec, Target::Path(PathBuf::from(path)), None)
            }
            ActionRequest::Quarantine { path } => {
                (ActionKind::Quarantine, Target::Path(PathBuf::from(path)), None)
            }
            ActionRequest::IsolateHost { ttl } => (ActionKind::IsolateHost, Target::Host, *ttl),
            ActionRequest::LockAccount { user, ttl } => {
                (ActionKind::LockAccount, Target::User(user.clone()), *ttl)
            }
        };
        let mut target = target;
        let done = |this: &Self,
                    target: &Target,
                    outcome: &str,
                    id,
                    reason: Option<String>,
                    error: Option<String>| {
            Prepared::Done(Box::new(step_event(
                &this.options.host_id,
                now,
                Step {
                    kind,
                    target,
                    outcome,
                    mode: ctx.mode,
                    severity: ctx.severity,
                    rule_id: &ctx.rule_id,
                    id,
                    ttl,
                    until: ttl.and_then(|t| now.checked_add(t)),
                    reason,
                    error,
                },
            )))
        };

        // 1. Protected targets.
        match self.refusal(&mut target, now) {
            Ok(None) => {}
            Ok(Some(why)) => return done(self, &target, "refused", None, Some(why), None),
            Err(failed) => return done(self, &target, "failed", None, None, Some(failed)),
        }
        // 2. Monitor mode: what would have been done.
        if ctx.mode == Mode::Monitor {
            return done(self, &target, "dry_run", None, Some("monitor mode".into()), None);
        }
        // 3. Budget.
        if let Err(why) = self.budgets.take(&self.options.budgets, kind, now) {
            return done(self, &target, "skipped", None, Some(why), None);
        }
        // 4. State: which record this is. A block's comes from memory (no database round trip
        // before the block); the others get a `pending` row now, before they run.
        let mut ttl = ttl;
        let found: Result<Option<BlockEntry>, StateError> = match (&target, kind) {
            (Target::Ip(ip), _) => {
                // Already blocked: make sure no revert from outside made that stale.
                if self.blocks.contains_key(ip) && self.exec.db.peek_changed().unwrap_or(true) {
                    self.reload_blocks();
                }
                Ok(self.blocks.get(ip).copied())
            }
            (_, ActionKind::IsolateHost | ActionKind::LockAccount | ActionKind::DenyExec) => self
                .exec
                .db
                .find_in_force(kind, &target.text())
                .map(|r| r.map(|r| BlockEntry { id: r.id, until: r.until, ttl: r.ttl })),
            _ => Ok(None),
        };
        let (id, existing) = match found {
            _ if !recorded(kind) => (None, false),
            Ok(Some(BlockEntry { id, until, ttl: old_ttl })) => {
                // Renewed: the longer of what is left and what is asked (a repeat never shortens
                // a block); no end stays no end.
                let left = until.map(|u| u.duration_since(now).unwrap_or_default());
                ttl = match (until.is_none() && old_ttl.is_none(), ttl, left) {
                    (true, _, _) | (_, None, _) => None,
                    (false, Some(t), Some(l)) => Some(t.max(l)),
                    (false, Some(t), None) => Some(t),
                };
                (Some(id), true)
            }
            Ok(None) => {
                let id = self.next_id;
                self.next_id += 1;
                if kind != ActionKind::BlockIp {
                    let text = target.text();
                    let row = NewRecord {
                        id,
                        action: kind,
                        target: &text,
                        rule_id: &ctx.rule_id,
                        state: RecordState::Pending,
                        since: now,
                        ttl,
                        note: None,
                    };
                    if let Err(e) = self.exec.db.insert(&row) {
                        return done(
                            self,
                            &target,
                            "failed",
                            None,
                            None,
                            Some(format!("not carried out: {e}")),
                        );
                    }
                }
                (Some(id), false)
            }
            Err(e) => {
                return done(self, &target, "failed", None, None, Some(format!("not carried out: {e}")));
            }
        };
        let intent = step_event(
            &self.options.host_id,
            now,
            Step {
                kind,
                target: &target,
                outcome: "intent",
                mode: ctx.mode,
                severity: ctx.severity,
                rule_id: &ctx.rule_id,
                id,
                ttl,
                until: ttl.and_then(|t| now.checked_add(t)),
                reason: existing.then(|| "already in force: renewed".to_string()),
                error: None,
            },
        );
        Prepared::Act {
            intent: Box::new(intent),
            act: Act {
                kind,
                target_text: target.text(),
                target,
                id,
                existing,
                ttl,
                rule_id: ctx.rule_id.clone(),
                severity: ctx.severity,
            },
        }
    }

    /// Why `target` must not be acted on (`Ok(Some)`), or that it cannot be (`Err`: the process is
    /// gone). Fills in a kill's start time when the event gave none.
    fn refusal(&mut self, target: &mut Target, now: SystemTime) -> Result<Option<String>, String> {
        match target {
            Target::Ip(ip) => {
                let ip = *ip;
                let gateways = self.gateways(now).to_vec();
                Ok(self.options.protected.ip_refusal(ip, &gateways))
            }
            Target::Host => Ok(None),
            Target::Pid { pid, start_time, .. } => {
                if let Some(why) = self.backend.kill_refusal(*pid) {
                    return Ok(Some(format!("pid {pid}: {why}")));
                }
                let Some(info) = self.backend.process_info(*pid) else {
                    return Err(format!("no process with pid {pid} (it exited)"));
                };
                if info.is_kernel_thread {
                    return Ok(Some(format!("pid {pid} is a kernel thread")));
                }
                if *start_time == 0 {
                    *start_time = info.start_time;
                }
                Ok(self.options.protected.process_refusal(&info))
            }
            Target::Path(p) => {
                if p.to_string_lossy().contains(['*', '?']) {
                    return Ok(Some(format!(
                        "{} holds glob characters; only plain paths are acted on",
                        p.display()
                    )));
                }
                Ok(self.options.protected.path_refusal(p))
            }
            Target::User(user) => {
                let uid = self.backend.user_uid(user);
                Ok(self.options.protected.account_refusal(user, uid, self.backend.own_uid()))
            }
        }
    }

    /// Carries out a prepared act. A block runs here and now; with a worker started, everything
    /// else is queued and `None` returned (the outcome goes to the worker's `emit`).
    pub fn execute(&mut self, act: Act) -> Option<Event> {
        if let (Target::Ip(ip), Some(id)) = (&act.target, act.id) {
            let ev = self.exec.run(&act);
            if let Some(a) = ev.action.as_ref().filter(|a| a.outcome == "succeeded") {
                let until = a.until.map(Timestamp::to_system_time);
                self.blocks.insert(*ip, BlockEntry { id, until, ttl: act.ttl });
            }
            return Some(ev);
        }
        let Some(worker) = &self.worker else { return Some(self.exec.run(&act)) };
        match worker.tx.try_send(Job::Act(act)) {
            Ok(()) => None,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.dropped += 1;
                let Job::Act(act) = job else { return None };
                Some(skipped_at_stop_with(&mut self.exec, &act, "the containment worker's queue is full"))
            }
        }
    }

    /// [`Containment::prepare`] then, if there is something to run, [`Containment::execute`]: the
    /// events in journal order.
    pub fn apply(&mut self, req: &ActionRequest, ctx: &ActionContext) -> Vec<Event> {
        match self.prepare(req, ctx) {
            Prepared::Done(ev) => vec![*ev],
            Prepared::Act { intent, act } => {
                let mut out = vec![*intent];
                out.extend(self.execute(act));
                out
            }
        }
    }

    /// Timed work, every second or so: undo what ran out (blocks here, isolation and locks on the
    /// worker), journal what `picket actions revert` changed, apply changed deny rules, report
    /// denied execs. Returns the events to journal.
    pub fn tick(&mut self) -> Vec<Event> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let _ = self.gateways(now);
        let mut reload = false;
        match self.exec.db.due(now, REVERT_RETRY) {
            Ok(due) => {
                for r in due {
                    reload |= r.action == ActionKind::BlockIp;
                    self.expire(r, &mut out);
                }
            }
            Err(e) => out.push(self.state_error_event(&e)),
        }
        if self.exec.db.changed_elsewhere().unwrap_or(true) {
            reload = true;
            self.journal_outside_changes(&mut out);
            if let Ok(paths) = self.exec.deny_paths() {
                let _ = self.backend.set_exec_denials(&paths);
            }
        }
        if reload {
            self.reload_blocks();
        }
        for d in self.backend.denied_execs() {
            let target = Target::Path(d.path.clone());
            let mut ev = step_event(
                &self.options.host_id,
                now,
                Step {
                    kind: ActionKind::DenyExec,
                    target: &target,
                    outcome: "enforced",
                    mode: Mode::Enforce,
                    severity: severity::HIGH,
                    rule_id: "",
                    id: None,
                    ttl: None,
                    until: None,
                    reason: Some(format!("exec by pid {} denied (rule {})", d.pid, d.rule)),
                    error: None,
                },
            );
            ev.rule = None;
            ev.process = Some(Process { pid: u32::try_from(d.pid).ok(), ..Default::default() });
            out.push(ev);
        }
        out
    }

    fn expire(&mut self, r: Record, out: &mut Vec<Event>) {
        match r.action {
            ActionKind::BlockIp | ActionKind::DenyExec | ActionKind::Kill => out.push(self.exec.expire(&r)),
            _ => {
                let _ = self.exec.db.set_state(r.id, RecordState::Expiring, None, None, false);
                match &self.worker {
                    Some(w) => {
                        if w.tx.try_send(Job::Expire(r.clone())).is_err() {
                            // Retried on the next tick.
                            let _ = self.exec.db.set_state(r.id, r.state, None, None, false);
                        }
                    }
                    None => out.push(self.exec.expire(&r)),
                }
            }
        }
    }

    fn journal_outside_changes(&mut self, out: &mut Vec<Event>) {
        let Ok(rows) = self.exec.db.unjournaled() else { return };
        for r in rows {
            let target = Target::of_record(&r);
            let (outcome, reason, error) = match r.state {
                RecordState::Reverted => (
                    "reverted",
                    Some(r.note.clone().unwrap_or_else(|| "by picket actions revert".into())),
                    None,
                ),
                RecordState::RevertFailed => ("revert_failed", None, r.note.clone()),
                other => (other.as_str(), r.note.clone(), None),
            };
            out.push(self.exec.event(Step {
                kind: r.action,
                target: &target,
                outcome,
                mode: Mode::Enforce,
                severity: severity::LOW,
                rule_id: &r.rule_id,
                id: Some(r.id),
                ttl: r.ttl,
                until: r.until,
                reason,
                error,
            }));
            let _ = self.exec.db.mark_journaled(r.id);
        }
    }

    fn state_error_event(&self, e: &StateError) -> Event {
        let mut ev = Event::new(EventKind::Action, Timestamp::from(self.clock.now()));
        ev.host.id.clone_from(&self.options.host_id);
        ev.event.severity = severity::MEDIUM;
        ev.event.dataset = Some("picket.contain".into());
        ev.message = Some(format!("containment state unreadable: {e}"));
        ev
    }

    /// After a start: re-applies what is still in force and undoes what ran out while picket was
    /// not running. Runs on the caller's thread (before the pipeline starts). Returns the events.
    pub fn restore(&mut self) -> Vec<Event> {
        let now = self.clock.now();
        let mut out = Vec::new();
        self.journal_outside_changes(&mut out);
        let rows = match self.exec.db.in_force() {
            Ok(rows) => rows,
            Err(e) => {
                out.push(self.state_error_event(&e));
                return out;
            }
        };
        if rows.is_empty() {
            let _ = self.exec.db.changed_elsewhere();
            return out;
        }
        let mut blocked: Option<Result<Vec<IpAddr>, BackendError>> = None;
        let mut deny = Vec::new();
        for r in rows {
            let due = r.state == RecordState::Expiring || r.until.is_some_and(|u| u <= now);
            if r.state == RecordState::Pending
                && matches!(r.action, ActionKind::LockAccount | ActionKind::Quarantine)
            {
                let note = "interrupted by a stop of picket before its outcome was recorded: check by hand";
                let _ = self.exec.db.set_state(r.id, RecordState::Failed, Some(note), Some(now), false);
                out.push(self.record_event(&r, "failed", None, Some(note.to_string())));
                continue;
            }
            if due {
                out.push(self.exec.expire(&r));
                continue;
            }
            if r.state == RecordState::RevertFailed {
                continue;
            }
            let left = r.until.map(|u| u.duration_since(now).unwrap_or_default());
            let reapplied = match r.action {
                ActionKind::BlockIp => {
                    let Ok(ip) = r.target.parse::<IpAddr>() else { continue };
                    let present = blocked.get_or_insert_with(|| self.backend.blocked());
                    match present {
                        Ok(list) if list.contains(&ip) => None,
                        Ok(_) => Some(self.backend.block(ip, left)),
                        Err(e) => Some(Err(e.clone())),
                    }
                }
                ActionKind::IsolateHost => match self.backend.is_isolated() {
                    Ok(true) => None,
                    Ok(false) => Some(self.backend.isolate(&self.exec.isolation())),
                    Err(e) => Some(Err(e)),
                },
                ActionKind::DenyExec => {
                    deny.push(r.clone());
                    None
                }
                // An account lock and a quarantined file survive restarts by themselves.
                ActionKind::LockAccount | ActionKind::Quarantine | ActionKind::Kill => None,
            };
            match reapplied {
                None => {
                    if r.state == RecordState::Pending && r.action != ActionKind::DenyExec {
                        let _ = self.exec.db.activate(r.id, r.since, r.ttl, None);
                    }
                }
                Some(Ok(())) => {
                    let _ = self.exec.db.activate(r.id, r.since, r.ttl, None);
                    out.push(self.record_event(
                        &r,
                        "reapplied",
                        Some("in force before the restart, missing after it".into()),
                        None,
                    ));
                }
                Some(Err(e)) => out.push(self.record_event(
                    &r,
                    "failed",
                    None,
                    Some(format!("re-applying after the restart: {}", e.text())),
                )),
            }
        }
        if !deny.is_empty() {
            let paths: Vec<PathBuf> = deny.iter().map(|r| PathBuf::from(&r.target)).collect();
            let result = self.backend.set_exec_denials(&paths);
            for r in &deny {
                match &result {
                    Ok(()) => {
                        let _ = self.exec.db.activate(r.id, r.since, r.ttl, None);
                        out.push(self.record_event(
                            r,
                            "reapplied",
                            Some("deny rules live in the running agent".into()),
                            None,
                        ));
                    }
                    Err(e) => out.push(self.record_event(
                        r,
                        "failed",
                        None,
                        Some(format!("re-applying after the restart: {}", e.text())),
                    )),
                }
            }
        }
        let _ = self.exec.db.changed_elsewhere();
        self.reload_blocks();
        out
    }

    fn record_event(
        &self,
        r: &Record,
        outcome: &str,
        reason: Option<String>,
        error: Option<String>,
    ) -> Event {
        let target = Target::of_record(r);
        self.exec.event(Step {
            kind: r.action,
            target: &target,
            outcome,
            mode: Mode::Enforce,
            severity: severity::LOW,
            rule_id: &r.rule_id,
            id: Some(r.id),
            ttl: r.ttl,
            until: r.until,
            reason,
            error,
        })
    }
}

fn skipped_at_stop(exec: &mut Exec, act: &Act) -> Event {
    skipped_at_stop_with(exec, act, "picket is stopping")
}

fn skipped_at_stop_with(exec: &mut Exec, act: &Act, why: &str) -> Event {
    let now = exec.clock.now();
    if let Some(id) = act.id
        && !act.existing
    {
        let _ = exec.db.set_state(
            id,
            RecordState::Failed,
            Some(&format!("not carried out: {why}")),
            Some(now),
            false,
        );
    }
    exec.event(Step {
        kind: act.kind,
        target: &act.target,
        outcome: "skipped",
        mode: Mode::Enforce,
        severity: act.severity,
        rule_id: &act.rule_id,
        id: act.id,
        ttl: act.ttl,
        until: None,
        reason: Some(why.to_string()),
        error: None,
    })
}

/// Errors of [`revert`].
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("action {id} ({action} {target}) is not in force: {state}")]
    NotInForce { id: u64, action: ActionKind, target: String, state: &'static str },
    #[error("action {id} ({action} {target}) could not be undone: {error}")]
    Failed { id: u64, action: ActionKind, target: String, error: String },
}

/// `picket actions revert ID`, from a process of its own: undoes action `id` recorded in the
/// state file at `state_path` and marks it `reverted` (the agent journals that on its next tick,
/// or at its next start). A block's address leaves the set, isolation ends, a locked account is
/// unlocked from its lock record, a quarantined file goes back; a deny rule is dropped by the
/// running agent within a second.
pub fn revert(
    state_path: &Path,
    id: u64,
    backend: &dyn Backend,
    now: SystemTime,
) -> Result<Record, RevertError> {
    let db = StateDb::open(state_path)?;
    let r = db.get(id)?;
    if !r.state.in_force() {
        return Err(RevertError::NotInForce {
            id,
            action: r.action,
            target: r.target,
            state: r.state.as_str(),
        });
    }
    match undo_on_host(&db, backend, &r, false) {
        Ok(()) => {
            db.set_state(id, RecordState::Reverted, Some("by picket actions revert"), Some(now), true)?;
            Ok(db.get(id)?)
        }
        Err(e) => {
            db.set_state(id, RecordState::RevertFailed, Some(e.text()), Some(now), true)?;
            Err(RevertError::Failed { id, action: r.action, target: r.target, error: e.text().to_string() })
        }
    }
}

/// `picket actions list`: the rows in force, or (with `all`) the last `limit` of any state.
pub fn list(state_path: &Path, all: bool, limit: u32) -> Result<Vec<Record>, StateError> {
    let db = StateDb::open(state_path)?;
    if all { db.history(limit) } else { db.in_force() }
}
