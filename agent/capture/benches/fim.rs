//! File integrity monitoring: how fast, how big.
//!
//! ```text
//! cargo bench -p picket-capture --bench fim
//! ```
//!
//! Criterion groups:
//!
//! * `fim_hash`: [`sha256_file`] on a 64 MiB file in the page cache (MB/s), beside the
//!   `sha256sum` binary on the same file (its process start included, negligible at this size);
//! * `fim_events`: 1,000 files written into a watched directory (create + close-write each),
//!   until all 2,000 events (`file.create`, `file.modify`, each with metadata, the modify with
//!   the SHA-256) left the source: events/s, end to end through inotify, the worker and SQLite;
//!   beside it the same writes into an unwatched directory (throughput counted the same way), so
//!   the file system's own cost on the machine is visible;
//! * `fim_scan`: the start-up scan of a tree of 10,000 small files against an unchanged baseline
//!   (the common restart) and building the baseline (first start, hashing every file).
//!
//! After `fim_events` it prints the CPU time the source's own threads (notify's and the
//! worker) spent per event, and what that makes at 1,000 events/s.
//!
//! Before them it prints the memory per watched directory: the agent's resident memory with the
//! source watching 10,000 directories minus without, divided by 10,000 (user space only: the
//! kernel's own cost per inotify watch is not in our RSS), and the baseline's size per file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use picket_capture::file::{FileOptions, FileSource, sha256_file};
use picket_capture::{Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::Event;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const HASH_BYTES: usize = 64 << 20;
const FILES_PER_BURST: usize = 1000;
const SCAN_FILES: usize = 10_000;
const DIRS: usize = 10_000;

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

struct Src {
    rx: mpsc::Receiver<Box<Event>>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), picket_capture::CaptureError>>,
    drops: Drops,
}

/// Starts the source and waits until its start-up scan is done.
async fn start(opts: FileOptions, capacity: usize) -> Src {
    let (tx, rx) = mpsc::channel(capacity);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(FileSource::NAME, tx, drops.clone());
    let task = tokio::spawn(FileSource::with_options(opts).run(out, status.clone(), shutdown));
    loop {
        let st = status.snapshot().get(FileSource::NAME).cloned().unwrap_or_default();
        if st.starts_with("running") && !st.contains("start-up scan") {
            break;
        }
        assert!(!task.is_finished(), "source ended: {st}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Src { rx, trigger, task, drops }
}

impl Src {
    async fn stop(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }

    /// Receives `n` events (panics after a minute without one).
    async fn take(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("event within a minute")
                .expect("queue open");
        }
    }

    async fn drain(&mut self) {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {}
    }
}

fn rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// (utime, stime) in clock ticks, of this process's threads that belong to the file source:
/// notify's inotify thread and the worker.
fn source_cpu_ticks() -> (u64, u64) {
    let mut total = (0, 0);
    for task in fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm != "picket-fim" && !comm.starts_with("notify-rs") {
            continue;
        }
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total.0 += n(11);
        total.1 += n(12);
    }
    total
}

fn tree_of_files(root: &Path, n: usize) {
    for i in 0..n {
        let d = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&d).unwrap();
        }
        fs::write(d.join(format!("f{i:05}")), format!("content of file {i}\n").repeat(8)).unwrap();
    }
}

fn memory_per_watched_directory() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..DIRS {
        fs::create_dir_all(dir.path().join(format!("a{:02}/b{i:05}", i % 100))).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let n_dirs = DIRS + 100 + 1;
    rt.block_on(async {
        // Warm up the allocator and runtime with a tiny tree first, so the difference is the watches.
        let small = tempfile::tempdir().unwrap();
        let s = start(FileOptions::new(vec![small.path().to_path_buf()]), 64).await;
        s.stop().await;
        let before = rss_bytes();
        let mut opts = FileOptions::new(vec![dir.path().to_path_buf()]);
        opts.baseline = Some(data.path().join("baseline.db"));
        let s = start(opts, 64).await;
        let after = rss_bytes();
        s.stop().await;
        let per_dir = after.saturating_sub(before) / n_dirs as u64;
        println!(
            "fim memory: {n_dirs} watched directories: RSS {} KiB -> {} KiB, {per_dir} bytes per directory (user space)",
            before / 1024,
            after / 1024
        );
    });
    // Baseline size per file.
    let tree = tempfile::tempdir().unwrap();
    tree_of_files(tree.path(), SCAN_FILES);
    let db = data.path().join("files.db");
    rt.block_on(async {
        let mut opts = FileOptions::new(vec![tree.path().to_path_buf()]);
        opts.baseline = Some(db.clone());
        start(opts, 64).await.stop().await;
    });
    let size: u64 = ["files.db", "files.db-wal"]
        .iter()
        .filter_map(|f| fs::metadata(data.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "fim baseline: {SCAN_FILES} files ({} directories): {} KiB on disk, {} bytes per path",
        SCAN_FILES / 100 + 1,
        size / 1024,
        size / (SCAN_FILES as u64 + 101)
    );
}

fn bench_hash(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    let data: Vec<u8> = (0..HASH_BYTES).map(|i| (i % 251).to_le_bytes()[0]).collect();
    fs::write(&f, &data).unwrap();
    let mut g = c.benchmark_group("fim_hash");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(HASH_BYTES as u64));
    g.bench_function("sha256_file_64MiB", |b| {
        b.iter(|| sha256_file(&f, u64::MAX).unwrap().sha256.unwrap());
    });
    g.bench_function("sha256sum_binary_64MiB", |b| {
        b.iter(|| {
            let out = Command::new("sha256sum").arg(&f).output().unwrap();
            assert!(out.status.success());
        });
    });
    g.finish();
}

