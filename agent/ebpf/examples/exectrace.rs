//! Root only.
//!
//! `exectrace [SECONDS]` prints every exec the eBPF tracer sees for SECONDS (default 5), then
//! the count and `lost`.
//!
//! `exectrace --bench [N]` measures the per-exec cost: N (default 2000) spawn+wait of /bin/true
//! without the tracer, then with it (drained every 64 execs, as a consumer would), and the
//! program's own run time from the kernel's BPF run-time statistics, which are on only while
//! this holds the `BPF_ENABLE_STATS` fd (host-wide for that moment; off again at exit).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_ebpf::{ExecTracer, ExecTracerOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--bench") {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
        bench(n);
    } else {
        trace(args.first().and_then(|s| s.parse().ok()).unwrap_or(5));
    }
}

fn start() -> ExecTracer {
    ExecTracer::start(ExecTracerOptions::default()).unwrap_or_else(|e| {
        eprintln!("exectrace: {e}");
        std::process::exit(1);
    })
}

fn trace(secs: u64) {
    let mut tracer = start();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut seen = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Err(e) = tracer.wait(Some(left)) {
            eprintln!("exectrace: poll: {e}");
            std::process::exit(1);
        }
        seen += tracer.drain(|r| {
            let argv: Vec<_> = r.argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
            println!(
                "{} pid={} ppid={} uid={} euid={} file={} argv={:?}{}",
                r.boot_ns,
                r.pid,
                r.ppid,
                r.uid,
                r.euid,
                String::from_utf8_lossy(&r.filename),
                argv,
                if r.truncated { " (truncated)" } else { "" }
            );
        });
    }
    println!("{seen} execs, {} lost", tracer.lost());
}

fn spawn_true(n: u32, mut between: impl FnMut()) -> Duration {
    let began = Instant::now();
    for i in 0..n {
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running /bin/true");
        if i % 64 == 63 {
            between();
        }
    }
    began.elapsed()
}

fn bench(n: u32) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    let without = spawn_true(n, || {});
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime);
    let mut tracer = start();
    let before = tracer.run_stats().unwrap_or_default();
    let mut records = 0usize;
    let with = spawn_true(n, || records += tracer.drain(|_| {}));
    records += tracer.drain(|_| {});
    let after = tracer.run_stats().unwrap_or_default();
    println!(
        "{n} x spawn+wait /bin/true: {:.1} us/exec without the tracer, {:.1} us/exec with it \
         ({records} records, {} lost)",
        per(without),
        per(with),
        tracer.lost()
    );
    let runs = after.0 - before.0;
    match stats {
        Ok(_fd) if runs > 0 => {
            let ns = (after.1 - before.1).as_nanos() / u128::from(runs);
            println!("BPF program: {runs} runs, {ns} ns per run (kernel run-time statistics)");
        }
        Ok(_) => println!("BPF program: no runs counted"),
        Err(e) => println!("BPF program: run-time statistics unavailable: {e}"),
    }
}
