//! The uplink's outbox: sealing, lanes, delivery, restarts, and a model-based property test.
#![allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use picket_event::Event;
use picket_journal::{BatchDraft, Journal, JournalOptions, SealLimits, Sealed};
use proptest::prelude::*;

fn open(path: &Path) -> Journal {
    Journal::open(path, JournalOptions::new("dev1")).unwrap()
}

/// A stand-in for picket-wire: the "wire" is the lines joined, prefixed with the chain fields, and
/// the hash is derived from both, so tests can check what was sealed and how it was chained.
fn fake_seal(d: BatchDraft<'_>) -> Result<Sealed, String> {
    let mut wire = format!("{}|{}|{}|", d.batch_seq, hex(&d.prev_hash), d.priority).into_bytes();
    wire.extend(d.lines.join("\n").bytes());
    let mut hash = [0u8; 32];
    for (i, b) in wire.iter().enumerate() {
        hash[i % 32] = hash[i % 32].wrapping_mul(31).wrapping_add(*b);
    }
    Ok(Sealed { hash, wire })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn seqs_of(wire: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(wire);
    let body = text.splitn(4, '|').nth(3).unwrap_or("");
    body.lines().map(|l| serde_json::from_str::<Event>(l).unwrap().seq).collect()
}

const SMALL: SealLimits = SealLimits { max_events: 4, max_bytes: 1 << 20 };

#[test]
fn alerts_are_sealed_before_older_routine_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    j.append(&mut (0..6).map(process_start).collect::<Vec<_>>()).unwrap(); // seq 1..=6
    j.append(&mut [alert(0)]).unwrap(); // seq 7
    j.append(&mut [process_start(7)]).unwrap(); // seq 8
    let b1 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert!(b1.priority);
    assert_eq!(seqs_of(&b1.wire), vec![7]);
    let b2 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert_eq!((b2.priority, seqs_of(&b2.wire)), (false, vec![1, 2, 3, 4]));
    let b3 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert_eq!(seqs_of(&b3.wire), vec![5, 6, 8]);
    assert!(j.seal_next(SMALL, fake_seal).unwrap().is_none());
    assert_eq!((b1.batch_seq, b2.batch_seq, b3.batch_seq), (1, 2, 3));
    // One chain across both lanes.
    assert!(String::from_utf8_lossy(&b2.wire).starts_with(&format!("2|{}|", hex(&b1.hash))));
    assert!(String::from_utf8_lossy(&b3.wire).starts_with(&format!("3|{}|", hex(&b2.hash))));
}

#[test]
fn byte_limit_splits_batches_but_a_single_large_event_still_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    j.append(&mut (0..3).map(process_start).collect::<Vec<_>>()).unwrap();
    let tiny = SealLimits { max_events: 100, max_bytes: 10 };
    for want in 1..=3 {
        assert_eq!(seqs_of(&j.seal_next(tiny, fake_seal).unwrap().unwrap().wire), vec![want]);
    }
}

#[test]
fn sealed_batches_wait_in_the_outbox_byte_for_byte_across_a_restart_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut (0..10).map(process_start).collect::<Vec<_>>()).unwrap();
    let b1 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    let b2 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert_eq!(j.summary().unwrap().backlog, 10);
    drop(j);
    let mut j = open(&path);
    assert_eq!(j.outbox().unwrap(), vec![b1.clone(), b2.clone()]);
    assert_eq!(j.mark_delivered(1).unwrap(), 4);
    assert_eq!(j.outbox().unwrap(), vec![b2.clone()]);
    let s = j.summary().unwrap();
    assert_eq!((s.acked_seq, s.backlog), (4, 6));
    assert_eq!(j.mark_delivered(1).unwrap(), 0, "delivery is idempotent");
    // The chain continues after a restart from the stored head.
    let b3 = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert_eq!(b3.batch_seq, 3);
    assert!(String::from_utf8_lossy(&b3.wire).starts_with(&format!("3|{}|", hex(&b2.hash))));
    assert_eq!(j.mark_delivered(99).unwrap(), 6, "clamped to the last sealed batch");
    let st = j.outbox_state().unwrap();
    assert_eq!((st.next_batch_seq, st.delivered_batch_seq, st.pending_batches), (4, 3, 0));
    assert_eq!(st.head_hash, b3.hash);
    assert_eq!(j.summary().unwrap().backlog, 0);
    assert_eq!(j.summary().unwrap().acked_seq, 10);
}

