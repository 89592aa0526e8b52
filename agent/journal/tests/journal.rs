//! Behaviour of the journal through its public API: seq, schema, size cap, readers, export, acks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use picket_event::{Event, EventKind, Retention, severity};
use picket_journal::{GAP_REASON_FULL, Journal, JournalError, JournalOptions, MIN_MAX_BYTES, ROW_OVERHEAD};
use rusqlite::Connection;

fn open(path: &Path) -> Journal {
    Journal::open(path, JournalOptions::new(HOST)).unwrap()
}

fn open_capped(path: &Path, max_bytes: u64) -> Journal {
    Journal::open(path, JournalOptions::new(HOST).with_max_bytes(max_bytes)).unwrap()
}

#[test]
fn append_assigns_consecutive_seq_and_stores_each_event_as_json_with_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    let mut batch = vec![process_start(0), file_modify(1), alert(2)];
    let a = j.append(&mut batch).unwrap();
    assert_eq!((a.first_seq, a.last_seq), (1, 3));
    assert!(a.gaps.is_empty());
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(j.last_seq(), 3);

    let mut more = vec![process_start(3)];
    assert_eq!(j.append(&mut more).unwrap().first_seq, 4);

    let stored = exported(&j, 0);
    batch.extend(more);
    assert_eq!(stored, batch, "stored JSON round-trips to the events, seq included");
}

#[test]
fn an_empty_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    let a = j.append(&mut []).unwrap();
    assert_eq!((a.first_seq, a.last_seq, a.gaps.len()), (0, 0, 0));
    assert_eq!(j.last_seq(), 0);
    assert_eq!(j.stats().unwrap().events, 0);
}

#[test]
fn seq_continues_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut [process_start(0), process_start(1)]).unwrap();
    drop(j);

    let mut j = open(&path);
    assert_eq!(j.last_seq(), 2);
    let mut batch = [file_modify(2)];
    assert_eq!(j.append(&mut batch).unwrap().first_seq, 3);
    drop(j);
    assert_eq!(Journal::open_read_only(&path).unwrap().last_seq(), 3);
}

#[test]
fn seq_is_never_reused_even_when_the_newest_rows_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut [process_start(0), process_start(1), alert(2)]).unwrap();
    drop(j);
    // Every row gone, the newest included (as after eviction, or an operator's DELETE).
    Connection::open(&path).unwrap().execute("DELETE FROM events", []).unwrap();

    let mut j = open(&path);
    assert_eq!(j.last_seq(), 3);
    assert_eq!(j.append(&mut [process_start(3)]).unwrap().first_seq, 4);

    // A batch bigger than the cap evicts some of its own, newest, rows; seq still moves on.
    let path = dir.path().join("small.db");
    let mut j = open_capped(&path, MIN_MAX_BYTES);
    let mut big: Vec<Event> = (0..400).map(process_start).collect();
    let a = j.append(&mut big).unwrap();
    assert!(a.gaps.iter().map(|g| g.gap.as_ref().unwrap().count).sum::<u64>() > 100);
    let last = a.last_seq;
    drop(j);
    let mut j = open_capped(&path, MIN_MAX_BYTES);
    assert_eq!(j.append(&mut [process_start(9)]).unwrap().first_seq, last + 1);
}

#[test]
fn open_creates_parent_directories_and_a_wal_journal_at_the_current_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/journal.db");
    drop(open(&path));
    assert!(path.is_file());
    let raw = Connection::open(&path).unwrap();
    let version: i64 = raw.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let mode: String = raw.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!((version, mode.as_str()), (2, "wal"));
    assert_eq!(picket_journal::SCHEMA_VERSION, 2);
}

#[test]
fn a_file_from_a_newer_schema_is_refused_with_too_new_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut [process_start(0)]).unwrap();
    drop(j);
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 7).unwrap();
    assert!(!has_sidecars(&path));
    let before = bytes(&path);

    for result in [Journal::open(&path, JournalOptions::new(HOST)), Journal::open_read_only(&path)] {
        match result {
            Err(JournalError::TooNew { path: p, found: 7, supported }) => {
                assert_eq!((p, supported), (path.clone(), picket_journal::SCHEMA_VERSION))
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
    assert_eq!(bytes(&path), before, "byte for byte");
    assert!(!has_sidecars(&path), "no -wal/-shm left next to it");
}

#[test]
fn an_empty_file_is_initialized_as_a_new_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Journal::open_read_only(&path), Err(JournalError::Corrupt { .. })));
    let mut j = open(&path);
    assert_eq!(j.append(&mut [process_start(0)]).unwrap().first_seq, 1);
}

