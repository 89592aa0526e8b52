//! The SOC side: `picket collect`.
//!
//! Subscribes to `<prefix>/+/batch` (through `$share/<group>/` when a share group is set, so
//! several collectors split the load), and for each message:
//!
//! 1. refuses oversized, malformed, unsigned, forged or unknown-device batches (picket-wire's
//!    [`open`](picket_wire::open)), and batches whose header names another device than the topic;
//! 2. places it in the device's chain: the next batch (its `prev_hash` must be the stored head) is
//!    accepted; an earlier one is a duplicate (same hash: acknowledged again) or a **fork** (other
//!    hash); a later one waits (bounded) for the batches before it, and after `gap_timeout` the
//!    missing ones are reported as a **gap** and the chain resumes from it; a new stream id is a
//!    journal reset on the device, reported, while a stream seen before and left is a **replay**;
//! 3. writes the new events (deduplicated on (device, seq)) to the output as NDJSON, fsyncs, and
//!    only then commits the device's state, including the output's length, in SQLite; on start, an
//!    output longer than the committed length is cut back to it (a crash between the two), so a
//!    restart neither loses nor duplicates a line;
//! 4. acknowledges the MQTT message (manual acks, persistent session: the broker re-delivers what
//!    the collector had not committed) and publishes a signed ack to `<prefix>/<device>/ack`.
//!
//! Anomalies (forks, gaps, replays, resets, reordering, clock skew, rejected messages) are written
//! as JSON lines to stderr and to `<state_dir>/anomalies.ndjson`, and counted in
//! `<state_dir>/collector-status.json`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use picket_wire::{Ack, Identity, Keyring, VerifiedBatch};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, Incoming, QoS};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{Backoff, Endpoint, now_ns, topic};

/// Where verified events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

/// `[collect]` after validation.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    pub endpoint: Endpoint,
    pub topic_prefix: String,
    pub device_keys_dir: PathBuf,
    pub state_dir: PathBuf,
    pub output: Output,
    /// MQTT client id; with a persistent session the broker keeps our subscription and queues
    /// messages while we are away, so it must be stable per collector.
    pub client_id: String,
    /// Subscribe as `$share/<group>/...` (several collectors share the fleet).
    pub share_group: Option<String>,
    pub max_message_bytes: usize,
    /// Publish signed acks (needed by devices in end-to-end mode; harmless otherwise).
    pub send_acks: bool,
    /// Batches held per device while waiting for an earlier one.
    pub max_pending_per_device: usize,
    /// How long a hole in a chain may stay open before it is reported as a gap and skipped.
    pub gap_timeout: Duration,
    /// A batch created this far in the future (device clock) is reported as clock skew.
    pub skew_tolerance: Duration,
}

impl CollectorConfig {
    pub fn new(
        endpoint: Endpoint,
        topic_prefix: String,
        device_keys_dir: PathBuf,
        state_dir: PathBuf,
        output: Output,
    ) -> CollectorConfig {
        CollectorConfig {
            endpoint,
            topic_prefix,
            device_keys_dir,
            state_dir,
            output,
            client_id: "picket-collector".into(),
            share_group: None,
            max_message_bytes: 4 * 1024 * 1024,
            send_acks: true,
            max_pending_per_device: 64,
            gap_timeout: Duration::from_secs(30),
            skew_tolerance: Duration::from_secs(300),
        }
    }
}

/// A collector that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("collector state {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// The collector's key file in `state_dir`; its public half is what devices pin for acks.
pub fn collector_identity(state_dir: &Path) -> Result<Identity, CollectError> {
    Identity::load_or_create(state_dir, picket_wire::COLLECTOR_KEY_FILE, "collector")
        .map_err(|e| CollectError::Setup(e.to_string()))
}

/// Counters for `collector-status.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CollectorStats {
    pub batches_accepted: u64,
    pub events_written: u64,
    pub duplicate_batches: u64,
    pub duplicate_events: u64,
    /// Rejected messages by reason (`bad_signature`, `unknown_device`, `topic_mismatch`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Anomalies by kind (`fork`, `gap`, `replay`, `stream_reset`, `reordered`, `clock_skew`, ...).
    pub anomalies: BTreeMap<String, u64>,
    pub connected: bool,
    pub last_error: Option<String>,
}

