//! The device side: journal outbox → signed batches → MQTT (QoS 1), resumable.
//!
//! One task owns the connection. It keeps a *window* of sealed batches in flight (the journal's
//! outbox), seals the next batch when there is room, and publishes with `try_publish` only (a
//! full request channel waits for the next turn: the publishing task never awaits rumqttc, and
//! the polling task never publishes, rumqttc pitfalls 5 and 6).
//!
//! **PUBACK correlation** (rumqttc does not tell which publish a PUBACK answers, pitfall 3):
//! rumqttc assigns packet ids as it writes publishes, in request order, and reports each write as
//! `Outgoing::Publish(pkid)`. We keep the order of our own requests in a FIFO; each
//! `Outgoing::Publish` pops its head, which gives pkid → batch; `Incoming::PubAck(pkid)` then
//! names the batch. Sessions are clean (`clean_session = true`), so rumqttc never replays
//! anything on its own after a reconnect (it drops its queue when the broker has no session,
//! pitfall 2): every connect starts a fresh FIFO and re-sends the whole outbox from the journal.
//!
//! **Delivered** means, by [`AckMode`]: the broker's PUBACK for the packet that carried the batch
//! (`Broker`), or the collector's signed "stored through batch N with hash H" (`Collector`), which
//! is checked against the key pinned on the device and the hash of our own batch N. Either way,
//! batches are released from the outbox in `batch_seq` order only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use picket_journal::{Journal, JournalError, JournalOptions, OutboxBatch, SealLimits, Sealed};
use picket_wire::{BatchInput, FLAG_PRIORITY, Identity, PublicKey};
use rumqttc::{
    AsyncClient, ClientError, ConnectReturnCode, Event, EventLoop, Incoming, LastWill, Outgoing, QoS, Request,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::{Backoff, Endpoint, now_ns, topic};

/// Least time between two partial batches (see `session`).
const SEAL_LINGER: Duration = Duration::from_millis(250);

/// When a batch counts as delivered (and leaves the outbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// On the broker's PUBACK.
    Broker,
    /// On the collector's signed acknowledgement, verified with this key.
    Collector(PublicKey),
}

/// Everything the sender needs.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub endpoint: Endpoint,
    pub topic_prefix: String,
    pub journal_path: PathBuf,
    pub journal_options: JournalOptions,
    pub identity: Arc<Identity>,
    pub ack: AckMode,
    /// Size of one batch.
    pub limits: SealLimits,
    /// Batches published and not yet delivered, at most. Keeps the broker's and rumqttc's
    /// inflight queues short and bounds what a reconnect re-sends.
    pub window: usize,
    /// Upper bound on bytes published per second (0: no limit). For slow or metered links.
    pub max_bytes_per_sec: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub keep_alive: Duration,
    /// Collector mode: re-publish batches not acknowledged within this time (the collector
    /// deduplicates).
    pub ack_timeout: Duration,
}

