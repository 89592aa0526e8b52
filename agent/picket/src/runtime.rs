//! The running agent: wires sources, the pipeline stage, the journal writer, health and the live
//! view together with bounded queues, and shuts them down in order.
//!
//! ```text
//! sources ──(agent.queue_events)──> pipeline ──(JOURNAL_QUEUE)──> journal thread ──(LIVE_QUEUE)──> live view
//!   shed/drop + count          host.id, policy,    waits       group commit      drop + count
//!                              actions (block inline; slower ones ──> containment worker ──> journal)
//! health ──────────────────────────────────────────> journal (agent.health) ; status.json
//! uplink <── wake (last seq) ── journal thread ;  uplink ── own journal connection: outbox ──> MQTT
//! ```
//!
//! Shutdown (SIGINT/SIGTERM): sources stop and drop their senders; the pipeline drains and ends;
//! the journal thread commits what it holds and ends; the live view prints its last line; the
//! status file says `stopped`. All within [`SHUTDOWN_DEADLINE`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use picket_capture::auth::AuthSource;
use picket_capture::file::FileSource;
use picket_capture::process::ProcessSource;
use picket_capture::{CaptureError, Drops, EventTx, Nudge, Shutdown, SourceStatus, shutdown_pair};
use picket_contain::actuator::{
    self, ActionContext, Backend, Containment, HostBackend, Prepared, SystemClock,
};
use picket_contain::net::{IpNet, Isolation, MgmtAccess, NetOptions};
use picket_contain::safety::{ActionKind, Protected, SharedAddrs};
use picket_event::{Event, EventKind, Health, Timestamp, severity};
use picket_journal::{Journal, JournalOptions, JournalStats};
use picket_policy::{ActionRequest, Decision, Engine, PolicySet, StateLimits, alert_event};

use crate::sigma::Sigma;
use picket_uplink::sender::{self, AckMode, SenderConfig, SharedStatus};
use picket_wire::Identity;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, Settings, UplinkAck};
use crate::health::{ProcSampler, StatusFile};
use crate::{device, liveview, policy};

/// Events waiting for the journal writer. The pipeline waits here (the journal is the source of
/// truth, so nothing after the source queues is dropped); backpressure reaches the sources. Each
/// waiting event is ~2 KB on the heap: 512 of them bound this queue to ~1 MB.
pub const JOURNAL_QUEUE: usize = 512;
/// The most events committed in one transaction (and held by the journal thread at once).
pub const JOURNAL_BATCH_MAX: usize = 512;
/// How long a routine event may wait in the journal queue before it is committed. The journal
/// thread sleeps this long between commits unless woken: by an alert, action or gap (committed at
/// once, [`JournalTx::send`]), a stats request, or a queue half full. At 1,000 events/s that is
/// ~10 commits a second of ~100 events instead of one commit (and two thread wake-ups) per event.
/// What waits here was never committed, so a crash loses no committed event; the queue itself was
/// always lost to a crash.
pub const JOURNAL_LINGER: Duration = Duration::from_millis(100);
/// Journaled events waiting to be shown by the live view; the view skips (and says so) when full.
/// The view keeps up unless stdout blocks; then this bounds what it holds (~0.5 MB).
pub const LIVE_QUEUE: usize = 256;
/// What SQLite may hold in the whole process (the journal's writer and the uplink's reader, the
/// file baseline, the containment state), mostly page cache: a soft limit, past which SQLite
/// recycles cache pages rather than allocate (picket_journal::limit_sqlite_memory).
pub const SQLITE_MEMORY_LIMIT: u64 = 3 * 1024 * 1024;
/// Where the auth source keeps its place in each log, in the data dir.
pub const AUTH_OFFSETS_FILE: &str = "auth-offsets.json";
/// Where the auth source keeps its place in the systemd journal (`sources.auth.journald`).
pub const AUTH_JOURNAL_CURSOR_FILE: &str = "auth-journal.cursor";
/// SIGTERM to exit.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Counters the journal thread updates and the live view and health read.
#[derive(Debug, Default)]
pub struct JournalCounters {
    pub journaled: AtomicU64,
    pub last_seq: AtomicU64,
    pub write_errors: AtomicU64,
    /// The last seq committed, for tasks that wait for new events (the uplink).
    pub appended: watch::Sender<u64>,
}

enum JournalCmd {
    Append(Box<Event>),
    /// An event alerts may point at (`event.trigger_seq`): a source event, or a Sigma alert
    /// (which policies evaluate in turn). With `alert`, it is itself an alert on the trigger before.
    Trigger {
        ev: Box<Event>,
        alert: bool,
    },
    /// An alert on the last [`JournalCmd::Trigger`]: its seq goes into `event.trigger_seq`.
    Alert(Box<Event>),
    Stats(oneshot::Sender<Result<JournalStats, String>>),
}

impl JournalCmd {
    /// Commit without waiting for [`JOURNAL_LINGER`]: alerts, actions and gaps (whatever the
    /// uplink sends first, and the record of what containment did), and stats requests.
    fn urgent(&self) -> bool {
        match self {
            JournalCmd::Append(ev) | JournalCmd::Trigger { ev, .. } | JournalCmd::Alert(ev) => {
                ev.kind.retention() == picket_event::Retention::Keep
            }
            JournalCmd::Stats(_) => true,
        }
    }
}

/// The way into the journal thread: its bounded queue, and a wake-up for what should not wait
/// for the linger (see [`JOURNAL_LINGER`]).
#[derive(Clone, Debug)]
struct JournalTx {
    tx: mpsc::Sender<JournalCmd>,
    thread: thread::Thread,
}

impl JournalTx {
    /// Queue `cmd`, waiting while the queue is full (backpressure); wake the journal thread for an
    /// urgent command or a queue half full. Err: the journal is gone (shutting down).
    async fn send(&self, cmd: JournalCmd) -> Result<(), ()> {
        let urgent = cmd.urgent();
        self.tx.send(cmd).await.map_err(|_| ())?;
        self.wake_if(urgent);
        Ok(())
    }

    /// [`JournalTx::send`] from a plain thread.
    fn blocking_send(&self, cmd: JournalCmd) -> Result<(), ()> {
        let urgent = cmd.urgent();
        self.tx.blocking_send(cmd).map_err(|_| ())?;
        self.wake_if(urgent);
        Ok(())
    }

    fn wake_if(&self, urgent: bool) {
        if urgent || self.tx.capacity() <= JOURNAL_QUEUE / 2 {
            self.thread.unpark();
        }
    }