/// Run until `stop` resolves. Errors only for what prevents starting (state, output, keys,
/// TLS files); the broker going away is retried with backoff.
pub async fn run(
    cfg: CollectorConfig,
    stop: impl Future<Output = ()>,
) -> Result<CollectorStats, CollectError> {
    let mut stop = pin!(stop);
    let mut core = Core::open(&cfg)?;
    let identity = collector_identity(&cfg.state_dir)?;
    let mut opts =
        cfg.endpoint.mqtt_options(&cfg.client_id).map_err(|e| CollectError::Setup(e.to_string()))?;
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(cfg.max_message_bytes + 1024, 64 * 1024);
    let filter = match &cfg.share_group {
        Some(g) => format!("$share/{g}/{}/+/batch", cfg.topic_prefix),
        None => format!("{}/+/batch", cfg.topic_prefix),
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_status = Instant::now();
    loop {
        let (client, mut eventloop) = AsyncClient::new(opts.clone(), 1024);
        let (tx, mut rx) = mpsc::channel(1024);
        let poller = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end: Option<String> = loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                        if ack.code != ConnectReturnCode::Success {
                            break Some(format!("broker {} refused: {:?}", cfg.endpoint.url(), ack.code));
                        }
                        backoff.reset();
                        core.stats.connected = true;
                        core.stats.last_error = None;
                        // Subscribing on every connect is idempotent and covers a broker that lost
                        // our session.
                        if let Err(e) = client.try_subscribe(&filter, QoS::AtLeastOnce) {
                            break Some(format!("subscribe: {e}"));
                        }
                    }
                    Some(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                        // Synchronous on purpose: one message at a time, in order; the poll task buffers.
                        let acks = core.handle(&p.topic, &p.payload);
                        // Only after the commit: the broker re-delivers anything we die before acking.
                        let _ = client.try_ack(&p);
                        if cfg.send_acks {
                            for a in acks {
                                let t = topic(&cfg.topic_prefix, &a.device_id, "ack");
                                let _ = client.try_publish(t, QoS::AtLeastOnce, false, picket_wire::seal_ack(&identity, &a));
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("broker {}: {e}", cfg.endpoint.url())),
                    None => break Some("MQTT event loop ended".into()),
                },
                _ = tick.tick() => {
                    let acks = core.expire_gaps();
                    if cfg.send_acks {
                        for a in acks {
                            let t = topic(&cfg.topic_prefix, &a.device_id, "ack");
                            let _ = client.try_publish(t, QoS::AtLeastOnce, false, picket_wire::seal_ack(&identity, &a));
                        }
                    }
                    if last_status.elapsed() >= Duration::from_secs(2) {
                        core.write_status();
                        last_status = Instant::now();
                    }
                }
                () = stop.as_mut() => break None,
            }
        };
        core.stats.connected = false;
        match end {
            None => {
                let _ = client.try_disconnect();
                tokio::time::sleep(Duration::from_millis(100)).await;
                poller.abort();
                core.write_status();
                return Ok(core.stats.clone());
            }
            Some(e) => {
                poller.abort();
                if core.stats.last_error.as_deref() != Some(e.as_str()) {
                    eprintln!("picket collect: {e}");
                }
                core.stats.last_error = Some(e);
                core.write_status();
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.as_mut() => return Ok(core.stats.clone()),
        }
    }
}

/// The collector minus MQTT: verification, chains, output, state. Synchronous, testable
/// without a broker.
pub struct Core {
    cfg: CollectorConfig,
    keyring: Keyring,
    db: Connection,
    db_path: PathBuf,
    out: OutputSink,
    anomalies: File,
    pub stats: CollectorStats,
    /// Verified batches waiting for an earlier one: device → batch_seq → (arrived, batch).
    pending: BTreeMap<String, BTreeMap<u64, (Instant, VerifiedBatch)>>,
    /// Seen event seqs of recently active device streams.
    seen: HashMap<(String, [u8; 16]), Seen>,
}

/// Device streams whose seen ranges are kept in memory (the cache is dropped when full).
const SEEN_CACHE_DEVICES: usize = 4096;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("state", &self.db_path).field("stats", &self.stats).finish()
    }
}

enum OutputSink {
    Stdout(io::Stdout),
    File { file: File, path: PathBuf },
}

/// One device's place in its chain.
#[derive(Clone, Debug)]
struct DeviceState {
    stream_id: [u8; 16],
    batch_seq: u64,
    head: [u8; 32],
    last_created_ns: i64,
}

