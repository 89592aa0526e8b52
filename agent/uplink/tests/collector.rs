//! The collector's core without a broker: chain placement, dedup, anomalies, exactly-once output.

use std::path::Path;
use std::time::Duration;

use picket_uplink::Endpoint;
use picket_uplink::collector::{CollectorConfig, Core, Output};
use picket_wire::{BatchInput, Identity, SealedBatch};

const DEV: &str = "dev-1";
const TOPIC: &str = "p/dev-1/batch";

struct Fixture {
    dir: tempfile::TempDir,
    device: Identity,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let device = Identity::generate(DEV).unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/dev.pub"), device.public_key_line()).unwrap();
        Fixture { dir, device }
    }

    fn config(&self) -> CollectorConfig {
        let d = self.dir.path();
        let mut c = CollectorConfig::new(
            Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1,
                ca_file: None,
                cert_file: None,
                key_file: None,
            },
            "p".into(),
            d.join("keys"),
            d.join("state"),
            Output::File(d.join("out.ndjson")),
        );
        c.gap_timeout = Duration::from_millis(0);
        c
    }

    fn core(&self) -> Core {
        Core::open(&self.config()).unwrap()
    }

    fn out(&self) -> Vec<u64> {
        read_seqs(&self.dir.path().join("out.ndjson"))
    }

    fn anomalies(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/anomalies.ndjson")).unwrap_or_default()
    }
}

fn read_seqs(p: &Path) -> Vec<u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect()
}

fn batch(
    id: &Identity,
    stream: u8,
    batch_seq: u64,
    prev: [u8; 32],
    seqs: std::ops::Range<u64>,
) -> SealedBatch {
    let lines: Vec<String> = seqs.map(|s| format!(r#"{{"seq":{s},"kind":"file.modify"}}"#)).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let input = BatchInput {
        stream_id: [stream; 16],
        boot_id: [0; 16],
        batch_seq,
        prev_hash: prev,
        created_ns: 1_700_000_000_000_000_000,
        flags: 0,
    };
    picket_wire::seal(id, input, &refs).unwrap()
}

#[test]
fn the_next_batch_is_written_and_acknowledged_and_an_identical_replay_only_re_acknowledged() {
    let f = Fixture::new();
    let mut core = f.core();
    let b1 = batch(&f.device, 1, 1, [0; 32], 1..4);
    let acks = core.handle(TOPIC, &b1.bytes);
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].batch_seq, acks[0].hash), (1, b1.hash));
    let again = core.handle(TOPIC, &b1.bytes);
    assert_eq!(again[0].batch_seq, 1, "a replay is acknowledged again (the ack may have been lost)");
    assert_eq!(f.out(), vec![1, 2, 3], "but written once");
    assert_eq!(core.stats.duplicate_batches, 1);
}

#[test]
fn a_different_batch_at_a_stored_position_is_a_fork_and_is_not_written() {
    let f = Fixture::new();
    let mut core = f.core();
    let b1 = batch(&f.device, 1, 1, [0; 32], 1..4);
    core.handle(TOPIC, &b1.bytes);
    let other = batch(&f.device, 1, 1, [0; 32], 1..3);
    assert!(core.handle(TOPIC, &other.bytes).is_empty());
    assert!(f.anomalies().contains("\"fork\""), "{}", f.anomalies());
    assert_eq!(f.out(), vec![1, 2, 3]);
}

#[test]
fn a_batch_whose_prev_hash_is_not_the_head_breaks_the_chain_and_is_refused() {
    let f = Fixture::new();
    let mut core = f.core();
    core.handle(TOPIC, &batch(&f.device, 1, 1, [0; 32], 1..4).bytes);
    assert!(core.handle(TOPIC, &batch(&f.device, 1, 2, [9; 32], 4..6).bytes).is_empty());
    assert!(f.anomalies().contains("chain_break"));
    assert_eq!(f.out(), vec![1, 2, 3]);
}

#[test]
fn out_of_order_batches_wait_for_the_missing_one_and_a_hole_left_open_is_a_gap() {
    let f = Fixture::new();
    let mut core = f.core();
    let b1 = batch(&f.device, 1, 1, [0; 32], 1..3);
    let b2 = batch(&f.device, 1, 2, b1.hash, 3..5);
    let b3 = batch(&f.device, 1, 3, b2.hash, 5..7);
    core.handle(TOPIC, &b1.bytes);
    assert!(core.handle(TOPIC, &b3.bytes).is_empty(), "held back");
    assert_eq!(f.out(), vec![1, 2]);
    let acks = core.handle(TOPIC, &b2.bytes);
    assert_eq!(acks.last().unwrap().batch_seq, 3, "the gap closed: both written, in order");
    assert_eq!(f.out(), vec![1, 2, 3, 4, 5, 6]);
    assert!(f.anomalies().contains("reordered"));

    // Batch 4 never comes; 5 does.
    let b4 = batch(&f.device, 1, 4, b3.hash, 7..9);
    let b5 = batch(&f.device, 1, 5, b4.hash, 9..11);
    core.handle(TOPIC, &b5.bytes);
    let acks = core.expire_gaps();
    assert_eq!(acks[0].batch_seq, 5);
    assert!(f.anomalies().contains("\"gap\""), "{}", f.anomalies());
    assert_eq!(f.out(), vec![1, 2, 3, 4, 5, 6, 9, 10]);
}

