//! Per-block latency of the ways to put an address into an nftables set, side by side:
//!
//! - `netlink`: what picket uses, [`NetContainment::block`] (one netlink transaction, in process)
//!   of an address not yet blocked; `netlink-reblock` of one already blocked; `netlink-unblock`;
//! - `nft-cli`: spawn `nft add element inet picket block4 { IP timeout 60s }` per block;
//! - `nft-json`: spawn `nft -j -f -` per block, JSON on stdin (what the `nftables` crate does);
//! - `nft-interactive`: one long-lived `nft -i` fed commands on stdin; as it acknowledges nothing,
//!   each command is followed by a deliberate syntax error as a marker, and everything on stderr
//!   before the marker's own error is the command's error.
//!
//! Plus a batch of 1000 addresses in one `block` call, and `unblock`.
//!
//! Everything runs inside a network namespace the bench makes (`picket-b-net-PID`) and deletes at
//! the end: the benchmarks run on a thread that entered it, so every nft child and netlink socket
//! is in there. The host's ruleset is never touched; without root or nft the bench says so and
//! does nothing.
//!
//! `cargo bench -p picket-contain --bench net`

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use picket_contain::net::{NetContainment, NetOptions, Netns};

/// Addresses cycled through: 10.254.0.0/20, well under the set's capacity.
const POOL: u32 = 4096;

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 254, 0, 0)) + i % POOL))
}

struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn can_run() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let nft = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    root && nft
}

fn main() {
    if !can_run() {
        eprintln!("\n!!!!! SKIPPED (needs root + nftables): bench net\n");
        return;
    }
    let name = format!("picket-b-net-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
    assert!(ok, "ip netns add {name} failed");
    let _guard = NamespaceGuard(name.clone());
    let ns = Netns::open(&name).expect("open namespace");
    ns.run(|| {
        assert_inside_a_namespace();
        let mut c = Criterion::default().configure_from_args();
        bench_block(&mut c);
        c.final_summary();
    })
    .expect("enter namespace");
}

/// A last check before touching nftables: this thread is no longer in the namespace the process
/// started in (`/proc/self` is the main thread's view, `/proc/thread-self` this thread's).
fn assert_inside_a_namespace() {
    let mine = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let process = std::fs::read_link("/proc/self/ns/net").expect("the process's netns");
    assert_ne!(mine, process, "refusing to benchmark in the host's network namespace");
}

fn bench_block(c: &mut Criterion) {
    let mut net = NetContainment::open(NetOptions::default()).expect("open");
    let ttl = Some(Duration::from_secs(60));

    let mut g = c.benchmark_group("block_one");
    g.measurement_time(Duration::from_secs(3));
    // A fresh block, the hot path: only the block is timed; the unblock that makes the next
    // address fresh again is not.
    g.bench_function("netlink", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for k in 0..iters {
                let ip = addr(u32::try_from(k % u64::from(POOL)).unwrap_or(0));
                let started = Instant::now();
                net.block(&[(ip, ttl)]).expect("block");
                timed += started.elapsed();
                net.unblock(&[ip]).expect("unblock");
            }
            timed
        })
    });
    // Blocking an address that is already blocked (a new TTL).
    net.block(&[(addr(0), ttl)]).expect("block");
    g.bench_function("netlink-reblock", |b| b.iter(|| net.block(&[(addr(0), ttl)]).expect("block")));
    g.bench_function("netlink-unblock", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                net.block(&[(addr(1), ttl)]).expect("block");
                let started = Instant::now();
                net.unblock(&[addr(1)]).expect("unblock");
                timed += started.elapsed();
            }
            timed
        })
    });
    let mut i = 0u32;

    let mut nfti = Interactive::start();
    g.bench_function("nft-interactive", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            nfti.run(&format!("add element inet picket block4 {{ {} timeout 60s }}", addr(i)))
                .expect("nft -i");
        })
    });
    // The error path works the same way: a command naming a set that isn't there.
    let err = nfti.run("add element inet picket no_such_set { 10.254.0.1 }").unwrap_err();
    assert!(err.contains("No such file or directory"), "{err}");
    drop(nfti);

    g.sample_size(20);
    g.bench_function("nft-cli", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let elem = format!("{{ {} timeout 60s }}", addr(i));
            let st = Command::new("nft").args(["add", "element", "inet", "picket", "block4", &elem]).status();
            assert!(st.expect("spawn nft").success());
        })
    });
    g.bench_function("nft-json", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let json = format!(
                concat!(
                    r#"{{"nftables":[{{"add":{{"element":{{"#,
                    r#""family":"inet","table":"picket","name":"block4","#,
                    r#""elem":[{{"elem":{{"val":"{}","timeout":60}}}}]}}}}}}]}}"#
                ),
                addr(i)
            );
            let mut child =
                Command::new("nft").args(["-j", "-f", "-"]).stdin(Stdio::piped()).spawn().expect("spawn nft");
            child.stdin.take().expect("stdin").write_all(json.as_bytes()).expect("write");
            assert!(child.wait().expect("wait").success());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("block_batch");
    g.sample_size(20);
    let batch: Vec<(IpAddr, Option<Duration>)> = (0..1000).map(|k| (addr(k), ttl)).collect();
    let ips: Vec<IpAddr> = batch.iter().map(|(ip, _)| *ip).collect();
    net.unblock(&ips).expect("unblock batch");
    g.bench_function("netlink-1000", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                net.block(&batch).expect("block batch");
                timed += started.elapsed();
                net.unblock(&ips).expect("unblock batch");
            }
            timed
        })
    });
    g.finish();
    net.remove_table().expect("remove table");
}

/// A long-lived `nft -i`, one command at a time.
struct Interactive {
    child: Child,
    stdin: ChildStdin,
    stderr: BufReader<ChildStderr>,
    n: u64,
}

impl Interactive {
    fn start() -> Interactive {
        let mut child = Command::new("nft")
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft -i");
        let stdin = child.stdin.take().expect("stdin");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        Interactive { child, stdin, stderr, n: 0 }
    }

    /// Runs `cmd`; `Err` with nft's message if it failed.
    fn run(&mut self, cmd: &str) -> Result<(), String> {
        self.n += 1;
        // nft answers the marker line with 3 lines on stderr: "Error: syntax error...", the
        // marker itself, and a caret line.
        let marker = format!("picket-sync-{}", self.n);
        write!(self.stdin, "{cmd}\n{marker}\n").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.stderr.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("nft -i exited".into());
            }
            if line.trim_end() == marker {
                let mut caret = String::new();
                let _ = self.stderr.read_line(&mut caret);
                lines.pop(); // the marker's own "Error: syntax error" line
                break;
            }
            lines.push(line);
        }
        if lines.is_empty() { Ok(()) } else { Err(lines.concat()) }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
