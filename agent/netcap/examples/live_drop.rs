//! The live source alone, for `bench/live-drop.sh`: capture on INTERFACE for SECONDS through the
//! same `run_blocking` the agent runs (default settings: 4 MiB ring, snaplen 1600, process
//! attribution on), the events drained from the bounded queue as the pipeline would, then one
//! line of counters:
//!
//! `recv=N kernel_drop=N if_drop=N events=N queue_full=N cpu_secs=F cpu_pct=F`
//!
//! `recv`/`kernel_drop`/`if_drop` are libpcap's `ps_recv`/`ps_drop`/`ps_ifdrop` as the source's
//! status line reports them (on Linux `recv` includes the dropped ones); `events` what came out
//! of the queue; `cpu_secs` this process's CPU time during the capture, `cpu_pct` the same in
//! percent of one core over the capture's wall time.
//!
//!     cargo run --release -p picket-netcap --example live_drop -- va 5 [BUFFER_BYTES]

use std::time::{Duration, Instant};

use picket_capture::{Drops, EventTx, SourceStatus, shutdown_pair};
use picket_netcap::live::{LiveConfig, run_blocking};

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// The number before `word` in the status line.
fn field(status: &str, word: &str) -> u64 {
    let Some(i) = status.find(word) else { return 0 };
    status[..i].split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iface = args.get(1).cloned().unwrap_or_else(|| "any".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut cfg = LiveConfig { interface: iface, ..LiveConfig::default() };
    // `NO_ATTRIBUTION=1`: sources.network.attribute_processes = false.
    cfg.attribute_processes = std::env::var_os("NO_ATTRIBUTION").is_none();
    if let Some(b) = args.get(3).and_then(|s| s.parse().ok()) {
        cfg.buffer_size = b;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let drops = Drops::default();
        let status = SourceStatus::default();
        let (trigger, shutdown) = shutdown_pair();
        let st = status.clone();
        let out = EventTx::new("network", tx, drops.clone());
        let task = tokio::task::spawn_blocking(move || run_blocking(cfg, out, st, shutdown));
        let start = Instant::now();
        while !status.snapshot().get("network").is_some_and(|s| s.starts_with("running")) {
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("live_drop: source did not start: {:?}", status.snapshot());
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("READY");
        let t0 = cpu_ticks();
        let began = Instant::now();
        let end = began + Duration::from_secs(secs);
        let mut events = 0u64;
        while Instant::now() < end {
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                events += 1;
            }
        }
        trigger.trigger();
        while rx.recv().await.is_some() {
            events += 1;
        }
        task.await.unwrap().unwrap();
        let cpu_secs = (cpu_ticks() - t0) as f64 / 100.0;
        let cpu = cpu_secs / began.elapsed().as_secs_f64() * 100.0;
        let s = status.snapshot().get("network").cloned().unwrap_or_default();
        let d = drops.snapshot();
        println!(
            "recv={} kernel_drop={} if_drop={} events={} queue_full={} cpu_secs={cpu_secs:.2} cpu_pct={cpu:.1}",
            field(&s, "received"),
            field(&s, "dropped by the kernel"),
            field(&s, "by the interface"),
            events,
            d.get("network.queue_full").copied().unwrap_or(0),
        );
        eprintln!("status: {s}");
        eprintln!("drops: {d:?}");
    });
}