#[test]
fn another_sqlite_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("someone-elses.db");
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    let before = bytes(&path);
    let err = Journal::open(&path, JournalOptions::new(HOST)).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a picket journal"), "{err}");
    assert_eq!(bytes(&path), before);
}

/// Appends `n` events in batches of `batch`, one alert in every 250, and returns them as written.
fn fill(j: &mut Journal, n: u64, batch: u64) -> (Vec<Event>, Vec<Event>) {
    let cap = j.stats().unwrap().max_bytes;
    let (mut written, mut gaps) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < n {
        let mut b: Vec<Event> = (i..(i + batch).min(n))
            .map(|k| match k % 250 {
                7 => alert(k),
                k2 if k2 % 2 == 0 => process_start(k),
                _ => file_modify(k),
            })
            .collect();
        let a = j.append(&mut b).unwrap();
        assert!(j.summary().unwrap().logical_bytes <= cap);
        i += batch;
        written.extend(b);
        gaps.extend(a.gaps);
    }
    (written, gaps)
}

#[test]
fn when_full_the_oldest_routine_events_are_evicted_first_and_every_alert_survives() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 256 * 1024;
    let mut j = open_capped(&dir.path().join("j.db"), cap);
    let (written, gaps) = fill(&mut j, 5_000, 100);
    let stats = j.stats().unwrap();
    assert!(stats.logical_bytes <= cap);
    assert!(!gaps.is_empty());

    let stored = exported(&j, 0);
    let present: BTreeSet<u64> = stored.iter().map(|e| e.seq).collect();
    for a in written.iter().filter(|e| e.kind == EventKind::Alert) {
        assert!(present.contains(&a.seq), "alert {} evicted", a.seq);
    }
    for g in &gaps {
        assert!(present.contains(&g.seq), "gap records are kept too");
    }
    // What survived of the routine events is the newest: everything older than the oldest
    // survivor is gone.
    let oldest_routine = stored.iter().find(|e| e.kind.retention() == Retention::Routine).unwrap().seq;
    assert!(written.iter().filter(|e| e.seq > oldest_routine).all(|e| present.contains(&e.seq)));
}

#[test]
fn gap_events_describe_exactly_what_was_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open_capped(&dir.path().join("j.db"), 256 * 1024);
    let (written, gaps) = fill(&mut j, 5_000, 100);
    let stored = exported(&j, 0);
    let present: BTreeSet<u64> = stored.iter().map(|e| e.seq).collect();
    let missing: BTreeSet<u64> = written.iter().map(|e| e.seq).filter(|s| !present.contains(s)).collect();

    // Counts add up: surviving + evicted = appended.
    let evicted: u64 = gaps.iter().map(|g| g.gap.as_ref().unwrap().count).sum();
    let surviving = u64::try_from(stored.iter().filter(|e| e.kind != EventKind::JournalGap).count()).unwrap();
    assert_eq!(surviving + evicted, u64::try_from(written.len()).unwrap());
    assert_eq!(j.stats().unwrap().evicted_total, evicted);

    // Each gap's range holds exactly `count` missing events, starts and ends on one, and the
    // ranges together cover every missing seq once.
    let mut covered = BTreeSet::new();
    for g in &gaps {
        let gap = g.gap.as_ref().unwrap();
        assert_eq!(gap.reason, GAP_REASON_FULL);
        let in_range: Vec<u64> = missing.range(gap.first_seq..=gap.last_seq).copied().collect();
        assert_eq!(u64::try_from(in_range.len()).unwrap(), gap.count, "{gap:?}");
        assert_eq!((in_range[0], in_range[in_range.len() - 1]), (gap.first_seq, gap.last_seq));
        for s in in_range {
            assert!(covered.insert(s), "seq {s} reported twice");
        }
    }
    assert_eq!(covered, missing);
}