    /// Commands waiting.
    fn depth(&self) -> u64 {
        u64::try_from(JOURNAL_QUEUE - self.tx.capacity()).unwrap_or(0)
    }
}

pub fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = match config_path {
        Some(p) => match config::load_file(p) {
            Ok(s) => s,
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::from(2));
            }
        },
        None => config::default_settings(),
    };
    let data_dir = &settings.agent.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    if config_path.is_none() {
        // The embedded default watches ./picket-data/watch so a first `picket run` shows file
        // events; make that directory instead of reporting it missing.
        for p in &settings.sources.file.paths {
            if p.starts_with(data_dir) {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
            }
        }
    }
    let device_id = device::resolve(&settings.agent.device_id, data_dir)?;
    // The signing key exists before the first event is journaled, so `picket identity` on a
    // running device shows the key its batches are signed with.
    let identity = if settings.uplink.enabled {
        let id = Arc::new(
            Identity::load_or_create(data_dir, picket_wire::DEVICE_KEY_FILE, &device_id)
                .context("device signing key")?,
        );
        // End-to-end acks need the collector's key: without it, refuse to start rather than
        // quietly weaken delivery to broker PUBACKs.
        let ack = match &settings.uplink.ack {
            UplinkAck::Broker => AckMode::Broker,
            UplinkAck::Collector(path) => AckMode::Collector(
                read_collector_key(path)
                    .context("uplink.collector_key_file (needed with ack = \"collector\")")?,
            ),
        };
        Some((id, ack))
    } else {
        None
    };
    let policies = match policy::load_for_agent(&settings.policies.paths) {
        Ok((set, warnings)) => {
            for w in warnings {
                eprintln!("picket: warning: {w}");
            }
            set
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "picket: not started: the policies above are invalid (picket policy check shows the same)"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let sigma = match Sigma::load(&settings.policies.paths, settings.policies.sigma_min_level) {
        Ok((sigma, loaded)) => {
            for n in &loaded.notes {
                eprintln!("picket: sigma: {n}");
            }
            if loaded.files > 0 {
                println!(
                    "sigma: {}; alerts at {} and above",
                    loaded.summary(),
                    settings.policies.sigma_min_level.as_str()
                );
            }
            sigma
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "picket: not started: the Sigma rules above are invalid (picket policy check shows the same)"
            );
            return Ok(ExitCode::from(2));
        }
    };
    picket_journal::limit_sqlite_memory(SQLITE_MEMORY_LIMIT);
    let journal = Journal::open(
        &settings.journal_path(),
        JournalOptions { max_bytes: settings.journal.max_bytes, host_id: device_id.clone() },
    )?;
    println!(
        "picket {} running: device {device_id}, mode {}, data in {}, config {}",
        env!("CARGO_PKG_VERSION"),
        settings.agent.mode,
        data_dir.display(),
        config_path.map_or_else(|| "<embedded default>".into(), |p| p.display().to_string()),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(agent(settings, journal, device_id, (policies, sigma), identity))
}

async fn agent(
    settings: Settings,
    journal: Journal,
    device_id: String,
    (policies, sigma): (PolicySet, Sigma),
    identity: Option<(Arc<Identity>, AckMode)>,
) -> anyhow::Result<ExitCode> {
    let started = Timestamp::now();
    let drops = Drops::default();
    let sources = SourceStatus::default();
    let counters = Arc::new(JournalCounters::default());
    counters.last_seq.store(journal.last_seq(), Ordering::Relaxed);
    let (trigger, shutdown) = shutdown_pair();

    // Events from all sources waiting for the pipeline (`agent.queue_events`). Sources never
    // wait: past half of it routine events are shed, when full anything is dropped, and all of it
    // is counted (picket_capture::ShedClass). An `Event` is ~1.8 KB in a slot, so the default
    // 1,024 holds ~1 s of 1,000 events/s in under 2 MB.
    let (source_tx, source_rx) = mpsc::channel::<Box<Event>>(settings.agent.queue_events);
    let (journal_tx, journal_rx) = mpsc::channel::<JournalCmd>(JOURNAL_QUEUE);
    let (live_tx, live_rx) = mpsc::channel::<Box<Event>>(LIVE_QUEUE);
    counters.appended.send_replace(journal.last_seq());
    let uplink_status: Option<SharedStatus> = identity.as_ref().map(|_| SharedStatus::default());
    let uplink = identity.map(|(identity, ack)| {
        let cfg = uplink_config(&settings, identity, ack);
        let mut stop = shutdown.clone();
        println!(
            "uplink: {} as {}, ack on {}",
            cfg.endpoint.url(),
            device_id,
            match cfg.ack {
                AckMode::Broker => "broker PUBACK",
                AckMode::Collector(_) => "collector acknowledgement",
            }
        );
        tokio::spawn(sender::run(
            cfg,
            uplink_status.clone().unwrap_or_default(),
            counters.appended.subscribe(),
            async move { stop.wait().await },
        ))
    });

    let journal_thread = {
        let counters = counters.clone();
        let drops = drops.clone();
        thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal_writer(journal, journal_rx, live_tx, &counters, &drops, JOURNAL_LINGER))
            .context("starting the journal thread")?
    };
    let journal_tx = JournalTx { tx: journal_tx, thread: journal_thread.thread().clone() };

    let contain = start_containment(&settings, &device_id, &journal_tx).await?;

    let nudge = Nudge::default();
    let inlet = Inlet { tx: source_tx.clone(), drops: drops.clone(), nudge: nudge.clone() };
    spawn_sources(&settings, &inlet, &sources, &shutdown);
    drop(inlet);
    let source_depth = source_tx.downgrade();
    drop(source_tx);

    let policy_limits =
        StateLimits { max_groups_per_rule: settings.policies.max_groups_per_rule, ..StateLimits::default() };
    let policy_groups = Arc::new(PolicyUse::default());
    let mut engine = Engine::new(Arc::new(policies), policy_limits);
    if let Some(state) = policy::load_state(&settings.agent.data_dir) {
        engine.restore(state);
    }
    println!(
        "policies: {} rule(s) loaded from {}",
        engine.stats().rules,
        display_paths(&settings.policies.paths)
    );
    let (reload_tx, reload_rx) = mpsc::channel::<(PolicySet, Sigma)>(1);
    tokio::spawn(reload_loop(
        settings.policies.paths.clone(),
        settings.policies.sigma_min_level,
        reload_tx,
        shutdown.clone(),
    ));
    let detections = Detections::default();
    let pipeline = tokio::spawn(pipeline(
        source_rx,
        nudge,
        journal_tx.clone(),
        Pipeline {
            engine,
            device_id: device_id.clone(),
            mode: policy::agent_mode(settings.agent.mode),
            data_dir: settings.agent.data_dir.clone(),
            reload: reload_rx,
            contain,
            drops: drops.clone(),
            sigma,
            detections: detections.clone(),
            policy_groups: policy_groups.clone(),
        },
    ));
    let live = tokio::spawn(liveview::run(
        live_rx,
        settings.agent.status_interval,
        counters.clone(),
        drops.clone(),
        sources.clone(),
        source_depth.clone(),
        shutdown.clone(),
    ));
    let health = tokio::spawn(health_loop(HealthCtx {
        settings: settings.clone(),
        device_id,
        started,
        journal_tx,
        drops: drops.clone(),
        sources: sources.clone(),
        source_depth,
        uplink: uplink_status,
        detections,
        shutdown: shutdown.clone(),
        policy_limits,
        policy_groups,
    }));

    wait_for_signal().await;
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    trigger.trigger();

    let clean = tokio::time::timeout(SHUTDOWN_DEADLINE - Duration::from_millis(500), async {
        let _ = pipeline.await;
        if let Some(u) = uplink {
            let _ = u.await;
        }
        let last_status = health.await.ok().flatten();
        // Its queue is closed now: wake it rather than let it sleep out the linger.
        journal_thread.thread().unpark();
        let _ = tokio::task::spawn_blocking(move || journal_thread.join()).await;
        let _ = live.await;
        last_status
    })
    .await;
    match clean {
        Ok(last_status) => {
            if let Some(mut status) = last_status {
                status.state = "stopped".into();
                status.written_at = Timestamp::now();
                status.health.journal_last_seq = counters.last_seq.load(Ordering::Relaxed);
                if let Err(e) = status.write(&settings.agent.data_dir) {
                    eprintln!("picket: warning: {e:#}");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            println!(
                "picket stopped: journal flushed through seq {} ({} ms to spare)",
                counters.last_seq.load(Ordering::Relaxed),
                left.as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            eprintln!("picket: error: shutdown did not finish within {SHUTDOWN_DEADLINE:?}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The actions stage's options from `[containment]` (and the broker from `[uplink]`).
fn containment_options(settings: &Settings, device_id: &str) -> actuator::Options {
    let c = &settings.containment;
    let data_dir =
        std::path::absolute(&settings.agent.data_dir).unwrap_or_else(|_| settings.agent.data_dir.clone());
    let mut o =
        actuator::Options::new(data_dir.join(picket_contain::state::STATE_FILE), device_id.to_string());
    let net = |c: &config::Cidr| IpNet::new(c.addr, c.prefix).ok();
    let broker = SharedAddrs::default();
    if settings.uplink.enabled {
        broker.resolve_in_background(settings.uplink.broker.host.clone(), settings.uplink.broker.port);
    }
    o.protected = Protected {
        cidrs: c.protected_cidrs.iter().filter_map(net).collect(),
        broker,
        process_names: c.protected_process_names.clone(),
        allow_root: c.allow_root,
        paths: c.protected_paths.clone(),
    };
    let b = &c.budget_per_minute;
    for (kind, n) in [
        (ActionKind::BlockIp, b.block_ip),
        (ActionKind::Kill, b.kill),
        (ActionKind::DenyExec, b.deny_exec),
        (ActionKind::Quarantine, b.quarantine),
        (ActionKind::IsolateHost, b.isolate_host),
        (ActionKind::LockAccount, b.lock_account),
    ] {
        o.budgets.set(kind, n);
    }
    let quarantine = c.quarantine_dir(&data_dir);
    o.quarantine_dir = std::path::absolute(&quarantine).unwrap_or(quarantine);
    o.kill_grace = c.kill_grace;
    o.isolation = Isolation {
        allow: Vec::new(),
        mgmt: c
            .management
            .iter()
            .filter_map(|m| net(&m.from).map(|from| MgmtAccess { from, tcp_port: m.tcp_port }))
            .collect(),
        dhcp: c.isolation_keep_dhcp,
    };
    o
}

/// Opens the containment state, re-applies what is in force (journaling what it did), and starts
/// the worker whose outcomes go to the journal. In enforce mode the nftables table is set up now,
/// so the first block costs one netlink transaction like every other (not an `nft` start).
async fn start_containment(
    settings: &Settings,
    device_id: &str,
    journal: &JournalTx,
) -> anyhow::Result<Containment> {
    let backend = Arc::new(HostBackend::new(NetOptions::default()));
    let mut contain = Containment::open(
        containment_options(settings, device_id),
        Arc::clone(&backend) as Arc<dyn Backend>,
        Arc::new(SystemClock),
    )
    .context("containment")?;
    if settings.agent.mode == config::Mode::Enforce
        && let Err(e) = backend.prepare_net()
    {
        eprintln!("picket: warning: containment: block_ip and isolate_host will fail: {e}");
    }
    for ev in contain.restore() {
        let _ = journal.send(JournalCmd::Append(Box::new(ev))).await;
    }
    // A weak sender: a worker stuck in a slow action must not keep the journal open at shutdown.
    let (weak, journal_thread) = (journal.tx.downgrade(), journal.thread.clone());
    contain
        .start_worker(Box::new(move |ev| {
            if let Some(tx) = weak.upgrade() {
                let tx = JournalTx { tx, thread: journal_thread.clone() };
                let _ = tx.blocking_send(JournalCmd::Append(Box::new(ev)));
            }
        }))
        .context("containment worker")?;
    Ok(contain)
}

/// The uplink's settings from `[uplink]`.
fn uplink_config(settings: &Settings, identity: Arc<Identity>, ack: AckMode) -> SenderConfig {
    let u = &settings.uplink;
    let endpoint = picket_uplink::Endpoint {
        tls: u.broker.tls,
        host: u.broker.host.clone(),
        port: u.broker.port,
        ca_file: u.ca_file.clone(),
        cert_file: u.cert_file.clone(),
        key_file: u.key_file.clone(),
    };
    let mut cfg = SenderConfig::new(
        endpoint,
        u.topic_prefix.clone(),
        settings.journal_path(),
        JournalOptions { max_bytes: settings.journal.max_bytes, host_id: identity.id().to_owned() },
        identity,
    );
    cfg.ack = ack;
    cfg.limits = picket_journal::SealLimits { max_events: u.batch_max_events, max_bytes: u.batch_max_bytes };
    cfg.max_bytes_per_sec = u.max_bytes_per_sec;
    cfg.backoff_max = u.backoff_max;
    cfg.ack_timeout = u.ack_timeout;
    cfg
}

/// The collector's public key from a `picket collect --export-key` line.
pub fn read_collector_key(path: &Path) -> anyhow::Result<picket_wire::PublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{}: no key line", path.display()))?;
    let (_, key) = picket_wire::Keyring::parse_line(line).with_context(|| format!("{}", path.display()))?;
    Ok(key)
}

/// The way into the pipeline, for the sources: the bounded queue, the drop counters and the
/// nudge for what must not wait (picket_capture's "Wake-ups").
struct Inlet {
    tx: mpsc::Sender<Box<Event>>,
    drops: Drops,
    nudge: Nudge,
}

impl Inlet {
    fn out(&self, stage: &'static str) -> EventTx {
        EventTx::new(stage, self.tx.clone(), self.drops.clone()).with_nudge(self.nudge.clone())
    }
}

fn spawn_sources(settings: &Settings, inlet: &Inlet, status: &SourceStatus, shutdown: &Shutdown) {
    let s = &settings.sources;
    if s.file.enabled {
        // Events carry absolute, clean paths (`/srv/x`, not `./x` or `/srv/./x`), whatever the config said.
        let paths = s.file.paths.iter().map(|p| absolute_clean(p)).collect();
        let opts = picket_capture::file::FileOptions {
            include: s.file.include.clone(),
            exclude: s.file.exclude.clone(),
            hash_max_bytes: s.file.hash_max_bytes,
            scan_interval: s.file.scan_interval,
            baseline: Some(settings.agent.data_dir.join(picket_capture::file::BASELINE_FILE)),
            ..picket_capture::file::FileOptions::new(paths)
        };
        let out = inlet.out(FileSource::NAME);
        let run = FileSource::with_options(opts).run(out, status.clone(), shutdown.clone());
        spawn_source(FileSource::NAME, status, run);
    } else {
        status.set(FileSource::NAME, "disabled");
    }
    if s.auth.enabled {
        let src = AuthSource::new(s.auth.files.clone(), settings.agent.data_dir.join(AUTH_OFFSETS_FILE))
            .with_journal(
                s.auth.journald,
                s.auth.journal_dir.clone(),
                settings.agent.data_dir.join(AUTH_JOURNAL_CURSOR_FILE),
            );
        let out = inlet.out(AuthSource::NAME);
        spawn_source(AuthSource::NAME, status, src.run(out, status.clone(), shutdown.clone()));
    } else {
        status.set(AuthSource::NAME, "disabled");
    }
    if s.process.enabled {
        let out = inlet.out(ProcessSource::NAME);
        spawn_source(
            ProcessSource::NAME,
            status,
            ProcessSource::new().with_poll_interval(s.process.poll_interval).with_ebpf(s.process.ebpf).run(
                out,
                status.clone(),
                shutdown.clone(),
            ),
        );
    } else {
        status.set(ProcessSource::NAME, "disabled");
    }
    if s.network.enabled {
        spawn_network(settings, inlet, status, shutdown);
    } else {
        status.set("network", "disabled");
    }
}

/// The live network source (picket-netcap over libpcap) on its own thread: libpcap blocks.
#[cfg(feature = "pcap")]
fn spawn_network(settings: &Settings, inlet: &Inlet, status: &SourceStatus, shutdown: &Shutdown) {
    use picket_netcap::live::{self, LiveConfig};
    let n = &settings.sources.network;
    let mut cfg = LiveConfig {
        interface: n.interface.clone(),
        filter: n.filter.clone(),
        snaplen: i32::try_from(n.snaplen).unwrap_or(i32::MAX),
        buffer_size: i32::try_from(n.buffer_bytes).unwrap_or(i32::MAX),
        ..LiveConfig::default()
    };
    cfg.decoder.flows.max_flows = n.max_flows as usize;
    cfg.attribute_processes = n.attribute_processes;
    let out = inlet.out(live::SOURCE);
    let (st, sd) = (status.clone(), shutdown.clone());
    let run = async move {
        tokio::task::spawn_blocking(move || live::run_blocking(cfg, out, st, sd)).await.map_err(|e| {
            CaptureError::Failed { source_name: live::SOURCE, message: format!("capture thread: {e}") }
        })?
    };
    spawn_source(live::SOURCE, status, run);
}

/// Built without libpcap (`--no-default-features`): say so plainly, once, and go on.
#[cfg(not(feature = "pcap"))]
fn spawn_network(_: &Settings, _: &Inlet, status: &SourceStatus, _: &Shutdown) {
    status.set("network", "unavailable: this build has no live capture (built without the pcap feature)");
}

/// Run a source as its own task; a source that ends with an error shows as `failed: ...` in
/// status and health (it does not take the agent down).
fn spawn_source(
    name: &'static str,
    status: &SourceStatus,
    run: impl std::future::Future<Output = Result<(), CaptureError>> + Send + 'static,
) {
    let status = status.clone();
    tokio::spawn(async move {
        if let Err(e) = run.await {
            status.set(name, format!("failed: {e}"));
        }
    });
}

/// `p` made absolute against the working directory, with `.` components removed. `..` is kept:
/// resolving it lexically could point somewhere else than the kernel would through a symlink.
fn absolute_clean(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).components().collect()
}

/// The pipeline stage's own state: the policy engine and where its state is kept, and the
/// actions stage.
struct Pipeline {
    engine: Engine,
    device_id: String,
    mode: picket_policy::Mode,
    data_dir: PathBuf,
    reload: mpsc::Receiver<(PolicySet, Sigma)>,
    contain: Containment,
    drops: Drops,
    sigma: Sigma,
    detections: Detections,
    policy_groups: Arc<PolicyUse>,
}

/// Detection counters (`sigma.alerts.high`, `sigma.below_level.low`, ...), copied from the
/// pipeline once a second for `agent.health` and `picket status`.
#[derive(Clone, Debug, Default)]
struct Detections(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl Detections {
    fn set(&self, m: std::collections::BTreeMap<String, u64>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = m;
    }

    fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// What the policy engine's windows hold, copied by the pipeline once a second for the status
/// file: groups across all rules, and groups dropped at `policies.max_groups_per_rule`.
#[derive(Debug, Default)]
struct PolicyUse {
    groups: AtomicU64,
    evicted: AtomicU64,
}

impl PolicyUse {
    fn update(&self, engine: &Engine) {
        let stats = engine.stats();
        let evicted: u64 = stats.per_rule.iter().map(|r| r.evicted_groups).sum();
        self.groups.store(u64::try_from(stats.state_entries).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.evicted.store(evicted, Ordering::Relaxed);
    }
}

/// Under load (events again within this long of the pipeline's last wake-up), routine events
/// gather for this long before the pipeline looks again; what must not wait nudges it at once
/// (picket_capture's "Wake-ups"). Each wake-up from another thread costs ~15-25 µs of CPU here;
/// at 1,000 events/s this cuts them from ~600 a second to ~100 plus the nudges. The price: under
/// load, a policy acting on a process or file event acts up to this much later (an auth event,
/// and anything when the agent is idle, is not held).
const PIPELINE_LINGER: Duration = Duration::from_millis(10);

/// Events handled per look at the queue before the timers get their turn.
const PIPELINE_BATCH: usize = 256;

/// How often TTLs are checked and outside changes to the containment state picked up.
const CONTAIN_TICK: Duration = Duration::from_secs(1);

/// How often the engine's windows are written to disk, so a crash costs at most this much of an
/// attacker's count (a clean stop saves them at once).
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Sources → policy and Sigma → actions → journal. Each event is journaled, then each alert it
/// triggered (so an alert's trigger always has the lower seq, and the alert names it in
/// `event.trigger_seq`), then that alert's actions: every action's intent is queued for the
/// journal before the action runs and its outcome after (a block runs right here, ~0.05 ms;
/// slower actions on the containment worker, which journals their outcome). Then each Sigma alert
/// the event raised, which picket's policies evaluate in turn (`on: alert`), with their alerts and
/// actions. Policy alerts are not evaluated again.
async fn pipeline(mut rx: mpsc::Receiver<Box<Event>>, nudge: Nudge, journal: JournalTx, mut p: Pipeline) {
    let mut decisions = Vec::new();
    let mut sigma_alerts = Vec::new();
    let mut save = tokio::time::interval(STATE_SAVE_INTERVAL);
    let mut tick = tokio::time::interval(CONTAIN_TICK);
    let mut dirty = false;
    // Under load, routine events gather until this deadline instead of waking the pipeline one
    // by one (picket_capture's "Wake-ups"): set when events come again within PIPELINE_LINGER of
    // the last wake-up, and kept while each look finds more.
    let mut linger: Option<tokio::time::Instant> = None;
    let mut last_wake = tokio::time::Instant::now() - PIPELINE_LINGER;
    'events: loop {
        // (an event to begin with, under load)
        let (first, busy) = tokio::select! {
            ev = rx.recv(), if linger.is_none() => {
                let Some(ev) = ev else { break };
                let now = tokio::time::Instant::now();
                let busy = now.duration_since(last_wake) < PIPELINE_LINGER;
                last_wake = now;
                (Some(ev), busy)
            }
            () = tokio::time::sleep_until(linger.unwrap_or_else(tokio::time::Instant::now)), if linger.is_some() => {
                (None, true)
            }
            () = nudge.nudged(), if linger.is_some() => (None, true),
            _ = tick.tick() => {
                for ev in p.contain.tick() {
                    if journal.send(JournalCmd::Append(Box::new(ev))).await.is_err() {
                        break 'events;
                    }
                }
                p.detections.set(p.sigma.counters());
                p.policy_groups.update(&p.engine);
                continue;
            }
            Some((set, sigma)) = p.reload.recv() => {
                let n = set.len();
                p.engine.replace_set(Arc::new(set));
                p.sigma = sigma;
                println!("policies reloaded: {n} rule(s)");
                continue;
            }
            _ = save.tick() => {
                if dirty {
                    if let Err(e) = policy::save_state(&p.data_dir, &p.engine) {
                        eprintln!("picket: warning: saving policy state: {e:#}");
                    }
                    dirty = false;
                }
                continue;
            }
        };
        if linger.take().is_some() {
            nudge.done_lingering();
        }
        // What came with it, or while lingering; at most a batch, so the timers above are not
        // starved.
        nudge.looking();
        let mut next = first;
        let mut taken = 0;
        loop {
            let ev = match next.take() {
                Some(ev) => ev,
                None if taken < PIPELINE_BATCH => match rx.try_recv() {
                    Ok(ev) => ev,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'events,
                },
                None => break,
            };
            taken += 1;
            dirty = true;
            if handle(&mut p, &journal, ev, &mut decisions, &mut sigma_alerts).await.is_err() {
                break 'events;
            }
        }
        // Woken again soon after the last time, or a linger that found events: under load,
        // gather again (unless something that must not wait came meanwhile).
        if busy && taken > 0 && nudge.linger() {
            linger = Some(tokio::time::Instant::now() + PIPELINE_LINGER);
        }
    }
    if let Err(e) = policy::save_state(&p.data_dir, &p.engine) {
        eprintln!("picket: warning: saving policy state: {e:#}");
    }
    // The action running on the worker may finish (and journal its outcome) while the journal is
    // still open; queued ones are journaled as skipped.
    let mut contain = p.contain;
    let _ = tokio::task::spawn_blocking(move || contain.shutdown(Duration::from_secs(2))).await;
}

/// One event from a source: Sigma, then picket's policies on it and on each Sigma alert it raised
/// ([`decide`]). Err: the journal is gone (shutting down).
async fn handle(
    p: &mut Pipeline,
    journal: &JournalTx,
    mut ev: Box<Event>,
    decisions: &mut Vec<Decision>,
    sigma_alerts: &mut Vec<Event>,
) -> Result<(), ()> {
    ev.host.id.clone_from(&p.device_id);
    p.sigma.detect(&ev, sigma_alerts);
    decide(p, journal, ev, false, decisions).await?;
    for alert in sigma_alerts.drain(..) {
        decide(p, journal, Box::new(alert), true, decisions).await?;
    }
    Ok(())
}

/// Evaluate picket's policies on `ev`, then journal it, each alert it triggered, and each alert's
/// actions (carried out as they are journaled). `is_alert`: `ev` is a Sigma alert on the event
/// journaled just before. Err: the journal is gone (shutting down).
async fn decide(
    p: &mut Pipeline,
    journal: &JournalTx,
    ev: Box<Event>,
    is_alert: bool,
    decisions: &mut Vec<Decision>,
) -> Result<(), ()> {
    p.engine.evaluate(&ev, decisions);
    // Prepared now (safety checks, mode, budget, a pending state row; nothing on the host yet),
    // so each alert can say what happens to its actions.
    let mut alerts = Vec::with_capacity(decisions.len());
    for d in decisions.drain(..) {
        let mode = d.effective_mode(p.mode);
        let ctx = ActionContext {
            rule_id: d.rule_id.to_string(),
            mode,
            severity: d.severity,
            // The start time the process source read at exec: kill refuses a pid that has been
            // reused since.
            process_start_time: ev.process.as_ref().and_then(|p| p.start_ticks),
        };
        let prepared: Vec<Prepared> = d.actions.iter().map(|a| p.contain.prepare(a, &ctx)).collect();
        alerts.push((alert_for(&d, &ev, mode, &prepared), prepared));
    }
    let send = |cmd| journal.send(cmd);
    send(JournalCmd::Trigger { ev, alert: is_alert }).await?;
    for (alert, prepared) in alerts {
        send(JournalCmd::Alert(Box::new(alert))).await?;
        for step in prepared {
            let (first, act) = match step {
                Prepared::Done(ev) => (ev, None),
                Prepared::Act { intent, act } => (intent, Some(act)),
            };
            send(JournalCmd::Append(first)).await?;
            let Some(act) = act else { continue };
            let outcome = p.contain.execute(act);
            let dropped = p.contain.take_dropped();
            if dropped > 0 {
                p.drops.add("contain", "worker_queue_full", dropped);
            }
            if let Some(outcome) = outcome {
                send(JournalCmd::Append(Box::new(outcome))).await?;
            }
        }
    }
    Ok(())
}

/// The `alert` event for a decision, saying what containment it asked for and what happens to
/// each action: in monitor mode what would be done; in enforce mode whether it is being carried
/// out (its outcome follows in `action` events) or was refused, skipped or failed, and why.
fn alert_for(d: &Decision, trigger: &Event, mode: picket_policy::Mode, prepared: &[Prepared]) -> Event {
    let mut alert = alert_event(d, trigger);
    if !d.actions.is_empty() {
        let asked: Vec<String> = d
            .actions
            .iter()
            .zip(prepared)
            .map(|(a, p)| {
                let what = describe_action(a);
                let Some(detail) = p.event().action.as_ref() else { return what };
                let why = detail.reason.as_deref().or(detail.error.as_deref()).unwrap_or("");
                match (detail.outcome.as_str(), detail.id) {
                    ("dry_run", _) => what,
                    ("intent", Some(id)) => format!("{what} (carrying out: action {id})"),
                    ("intent", None) => format!("{what} (carrying out)"),
                    (outcome, _) => format!("{what} ({}: {why})", outcome.replace('_', " ")),
                }
            })
            .collect();
        let note = match mode {
            picket_policy::Mode::Monitor => format!("monitor mode, would: {}", asked.join(", ")),
            picket_policy::Mode::Enforce => format!("enforce mode: {}", asked.join(", ")),
        };
        let msg = alert.message.get_or_insert_with(String::new);
        msg.push_str("; ");
        msg.push_str(&note);
    }
    alert
}

fn describe_action(a: &ActionRequest) -> String {
    match a {
        ActionRequest::BlockIp { ip, ttl } => format!("block_ip {ip} for {}s", ttl.as_secs()),
        ActionRequest::Kill { pid, tree } => {
            format!("kill {pid}{}", if *tree { " and its tree" } else { "" })
        }
        ActionRequest::DenyExec { path } => format!("deny_exec {path}"),
        ActionRequest::Quarantine { path } => format!("quarantine {path}"),
        ActionRequest::IsolateHost { .. } => "isolate_host".to_string(),
        ActionRequest::LockAccount { user, .. } => format!("lock_account {user}"),
    }
}

/// Reload policies on SIGHUP and when a policy file changes (checked every
/// [`POLICY_POLL`]). A set that does not load is reported and the running set stays.
async fn reload_loop(
    paths: Vec<PathBuf>,
    sigma_min_level: config::SigmaLevel,
    tx: mpsc::Sender<(PolicySet, Sigma)>,
    mut shutdown: Shutdown,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(POLICY_POLL);
    let mut seen = policy_files_fingerprint(&paths);
    loop {
        let why = tokio::select! {
            _ = shutdown.wait() => return,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll.tick() => {
                let now = policy_files_fingerprint(&paths);
                if now == seen { continue; }
                seen = now;
                "a policy file changed"
            }
        };
        let loaded = policy::load_for_agent(&paths)
            .and_then(|(set, _)| Sigma::load(&paths, sigma_min_level).map(|(sigma, _)| (set, sigma)));
        match loaded {
            Ok(both) => {
                if tx.send(both).await.is_err() {
                    return;
                }
            }
            Err(errors) => {
                println!("policy reload ({why}) failed; the running policies stay in force:");
                for line in errors.lines() {
                    println!("  {line}");
                }
            }
        }
    }
}

/// How often policy files are checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(2);

/// (path, modified time, length) of every file under the policy paths, sorted.
fn policy_files_fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Option<std::time::SystemTime>, u64)>, depth: u32) {
        let Ok(md) = std::fs::metadata(p) else { return };
        if md.is_dir() && depth < 16 {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out, depth + 1);
                }
            }
        } else if md.is_file() {
            out.push((p.to_path_buf(), md.modified().ok(), md.len()));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out, 0);
    }
    out.sort();
    out
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no paths)".into();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Owns the journal. Wakes every `linger` ([`JOURNAL_LINGER`]) or when [`JournalTx`] wakes it, takes
/// whatever is queued and commits it, up to [`JOURNAL_BATCH_MAX`] events per transaction: at low
/// rates a commit every linger at most, under load bigger commits (group commit), and an alert,
/// action or gap at once. Between wakes it does nothing: queueing an event costs the pipeline no
/// wake-up of this thread.
fn journal_writer(
    mut journal: Journal,
    mut rx: mpsc::Receiver<JournalCmd>,
    live: mpsc::Sender<Box<Event>>,
    counters: &JournalCounters,
    drops: &Drops,
    linger: Duration,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut batch = Batch::default();
    loop {
        let closed = loop {
            let cmd = match rx.try_recv() {
                Ok(cmd) => cmd,
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            };
            match cmd {
                JournalCmd::Append(ev) => batch.events.push(ev),
                JournalCmd::Trigger { ev, alert } => {
                    if alert {
                        batch.link_to_trigger();
                    }
                    batch.trigger = Trigger::InBatch(batch.events.len());
                    batch.events.push(ev);
                }
                JournalCmd::Alert(ev) => {
                    batch.link_to_trigger();
                    batch.events.push(ev);
                }
                JournalCmd::Stats(reply) => {
                    commit(&mut journal, &mut batch, &live, counters, drops);
                    let _ = reply.send(journal.summary().map_err(|e| e.to_string()));
                }
            }
            if batch.events.len() >= JOURNAL_BATCH_MAX {
                commit(&mut journal, &mut batch, &live, counters, drops);
            }
        };
        commit(&mut journal, &mut batch, &live, counters, drops);
        if closed {
            return;
        }
        // Unparked early by JournalTx (an unpark before this call makes it return at once, so no
        // wake-up is lost); spurious returns only mean an early look at the queue.
        thread::park_timeout(linger);
    }
}

/// Where the last trigger (the event alerts point at) is.
#[derive(Clone, Copy, Debug, Default)]
enum Trigger {
    #[default]
    None,
    /// Not committed yet: its index in the batch.
    InBatch(usize),
    Committed(u64),
}

/// Events waiting for one commit, and which of them are alerts on which trigger.
#[derive(Debug, Default)]
struct Batch {
    /// Boxed: an `Event` is ~1.8 KB inline, and the vector keeps the capacity of the biggest
    /// batch it ever held (the events come boxed from the queue and go boxed to the live view).
    #[allow(clippy::vec_box)]
    events: Vec<Box<Event>>,
    trigger: Trigger,
    /// (index of an alert, its trigger).
    links: Vec<(usize, Trigger)>,
}

impl Batch {
    /// The event about to be pushed is an alert on the current trigger.
    fn link_to_trigger(&mut self) {
        self.links.push((self.events.len(), self.trigger));
    }

    /// Fill in `event.trigger_seq`: the journal gives a batch consecutive seqs from `first_seq`.
    fn resolve(&mut self, first_seq: u64) {
        for (i, t) in self.links.drain(..) {
            let seq = match t {
                Trigger::None => None,
                Trigger::InBatch(j) => Some(first_seq + j as u64),
                Trigger::Committed(s) => Some(s),
            };
            if let Some(ev) = self.events.get_mut(i) {
                ev.event.trigger_seq = seq;
            }
        }
    }

    /// After a commit: a trigger in the batch now has its seq.
    fn committed(&mut self, first_seq: u64, ok: bool) {
        self.trigger = match self.trigger {
            Trigger::InBatch(j) if ok => Trigger::Committed(first_seq + j as u64),
            Trigger::InBatch(_) => Trigger::None,
            t => t,
        };
        self.links.clear();
    }
}

fn commit(
    journal: &mut Journal,
    pending: &mut Batch,
    live: &mpsc::Sender<Box<Event>>,
    counters: &JournalCounters,
    drops: &Drops,
) {
    if pending.events.is_empty() {
        return;
    }
    let first_seq = journal.last_seq() + 1;
    pending.resolve(first_seq);
    let ok = commit_events(journal, &mut pending.events, live, counters, drops);
    pending.committed(first_seq, ok);
}

/// Append `batch` (emptied either way); false if it could not be written.
#[allow(clippy::vec_box)] // see Batch::events
fn commit_events(
    journal: &mut Journal,
    batch: &mut Vec<Box<Event>>,
    live: &mpsc::Sender<Box<Event>>,
    counters: &JournalCounters,
    drops: &Drops,
) -> bool {
    // One retry: a transient failure (disk briefly full, a reader holding a lock) should not cost
    // events. What still fails is counted as dropped and shown in health and status.
    let mut result = journal.append_boxed(batch);
    if result.is_err() {
        thread::sleep(Duration::from_millis(50));
        result = journal.append_boxed(batch);
    }
    match result {
        Ok(appended) => {
            let n = u64::try_from(batch.len() + appended.gaps.len()).unwrap_or(u64::MAX);
            counters.journaled.fetch_add(n, Ordering::Relaxed);
            counters.last_seq.store(journal.last_seq(), Ordering::Relaxed);
            counters.appended.send_replace(journal.last_seq());
            for ev in batch.drain(..).chain(appended.gaps.into_iter().map(Box::new)) {
                if ev.kind != EventKind::AgentHealth {
                    liveview::offer(live, ev);
                }
            }
            true
        }
        Err(e) => {
            let n = counters.write_errors.fetch_add(1, Ordering::Relaxed);
            if n < 10 || n.is_power_of_two() {
                eprintln!("picket: error: journal write failed ({} events dropped): {e}", batch.len());
            }
            drops.add("journal", "write_failed", u64::try_from(batch.len()).unwrap_or(u64::MAX));
            batch.clear();
            false
        }
    }
}

struct HealthCtx {
    settings: Settings,
    device_id: String,
    started: Timestamp,
    journal_tx: JournalTx,
    drops: Drops,
    sources: SourceStatus,
    source_depth: mpsc::WeakSender<Box<Event>>,
    uplink: Option<SharedStatus>,
    detections: Detections,
    shutdown: Shutdown,
    policy_limits: StateLimits,
    /// Groups the policy engine holds across its rules, copied by the pipeline once a second.
    policy_groups: Arc<PolicyUse>,
}

/// Every `status_interval`: a fresh status file for `picket status`; every `health_interval`
/// also an `agent.health` event into the journal. Returns the last status written, so shutdown can
/// mark it `stopped`.
async fn health_loop(mut ctx: HealthCtx) -> Option<StatusFile> {
    let mut sampler = ProcSampler::new();
    let mut tick = tokio::time::interval(ctx.settings.agent.status_interval);
    let begun = Instant::now();
    let mut last = None;
    let mut last_health_event: Option<Instant> = None;
    // The first tick fires at once; let the sources report their state first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.wait() => return last,
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        if ctx.journal_tx.send(JournalCmd::Stats(reply_tx)).await.is_err() {
            return last;
        }
        let stats = match reply_rx.await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                eprintln!("picket: warning: journal stats: {e}");
                None
            }
            Err(_) => return last,
        };
        crate::health::release_free_memory();
        let (rss, cpu) = sampler.sample();
        let health = Health {
            pid: std::process::id(),
            uptime_secs: begun.elapsed().as_secs(),
            rss_bytes: rss,
            cpu_percent: cpu,
            queue_depths: [
                ("sources".to_string(), queue_depth(&ctx.source_depth)),
                ("journal".to_string(), ctx.journal_tx.depth()),
            ]
            .into(),
            drops: ctx.drops.snapshot(),
            sources: ctx.sources.snapshot(),
            detections: ctx.detections.snapshot(),
            journal_bytes: stats.as_ref().map_or(0, |s| s.file_bytes),
            journal_events: stats.as_ref().map_or(0, |s| s.events),
            journal_last_seq: stats.as_ref().map_or(0, |s| s.last_seq),
            backlog: stats.as_ref().map_or(0, |s| s.backlog),
            journal_evicted: stats.as_ref().map_or(0, |s| s.evicted_total),
            last_sync: ctx
                .uplink
                .as_ref()
                .and_then(|u| u.lock().ok().and_then(|s| s.last_delivery_ns))
                .map(Timestamp::from_unix_nanos),
        };
        if last_health_event
            .is_none_or(|t| t.elapsed() + Duration::from_millis(100) >= ctx.settings.agent.health_interval)
        {
            last_health_event = Some(Instant::now());
            let mut ev = Event::new(EventKind::AgentHealth, Timestamp::now());
            ev.host.id.clone_from(&ctx.device_id);
            ev.event.severity = severity::INFO;
            ev.event.dataset = Some("picket.agent".into());
            ev.health = Some(health.clone());
            if ctx.journal_tx.send(JournalCmd::Append(Box::new(ev))).await.is_err() {
                return last;
            }
        }
        let status = StatusFile {
            version: env!("CARGO_PKG_VERSION").into(),
            state: "running".into(),
            started_at: ctx.started,
            written_at: Timestamp::now(),
            device_id: ctx.device_id.clone(),
            mode: ctx.settings.agent.mode.to_string(),
            status_interval_secs: ctx.settings.agent.status_interval.as_secs(),
            health,
            uplink: ctx.uplink.as_ref().and_then(|u| u.lock().ok().map(|s| s.clone())),
            budgets: budgets(&ctx),
        };
        if let Err(e) = status.write(&ctx.settings.agent.data_dir) {
            eprintln!("picket: warning: {e:#}");
        }
        last = Some(status);
    }
}