#[test]
fn a_failing_seal_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    j.append(&mut [process_start(0)]).unwrap();
    let err = j.seal_next(SMALL, |_| Err("no key".to_owned())).unwrap_err();
    assert!(err.to_string().contains("no key"), "{err}");
    assert_eq!(j.outbox_state().unwrap().next_batch_seq, 1);
    assert_eq!(seqs_of(&j.seal_next(SMALL, fake_seal).unwrap().unwrap().wire), vec![1]);
}

#[test]
fn every_journal_has_its_own_stream_id_which_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir.path().join("a.db")).outbox_state().unwrap().stream_id;
    let b = open(&dir.path().join("b.db")).outbox_state().unwrap().stream_id;
    assert_ne!(a, [0; 16]);
    assert_ne!(a, b);
    assert_eq!(open(&dir.path().join("a.db")).outbox_state().unwrap().stream_id, a);
}

#[test]
fn eviction_of_unsealed_events_shrinks_the_backlog_and_the_gap_record_is_sealed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(
        &dir.path().join("j.db"),
        JournalOptions::new("dev1").with_max_bytes(picket_journal::MIN_MAX_BYTES),
    )
    .unwrap();
    for i in 0..400 {
        j.append(&mut [process_start(i)]).unwrap();
    }
    let s = j.summary().unwrap();
    assert!(s.evicted_total > 0);
    assert_eq!(s.backlog, s.events, "nothing delivered: everything stored is backlog");
    let first = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert!(first.priority, "the journal.gap record goes first");
    let gap: Event = serde_json::from_str(
        String::from_utf8_lossy(&first.wire).splitn(4, '|').nth(3).unwrap().lines().next().unwrap(),
    )
    .unwrap();
    assert_eq!(gap.kind, picket_event::EventKind::JournalGap);
}