#[test]
fn gap_events_carry_the_batch_timestamp_the_host_id_and_medium_severity() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(
        &dir.path().join("j.db"),
        JournalOptions { max_bytes: MIN_MAX_BYTES, host_id: "edge-42".into() },
    )
    .unwrap();
    loop {
        let mut batch = vec![process_start(1), file_modify(99)];
        let a = j.append(&mut batch).unwrap();
        if let Some(g) = a.gaps.first() {
            assert_eq!(g.kind, EventKind::JournalGap);
            assert_eq!(g.timestamp, batch[1].timestamp, "the last event of the batch, not the clock");
            assert_eq!(g.host.id, "edge-42");
            assert_eq!(g.event.severity, severity::MEDIUM);
            assert_eq!(g.seq, batch[1].seq + 1, "gaps get their own seq, after the batch");
            assert_eq!(a.last_seq, a.gaps.last().unwrap().seq);
            assert_eq!(exported(&j, g.seq - 1)[0], *g, "returned as stored");
            break;
        }
    }
}

#[test]
fn eviction_terminates_even_when_a_gap_record_alone_exceeds_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let host_id = "h".repeat(usize::try_from(MIN_MAX_BYTES).unwrap());
    let mut j = Journal::open(&dir.path().join("j.db"), JournalOptions { max_bytes: 0, host_id }).unwrap();
    let a = j.append(&mut (0..400).map(process_start).collect::<Vec<_>>()).unwrap();
    assert!(!a.gaps.is_empty());
    let a = j.append(&mut [alert(400)]).unwrap();
    assert_eq!(a.gaps.len(), 1, "one round took everything, then it stopped");
    assert_eq!(exported(&j, 0).len(), 1, "only the last gap record is left");
}

#[test]
fn alerts_are_evicted_only_when_no_routine_event_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open_capped(&dir.path().join("j.db"), MIN_MAX_BYTES);
    j.append(&mut (0..5).map(process_start).collect::<Vec<_>>()).unwrap();
    let mut i = 5;
    let gaps = loop {
        let a = j.append(&mut [alert(i)]).unwrap();
        i += 1;
        if !a.gaps.is_empty() {
            break a.gaps;
        }
    };
    // First round: all five routine events, not enough. Second round: the oldest alerts.
    let first = gaps[0].gap.as_ref().unwrap();
    assert_eq!((first.first_seq, first.last_seq, first.count), (1, 5, 5));
    let second = gaps[1].gap.as_ref().unwrap();
    assert_eq!(second.first_seq, 6, "oldest alert");
    let stored = exported(&j, 0);
    assert!(stored.iter().all(|e| e.kind.retention() == Retention::Keep));
    assert_eq!(stored.last().unwrap().seq, j.last_seq(), "the newest are kept");
    assert!(j.stats().unwrap().logical_bytes <= MIN_MAX_BYTES);
}

#[test]
fn the_file_on_disk_stays_within_twice_the_cap_over_many_eviction_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let cap = 1024 * 1024;
    let mut j = open_capped(&path, cap);
    let mut rounds = 0;
    let mut worst = 0;
    for round in 0..200u64 {
        let mut b: Vec<Event> = (round * 256..(round + 1) * 256).map(process_start).collect();
        rounds += j.append(&mut b).unwrap().gaps.len();
        let s = j.stats().unwrap();
        assert!(s.logical_bytes <= cap);
        worst = worst.max(s.file_bytes);
    }
    assert!(rounds >= 50, "{rounds} eviction rounds");
    assert!(worst <= 2 * cap, "file + WAL reached {worst} bytes with a cap of {cap}");
    drop(j);
    assert!(std::fs::metadata(&path).unwrap().len() <= 2 * cap);
}

#[test]
fn row_overhead_estimate_keeps_the_database_file_near_the_logical_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    for round in 0..80u64 {
        let mut b: Vec<Event> = (round * 256..(round + 1) * 256)
            .map(|i| if i % 3 == 0 { file_modify(i) } else { process_start(i) })
            .collect();
        j.append(&mut b).unwrap();
    }
    let logical = j.stats().unwrap().logical_bytes;
    drop(j); // checkpoints the WAL into the file
    let file = std::fs::metadata(&path).unwrap().len();
    // The estimate may be generous, not stingy: the file must not outgrow what the cap counts
    // (beyond the fixed pages of an empty database), and the estimate must not be wildly high.
    assert!(file <= logical + 32 * 1024, "file {file} > logical {logical}");
    assert!(file * 10 >= logical * 9, "file {file} much smaller than logical {logical}");
}