/// The memory budgets and their use, for the status file.
fn budgets(ctx: &HealthCtx) -> std::collections::BTreeMap<String, u64> {
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    [
        ("queue.sources.cap", n(ctx.settings.agent.queue_events)),
        ("queue.sources.used", queue_depth(&ctx.source_depth)),
        ("queue.journal.cap", n(JOURNAL_QUEUE)),
        ("queue.journal.used", ctx.journal_tx.depth()),
        ("queue.live.cap", n(LIVE_QUEUE)),
        ("sqlite.bytes.cap", SQLITE_MEMORY_LIMIT),
        ("sqlite.bytes.used", picket_journal::sqlite_memory_used()),
        ("policy.groups_per_rule.cap", n(ctx.policy_limits.max_groups_per_rule)),
        ("policy.groups.used", ctx.policy_groups.groups.load(Ordering::Relaxed)),
        ("policy.groups.evicted", ctx.policy_groups.evicted.load(Ordering::Relaxed)),
        ("journal.bytes.cap", ctx.settings.journal.max_bytes),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Events waiting in a queue, seen through a weak sender (so holding it does not keep the queue
/// open at shutdown).
pub fn queue_depth(tx: &mpsc::WeakSender<Box<Event>>) -> u64 {
    tx.upgrade().map_or(0, |tx| u64::try_from(tx.max_capacity() - tx.capacity()).unwrap_or(0))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("picket: warning: cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Box<Event> {
        let mut ev = Event::new(kind, Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
        ev.host.id = "dev1".into();
        Box::new(ev)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The journal thread holds routine events for the linger (here: an hour, so only a wake-up
    /// can commit them), commits at once when an alert arrives (with the routine events before
    /// it, in order) or when the queue is half full, and commits what is left when the queue
    /// closes.
    #[test]
    fn the_journal_thread_lingers_on_routine_events_and_commits_alerts_and_half_full_queues_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let journal = Journal::open(&path, JournalOptions::new("dev1")).unwrap();
        let (tx, rx) = mpsc::channel::<JournalCmd>(JOURNAL_QUEUE);
        let (live_tx, mut live_rx) = mpsc::channel::<Box<Event>>(JOURNAL_QUEUE * 2);
        let counters = Arc::new(JournalCounters::default());
        let drops = Drops::default();
        let (c, d) = (counters.clone(), drops.clone());
        let writer = thread::spawn(move || {
            journal_writer(journal, rx, live_tx, &c, &d, Duration::from_secs(3600));
        });
        let jtx = JournalTx { tx, thread: writer.thread().clone() };
        let journaled = || counters.journaled.load(Ordering::Relaxed);
        // Let the thread take its first look at the (empty) queue and go to sleep.
        let (reply_tx, reply_rx) = oneshot::channel();
        jtx.blocking_send(JournalCmd::Stats(reply_tx)).unwrap();
        assert_eq!(reply_rx.blocking_recv().unwrap().unwrap().last_seq, 0);
        thread::sleep(Duration::from_millis(100));

        jtx.blocking_send(JournalCmd::Trigger { ev: event(EventKind::AuthFailure), alert: false }).unwrap();
        jtx.blocking_send(JournalCmd::Append(event(EventKind::FileModify))).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(journaled(), 0, "routine events wait for the linger");

        jtx.blocking_send(JournalCmd::Alert(event(EventKind::Alert))).unwrap();
        wait_for("the alert's commit", || journaled() == 3);
        let kinds: Vec<(EventKind, u64)> =
            std::iter::from_fn(|| live_rx.try_recv().ok()).map(|e| (e.kind, e.seq)).collect();
        assert_eq!(
            kinds,
            [(EventKind::AuthFailure, 1), (EventKind::FileModify, 2), (EventKind::Alert, 3)],
            "one commit, in order"
        );

        // Half a queue of routine events wakes the thread: the pipeline never waits on a full
        // queue for a linger to pass.
        for _ in 0..JOURNAL_QUEUE / 2 {
            jtx.blocking_send(JournalCmd::Append(event(EventKind::ProcessStart))).unwrap();
        }
        wait_for("the half-full queue's commit", || journaled() == 3 + (JOURNAL_QUEUE / 2) as u64);

        // Stats are answered at once, after committing what is queued.
        jtx.blocking_send(JournalCmd::Append(event(EventKind::ProcessExit))).unwrap();
        let (reply_tx, reply_rx) = oneshot::channel();
        jtx.blocking_send(JournalCmd::Stats(reply_tx)).unwrap();
        let stats = reply_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(stats.last_seq, 4 + (JOURNAL_QUEUE / 2) as u64);

        // The queue closes: the rest is committed and the thread ends.
        jtx.blocking_send(JournalCmd::Append(event(EventKind::FileCreate))).unwrap();
        let thread = jtx.thread.clone();
        drop(jtx);
        thread.unpark();
        writer.join().unwrap();
        assert_eq!(journaled(), 5 + (JOURNAL_QUEUE / 2) as u64);
        assert_eq!(drops.total(), 0);
        let reader = Journal::open_read_only(&path).unwrap();
        assert_eq!(reader.stats().unwrap().events, 5 + (JOURNAL_QUEUE / 2) as u64);
    }
}