fn bench_events(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    let mut src = rt.block_on(start(FileOptions::new(vec![root.clone()]), 8192));
    let mut g = c.benchmark_group("fim_events");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(2 * FILES_PER_BURST as u64));
    let mut round = 0usize;
    g.bench_function(BenchmarkId::new("write_files_to_events", FILES_PER_BURST), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let names: Vec<PathBuf> =
                    (0..FILES_PER_BURST).map(|i| root.join(format!("r{round}-{i}"))).collect();
                let t0 = Instant::now();
                let writer = {
                    let names = names.clone();
                    std::thread::spawn(move || {
                        for n in &names {
                            fs::write(n, b"some bytes of content\n").unwrap();
                        }
                    })
                };
                rt.block_on(src.take(2 * FILES_PER_BURST));
                total += t0.elapsed();
                writer.join().unwrap();
                // Clean up outside the clock.
                for n in &names {
                    let _ = fs::remove_file(n);
                }
                rt.block_on(src.drain());
            }
            total
        });
    });
    // The same writes into a directory nobody watches: what the file system alone costs here.
    let quiet = tempfile::tempdir().unwrap();
    g.bench_function(BenchmarkId::new("write_files_unwatched", FILES_PER_BURST), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let names: Vec<PathBuf> =
                    (0..FILES_PER_BURST).map(|i| quiet.path().join(format!("r{round}-{i}"))).collect();
                let t0 = Instant::now();
                for n in &names {
                    fs::write(n, b"some bytes of content\n").unwrap();
                }
                total += t0.elapsed();
                for n in &names {
                    let _ = fs::remove_file(n);
                }
            }
            total
        });
    });
    g.finish();

    // CPU the source itself spends per event: the user + system time of notify's thread and the
    // worker thread over 5 bursts, divided by the events they produced.
    let before = source_cpu_ticks();
    let mut events = 0;
    for _ in 0..5 {
        round += 1;
        let names: Vec<PathBuf> = (0..FILES_PER_BURST).map(|i| root.join(format!("c{round}-{i}"))).collect();
        for n in &names {
            fs::write(n, b"some bytes of content\n").unwrap();
        }
        rt.block_on(src.take(2 * FILES_PER_BURST));
        events += 2 * FILES_PER_BURST;
        for n in &names {
            let _ = fs::remove_file(n);
        }
        rt.block_on(src.drain());
    }
    let after = source_cpu_ticks();
    // The deletes count too (1 event each): they ran through the same threads.
    let all_events = events + 5 * FILES_PER_BURST;
    let (user, sys) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    let ticks = user + sys;
    let hz = 100.0; // USER_HZ on Linux
    let us_per_event = ticks as f64 / hz * 1e6 / all_events as f64;
    println!(
        "fim cpu: {all_events} events (create, modify with hash, delete) cost {ticks} ticks ({user} user, {sys} \
         system) of notify + worker threads: {us_per_event:.1} us CPU per event, {:.2}% of one core at 1,000 events/s",
        us_per_event * 1000.0 / 1e6 * 100.0
    );
    let drops = src.drops.snapshot();
    if !drops.is_empty() {
        println!("fim_events drops: {drops:?}");
    }
    rt.block_on(src.stop());
}

fn bench_scan(c: &mut Criterion) {
    let rt = rt();
    let tree = tempfile::tempdir().unwrap();
    tree_of_files(tree.path(), SCAN_FILES);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("baseline.db");
    let opts = |db: &Path| {
        let mut o = FileOptions::new(vec![tree.path().to_path_buf()]);
        o.baseline = Some(db.to_path_buf());
        o
    };
    // The baseline the "unchanged" case compares against.
    rt.block_on(async { start(opts(&db), 64).await.stop().await });
    let mut g = c.benchmark_group("fim_scan");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(SCAN_FILES as u64));
    g.bench_function("startup_scan_unchanged_10k_files", |b| {
        b.iter(|| rt.block_on(async { start(opts(&db), 64).await.stop().await }));
    });
    let mut n = 0;
    g.bench_function("first_start_builds_baseline_10k_files", |b| {
        b.iter(|| {
            n += 1;
            let fresh = data.path().join(format!("fresh-{n}.db"));
            rt.block_on(async { start(opts(&fresh), 64).await.stop().await });
        });
    });
    g.finish();
}

criterion_group!(benches, bench_hash, bench_events, bench_scan);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    memory_per_watched_directory();
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