#[test]
fn read_only_open_of_a_missing_file_is_missing_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/journal.db");
    match Journal::open_read_only(&path) {
        Err(JournalError::Missing { path: p }) => assert_eq!(p, path),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn read_only_access_creates_no_files_next_to_a_closed_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut [process_start(0), alert(1)]).unwrap();
    drop(j);
    assert!(!has_sidecars(&path));
    let before = bytes(&path);

    let r = Journal::open_read_only(&path).unwrap();
    assert!(r.is_read_only());
    assert_eq!(r.stats().unwrap().events, 2);
    assert_eq!(exported(&r, 0).len(), 2);
    assert_eq!(r.last_seq(), 2);
    drop(r);
    assert!(!has_sidecars(&path));
    assert_eq!(bytes(&path), before);
}

#[test]
fn a_read_only_handle_sees_what_a_running_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut w = open(&path);
    w.append(&mut [process_start(0)]).unwrap();
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.last_seq(), 1);
    w.append(&mut [process_start(1), alert(2)]).unwrap();
    assert_eq!(r.last_seq(), 3);
    assert_eq!(exported(&r, 1).iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(r.stats().unwrap().by_kind.get("alert"), Some(&1));
}

#[test]
fn a_read_only_handle_refuses_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    drop(open(&path));
    let mut r = Journal::open_read_only(&path).unwrap();
    assert!(matches!(r.append(&mut [process_start(0)]), Err(JournalError::ReadOnly { .. })));
    assert!(matches!(r.mark_delivered(1), Err(JournalError::ReadOnly { .. })));
    assert!(matches!(r.sync(), Err(JournalError::ReadOnly { .. })));
}

#[test]
fn export_yields_the_events_after_since_seq_in_seq_order_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(&dir.path().join("j.db"));
    let mut all: Vec<Event> = (0..1_300).map(process_start).collect();
    j.append(&mut all).unwrap();
    let mut seqs = Vec::new();
    let n = j
        .export(100, |line| {
            let ev: Event = serde_json::from_str(line).unwrap();
            seqs.push(ev.seq);
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 1_200);
    assert_eq!(seqs, (101..=1_300).collect::<Vec<u64>>());
    assert_eq!(j.export(1_300, |_| Ok(())).unwrap(), 0);
    assert_eq!(j.export(u64::MAX, |_| Ok(())).unwrap(), 0);
}

#[test]
fn export_passes_rows_that_are_not_json_through_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut [process_start(0)]).unwrap();
    drop(j);
    let raw = Connection::open(&path).unwrap();
    raw.execute("UPDATE events SET json = '{\"kind\": broken' WHERE seq = 1", []).unwrap();
    raw.execute(
        "INSERT INTO events (seq, kind, retention, ts_ns, bytes, json) VALUES (2, 'process.start', 0, 0, 3, X'61FF62')",
        [],
    )
    .unwrap();
    drop(raw);
    let r = Journal::open_read_only(&path).unwrap();
    let mut lines = Vec::new();
    r.export(0, |l| {
        lines.push(l.to_owned());
        Ok(())
    })
    .unwrap();
    assert_eq!(lines, ["{\"kind\": broken", "a\u{FFFD}b"]);
}