impl SenderConfig {
    /// Defaults for everything but the endpoint, paths and identity.
    pub fn new(
        endpoint: Endpoint,
        topic_prefix: String,
        journal_path: PathBuf,
        journal_options: JournalOptions,
        identity: Arc<Identity>,
    ) -> SenderConfig {
        SenderConfig {
            endpoint,
            topic_prefix,
            journal_path,
            journal_options,
            identity,
            ack: AckMode::Broker,
            limits: SealLimits { max_events: 1024, max_bytes: 64 * 1024 },
            window: 8,
            max_bytes_per_sec: 0,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            keep_alive: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// What `picket status` shows about the uplink.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct UplinkStatus {
    pub connected: bool,
    /// The last connection or protocol error, until the next successful connect.
    pub last_error: Option<String>,
    pub connects: u64,
    /// First publications of sealed batches.
    pub batches_published: u64,
    /// Collector mode: batches published again because no ack came within `ack_timeout`.
    pub batches_republished: u64,
    /// Bytes of batches handed to MQTT (resends included).
    pub bytes_published: u64,
    pub batches_delivered: u64,
    pub events_delivered: u64,
    /// Every batch through this one is delivered.
    pub delivered_batch_seq: u64,
    /// Unix ns of the last delivery.
    pub last_delivery_ns: Option<i64>,
    /// Acks that failed verification (wrong key, other device, hash of a batch we never sent).
    pub acks_rejected: u64,
}

pub type SharedStatus = Arc<Mutex<UplinkStatus>>;

/// Why a connection ended.
enum End {
    Stop,
    Lost(String),
}

/// Run until `stop` resolves. `wake` carries the journal's last seq: a change means there may
/// be something new to seal. Never returns an error: problems are retried with backoff and
/// shown in `status`; the journal keeps everything meanwhile.
pub async fn run(
    cfg: SenderConfig,
    status: SharedStatus,
    mut wake: watch::Receiver<u64>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = pin!(stop);
    let journal = match open_journal(&cfg).await {
        Ok(j) => j,
        Err(e) => {
            set_error(&status, format!("cannot open the journal for the uplink: {e}"));
            stop.await;
            return;
        }
    };
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        let end = match connection(&cfg, &journal, &status, &mut wake, &mut backoff, stop.as_mut()).await {
            Ok(end) => end,
            Err(e) => End::Lost(e),
        };
        if let Ok(mut s) = status.lock() {
            s.connected = false;
        }
        match end {
            End::Stop => return,
            End::Lost(e) => set_error(&status, e),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.as_mut() => return,
        }
    }
}

fn set_error(status: &SharedStatus, e: String) {
    if let Ok(mut s) = status.lock() {
        if s.last_error.as_deref() != Some(e.as_str()) {
            eprintln!("picket: uplink: {e}");
        }
        s.last_error = Some(e);
    }
}

type SharedJournal = Arc<Mutex<Journal>>;

async fn open_journal(cfg: &SenderConfig) -> Result<SharedJournal, JournalError> {
    let (path, opts) = (cfg.journal_path.clone(), cfg.journal_options.clone());
    let j = tokio::task::spawn_blocking(move || Journal::open(&path, opts)).await.map_err(|e| {
        JournalError::Io {
            path: cfg.journal_path.clone(),
            op: "open",
            source: std::io::Error::other(e.to_string()),
        }
    })??;
    Ok(Arc::new(Mutex::new(j)))
}

/// Run a blocking journal call off the async thread.
async fn with_journal<T: Send + 'static>(
    journal: &SharedJournal,
    f: impl FnOnce(&mut Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, String> {
    let j = Arc::clone(journal);
    tokio::task::spawn_blocking(move || {
        let mut guard = j.lock().map_err(|_| "journal lock poisoned".to_owned())?;
        f(&mut guard).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("journal task: {e}"))?
}

/// Per-connection bookkeeping: a plain state machine, fed by the connection task.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    /// Our publish requests in the order rumqttc will write them: `Some(batch_seq)` or `None`
    /// for a non-batch publish (status).
    fifo: VecDeque<Option<u64>>,
    /// Packet id → batch, from `Outgoing::Publish`.
    pkids: HashMap<u16, Option<u64>>,
    /// Published on this connection and not delivered: batch_seq → (hash, when published).
    sent: BTreeMap<u64, ([u8; 32], Instant)>,
    /// PUBACKed on this connection.
    puback: BTreeSet<u64>,
}

impl Inflight {
    fn requested(&mut self, batch: Option<(u64, [u8; 32])>) {
        self.fifo.push_back(batch.map(|b| b.0));
        if let Some((seq, hash)) = batch {
            self.sent.insert(seq, (hash, Instant::now()));
        }
    }

    fn written(&mut self, pkid: u16) {
        let who = self.fifo.pop_front().flatten();
        self.pkids.insert(pkid, who);
    }

    /// A PUBACK: the batch it acknowledges, if it carried one.
    fn pubacked(&mut self, pkid: u16) -> Option<u64> {
        let seq = self.pkids.remove(&pkid).flatten()?;
        self.puback.insert(seq);
        Some(seq)
    }

    /// The longest run of PUBACKed batches from the oldest one sent: what broker mode delivers.
    fn puback_prefix(&self) -> Option<u64> {
        let mut through = None;
        for seq in self.sent.keys() {
            if !self.puback.contains(seq) {
                break;
            }
            through = Some(*seq);
        }
        through
    }

    fn delivered(&mut self, through: u64) {
        self.sent.retain(|s, _| *s > through);
        self.puback.retain(|s| *s > through);
    }

    fn hash_of(&self, seq: u64) -> Option<[u8; 32]> {
        self.sent.get(&seq).map(|(h, _)| *h)
    }
}

async fn connection(
    cfg: &SenderConfig,
    journal: &SharedJournal,
    status: &SharedStatus,
    wake: &mut watch::Receiver<u64>,
    backoff: &mut Backoff,
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<End, String> {
    let device = cfg.identity.id().to_owned();
    let batch_topic = topic(&cfg.topic_prefix, &device, "batch");
    let status_topic = topic(&cfg.topic_prefix, &device, "status");
    let ack_topic = topic(&cfg.topic_prefix, &device, "ack");

    let mut opts = cfg.endpoint.mqtt_options(&device).map_err(|e| e.to_string())?;
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(true)
        .set_inflight(u16::try_from(cfg.window.clamp(1, 64) * 2 + 4).unwrap_or(20))
        .set_max_packet_size(cfg.limits.max_bytes + 64 * 1024, max_packet(cfg.limits.max_bytes))
        .set_last_will(LastWill::new(&status_topic, status_payload("offline"), QoS::AtLeastOnce, true));
    let (client, eventloop) = AsyncClient::new(opts, cfg.window * 2 + 16);
    let (events_tx, mut events) = mpsc::channel(256);
    // The poll task only polls and forwards (rumqttc pitfall 5: never publish from it).
    let poller = tokio::spawn(poll(eventloop, events_tx));
    let result = session(
        cfg,
        journal,
        status,
        wake,
        backoff,
        &client,
        &mut events,
        [&batch_topic, &status_topic, &ack_topic],
        stop.as_mut(),
    )
    .await;
    if matches!(result, Ok(End::Stop)) {
        // Say goodbye properly: retained "offline" and a DISCONNECT, so the last will is not
        // needed; give it a moment, never more.
        let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status_payload("offline"));
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(ev) = events.recv().await {
                if ev.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    poller.abort();
    result
}

async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, rumqttc::ConnectionError>>) {
    loop {
        let ev = eventloop.poll().await;
        let failed = ev.is_err();
        if tx.send(ev).await.is_err() || failed {
            return;
        }
    }
}

fn status_payload(state: &str) -> Vec<u8> {
    format!(r#"{{"state":"{state}","at_ns":{}}}"#, now_ns()).into_bytes()
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &SenderConfig,
    journal: &SharedJournal,
    status: &SharedStatus,
    wake: &mut watch::Receiver<u64>,
    backoff: &mut Backoff,
    client: &AsyncClient,
    events: &mut mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    [batch_topic, status_topic, ack_topic]: [&String; 3],
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<End, String> {
    // 1. CONNACK (rumqttc's own timeout bounds the TCP/TLS handshake).
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(format!("broker {} refused the connection: {:?}", cfg.endpoint.url(), ack.code));
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(connect_error(cfg, &e)),
                None => return Err("MQTT event loop ended".into()),
            },
            () = stop.as_mut() => return Ok(End::Stop),
        }
    }
    backoff.reset();
    if let Ok(mut s) = status.lock() {
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    }

    let mut inflight = Inflight::default();
    let publish_other = |inflight: &mut Inflight, topic: &str, retain: bool, payload: Vec<u8>| {
        if client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok() {
            inflight.requested(None);
        }
    };
    publish_other(&mut inflight, status_topic, true, status_payload("online"));
    if matches!(cfg.ack, AckMode::Collector(_)) {
        client.try_subscribe(ack_topic, QoS::AtLeastOnce).map_err(|e| format!("subscribe: {e}"))?;
    }

    // 2. Re-send the whole outbox: whatever rumqttc had queued died with the last connection.
    let mut queue: VecDeque<OutboxBatch> = with_journal(journal, |j| j.outbox()).await?.into();
    let mut nothing_new_after: Option<u64> = None;
    // Sealing commits with an fsync. Under a steady trickle of events every journal commit would
    // seal a tiny batch: at most one partial batch per SEAL_LINGER instead (flash wear, research
    // §3.7 G8); a full batch means a backlog, which is sealed back to back. Only a partial
    // *routine* batch makes the next seal wait: a priority batch (alerts, actions) is sealed first
    // when both lanes have events, so under a steady stream of alerts a linger after each of them
    // left the routine lane one slot in two (routine events 1.5 s late; load.py --brute).
    // (when, full or priority: no linger after it)
    let mut last_seal: Option<(Instant, bool)> = None;
    let mut bucket = TokenBucket::new(cfg.max_bytes_per_sec);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // 3. Fill the window: queued batches first, then newly sealed ones.
        loop {
            if inflight.sent.len() >= cfg.window {
                break;
            }
            if queue.is_empty() {
                let last = *wake.borrow_and_update();
                if nothing_new_after == Some(last) {
                    break;
                }
                if last_seal.is_some_and(|(at, no_linger)| !no_linger && at.elapsed() < SEAL_LINGER) {
                    break; // the 200 ms tick comes back for it
                }
                match seal_next(cfg, journal).await? {
                    Some(b) => {
                        let full = usize::try_from(b.count).unwrap_or(usize::MAX) >= cfg.limits.max_events
                            || b.wire.len() * 10 >= cfg.limits.max_bytes * 9;
                        last_seal = Some((Instant::now(), full || b.priority));
                        queue.push_back(b);
                    }
                    None => {
                        nothing_new_after = Some(last);
                        break;
                    }
                }
            }
            if !queue.front().is_some_and(|b| bucket.take(b.wire.len())) {
                break;
            }
            let Some(mut b) = queue.pop_front() else { break };
            // The bytes move into rumqttc, which holds them until the PUBACK: no second copy of
            // the batch (the journal's outbox has it for a re-publish).
            let wire = std::mem::take(&mut b.wire);
            let len = u64::try_from(wire.len()).unwrap_or(u64::MAX);
            match client.try_publish(batch_topic.as_str(), QoS::AtLeastOnce, false, wire) {
                Ok(()) => {
                    inflight.requested(Some((b.batch_seq, b.hash)));
                    if let Ok(mut s) = status.lock() {
                        s.batches_published += 1;
                        s.bytes_published += len;
                    }
                }
                Err(e) => {
                    // Request channel full: rumqttc is busy writing. The batch goes back to the
                    // front, with its bytes, for the next turn.
                    let (ClientError::Request(Request::Publish(p))
                    | ClientError::TryRequest(Request::Publish(p))) = e
                    else {
                        return Err("uplink: rumqttc returned another request than the batch".into());
                    };
                    b.wire = Vec::from(p.payload);
                    queue.push_front(b);
                    break;
                }
            }
        }

        tokio::select! {
            ev = events.recv() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => return Err(connect_error(cfg, &e)),
                    None => return Err("MQTT event loop ended".into()),
                };
                match ev {
                    Event::Outgoing(Outgoing::Publish(pkid)) => inflight.written(pkid),
                    Event::Incoming(Incoming::PubAck(ack)) => {
                        if inflight.pubacked(ack.pkid).is_some()
                            && cfg.ack == AckMode::Broker
                            && let Some(through) = inflight.puback_prefix()
                        {
                            deliver(journal, status, &mut inflight, through).await?;
                        }
                    }
                    Event::Incoming(Incoming::Publish(p)) if p.topic == *ack_topic => {
                        if let AckMode::Collector(key) = &cfg.ack {
                            match check_ack(&p.payload, key, cfg.identity.id(), &inflight) {
                                Some(through) => deliver(journal, status, &mut inflight, through).await?,
                                None => {
                                    if let Ok(mut s) = status.lock() {
                                        s.acks_rejected += 1;
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ = wake.changed() => {}
            _ = tick.tick() => {
                // Collector mode: re-publish what the collector has not acknowledged in time.
                if matches!(cfg.ack, AckMode::Collector(_)) {
                    let stale: Vec<u64> = inflight
                        .sent
                        .iter()
                        .filter(|(_, (_, at))| at.elapsed() >= cfg.ack_timeout)
                        .map(|(s, _)| *s)
                        .collect();
                    if !stale.is_empty() {
                        let outbox = with_journal(journal, |j| j.outbox()).await?;
                        for b in outbox.into_iter().filter(|b| stale.contains(&b.batch_seq)) {
                            let len = u64::try_from(b.wire.len()).unwrap_or(u64::MAX);
                            if client.try_publish(batch_topic.as_str(), QoS::AtLeastOnce, false, b.wire).is_ok() {
                                inflight.requested(Some((b.batch_seq, b.hash)));
                                if let Ok(mut s) = status.lock() {
                                    s.batches_republished += 1;
                                    s.bytes_published += len;
                                }
                            }
                        }
                    }
                }
            }
            () = stop.as_mut() => return Ok(End::Stop),
        }
    }
}

/// The largest event JSON a batch may have to carry alone: a batch holds at least one event,
/// however large (a `process.start` with a 64 KiB command line and the same argv is ~130 KiB, and
/// JSON escaping of control bytes can make it several times that). The collector takes messages
/// up to 4 MiB by default (`collect.max_message_bytes`).
pub const LARGEST_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The largest MQTT packet the sender lets rumqttc write: a full batch or one event alone, plus
/// the envelope and MQTT framing. Sized to the batch alone, an event larger than the batch could
/// never be sent, and the uplink would retry it forever.
fn max_packet(batch_max_bytes: usize) -> usize {
    batch_max_bytes.max(LARGEST_EVENT_BYTES) + 64 * 1024
}

fn connect_error(cfg: &SenderConfig, e: &rumqttc::ConnectionError) -> String {
    format!("broker {}: {e}", cfg.endpoint.url())
}

/// The batch an ack releases through, if the ack is genuine and about a batch we sent with that
/// hash (or an older one).
fn check_ack(payload: &[u8], key: &PublicKey, device: &str, inflight: &Inflight) -> Option<u64> {
    let ack = picket_wire::open_ack(payload, key).ok()?;
    if ack.device_id != device {
        return None;
    }
    match inflight.hash_of(ack.batch_seq) {
        Some(h) if h == ack.hash => Some(ack.batch_seq),
        // Not (or no longer) in flight on this connection: an old ack, nothing to release.
        _ => None,
    }
}

async fn deliver(
    journal: &SharedJournal,
    status: &SharedStatus,
    inflight: &mut Inflight,
    through: u64,
) -> Result<(), String> {
    let events = with_journal(journal, move |j| j.mark_delivered(through)).await?;
    let batches = inflight.sent.range(..=through).count() as u64;
    inflight.delivered(through);
    if let Ok(mut s) = status.lock() {
        s.batches_delivered += batches;
        s.delivered_batch_seq = s.delivered_batch_seq.max(through);
        s.events_delivered += events;
        s.last_delivery_ns = Some(now_ns());
    }
    Ok(())
}

async fn seal_next(cfg: &SenderConfig, journal: &SharedJournal) -> Result<Option<OutboxBatch>, String> {
    let identity = Arc::clone(&cfg.identity);
    let limits = cfg.limits;
    let boot_id = picket_wire::boot_id();
    with_journal(journal, move |j| {
        j.seal_next(limits, |d| {
            let input = BatchInput {
                stream_id: d.stream_id,
                boot_id,
                batch_seq: d.batch_seq,
                prev_hash: d.prev_hash,
                created_ns: now_ns(),
                flags: if d.priority { FLAG_PRIORITY } else { 0 },
            };
            let sealed = picket_wire::seal(&identity, input, d.lines).map_err(|e| e.to_string())?;
            Ok(Sealed { hash: sealed.hash, wire: sealed.bytes })
        })
    })
    .await
}

/// Bytes-per-second limiter; refills continuously, allows one batch of debt so a batch larger
/// than a second's budget still goes.
#[derive(Debug)]
struct TokenBucket {
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        TokenBucket { rate, tokens: 0.0, at: Instant::now() }
    }

    fn take(&mut self, n: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = self.rate as f64;
        self.tokens = (self.tokens + self.at.elapsed().as_secs_f64() * rate).min(rate);
        self.at = Instant::now();
        if self.tokens < 0.0 {
            return false;
        }
        self.tokens -= n as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_are_matched_to_batches_through_the_order_of_writes() {
        let mut f = Inflight::default();
        f.requested(None); // status
        f.requested(Some((1, [1; 32])));
        f.requested(Some((2, [2; 32])));
        f.written(7);
        f.written(8);
        f.written(9);
        assert_eq!(f.pubacked(9), Some(2));
        assert_eq!(f.puback_prefix(), None, "batch 1 not acked yet: nothing delivered");
        assert_eq!(f.pubacked(7), None, "the status publish");
        assert_eq!(f.pubacked(8), Some(1));
        assert_eq!(f.puback_prefix(), Some(2));
        f.delivered(2);
        assert!(f.sent.is_empty());
        assert_eq!(f.pubacked(8), None, "a PUBACK answered once");
    }

    #[test]
    fn an_ack_for_a_hash_we_did_not_send_releases_nothing() {
        let collector = Identity::generate("collector").unwrap();
        let mut f = Inflight::default();
        f.requested(Some((1, [1; 32])));
        let ack = |seq, hash, dev: &str| {
            picket_wire::seal_ack(
                &collector,
                &picket_wire::Ack { device_id: dev.into(), batch_seq: seq, hash, created_ns: 0 },
            )
        };
        let key = collector.public_key();
        assert_eq!(check_ack(&ack(1, [1; 32], "d"), &key, "d", &f), Some(1));
        assert_eq!(check_ack(&ack(1, [9; 32], "d"), &key, "d", &f), None);
        assert_eq!(check_ack(&ack(1, [1; 32], "other"), &key, "d", &f), None);
        let forger = Identity::generate("collector").unwrap();
        assert_eq!(check_ack(&ack(1, [1; 32], "d"), &forger.public_key(), "d", &f), None);
    }

    #[test]
    fn the_token_bucket_paces_bytes() {
        let mut b = TokenBucket::new(1000);
        assert!(b.take(5000), "one batch of debt is allowed");
        assert!(!b.take(1), "then it waits");
        assert!(TokenBucket::new(0).take(usize::MAX));
    }
}
