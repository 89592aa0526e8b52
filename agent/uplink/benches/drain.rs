//! Backlog drain: N journaled events (default 1,000,000; `PICKET_DRAIN_EVENTS`) sealed, signed
//! and published to a real mosquitto on loopback with TLS and client certificates, delivered on
//! PUBACK; then the same backlog verified and written by the collector.
//!
//! `cargo bench -p picket-uplink --bench drain` (needs mosquitto and openssl). Prints events/s and
//! bytes on the wire per event; figures go to docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picket_event::{Event, EventKind, Timestamp};
use picket_journal::{Journal, JournalOptions};
use picket_uplink::Endpoint;
use picket_uplink::collector::{self, CollectorConfig, Output};
use picket_uplink::sender::{self, SenderConfig, SharedStatus};
use picket_uplink::testkit::{Broker, make_pki};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists harness=false benches this way
    }
    for tool in ["mosquitto", "openssl"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("*** SKIPPED drain bench: needs {tool} (scripts/test-deps.sh) ***");
            return;
        }
    }
    let n: u64 = std::env::var("PICKET_DRAIN_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let broker = Broker::new(d);

    // The backlog: realistic events (~450 bytes of JSON), one alert in 50.
    let journal_path = d.join("data/journal.db");
    let opts = JournalOptions::new("bench-device").with_max_bytes(8 << 30);
    let t = Instant::now();
    {
        let mut j = Journal::open(&journal_path, opts.clone()).unwrap();
        let mut batch = Vec::with_capacity(1024);
        for i in 0..n {
            let kind = if i % 50 == 49 { EventKind::Alert } else { EventKind::ProcessStart };
            let mut e = Event::new(kind, Timestamp::now());
            e.host.id = "bench-device".into();
            e.message = Some(format!(
                "/usr/bin/curl -s https://updates.example.net/check?id={i} --max-time 5 -o /tmp/update.json ({})",
                "x".repeat(220)
            ));
            batch.push(e);
            if batch.len() == 1024 {
                j.append(&mut batch).unwrap();
                batch.clear();
            }
        }
        j.append(&mut batch).unwrap();
    }
    eprintln!("journaled {n} events in {:.1} s", t.elapsed().as_secs_f64());

    let identity = Arc::new(
        picket_wire::Identity::load_or_create(&d.join("data"), picket_wire::DEVICE_KEY_FILE, "bench-device")
            .unwrap(),
    );
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::write(d.join("keys/bench.pub"), identity.public_key_line()).unwrap();
    let endpoint = |cert: &str| Endpoint {
        tls: true,
        host: "127.0.0.1".into(),
        port: broker.port,
        ca_file: Some(d.join("ca.crt")),
        cert_file: Some(d.join(format!("{cert}.crt"))),
        key_file: Some(d.join(format!("{cert}.key"))),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Start the collector first so the broker queues nothing; it runs during the drain.
    let mut ccfg = CollectorConfig::new(
        endpoint("collector"),
        "bench".into(),
        d.join("keys"),
        d.join("collect"),
        Output::File(d.join("collect/events.ndjson")),
    );
    ccfg.client_id = "bench-collector".into();
    let (cstop_tx, cstop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = rt.spawn(collector::run(ccfg, async move {
        let _ = cstop_rx.await;
    }));
    std::thread::sleep(Duration::from_millis(500));

    let status = SharedStatus::default();
    let mut cfg = SenderConfig::new(endpoint("agent"), "bench".into(), journal_path.clone(), opts, identity);
    if let Some(b) = std::env::var("PICKET_DRAIN_BATCH_BYTES").ok().and_then(|v| v.parse().ok()) {
        cfg.limits.max_bytes = b;
        cfg.limits.max_events = 16_384;
    }
    eprintln!(
        "batches of at most {} events / {} bytes, window {}",
        cfg.limits.max_events, cfg.limits.max_bytes, cfg.window
    );
    let (wake_tx, wake_rx) = tokio::sync::watch::channel(n);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let sender_task = rt.spawn(sender::run(cfg, status.clone(), wake_rx, async move {
        let _ = stop_rx.await;
    }));
    let drained = loop {
        std::thread::sleep(Duration::from_millis(50));
        let s = status.lock().unwrap().clone();
        if s.events_delivered >= n {
            break (t.elapsed(), s);
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "drain stalled: {s:?}");
    };
    let collected = loop {
        let lines = std::fs::read(d.join("collect/events.ndjson"))
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if lines as u64 >= n {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "collector stalled at {lines}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = stop_tx.send(());
    let _ = cstop_tx.send(());
    let _ = rt.block_on(sender_task);
    let _ = rt.block_on(collector);
    drop(wake_tx);
    let (elapsed, s) = drained;
    let secs = elapsed.as_secs_f64();
    println!(
        "drain: {n} events in {secs:.2} s = {:.0} events/s delivered on PUBACK ({} batches, TLS + Ed25519)",
        n as f64 / secs,
        s.batches_published
    );
    println!(
        "wire: {:.1} bytes per event ({} bytes in batches)",
        s.bytes_published as f64 / n as f64,
        s.bytes_published
    );
    println!(
        "collector: all {n} verified and written after {:.2} s = {:.0} events/s",
        collected.as_secs_f64(),
        n as f64 / collected.as_secs_f64()
    );
    drop(broker);
}