#[test]
fn export_stops_at_the_first_output_error_and_reports_it_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open(&path);
    j.append(&mut (0..10).map(process_start).collect::<Vec<_>>()).unwrap();
    let mut calls = 0;
    let err = j
        .export(0, |_| {
            calls += 1;
            if calls == 3 { Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)) } else { Ok(()) }
        })
        .unwrap_err();
    assert_eq!(calls, 3);
    assert!(matches!(err, JournalError::Output { .. }));
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn stats_count_events_by_kind_and_the_running_totals_match_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = open_capped(&path, 128 * 1024);
    let (mut written, _) = fill(&mut j, 800, 64);
    // Deliver a few batches from the middle of what will be evicted next, so eviction must take
    // some delivered and some undelivered rows out of the backlog.
    let mut delivered = BTreeSet::new();
    let limits = picket_journal::SealLimits { max_events: 40, max_bytes: 1 << 20 };
    let mut last_batch = 0;
    for _ in 0..4 {
        let b = j
            .seal_next(limits, |d| {
                delivered.extend(d.lines.iter().map(|l| serde_json::from_str::<Event>(l).unwrap().seq));
                Ok(picket_journal::Sealed { hash: [7; 32], wire: vec![1] })
            })
            .unwrap()
            .unwrap();
        last_batch = b.batch_seq;
    }
    j.mark_delivered(last_batch).unwrap();
    written.extend(fill(&mut j, 700, 64).0);
    let s = j.stats().unwrap();
    let oldest_routine =
        exported(&j, 0).into_iter().find(|e| e.kind.retention() == Retention::Routine).unwrap();
    assert!(oldest_routine.seq > *delivered.last().unwrap() + 1, "the test evicted past the delivery");
    let stored: Vec<u64> = exported(&j, 0).iter().map(|e| e.seq).collect();
    drop(j);
    let raw = Connection::open(&path).unwrap();
    let count = |sql: &str| u64::try_from(raw.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap()).unwrap();
    assert_eq!(s.backlog, stored.iter().filter(|q| !delivered.contains(q)).count() as u64);
    let (rows, sum): (u64, u64) = raw
        .query_row(
            "SELECT count(*), sum(bytes), sum(length(CAST(json AS BLOB)) = bytes) FROM events",
            [],
            |r| {
                assert_eq!(r.get::<_, i64>(0)?, r.get::<_, i64>(2)?, "bytes column is the JSON length");
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap(), u64::try_from(r.get::<_, i64>(1)?).unwrap()))
            },
        )
        .unwrap();
    assert_eq!(s.events, rows);
    assert_eq!(s.logical_bytes, sum + rows * ROW_OVERHEAD, "incremental total = recomputed total");
    assert_eq!(s.max_bytes, 128 * 1024);
    assert_eq!(s.last_seq, count("SELECT max(seq) FROM events"));
    assert_eq!(s.by_kind.values().sum::<u64>(), s.events);
    assert_eq!(
        s.by_kind["alert"],
        u64::try_from(written.iter().filter(|e| e.kind == EventKind::Alert).count()).unwrap()
    );
    assert!(s.by_kind["journal.gap"] > 0);
    assert_eq!(s.first_seq, Some(count("SELECT min(seq) FROM events")));
    assert!(s.file_bytes > 0);
    drop(raw);
    let summary = Journal::open_read_only(&path).unwrap().summary().unwrap();
    assert!(summary.by_kind.is_empty());
    assert_eq!(JournalStatsLite::from(&summary), JournalStatsLite::from(&s));
}

/// The fields `summary` and `stats` share (file size aside, which the reader's open may change).
#[derive(Debug, PartialEq)]
struct JournalStatsLite(u64, u64, u64, Option<u64>, u64, u64, u64, u64);

impl From<&picket_journal::JournalStats> for JournalStatsLite {
    fn from(s: &picket_journal::JournalStats) -> Self {
        JournalStatsLite(
            s.events,
            s.logical_bytes,
            s.max_bytes,
            s.first_seq,
            s.last_seq,
            s.evicted_total,
            s.acked_seq,
            s.backlog,
        )
    }
}

#[test]
fn every_error_names_the_journal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let name = path.display().to_string();
    let missing = Journal::open_read_only(&path).unwrap_err();
    drop(open(&path));
    let mut r = Journal::open_read_only(&path).unwrap();
    let read_only = r.append(&mut [process_start(0)]).unwrap_err();
    std::fs::write(dir.path().join("garbage.db"), [7u8; 4096]).unwrap();
    let corrupt = Journal::open(&dir.path().join("garbage.db"), JournalOptions::new(HOST)).unwrap_err();
    for e in [&missing, &read_only] {
        assert!(e.to_string().contains(&name), "{e}");
        assert_eq!(e.path(), path);
    }
    assert!(corrupt.to_string().contains("garbage.db"), "{corrupt}");
}
