//! Signed store-and-forward against a real mosquitto with TLS and client certificates, started by
//! the test on a free loopback port, and the real `picket run` and `picket collect` binaries.
//!
//! Needs `mosquitto` and `openssl` (scripts/test-deps.sh installs them). Without them each test
//! prints a loud SKIPPED line and returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use picket_event::{Event, EventKind, Process, Timestamp};
use picket_journal::{Journal, JournalOptions};
use picket_uplink::testkit::{Broker, make_pki, run};

const PICKET: &str = env!("CARGO_BIN_EXE_picket");
const PREFIX: &str = "picket/v1/test";
const DEVICE: &str = "dev-under-test";

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn skip_without_tools() -> bool {
    for t in ["mosquitto", "openssl", "mosquitto_pub"] {
        if !have(t) {
            eprintln!("\n*** SKIPPED (needs {t}; run scripts/test-deps.sh) ***\n");
            return true;
        }
    }
    false
}

/// A child process killed on drop.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(args: &[&str], log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(PICKET)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn picket");
        Proc(Some(child))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn term(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One scenario's files: PKI, broker, a device data dir with a pre-filled journal, a collector.
struct Lab {
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path());
        let broker = Broker::new(dir.path());
        for d in ["data", "keys", "collect"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Lab { dir, broker }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn d(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Agent config: uplink on, nothing captured (events come from the pre-filled journal).
    fn agent_config(&self, cert: &str, extra: &str) -> PathBuf {
        let d = self.d();
        let file_off =
            if extra.contains("[sources.file]") { "" } else { "[sources.file]\nenabled = false\n" };
        let text = format!(
            "[agent]\ndata_dir = \"{d}/data\"\ndevice_id = \"{DEVICE}\"\nhealth_interval_secs = 3600\n\
             status_interval_secs = 1\n[policies]\npaths = []\n[sources.process]\nenabled = false\n\
             {file_off}[sources.auth]\nenabled = false\n\
             [uplink]\nenabled = true\nbroker = \"{}\"\nca_file = \"{d}/ca.crt\"\ncert_file = \"{d}/{cert}.crt\"\n\
             key_file = \"{d}/{cert}.key\"\ntopic_prefix = \"{PREFIX}\"\nbackoff_max_secs = 1\n{extra}",
            self.broker.url()
        );
        let path = self.p("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Agent config with `ack = "collector"`: the collector's key (from the collector config
    /// already written) pinned on the device.
    fn agent_config_with_collector_acks(&self, extra: &str) -> PathBuf {
        let out = Command::new(PICKET)
            .args(["collect", "--config", self.p("collect.toml").to_str().unwrap(), "--export-key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(self.p("collector.pub"), &out.stdout).unwrap();
        let d = self.d();
        self.agent_config(
            "agent",
            &format!("ack = \"collector\"\ncollector_key_file = \"{d}/collector.pub\"\n{extra}"),
        )
    }

    fn collect_config(&self) -> PathBuf {
        let d = self.d();
        let text = format!(
            "[collect]\nbroker = \"{}\"\nca_file = \"{d}/ca.crt\"\ncert_file = \"{d}/collector.crt\"\n\
             key_file = \"{d}/collector.key\"\ntopic_prefix = \"{PREFIX}\"\ndevice_keys_dir = \"{d}/keys\"\n\
             state_dir = \"{d}/collect\"\noutput = \"{d}/collect/events.ndjson\"\nclient_id = \"test-collector\"\n\
             gap_timeout_secs = 2\n",
            self.broker.url()
        );
        let path = self.p("collect.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Create the device key and enrol it with the collector.
    fn enrol(&self) {
        let out = Command::new(PICKET)
            .args(["identity", "--config", self.p("agent.toml").to_str().unwrap(), "--export"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(self.p("keys/device.pub"), &out.stdout).unwrap();
    }

    /// Append `n` events (every 50th an alert) straight into the device's journal.
    fn journal_events(&self, n: u64) {
        let mut j = Journal::open(&self.p("data/journal.db"), JournalOptions::new(DEVICE)).unwrap();
        let mut batch = Vec::new();
        for i in 0..n {
            let kind = if i % 50 == 49 { EventKind::Alert } else { EventKind::FileModify };
            let mut e = Event::new(kind, Timestamp::now());
            e.host.id = DEVICE.into();
            e.message = Some(format!(
                "event {i} of the test backlog, padded to a realistic size: {}",
                "x".repeat(200)
            ));
            batch.push(e);
            if batch.len() == 1000 {
                j.append(&mut batch).unwrap();
                batch.clear();
            }
        }
        j.append(&mut batch).unwrap();
    }

    /// Append one `process.start` whose command line and argv are `len` bytes each, as the
    /// process source can make them (/proc/PID/cmdline is read up to 64 KiB).
    fn journal_big_event(&self, len: usize) {
        let mut j = Journal::open(&self.p("data/journal.db"), JournalOptions::new(DEVICE)).unwrap();
        let mut e = Event::new(EventKind::ProcessStart, Timestamp::now());
        e.host.id = DEVICE.into();
        let arg = "o".repeat(len / 2);
        e.process = Some(Process {
            command_line: Some(format!("/usr/bin/cc {arg} {arg}")),
            args: Some(vec!["/usr/bin/cc".into(), arg.clone(), arg]),
            ..Process::default()
        });
        j.append(&mut [e]).unwrap();
    }

    fn start_agent(&self) -> Proc {
        Proc::spawn(&["run", "--config", self.p("agent.toml").to_str().unwrap()], &self.p("agent.log"))
    }

    fn start_collector(&self) -> Proc {
        Proc::spawn(
            &["collect", "--config", self.p("collect.toml").to_str().unwrap()],
            &self.p("collect.log"),
        )
    }

    /// Start the collector and wait until its subscription is in place: until a probe published
    /// to a batch topic comes back as a rejection. A collector's persistent session is what makes
    /// the broker keep batches for it; one published before it first subscribed reaches no one
    /// (in `ack = "broker"` mode the device has then let it go).
    fn start_collector_subscribed(&self) -> Proc {
        let collector = self.start_collector();
        let t = Instant::now();
        while !self.anomalies().contains("\"probe\"") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the collector never subscribed:\n{}",
                tail(&self.p("collect.log"))
            );
            inject(self, &format!("{PREFIX}/probe/batch"), b"probe");
            std::thread::sleep(Duration::from_millis(200));
        }
        collector
    }

    /// The seqs in the collector's output, in output order (complete lines: the collector may
    /// be writing the last one).
    fn collected(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(self.p("collect/events.ndjson")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
            .collect()
    }

    fn journaled(&self) -> Vec<u64> {
        let out = Command::new(PICKET)
            .args(["journal", "export", "--data-dir", self.p("data").to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
            .collect()
    }

    fn wait_collected(&self, want: usize, within: Duration) -> Vec<u64> {
        let t = Instant::now();
        loop {
            let got = self.collected();
            if got.len() >= want {
                return got;
            }
            assert!(
                t.elapsed() < within,
                "collector has {} of {want} events after {within:?}\nagent log:\n{}\ncollector log:\n{}",
                got.len(),
                tail(&self.p("agent.log")),
                tail(&self.p("collect.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the collector holds as many events as the journal (which the agent may still
    /// be adding to: its own start-up health event), then check them.
    fn wait_in_sync(&self, within: Duration) -> Vec<u64> {
        let t = Instant::now();
        loop {
            let journaled = self.journaled();
            let got = self.wait_collected(
                journaled.len(),
                within.saturating_sub(t.elapsed()).max(Duration::from_secs(1)),
            );
            if got.len() == journaled.len() || t.elapsed() > within {
                assert_exactly_once_in_lane_order(&got, &journaled);
                return got;
            }
        }
    }

    fn anomalies(&self) -> String {
        std::fs::read_to_string(self.p("collect/anomalies.ndjson")).unwrap_or_default()
    }
}

fn tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Exactly the journaled events, each once; within each lane (alerts, the rest) in seq order.
fn assert_exactly_once_in_lane_order(collected: &[u64], journaled: &[u64]) {
    let mut sorted = collected.to_vec();
    sorted.sort_unstable();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(before, sorted.len(), "{} duplicates in the collector output", before - sorted.len());
    if sorted != journaled {
        let want: std::collections::BTreeSet<u64> = journaled.iter().copied().collect();
        let got: std::collections::BTreeSet<u64> = sorted.iter().copied().collect();
        let missing: Vec<u64> = want.difference(&got).copied().take(20).collect();
        let extra: Vec<u64> = got.difference(&want).copied().take(20).collect();
        panic!(
            "collector output differs from the journal ({} vs {} events): missing {missing:?}..., extra {extra:?}...",
            got.len(),
            want.len()
        );
    }
    let alerts: Vec<u64> = collected.iter().copied().filter(|s| s % 50 == 0).collect();
    let routine: Vec<u64> = collected.iter().copied().filter(|s| s % 50 != 0).collect();
    assert!(alerts.windows(2).all(|w| w[0] < w[1]), "alerts out of order");
    assert!(routine.windows(2).all(|w| w[0] < w[1]), "routine events out of order");
}

#[test]
fn events_journaled_while_offline_arrive_once_in_order_when_the_broker_returns() {
    if skip_without_tools() {
        return;
    }
    let mut lab = Lab::new();
    lab.agent_config("agent", "");
    lab.collect_config();
    lab.enrol();
    lab.journal_events(3000);
    // The SOC's collector has its session on the broker; then the broker goes away.
    let _collector = lab.start_collector_subscribed();
    lab.broker.stop();
    let _agent = lab.start_agent();
    std::thread::sleep(Duration::from_secs(2)); // the agent retries against a dead broker
    lab.broker.start();
    let got = lab.wait_in_sync(Duration::from_secs(60));
    // Alerts first: the first 60 collected events are the 60 alerts.
    assert!(got[..60].iter().all(|s| s % 50 == 0), "alerts were not drained first: {:?}", &got[..70]);
}

/// A batch holds at least one event, however large. A process.start with a 64 KiB command line
/// and the same argv is ~130 KiB of JSON, twice the default batch (64 KiB): it must go out like
/// any other, and the events after it too. (The MQTT packet limit once followed the batch size,
/// and such an event stalled the uplink for good.)
#[test]
fn an_event_larger_than_a_batch_is_published_and_the_uplink_goes_on() {
    if skip_without_tools() {
        return;
    }
    let lab = Lab::new();
    lab.agent_config("agent", "");
    lab.collect_config();
    lab.enrol();
    lab.journal_events(100);
    lab.journal_big_event(128 * 1024);
    lab.journal_events(100);
    let _collector = lab.start_collector_subscribed();
    let _agent = lab.start_agent();
    // Not wait_in_sync: its lane check reads every 50th seq as an alert, and the big event
    // shifts the second run of events off that pattern.
    let got = lab.wait_collected(201, Duration::from_secs(60));
    let mut seqs = got.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "duplicates in the collector output");
    let missing: Vec<u64> = (1..=201).filter(|s| seqs.binary_search(s).is_err()).collect();
    assert!(missing.is_empty(), "missing {missing:?}; {}", lab.anomalies());
}

#[test]
fn with_collector_acks_batches_the_broker_passed_to_no_one_are_published_again() {
    if skip_without_tools() {
        return;
    }
    // Batches published while no collector session exists reach no one (the same happens when
    // mosquitto 2.0 restarts and forgets a disconnected member's $share subscription). With
    // ack = "collector" the agent keeps them and publishes them again; each event is written once.
    let lab = Lab::new();
    let collect = lab.collect_config();
    let text = std::fs::read_to_string(&collect).unwrap();
    std::fs::write(&collect, format!("{text}share_group = \"soc\"\n")).unwrap();
    lab.agent_config_with_collector_acks("ack_timeout_secs = 2\nbatch_max_events = 200\n");
    lab.enrol();
    lab.journal_events(3000);
    let _agent = lab.start_agent();
    // The agent publishes to no one: wait until its status says it has.
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(lab.p("data/status.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        if v["uplink"]["batches_published"].as_u64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the agent never published: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _collector = lab.start_collector();
    let got = lab.wait_collected(lab.journaled().len(), Duration::from_secs(60));
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "duplicates in the collector output");
    assert_eq!(sorted, lab.journaled(), "the collector's output is not the journal");
    let t = Instant::now();
    loop {
        let state = Journal::open_read_only(&lab.p("data/journal.db")).unwrap().outbox_state().unwrap();
        if state.pending_batches == 0 && state.delivered_batch_seq + 1 == state.next_batch_seq {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "acks never freed the outbox: {state:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The scenario happened: batches were published again (status.json is rewritten every second).
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(lab.p("data/status.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        let (again, delivered) =
            (v["uplink"]["batches_republished"].as_u64(), v["uplink"]["batches_delivered"].as_u64());
        if let (Some(again), Some(d)) = (again, delivered)
            && d > 0
            && d + 1
                >= Journal::open_read_only(&lab.p("data/journal.db"))
                    .unwrap()
                    .outbox_state()
                    .unwrap()
                    .next_batch_seq
        {
            assert!(again > 0, "nothing was published again: the broker lost nothing? {s}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "status never caught up: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_of_agent_and_collector_during_sync_loses_and_duplicates_nothing() {
    if skip_without_tools() {
        return;
    }
    let lab = Lab::new();
    lab.agent_config("agent", "batch_max_events = 100\n");
    lab.collect_config();
    lab.enrol();
    lab.journal_events(20_000);
    let journaled = lab.journaled();
    // The collector's session exists on the broker before the first batch is published.
    drop(lab.start_collector_subscribed());
    let mut seed = std::process::id() as u64 | 1;
    let mut rand_ms = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    for round in 0..4 {
        let mut agent = lab.start_agent();
        let mut collector = lab.start_collector();
        std::thread::sleep(Duration::from_millis(200 + rand_ms(600)));
        if round % 2 == 0 {
            agent.kill9();
            std::thread::sleep(Duration::from_millis(rand_ms(300)));
            collector.kill9();
        } else {
            collector.kill9();
            std::thread::sleep(Duration::from_millis(rand_ms(300)));
            agent.kill9();
        }
    }
    let _agent = lab.start_agent();
    let _collector = lab.start_collector();
    lab.wait_in_sync(Duration::from_secs(90));
    assert!(lab.collected().len() >= journaled.len());
}

#[test]
fn a_broker_restart_mid_drain_loses_and_duplicates_nothing() {
    if skip_without_tools() {
        return;
    }
    let mut lab = Lab::new();
    lab.agent_config("agent", "batch_max_events = 200\n");
    lab.collect_config();
    lab.enrol();
    lab.journal_events(30_000);
    let journaled = lab.journaled();
    let _collector = lab.start_collector_subscribed();
    let _agent = lab.start_agent();
    lab.wait_collected(2000, Duration::from_secs(30));
    lab.broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    lab.broker.start();
    lab.wait_in_sync(Duration::from_secs(90));
    assert!(lab.collected().len() >= journaled.len());
}

#[test]
fn a_broker_that_refuses_the_client_certificate_gives_a_clear_error_and_journaling_goes_on() {
    if skip_without_tools() {
        return;
    }
    let lab = Lab::new();
    let d = lab.d();
    lab.agent_config("rogue", &format!("[sources.file]\nenabled = true\npaths = [\"{d}/watch\"]\n"));
    std::fs::create_dir_all(lab.p("watch")).unwrap();
    let mut agent = lab.start_agent();
    let t = Instant::now();
    let status = loop {
        let s = std::fs::read_to_string(lab.p("data/status.json")).unwrap_or_default();
        if s.contains("last_error") && !s.contains("\"last_error\": null") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no uplink error in status: {s}\n{}",
            tail(&lab.p("agent.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lower = status.to_lowercase();
    assert!(
        lower.contains("tls")
            || lower.contains("certificate")
            || lower.contains("alert")
            || lower.contains("connection"),
        "error does not say what went wrong: {status}"
    );
    std::fs::write(lab.p("watch/x"), b"still journaling").unwrap();
    let t = Instant::now();
    while lab.journaled().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "nothing journaled while the uplink fails");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.term();
    let log = std::fs::read_to_string(lab.p("agent.log")).unwrap();
    assert!(log.contains("uplink"), "the error is in the agent's log too:\n{log}");
}

/// Publish raw bytes to a topic on the lab broker, as an attacker with a valid client
/// certificate would (the broker is not trusted with integrity; the collector is).
fn inject(lab: &Lab, topic: &str, payload: &[u8]) {
    let file = lab.p("inject.bin");
    std::fs::File::create(&file).unwrap().write_all(payload).unwrap();
    let d = lab.d();
    run(Command::new("mosquitto_pub").args([
        "-h",
        "127.0.0.1",
        "-p",
        &lab.broker.port.to_string(),
        "--cafile",
        &format!("{d}/ca.crt"),
        "--cert",
        &format!("{d}/agent.crt"),
        "--key",
        &format!("{d}/agent.key"),
        "-q",
        "1",
        "-t",
        topic,
        "-f",
        file.to_str().unwrap(),
    ]));
}

#[test]
fn forged_replayed_unknown_and_gapped_batches_are_rejected_and_reported() {
    if skip_without_tools() {
        return;
    }
    let lab = Lab::new();
    lab.agent_config("agent", "batch_max_events = 10\n");
    lab.collect_config();
    lab.enrol();
    lab.journal_events(100);
    let mut collector = lab.start_collector_subscribed();
    let mut agent = lab.start_agent();
    lab.wait_in_sync(Duration::from_secs(30));
    agent.term();
    // Whatever the agent journaled while stopping is not part of this test: from here on the
    // output must not change, whatever is injected.
    std::thread::sleep(Duration::from_millis(300));
    let before = lab.collected();

    // Real batches, sealed by the device's key, read back the way the collector got them: reseal
    // from the journal with a copy of the key.
    let key = picket_wire::Identity::load(&lab.p("data/device.key"), DEVICE).unwrap();
    let j = Journal::open_read_only(&lab.p("data/journal.db")).unwrap();
    let mut lines = Vec::new();
    j.export(0, |l| {
        lines.push(l.to_owned());
        Ok(())
    })
    .unwrap();
    let topic = format!("{PREFIX}/{DEVICE}/batch");
    let state = j.outbox_state().unwrap();
    let input = |seq, prev| picket_wire::BatchInput {
        stream_id: state.stream_id,
        boot_id: [0; 16],
        batch_seq: seq,
        prev_hash: prev,
        created_ns: Timestamp::now().unix_nanos(),
        flags: 0,
    };
    let line_refs: Vec<&str> = lines[..3].iter().map(String::as_str).collect();

    // 1. A flipped byte in a batch otherwise valid.
    let mut forged =
        picket_wire::seal(&key, input(state.next_batch_seq, state.head_hash), &line_refs).unwrap().bytes;
    let last = forged.len() - 5;
    forged[last] ^= 0x01;
    inject(&lab, &topic, &forged);
    // 2. A batch signed by a key the collector never enrolled.
    let stranger = picket_wire::Identity::generate(DEVICE).unwrap();
    inject(
        &lab,
        &topic,
        &picket_wire::seal(&stranger, input(state.next_batch_seq, state.head_hash), &line_refs)
            .unwrap()
            .bytes,
    );
    // 3. A replay: a different batch at a position already stored (a fork of the chain).
    inject(&lab, &topic, &picket_wire::seal(&key, input(1, [0; 32]), &line_refs).unwrap().bytes);
    // 4. A truncated chain: the next batch is skipped; the one after it arrives.
    let skip = picket_wire::seal(&key, input(state.next_batch_seq, state.head_hash), &line_refs).unwrap();
    let after = picket_wire::seal(&key, input(state.next_batch_seq + 1, skip.hash), &line_refs).unwrap();
    inject(&lab, &topic, &after.bytes);

    let t = Instant::now();
    loop {
        let a = lab.anomalies();
        let all = ["body_hash_mismatch", "unknown_key", "fork", "gap"].iter().all(|k| a.contains(k))
            || (a.contains("bad_signature") && ["unknown_key", "fork", "gap"].iter().all(|k| a.contains(k)));
        if all {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "anomalies reported so far:\n{a}\n{}",
            tail(&lab.p("collect.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    collector.term();
    // Nothing forged reached the output (the gapped batch's events are duplicates of seqs 1..=3
    // and were deduplicated).
    assert_eq!(lab.collected(), before);
    let status = std::fs::read_to_string(lab.p("collect/collector-status.json")).unwrap();
    assert!(status.contains("unknown_key"), "{status}");
}

#[test]
fn in_end_to_end_mode_only_the_collectors_signed_ack_frees_the_outbox() {
    if skip_without_tools() {
        return;
    }
    let lab = Lab::new();
    lab.collect_config();
    lab.agent_config_with_collector_acks("batch_max_events = 100\n");
    lab.enrol();
    lab.journal_events(1000);
    // The collector subscribes once (the broker keeps its session), then goes away.
    lab.start_collector_subscribed().term();

    let _agent = lab.start_agent();
    std::thread::sleep(Duration::from_secs(3));
    let state = Journal::open_read_only(&lab.p("data/journal.db")).unwrap().outbox_state().unwrap();
    assert_eq!(state.delivered_batch_seq, 0, "broker PUBACKs alone must not free anything: {state:?}");
    assert!(state.pending_batches > 0, "{state:?}");

    let _collector = lab.start_collector();
    lab.wait_in_sync(Duration::from_secs(30));
    let t = Instant::now();
    loop {
        let state = Journal::open_read_only(&lab.p("data/journal.db")).unwrap().outbox_state().unwrap();
        if state.pending_batches == 0 && state.delivered_batch_seq + 1 == state.next_batch_seq {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "acks never freed the outbox: {state:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