impl Core {
    /// Open (or create) the state and output, enrol the keys. Bad key files are reported and
    /// skipped; a directory with no usable key at all is an error.
    pub fn open(cfg: &CollectorConfig) -> Result<Core, CollectError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| CollectError::Io {
            path: cfg.state_dir.clone(),
            op: "create state_dir",
            source: e,
        })?;
        let (keyring, problems) = Keyring::load_dir(&cfg.device_keys_dir);
        for p in &problems {
            eprintln!("picket collect: {p}");
        }
        if keyring.is_empty() {
            return Err(CollectError::Setup(format!(
                "{}: no enrolled device key (one `picket identity --export` line per device, in *.pub files)",
                cfg.device_keys_dir.display()
            )));
        }
        let db_path = cfg.state_dir.join("collector.db");
        let st = |source| CollectError::State { path: db_path.clone(), source };
        let db = Connection::open(&db_path).map_err(st)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS devices (
                device_id TEXT PRIMARY KEY, stream_id BLOB NOT NULL, batch_seq INTEGER NOT NULL,
                head BLOB NOT NULL, last_created_ns INTEGER NOT NULL, events INTEGER NOT NULL,
                updated_ns INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS batches (
                device_id TEXT NOT NULL, stream_id BLOB NOT NULL, batch_seq INTEGER NOT NULL,
                hash BLOB NOT NULL, PRIMARY KEY (device_id, stream_id, batch_seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS streams (
                device_id TEXT NOT NULL, stream_id BLOB NOT NULL, first_seen_ns INTEGER NOT NULL,
                PRIMARY KEY (device_id, stream_id)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS seen (
                device_id TEXT NOT NULL, stream_id BLOB NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
                PRIMARY KEY (device_id, stream_id, lo)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS output (id INTEGER PRIMARY KEY CHECK (id = 1), len INTEGER NOT NULL);
             INSERT OR IGNORE INTO output VALUES (1, 0);",
        )
        .map_err(st)?;
        let committed: i64 = db.query_row("SELECT len FROM output", [], |r| r.get(0)).map_err(st)?;
        let out = match &cfg.output {
            Output::Stdout => OutputSink::Stdout(io::stdout()),
            Output::File(path) => {
                let io_err = |op| move |source| CollectError::Io { path: path.clone(), op, source };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io_err("create output directory"))?;
                }
                let file =
                    OpenOptions::new().create(true).append(true).open(path).map_err(io_err("open output"))?;
                let len = file.metadata().map_err(io_err("stat output"))?.len();
                let committed = u64::try_from(committed).unwrap_or(0);
                if len > committed {
                    // Lines written by a collector that died before committing them: the broker
                    // re-delivers their batch, so they would be duplicated.
                    eprintln!(
                        "picket collect: {}: cutting {} bytes written after the last commit",
                        path.display(),
                        len - committed
                    );
                    file.set_len(committed).map_err(io_err("truncate output"))?;
                } else if len < committed {
                    eprintln!(
                        "picket collect: {}: shorter than committed ({len} < {committed}): rotated? continuing",
                        path.display()
                    );
                    db.execute("UPDATE output SET len = ?1", [i64::try_from(len).unwrap_or(0)])
                        .map_err(st)?;
                }
                OutputSink::File { file, path: path.clone() }
            }
        };
        let anomalies_path = cfg.state_dir.join("anomalies.ndjson");
        let anomalies = OpenOptions::new().create(true).append(true).open(&anomalies_path).map_err(|e| {
            CollectError::Io { path: anomalies_path.clone(), op: "open anomalies file", source: e }
        })?;
        Ok(Core {
            cfg: cfg.clone(),
            keyring,
            db,
            db_path,
            out,
            anomalies,
            stats: CollectorStats::default(),
            pending: BTreeMap::new(),
            seen: HashMap::new(),
        })
    }

    /// Handle one message; returns the acks to publish.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Vec<Ack> {
        let Some(device) = self.device_of(topic) else {
            self.reject("bad_topic", None, &format!("topic {topic:?} is not <prefix>/<device>/batch"));
            return Vec::new();
        };
        let batch = match picket_wire::open(payload, &self.keyring, self.cfg.max_message_bytes) {
            Ok(b) => b,
            Err(r) => {
                self.reject(r.as_str(), Some(&device), &r.to_string());
                return Vec::new();
            }
        };
        if batch.header.device_id != device {
            let msg = format!("header names {:?}, topic {:?}", batch.header.device_id, device);
            self.reject("topic_mismatch", Some(&device), &msg);
            return Vec::new();
        }
        match self.place(batch) {
            Ok(acks) => acks,
            Err(e) => {
                // Not committed: the broker re-delivers after a restart. Report loudly.
                self.anomaly("state_error", &device, serde_json::json!({ "error": e.to_string() }));
                Vec::new()
            }
        }
    }

    fn device_of(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(self.cfg.topic_prefix.as_str())?.strip_prefix('/')?;
        let device = rest.strip_suffix("/batch")?;
        (!device.is_empty() && !device.contains('/')).then(|| device.to_owned())
    }

    fn load(&self, device: &str) -> rusqlite::Result<Option<DeviceState>> {
        self.db
            .query_row(
                "SELECT stream_id, batch_seq, head, last_created_ns FROM devices WHERE device_id = ?1",
                [device],
                |r| {
                    Ok(DeviceState {
                        stream_id: arr(&r.get::<_, Vec<u8>>(0)?),
                        batch_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        head: arr(&r.get::<_, Vec<u8>>(2)?),
                        last_created_ns: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    fn place(&mut self, batch: VerifiedBatch) -> Result<Vec<Ack>, rusqlite::Error> {
        let device = batch.header.device_id.clone();
        let h = &batch.header;
        let mut state = self.load(&device)?;
        if state.as_ref().is_none_or(|s| s.stream_id != h.stream_id) {
            let known: bool = self
                .db
                .query_row(
                    "SELECT 1 FROM streams WHERE device_id = ?1 AND stream_id = ?2",
                    params![device, &h.stream_id[..]],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if known {
                self.anomaly(
                    "replay",
                    &device,
                    serde_json::json!({"batch_seq": h.batch_seq, "detail": "batch of a stream this device left"}),
                );
                return Ok(Vec::new());
            }
            if let Some(old) = &state {
                self.anomaly(
                    "stream_reset",
                    &device,
                    serde_json::json!({"old_batch_seq": old.batch_seq, "detail": "new journal on the device: sequence numbers restart"}),
                );
            }
            // The device's row moves to the new stream at once, not when its first batch is
            // accepted: the first to arrive may be a later one (a collector that subscribed after
            // the device's first publish), and the batches behind it must find the stream current.
            let now = now_ns();
            let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("INSERT INTO streams VALUES (?1, ?2, ?3)", params![device, &h.stream_id[..], now])?;
            tx.execute(
                "INSERT INTO devices VALUES (?1, ?2, 0, ?3, 0, 0, ?4)
                 ON CONFLICT (device_id) DO UPDATE SET stream_id = ?2, batch_seq = 0, head = ?3,
                     last_created_ns = 0, updated_ns = ?4",
                params![device, &h.stream_id[..], &[0u8; 32][..], now],
            )?;
            tx.commit()?;
            self.pending.remove(&device);
            state =
                Some(DeviceState { stream_id: h.stream_id, batch_seq: 0, head: [0; 32], last_created_ns: 0 });
        }
        let state = state.unwrap_or(DeviceState {
            stream_id: h.stream_id,
            batch_seq: 0,
            head: [0; 32],
            last_created_ns: 0,
        });
        let bs = h.batch_seq;
        if bs <= state.batch_seq {
            let stored: Option<Vec<u8>> = self
                .db
                .query_row(
                    "SELECT hash FROM batches WHERE device_id = ?1 AND stream_id = ?2 AND batch_seq = ?3",
                    params![device, &state.stream_id[..], i64::try_from(bs).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )
                .optional()?;
            match stored {
                Some(s) if s == batch.hash => {
                    self.stats.duplicate_batches += 1;
                    return Ok(vec![self.ack(&device, &state)]);
                }
                Some(_) => {
                    self.anomaly(
                        "fork",
                        &device,
                        serde_json::json!({"batch_seq": bs, "detail": "a different batch with a sequence number already stored"}),
                    );
                    return Ok(Vec::new());
                }
                None => {
                    // From a hole the chain moved past (reported as a gap then): signed by the
                    // device, so its events are written now, each seq still at most once.
                    self.anomaly(
                        "late",
                        &device,
                        serde_json::json!({"batch_seq": bs, "detail": "arrived after its gap was reported; written now"}),
                    );
                    let state = self.write(state, batch, true)?;
                    return Ok(vec![self.ack(&device, &state)]);
                }
            }
        }
        if bs > state.batch_seq + 1 {
            let q = self.pending.entry(device.clone()).or_default();
            if q.len() >= self.cfg.max_pending_per_device && !q.contains_key(&bs) {
                self.anomaly("pending_overflow", &device, serde_json::json!({"batch_seq": bs}));
                return Ok(Vec::new());
            }
            q.entry(bs).or_insert((Instant::now(), batch));
            return Ok(Vec::new());
        }
        // bs == state.batch_seq + 1
        if h.prev_hash != state.head {
            self.anomaly(
                "chain_break",
                &device,
                serde_json::json!({"batch_seq": bs, "detail": "prev_hash is not the hash of the batch before"}),
            );
            return Ok(Vec::new());
        }
        let state = self.accept(state, batch)?;
        let state = self.drain_pending(&device, state)?;
        Ok(vec![self.ack(&device, &state)])
    }

    /// Accept queued batches that now follow the chain.
    fn drain_pending(&mut self, device: &str, mut state: DeviceState) -> rusqlite::Result<DeviceState> {
        loop {
            let next = state.batch_seq + 1;
            let Some(q) = self.pending.get_mut(device) else { return Ok(state) };
            q.retain(|k, _| *k >= next);
            let Some((_, batch)) = q.remove(&next) else { return Ok(state) };
            if batch.header.prev_hash != state.head {
                self.anomaly("chain_break", device, serde_json::json!({"batch_seq": next}));
                return Ok(state);
            }
            self.anomaly("reordered", device, serde_json::json!({"batch_seq": next}));
            state = self.accept(state, batch)?;
        }
    }

    /// Report holes that stayed open past `gap_timeout` and continue the chain after them.
    pub fn expire_gaps(&mut self) -> Vec<Ack> {
        let mut acks = Vec::new();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, q)| q.values().next().is_some_and(|(at, _)| at.elapsed() >= self.cfg.gap_timeout))
            .map(|(d, _)| d.clone())
            .collect();
        for device in due {
            let Some((first, (_, batch))) = self.pending.get_mut(&device).and_then(|q| q.pop_first()) else {
                continue;
            };
            let result = (|| -> rusqlite::Result<DeviceState> {
                let state = self.load(&device)?.unwrap_or(DeviceState {
                    stream_id: batch.header.stream_id,
                    batch_seq: 0,
                    head: [0; 32],
                    last_created_ns: 0,
                });
                self.anomaly(
                    "gap",
                    &device,
                    serde_json::json!({"missing_batches": [state.batch_seq + 1, first - 1],
                                       "detail": "never arrived; chain continues after them"}),
                );
                let state = self.accept(state, batch)?;
                self.drain_pending(&device, state)
            })();
            match result {
                Ok(state) => acks.push(self.ack(&device, &state)),
                Err(e) => self.anomaly("state_error", &device, serde_json::json!({"error": e.to_string()})),
            }
        }
        acks
    }

    fn ack(&self, device: &str, s: &DeviceState) -> Ack {
        Ack { device_id: device.to_owned(), batch_seq: s.batch_seq, hash: s.head, created_ns: now_ns() }
    }

    /// Write the batch's new events, then commit the new head with the output length.
    fn accept(&mut self, state: DeviceState, batch: VerifiedBatch) -> rusqlite::Result<DeviceState> {
        self.write(state, batch, false)
    }

    /// `late`: a batch from inside a hole the chain already moved past (reported as a gap). Its
    /// events not yet written are written and the batch is stored (a repeat is then a
    /// duplicate), but the head stays where it is.
    fn write(
        &mut self,
        state: DeviceState,
        batch: VerifiedBatch,
        late: bool,
    ) -> rusqlite::Result<DeviceState> {
        let h = &batch.header;
        let device = h.device_id.clone();
        let now = now_ns();
        let tolerance = i64::try_from(self.cfg.skew_tolerance.as_nanos()).unwrap_or(i64::MAX);
        // A late batch is older than the head by nature: no clock checks.
        if !late && h.created_ns > now.saturating_add(tolerance) {
            self.anomaly(
                "clock_skew",
                &device,
                serde_json::json!({"batch_seq": h.batch_seq, "ahead_ns": h.created_ns - now}),
            );
        } else if !late
            && state.last_created_ns > 0
            && h.created_ns < state.last_created_ns.saturating_sub(tolerance)
        {
            self.anomaly(
                "clock_backwards",
                &device,
                serde_json::json!({"batch_seq": h.batch_seq, "behind_ns": state.last_created_ns - h.created_ns}),
            );
        }
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The device's seen ranges stay in memory between batches; only changed ranges are
        // written. (A priority lane leaves many small ranges during a drain: rewriting them all
        // per batch made a 1M-event drain 20x slower.) Taken out of the cache for the
        // transaction: if it fails, the next batch reloads from the database.
        let key = (device.clone(), state.stream_id);
        let mut seen = match self.seen.remove(&key) {
            Some(s) => s,
            None => Seen::load(&tx, &device, &state.stream_id)?,
        };
        let mut buf = Vec::with_capacity(batch.body.len());
        let mut written = 0u64;
        for (seq, line) in batch.lines() {
            if seen.insert(seq) {
                buf.extend_from_slice(line);
                buf.push(b'\n');
                written += 1;
            } else {
                self.stats.duplicate_events += 1;
            }
        }
        let out_len = self.out.write_durably(&buf).map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(Box::new(io::Error::new(
                e.kind(),
                format!("output: {e}"),
            )))
        })?;
        seen.store(&tx, &device, &state.stream_id)?;
        let bs = i64::try_from(h.batch_seq).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT OR REPLACE INTO batches VALUES (?1, ?2, ?3, ?4)",
            params![device, &state.stream_id[..], bs, &batch.hash[..]],
        )?;
        if late {
            tx.execute(
                "UPDATE devices SET events = events + ?2, updated_ns = ?3 WHERE device_id = ?1",
                params![device, i64::try_from(written).unwrap_or(0), now],
            )?;
        } else {
            tx.execute(
                "INSERT INTO devices VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (device_id) DO UPDATE SET stream_id = ?2, batch_seq = ?3, head = ?4,
                 last_created_ns = ?5, events = events + ?6, updated_ns = ?7",
                params![
                    device,
                    &state.stream_id[..],
                    bs,
                    &batch.hash[..],
                    h.created_ns,
                    i64::try_from(written).unwrap_or(0),
                    now
                ],
            )?;
        }
        if let Some(len) = out_len {
            tx.execute("UPDATE output SET len = ?1", [i64::try_from(len).unwrap_or(i64::MAX)])?;
        }
        tx.commit()?;
        if self.seen.len() >= SEEN_CACHE_DEVICES {
            self.seen.clear();
        }
        self.seen.insert(key, seen);
        self.stats.batches_accepted += 1;
        self.stats.events_written += written;
        if late {
            return Ok(state);
        }
        Ok(DeviceState {
            stream_id: state.stream_id,
            batch_seq: h.batch_seq,
            head: batch.hash,
            last_created_ns: h.created_ns,
        })
    }

    fn reject(&mut self, reason: &str, device: Option<&str>, detail: &str) {
        *self.stats.rejected.entry(reason.to_owned()).or_default() += 1;
        self.report("rejected", reason, device.unwrap_or(""), serde_json::json!({ "detail": detail }));
    }

    fn anomaly(&mut self, kind: &str, device: &str, detail: serde_json::Value) {
        *self.stats.anomalies.entry(kind.to_owned()).or_default() += 1;
        self.report("anomaly", kind, device, detail);
    }

    fn report(&mut self, class: &str, kind: &str, device: &str, detail: serde_json::Value) {
        let line = serde_json::json!({
            "at_ns": now_ns(), "class": class, "kind": kind, "device": device, "detail": detail,
        })
        .to_string();
        eprintln!("picket collect: {line}");
        let _ = writeln!(self.anomalies, "{line}");
    }

    /// `collector-status.json`: the counters and every device's position.
    pub fn write_status(&self) {
        let mut devices = serde_json::Map::new();
        if let Ok(mut stmt) = self.db.prepare("SELECT device_id, batch_seq, events, updated_ns FROM devices")
        {
            let _ = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map(|rows| {
                    for (d, bs, ev, at) in rows.flatten() {
                        devices.insert(
                            d,
                            serde_json::json!({"batch_seq": bs, "events": ev, "last_batch_ns": at}),
                        );
                    }
                });
        }
        let doc = serde_json::json!({ "stats": self.stats, "devices": devices });
        let path = self.cfg.state_dir.join("collector-status.json");
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, doc.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

impl OutputSink {
    /// Append and make durable; returns the new length for files.
    fn write_durably(&mut self, buf: &[u8]) -> io::Result<Option<u64>> {
        match self {
            OutputSink::Stdout(s) => {
                let mut lock = s.lock();
                lock.write_all(buf)?;
                lock.flush()?;
                Ok(None)
            }
            OutputSink::File { file, path } => {
                if !buf.is_empty() {
                    file.write_all(buf)?;
                    file.sync_data()?;
                }
                let _ = path;
                Ok(Some(file.metadata()?.len()))
            }
        }
    }
}

/// The event seqs already written for one device stream, as merged ranges, with the ranges
/// changed since the last store.
struct Seen {
    ranges: BTreeMap<u64, u64>,
    /// lo → new hi, or `None` for a range that went (merged into another).
    changed: BTreeMap<u64, Option<u64>>,
}

impl Seen {
    fn load(tx: &Transaction<'_>, device: &str, stream: &[u8; 16]) -> rusqlite::Result<Seen> {
        let mut stmt =
            tx.prepare_cached("SELECT lo, hi FROM seen WHERE device_id = ?1 AND stream_id = ?2")?;
        let ranges = stmt
            .query_map(params![device, &stream[..]], |r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Seen { ranges, changed: BTreeMap::new() })
    }

    fn set(&mut self, lo: u64, hi: u64) {
        self.ranges.insert(lo, hi);
        self.changed.insert(lo, Some(hi));
    }

    fn remove(&mut self, lo: u64) -> Option<u64> {
        let hi = self.ranges.remove(&lo)?;
        self.changed.insert(lo, None);
        Some(hi)
    }

    /// False if `seq` was already there.
    fn insert(&mut self, seq: u64) -> bool {
        if let Some((&lo, &hi)) = self.ranges.range(..=seq).next_back() {
            if seq <= hi {
                return false;
            }
            if seq == hi + 1 {
                let new_hi = self.remove(seq + 1).unwrap_or(seq);
                self.set(lo, new_hi);
                return true;
            }
        }
        let hi = self.remove(seq + 1).unwrap_or(seq);
        self.set(seq, hi);
        true
    }

    /// Write the changed ranges.
    fn store(&mut self, tx: &Transaction<'_>, device: &str, stream: &[u8; 16]) -> rusqlite::Result<()> {
        let mut del =
            tx.prepare_cached("DELETE FROM seen WHERE device_id = ?1 AND stream_id = ?2 AND lo = ?3")?;
        let mut put = tx.prepare_cached("INSERT OR REPLACE INTO seen VALUES (?1, ?2, ?3, ?4)")?;
        for (lo, hi) in std::mem::take(&mut self.changed) {
            let lo = i64::try_from(lo).unwrap_or(i64::MAX);
            match hi {
                None => del.execute(params![device, &stream[..], lo])?,
                Some(hi) => {
                    put.execute(params![device, &stream[..], lo, i64::try_from(hi).unwrap_or(i64::MAX)])?
                }
            };
        }
        Ok(())
    }
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    if v.len() == N {
        a.copy_from_slice(v);
    }
    a
}

/// Shared state for tests and `picket collect` to print the collector's public key.
pub fn public_key_line(state_dir: &Path) -> Result<String, CollectError> {
    Ok(collector_identity(state_dir)?.public_key_line())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_merges_ranges_and_refuses_repeats() {
        let mut s = Seen { ranges: BTreeMap::new(), changed: BTreeMap::new() };
        for q in [5, 1, 2, 3, 7, 6] {
            assert!(s.insert(q));
        }
        assert!(!s.insert(2));
        assert!(!s.insert(7));
        assert_eq!(s.ranges.clone().into_iter().collect::<Vec<_>>(), vec![(1, 3), (5, 7)]);
        // What is stored is exactly the ranges, whatever merged on the way.
        let mut db = Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE seen (device_id TEXT, stream_id BLOB, lo INTEGER, hi INTEGER, PRIMARY KEY (device_id, stream_id, lo))",
        )
        .unwrap();
        let tx = db.transaction().unwrap();
        s.store(&tx, "d", &[0; 16]).unwrap();
        assert!(s.insert(4));
        s.store(&tx, "d", &[0; 16]).unwrap();
        let back = Seen::load(&tx, "d", &[0; 16]).unwrap();
        assert_eq!(back.ranges.into_iter().collect::<Vec<_>>(), vec![(1, 7)]);
    }
}
