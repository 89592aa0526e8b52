//! Journal hot paths: append (one event per transaction, batches, batches at the cap with
//! eviction, durable alert commits) and the JSON serialization every append does.
//!
//! `cargo bench -p picket-journal --bench journal -- --warm-up-time 1 --measurement-time 3`
//! Figures go to docs/BENCHMARKS.md (## Journal).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use picket_event::{Event, EventKind, File as EcsFile, FileHash, Process, Timestamp, User, severity};
use picket_journal::{Journal, JournalOptions};

/// A process.start as the process source emits it: executable, argv, command line, user; 395
/// bytes of JSON once `seq` is set.
fn process_start(i: u64) -> Event {
    let mut ev = Event::new(
        EventKind::ProcessStart,
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i64::try_from(i).unwrap_or(0)),
    );
    ev.host.id = "3f2a9c1e5b7d4e08".into();
    let args =
        vec!["/usr/bin/curl".to_owned(), "-fsSL".to_owned(), "https://updates.example.net/fw.bin".to_owned()];
    ev.process = Some(Process {
        pid: Some(31_337),
        name: Some("curl".into()),
        executable: Some("/usr/bin/curl".into()),
        command_line: Some(args.join(" ")),
        args: Some(args),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("www-data".into()), id: Some("33".into()) });
    ev
}

/// A file.modify with a SHA-256 and the user; 302 bytes.
fn file_modify(i: u64) -> Event {
    let mut ev = Event::new(
        EventKind::FileModify,
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i64::try_from(i).unwrap_or(0)),
    );
    ev.host.id = "3f2a9c1e5b7d4e08".into();
    ev.file = Some(EcsFile {
        path: "/etc/cron.d/0hourly".into(),
        hash: Some(FileHash {
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        }),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("root".into()), id: Some("0".into()) });
    ev
}

fn batch(n: u64) -> Vec<Event> {
    (0..n).map(|i| if i % 2 == 0 { process_start(i) } else { file_modify(i) }).collect()
}

fn json_len(ev: &Event) -> usize {
    let mut ev = ev.clone();
    ev.seq = 1_000_000;
    serde_json::to_vec(&ev).map_or(0, |v| v.len())
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    eprintln!(
        "event sizes with seq set: process.start {} B, file.modify {} B",
        json_len(&process_start(0)),
        json_len(&file_modify(0))
    );

    let mut g = c.benchmark_group("journal");
    // Large enough that these runs never evict: they measure the append path alone.
    let unbounded = JournalOptions::new("bench").with_max_bytes(16 << 30);

    {
        let mut j = Journal::open(&dir.path().join("single.db"), unbounded.clone()).unwrap();
        let mut one = [process_start(0)];
        g.throughput(Throughput::Elements(1));
        g.bench_function("append_single", |b| b.iter(|| j.append(black_box(&mut one)).unwrap()));

        // One alert per transaction: synchronous=FULL, i.e. one fsync per commit.
        let mut alert = [Event::new(EventKind::Alert, Timestamp::from_unix_nanos(1))];
        alert[0].event.severity = severity::HIGH;
        g.bench_function("append_single_alert_durable", |b| {
            b.iter(|| j.append(black_box(&mut alert)).unwrap())
        });
    }

    for n in [256u64, 1024] {
        let mut j = Journal::open(&dir.path().join(format!("batched-{n}.db")), unbounded.clone()).unwrap();
        let mut events = batch(n);
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("append_batched", n), &n, |b, _| {
            b.iter(|| j.append(black_box(&mut events)).unwrap())
        });
    }

    {
        // Steady state of a full journal: every append also evicts (8 MiB cap, pre-filled).
        let mut j = Journal::open(
            &dir.path().join("at-cap.db"),
            JournalOptions::new("bench").with_max_bytes(8 << 20),
        )
        .unwrap();
        let mut events = batch(256);
        while j.summary().unwrap().evicted_total == 0 {
            j.append(&mut events).unwrap();
        }
        g.throughput(Throughput::Elements(256));
        g.bench_with_input(BenchmarkId::new("append_batched_at_cap", 256), &256, |b, _| {
            b.iter(|| j.append(black_box(&mut events)).unwrap())
        });
    }

    {
        let mut ev = process_start(0);
        ev.seq = 1_000_000;
        let mut buf = Vec::with_capacity(1024);
        g.throughput(Throughput::Elements(1));
        g.bench_function("serialize_json", |b| {
            b.iter(|| {
                buf.clear();
                serde_json::to_writer(&mut buf, black_box(&ev)).unwrap();
                buf.len()
            })
        });
    }
    g.finish();
}

criterion_group!(journal, benches);
criterion_main!(journal);