#[test]
fn a_new_streams_batches_that_arrive_out_of_order_wait_instead_of_being_taken_for_replays() {
    // A collector that subscribed after the device's first publish sees batch 2 first: the
    // batches behind it belong to the same, new stream and must wait for the gap, not be dropped.
    let f = Fixture::new();
    let mut core = f.core();
    let b1 = batch(&f.device, 1, 1, [0; 32], 1..3);
    let b2 = batch(&f.device, 1, 2, b1.hash, 3..5);
    let b3 = batch(&f.device, 1, 3, b2.hash, 5..7);
    assert!(core.handle(TOPIC, &b2.bytes).is_empty(), "held back");
    assert!(core.handle(TOPIC, &b3.bytes).is_empty(), "held back too");
    assert!(!f.anomalies().contains("\"replay\""), "{}", f.anomalies());
    let acks = core.expire_gaps();
    assert_eq!(acks[0].batch_seq, 3);
    assert_eq!(f.out(), vec![3, 4, 5, 6]);
    assert!(f.anomalies().contains("\"gap\""), "{}", f.anomalies());
    // Batch 1 comes after all (a device re-publishing what it has no ack for): written late,
    // the head stays, and a second copy is a duplicate.
    let acks = core.handle(TOPIC, &b1.bytes);
    assert_eq!((acks[0].batch_seq, acks[0].hash), (3, b3.hash));
    assert!(f.anomalies().contains("\"late\""), "{}", f.anomalies());
    assert_eq!(f.out(), vec![3, 4, 5, 6, 1, 2]);
    core.handle(TOPIC, &b1.bytes);
    assert_eq!(f.out(), vec![3, 4, 5, 6, 1, 2]);
    assert_eq!(core.stats.duplicate_batches, 1);

    // The same after a reset: the new stream's second batch before its first.
    let n1 = batch(&f.device, 2, 1, [0; 32], 1..2);
    let n2 = batch(&f.device, 2, 2, n1.hash, 2..3);
    let n3 = batch(&f.device, 2, 3, n2.hash, 3..4);
    assert!(core.handle(TOPIC, &n2.bytes).is_empty());
    assert!(core.handle(TOPIC, &n3.bytes).is_empty());
    let acks = core.handle(TOPIC, &n1.bytes);
    assert_eq!(acks.last().unwrap().batch_seq, 3, "the late first batch closes the gap");
    assert_eq!(f.out(), vec![3, 4, 5, 6, 1, 2, 1, 2, 3]);
    assert!(!f.anomalies().contains("\"replay\""), "{}", f.anomalies());
}

#[test]
fn a_new_stream_is_a_reset_and_a_batch_of_a_stream_left_behind_is_a_replay() {
    let f = Fixture::new();
    let mut core = f.core();
    let old = batch(&f.device, 1, 1, [0; 32], 1..3);
    core.handle(TOPIC, &old.bytes);
    let new = batch(&f.device, 2, 1, [0; 32], 1..3);
    core.handle(TOPIC, &new.bytes);
    assert!(f.anomalies().contains("stream_reset"));
    assert_eq!(f.out(), vec![1, 2, 1, 2], "a reset device's seqs start again");
    assert!(core.handle(TOPIC, &old.bytes).is_empty());
    assert!(f.anomalies().contains("\"replay\""));
    assert_eq!(f.out().len(), 4);
}

#[test]
fn forged_unknown_and_misrouted_messages_are_counted_by_reason_and_dropped() {
    let f = Fixture::new();
    let mut core = f.core();
    let good = batch(&f.device, 1, 1, [0; 32], 1..3);
    let mut flipped = good.bytes.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 0x20;
    core.handle(TOPIC, &flipped);
    core.handle(TOPIC, &batch(&Identity::generate(DEV).unwrap(), 1, 1, [0; 32], 1..3).bytes);
    core.handle(TOPIC, &batch(&Identity::generate("intruder").unwrap(), 1, 1, [0; 32], 1..3).bytes);
    core.handle("p/other-device/batch", &good.bytes);
    core.handle("p/dev-1/batch", b"garbage");
    core.handle(TOPIC, &vec![0u8; 5 << 20]);
    let r = &core.stats.rejected;
    for reason in
        ["body_hash_mismatch", "unknown_key", "unknown_device", "topic_mismatch", "malformed", "too_large"]
    {
        assert_eq!(r.get(reason), Some(&1), "{reason}: {r:?}");
    }
    assert!(f.out().is_empty());
    // And the good one still goes through afterwards.
    assert_eq!(core.handle(TOPIC, &good.bytes).len(), 1);
}

#[test]
fn a_device_clock_far_ahead_is_reported() {
    let f = Fixture::new();
    let mut core = f.core();
    let lines = [r#"{"seq":1}"#];
    let input = BatchInput {
        stream_id: [1; 16],
        boot_id: [0; 16],
        batch_seq: 1,
        prev_hash: [0; 32],
        created_ns: i64::MAX / 2,
        flags: 0,
    };
    core.handle(TOPIC, &picket_wire::seal(&f.device, input, &lines).unwrap().bytes);
    assert!(f.anomalies().contains("clock_skew"));
}

#[test]
fn output_written_after_the_last_commit_is_cut_on_restart_so_nothing_is_duplicated() {
    let f = Fixture::new();
    {
        let mut core = f.core();
        core.handle(TOPIC, &batch(&f.device, 1, 1, [0; 32], 1..3).bytes);
    }
    // A crash between writing the output and committing: lines the state does not know about.
    let out = f.dir.path().join("out.ndjson");
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.push_str("{\"seq\":3}\n");
    std::fs::write(&out, text).unwrap();
    let mut core = f.core();
    assert_eq!(f.out(), vec![1, 2]);
    // The broker re-delivers the batch those lines came from; it is written once.
    let b1 = batch(&f.device, 1, 1, [0; 32], 1..3);
    core.handle(TOPIC, &batch(&f.device, 1, 2, b1.hash, 3..4).bytes);
    assert_eq!(f.out(), vec![1, 2, 3]);
}