// ---- model-based property test -------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Append {
        n: u8,
        alert: bool,
    },
    Seal,
    /// Deliver through the k-th pending batch (0 = the oldest), if any.
    Deliver(u8),
    /// "Disconnect": the uplink forgets what it published; the outbox must still hold it.
    Disconnect,
    /// Crash: drop the journal without anything else and reopen it.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..20, any::<bool>()).prop_map(|(n, alert)| Op::Append { n, alert }),
        3 => Just(Op::Seal),
        2 => (0u8..4).prop_map(Op::Deliver),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Against a model: every appended event is sealed exactly once, keep-class lane first,
    /// batches chain, nothing leaves the outbox before its delivery, deliveries free in order, and
    /// after draining, the delivered set is exactly the appended set.
    #[test]
    fn outbox_bookkeeping_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = open(&path);
        let mut appended: BTreeMap<u64, bool> = BTreeMap::new(); // seq -> is alert
        let mut sealed: BTreeSet<u64> = BTreeSet::new();
        let mut pending: Vec<(u64, Vec<u64>)> = Vec::new(); // batch_seq, seqs (model of outbox)
        let mut delivered: BTreeSet<u64> = BTreeSet::new();
        let mut head = [0u8; 32];
        let mut next_batch = 1;
        let mut i = 0;
        for op in ops {
            match op {
                Op::Append { n, alert: a } => {
                    let mut evs: Vec<Event> =
                        (0..n).map(|_| { i += 1; if a && i % 3 == 0 { alert(i) } else { process_start(i) } }).collect();
                    j.append(&mut evs).unwrap();
                    for e in &evs { appended.insert(e.seq, e.kind.retention() == picket_event::Retention::Keep); }
                }
                Op::Seal => {
                    let unsealed_alerts = appended.iter().any(|(s, a)| *a && !sealed.contains(s));
                    match j.seal_next(SMALL, fake_seal).unwrap() {
                        None => prop_assert!(appended.keys().all(|s| sealed.contains(s))),
                        Some(b) => {
                            prop_assert_eq!(b.batch_seq, next_batch);
                            let prefix = format!("{}|{}|", b.batch_seq, hex(&head));
                            prop_assert!(String::from_utf8_lossy(&b.wire).starts_with(&prefix));
                            prop_assert_eq!(b.priority, unsealed_alerts);
                            let seqs = seqs_of(&b.wire);
                            for s in &seqs {
                                prop_assert!(sealed.insert(*s), "seq {} sealed twice", s);
                                prop_assert_eq!(appended[s], b.priority);
                            }
                            // The oldest unsealed events of the lane, in order.
                            let lane: Vec<u64> = appended.iter()
                                .filter(|(s, a)| **a == b.priority && (!sealed.contains(s) || seqs.contains(s)))
                                .map(|(s, _)| *s).take(seqs.len()).collect();
                            prop_assert_eq!(&lane, &seqs);
                            head = b.hash;
                            next_batch += 1;
                            pending.push((b.batch_seq, seqs));
                        }
                    }
                }
                Op::Deliver(k) => {
                    if let Some((through, _)) = pending.get(usize::from(k)).cloned() {
                        let freed: u64 = pending.iter().filter(|(b, _)| *b <= through).map(|(_, s)| s.len() as u64).sum();
                        prop_assert_eq!(j.mark_delivered(through).unwrap(), freed);
                        for (_, seqs) in pending.iter().filter(|(b, _)| *b <= through) {
                            for s in seqs { prop_assert!(delivered.insert(*s)); }
                        }
                        pending.retain(|(b, _)| *b > through);
                    }
                }
                Op::Disconnect => {}
                Op::Crash => { drop(j); j = open(&path); }
            }
            // The outbox always holds exactly the model's pending batches.
            let outbox: Vec<(u64, Vec<u64>)> =
                j.outbox().unwrap().into_iter().map(|b| (b.batch_seq, seqs_of(&b.wire))).collect();
            prop_assert_eq!(&outbox, &pending);
            let s = j.summary().unwrap();
            prop_assert_eq!(s.backlog, (appended.len() - delivered.len()) as u64);
            // acked_seq never claims an undelivered event.
            prop_assert!(appended.range(..=s.acked_seq).all(|(q, _)| delivered.contains(q)));
        }
        // Drain: seal and deliver everything; then delivered == appended, each once.
        while let Some(b) = j.seal_next(SMALL, fake_seal).unwrap() {
            for s in seqs_of(&b.wire) { prop_assert!(sealed.insert(s)); }
            pending.push((b.batch_seq, seqs_of(&b.wire)));
        }
        if let Some((last, _)) = pending.last().cloned() {
            j.mark_delivered(last).unwrap();
            for (_, seqs) in pending.drain(..) { for s in seqs { prop_assert!(delivered.insert(s)); } }
        }
        prop_assert_eq!(delivered.iter().copied().collect::<Vec<_>>(), appended.keys().copied().collect::<Vec<_>>());
        let s = j.summary().unwrap();
        prop_assert_eq!((s.backlog, s.acked_seq), (0, j.last_seq()));
    }
}

#[test]
fn a_v1_journal_is_migrated_keeping_its_events_and_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        // The v1 schema as session 1 shipped it, with three events of which one was acked.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA application_id = 1885954923;
             CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, retention INTEGER NOT NULL,
                                  ts_ns INTEGER NOT NULL, bytes INTEGER NOT NULL, json TEXT NOT NULL);
             CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL,
                 acked_seq INTEGER NOT NULL, evicted_total INTEGER NOT NULL, logical_bytes INTEGER NOT NULL,
                 event_count INTEGER NOT NULL, routine_count INTEGER NOT NULL, backlog INTEGER NOT NULL,
                 synced_seq INTEGER NOT NULL, max_bytes INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let mut total = 0;
        for i in 0..3u64 {
            let mut e = process_start(i);
            e.seq = i + 1;
            let json = serde_json::to_string(&e).unwrap();
            total += json.len() as i64 + 80;
            c.execute(
                "INSERT INTO events VALUES (?1, 'process.start', 0, 0, ?2, ?3)",
                rusqlite::params![e.seq as i64, json.len() as i64, json],
            )
            .unwrap();
        }
        c.execute("INSERT INTO meta VALUES (1, 3, 1, 0, ?1, 3, 3, 2, 3, 0)", [total]).unwrap();
    }
    let mut j = open(&path);
    assert_eq!(j.last_seq(), 3);
    let b = j.seal_next(SMALL, fake_seal).unwrap().unwrap();
    assert_eq!((b.batch_seq, seqs_of(&b.wire)), (1, vec![2, 3]));
    assert_eq!(j.mark_delivered(1).unwrap(), 2);
    assert_eq!(j.summary().unwrap().backlog, 0);
}
