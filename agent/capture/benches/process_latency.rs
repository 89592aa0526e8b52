//! Exec → `process.start` latency of the process source, end to end, at a paced rate of
//! `/bin/true <token> <i>` spawns. Two figures per event:
//!
//! * `spawn→event`: from just before `Command::spawn()` to the event leaving the source's queue
//!   (includes the fork and exec themselves, ~0.3–1 ms of it);
//! * `exec→event`: from the kernel's exec (the event's `@timestamp`, taken by the kernel) to the
//!   event leaving the queue: the agent's own share.
//!
//! Needs root (the netlink process connector); prints SKIPPED otherwise.
//!
//! ```text
//! cargo bench -p picket-capture --bench process_latency
//! PICKET_BENCH_RATES=100,1000,2000 PICKET_BENCH_EXECS=3000 cargo bench -p picket-capture --bench process_latency
//! ```
//!
//! For each rate it prints p50, p99 and max latency, how many execs had no event at all
//! (missed), how many events came without /proc details (vanished: matched by pid; and of those,
//! how many had their path from fanotify), the CPU share of the reader and hashing threads, and
//! the source's drop counters.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use picket_capture::process::ProcessSource;
use picket_capture::{Drops, EventTx, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind};
use tokio::sync::mpsc;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        eprintln!(
            "!!!!!!!! SKIPPED (needs root): process_latency: the netlink process connector needs CAP_NET_ADMIN"
        );
        return;
    }
    let rates: Vec<u32> = std::env::var("PICKET_BENCH_RATES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let execs: usize = std::env::var("PICKET_BENCH_EXECS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        for rate in rates {
            run(rate, execs).await;
        }
    });
}

struct Spawned {
    i: usize,
    pid: u32,
    t0: Instant,
}

async fn run(rate: u32, n: usize) {
    let (tx, mut rx) = mpsc::channel::<Box<Event>>(64 * 1024);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(ProcessSource::NAME, tx, drops.clone());
    let task = tokio::spawn(ProcessSource::new().run(out, status.clone(), shutdown));
    let t = Instant::now();
    while !status.snapshot().get(ProcessSource::NAME).is_some_and(|s| s.starts_with("running")) {
        assert!(t.elapsed() < Duration::from_secs(5), "source not running: {:?}", status.snapshot());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let cpu_before = thread_cpu_ticks("picket-process");
    let hash_before = thread_cpu_ticks("picket-hash");
    let cpu_t0 = Instant::now();
    let token = format!("picket-bench-{}-{rate}", std::process::id());
    let (spawned_tx, spawned_rx) = std_mpsc::channel::<Spawned>();
    let spawner = {
        let token = token.clone();
        std::thread::spawn(move || spawn_paced(&token, rate, n, &spawned_tx))
    };

    // Arrival time of each event, by index (argument) and, for thin events, by pid.
    let mut by_index: HashMap<usize, Instant> = HashMap::new();
    let mut agent_lat: Vec<Duration> = Vec::with_capacity(n);
    // Thin events by pid: arrival, and whether fanotify gave the program's path.
    let mut by_pid: HashMap<u32, (Instant, bool)> = HashMap::new();
    let expected = Duration::from_secs_f64(f64::from(u32::try_from(n).unwrap_or(u32::MAX)) / f64::from(rate));
    let deadline = Instant::now() + expected + Duration::from_secs(5);
    while by_index.len() < n && Instant::now() < deadline {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await else {
            continue;
        };
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        if ev.kind != EventKind::ProcessStart {
            continue;
        }
        let Some(p) = ev.process.as_ref() else { continue };
        let args = p.args.as_deref().unwrap_or(&[]);
        if args.len() == 3 && args[1] == token {
            if let Ok(i) = args[2].parse() {
                by_index.insert(i, now);
                agent_lat.push(wall.duration_since(ev.timestamp.to_system_time()).unwrap_or_default());
            }
        } else if let Some(pid) = p.pid
            && ev.message.is_some()
        {
            by_pid.insert(pid, (now, p.executable.is_some()));
        }
    }
    let spawned: Vec<Spawned> = spawned_rx.try_iter().collect();
    let achieved = spawner.join().unwrap();
    // Ticks are 10 ms: over a run of seconds that is within a percent.
    let secs = cpu_t0.elapsed().as_secs_f64();
    let cpu_pct = thread_cpu_ticks("picket-process").saturating_sub(cpu_before) as f64 / 100.0 / secs * 100.0;
    let hash_pct = thread_cpu_ticks("picket-hash").saturating_sub(hash_before) as f64 / 100.0 / secs * 100.0;
    trigger.trigger();
    let _ = task.await;

    let mut lat = Vec::with_capacity(n);
    let (mut missed, mut vanished, mut with_path) = (0, 0, 0);
    for s in &spawned {
        match by_index.get(&s.i).or_else(|| by_pid.get(&s.pid).map(|(t, _)| t)) {
            Some(t) => {
                if !by_index.contains_key(&s.i) {
                    vanished += 1;
                    with_path += usize::from(by_pid.get(&s.pid).is_some_and(|&(_, path)| path));
                }
                lat.push(t.saturating_duration_since(s.t0));
            }
            None => missed += 1,
        }
    }
    lat.sort();
    agent_lat.sort();
    // Nearest rank: the value at or above `per_mille` / 1000 of the sorted samples.
    let pct = |v: &[Duration], per_mille: usize| -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() * per_mille).div_ceil(1000)).saturating_sub(1).min(v.len() - 1)]
    };
    println!(
        "process_latency rate={rate}/s (achieved {achieved:.0}/s) execs={}: spawn→event p50={:.2?} p99={:.2?} max={:.2?}; \
         exec→event p50={:.2?} p99={:.2?} max={:.2?}; missed={missed} vanished={vanished} \
         (with path from fanotify {with_path}) reader_cpu={cpu_pct:.1}% hash_cpu={hash_pct:.1}% drops={:?}",
        spawned.len(),
        pct(&lat, 500),
        pct(&lat, 990),
        lat.last().copied().unwrap_or_default(),
        pct(&agent_lat, 500),
        pct(&agent_lat, 990),
        agent_lat.last().copied().unwrap_or_default(),
        drops.snapshot(),
    );
}

/// utime + stime of the source's thread `name` (`picket-process`, `picket-hash`), in clock ticks.
fn thread_cpu_ticks(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        if comm.strip_suffix(name).is_some_and(|c| c.ends_with('(')) {
            let f: Vec<&str> = rest.split_ascii_whitespace().collect();
            // Fields 14 and 15 of stat; `rest` starts at field 3.
            return f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    0
}

/// Spawn `n` `/bin/true` at `rate` per second; reap them on another thread. Returns the rate
/// achieved.
fn spawn_paced(token: &str, rate: u32, n: usize, out: &std_mpsc::Sender<Spawned>) -> f64 {
    let (reap_tx, reap_rx) = std_mpsc::channel::<Child>();
    let reaper = std::thread::spawn(move || {
        for mut c in reap_rx {
            let _ = c.wait();
        }
    });
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let began = Instant::now();
    for i in 0..n {
        let due = began + period * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t0 = Instant::now();
        let child = Command::new("/bin/true")
            .arg(token)
            .arg(i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn /bin/true");
        let _ = out.send(Spawned { i, pid: child.id(), t0 });
        let _ = reap_tx.send(child);
    }
    let took = began.elapsed();
    drop(reap_tx);
    let _ = reaper.join();
    n as f64 / took.as_secs_f64()
}
