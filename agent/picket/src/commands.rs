//! The one-shot commands: `config check`, `journal stats|export`, `status`, `actions list|revert`,
//! and the plain answer of commands whose capability is not in this build yet.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use std::time::SystemTime;

use anyhow::Context;
use picket_contain::actuator::{self, HostBackend};
use picket_contain::net::NetOptions;
use picket_contain::state::{Record, STATE_FILE};
use picket_event::Timestamp;
use picket_journal::Journal;

use crate::config;
use crate::health::{self, StatusFile};

/// Exit code for invalid input (config, policy): every error printed, nothing started.
const EXIT_INVALID: u8 = 2;

pub fn config_check(file: &Path) -> ExitCode {
    match config::load_file(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `picket replay --format pcap`: a pcap or pcapng file (or `-`) decoded by picket-netcap into
/// `net.flow` and `net.dns` events, in capture order, through the real policy engine and the
/// Sigma rules (`network_connection`, `dns_query`), as `replay --format events` does. Pure Rust: works in builds
/// without libpcap. Never touches the host. A summary of what was decoded goes to stderr.
pub fn replay_pcap(input: &str, policies: Option<&Path>, emit: &str) -> anyhow::Result<ExitCode> {
    use std::io::Read;

    use picket_netcap::{NetConfig, ReplayError};
    let emit = crate::policy::Emit::parse(emit)?;
    let mut rules = match crate::policy::replay_rules(policies) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(input).with_context(|| format!("opening {input}"))?)
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut n = 0u64;
    let result =
        picket_netcap::replay(io::BufReader::with_capacity(256 * 1024, reader), NetConfig::default(), |ev| {
            n += 1;
            crate::policy::emit_one(&mut out, &mut rules, ev, crate::policy::Origin::Event(n), emit)
        });
    match result {
        Ok(r) => {
            out.flush().ok();
            let s = r.stats;
            eprintln!(
                "{input}: {} frames, {} IP packets, {} flows ({} evicted), {} DNS messages; not decoded: {} fragments, {} not IP, {} malformed, {} unsupported link, {} bad DNS{}",
                s.frames,
                s.ip_packets,
                s.flows_started,
                s.flows_evicted,
                s.dns_messages,
                s.fragments,
                s.not_ip,
                s.malformed,
                s.unsupported_link,
                s.dns_malformed,
                if r.truncated { "; the file ends mid-packet" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ReplayError::Sink(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(ReplayError::File(e)) => {
            out.flush().ok();
            eprintln!("picket replay: {input}: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

fn open_journal(data_dir: &Path) -> anyhow::Result<Journal> {
    let path = data_dir.join(config::JOURNAL_FILE);
    Ok(Journal::open_read_only(&path)?)
}

pub fn journal_stats(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let journal = open_journal(data_dir)?;
    let s = journal.stats()?;
    println!("journal:      {}", journal.path().display());
    println!("events:       {}", s.events);
    match s.first_seq {
        Some(first) => println!("seq range:    {first}..={}", s.last_seq),
        None => println!("seq range:    empty (last seq assigned: {})", s.last_seq),
    }
    println!(
        "size:         {} of {} cap (on disk {})",
        human_bytes(s.logical_bytes),
        human_bytes(s.max_bytes),
        human_bytes(s.file_bytes)
    );
    println!("evicted:      {} since creation", s.evicted_total);
    println!("acked:        through seq {}", s.acked_seq);
    println!("backlog:      {} events not yet acknowledged upstream", s.backlog);
    println!("by kind:");
    for (kind, n) in &s.by_kind {
        println!("  {kind:<14} {n}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn journal_export(data_dir: &Path, since_seq: u64) -> anyhow::Result<ExitCode> {
    let journal = open_journal(data_dir)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = journal.export(since_seq, |line| {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    });
    match result.map_err(anyhow::Error::from).and_then(|n| out.flush().map(|()| n).map_err(Into::into)) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // `picket journal export | head` is fine.
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

pub fn status(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let st = StatusFile::read(data_dir).context("picket status")?;
    let h = &st.health;
    let age_secs = (Timestamp::now().unix_nanos() - st.written_at.unix_nanos()) / 1_000_000_000;
    let alive = st.state == "running" && health::pid_alive(h.pid);
    let state = match (st.state.as_str(), alive) {
        ("running", true)
            if age_secs > 3 * i64::try_from(st.status_interval_secs).unwrap_or(i64::MAX) + 5 =>
        {
            format!("running (pid {}), but the last health report is {age_secs} s old: stuck?", h.pid)
        }
        ("running", true) => format!("running (pid {})", h.pid),
        ("running", false) => {
            format!("not running: pid {} is gone without a clean stop (crashed or killed)", h.pid)
        }
        (other, _) => format!("not running ({other})"),
    };
    println!("picket {}  device {}  mode {}", st.version, st.device_id, st.mode);
    println!("state:        {state}");
    println!("started:      {}", st.started_at);
    println!("last report:  {} ({age_secs} s ago)", st.written_at);
    println!("memory:       {} resident, cpu {:.1} %", human_bytes(h.rss_bytes), h.cpu_percent);
    println!(
        "journal:      {} events, {} on disk, last seq {}, {} evicted",
        h.journal_events,
        human_bytes(h.journal_bytes),
        h.journal_last_seq,
        h.journal_evicted
    );
    println!(
        "backlog:      {} events; last sync {}",
        h.backlog,
        h.last_sync.map_or_else(|| "never".into(), |t| t.to_string())
    );
    match &st.uplink {
        None => println!("uplink:       off (uplink.enabled = false)"),
        Some(u) => {
            println!(
                "uplink:       {}; {} connects, {} batches published, {} delivered (through batch {}), {} events",
                if u.connected { "connected" } else { "not connected" },
                u.connects,
                u.batches_published,
                u.batches_delivered,
                u.delivered_batch_seq,
                u.events_delivered
            );
            if let Some(e) = &u.last_error {
                println!("  last error: {e}");
            }
            if u.batches_republished > 0 {
                println!("  published again (no collector ack in time): {}", u.batches_republished);
            }
            if u.acks_rejected > 0 {
                println!("  acks rejected (failed verification): {}", u.acks_rejected);
            }
        }
    }
    println!("sources:");
    for (name, s) in &h.sources {
        println!("  {name:<10} {s}");
    }
    println!("queues:");
    for (name, d) in &h.queue_depths {
        println!("  {name:<10} {d} waiting");
    }
    if h.drops.is_empty() {
        println!("drops:        none");
    } else {
        println!("drops:");
        for (reason, n) in &h.drops {
            println!("  {reason:<24} {n}");
        }
    }
    if !st.budgets.is_empty() {
        println!("budgets:");
        for (what, n) in &st.budgets {
            println!("  {what:<28} {n}");
        }
    }
    if !h.detections.is_empty() {
        println!("detections:");
        for (what, n) in &h.detections {
            println!("  {what:<24} {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = u32::try_from(n).map_or(n as f64, f64::from);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// `picket identity`: the device id, and the signing key (created on first use, mode 0600).
pub fn identity(data_dir: &Path, configured_id: &str, export: bool) -> anyhow::Result<ExitCode> {
    let device_id = crate::device::resolve(configured_id, data_dir)?;
    let id = picket_wire::Identity::load_or_create(data_dir, picket_wire::DEVICE_KEY_FILE, &device_id)
        .context("device signing key")?;
    if export {
        print!("{}", id.public_key_line());
    } else {
        println!("device id:  {}", id.id());
        println!("key id:     {}", id.key_id());
        println!("public key: {}", id.public_key().to_base64());
        println!("key file:   {}", data_dir.join(picket_wire::DEVICE_KEY_FILE).display());
        println!("enrol with: picket identity --export > <device_keys_dir>/{}.pub", id.id());
    }
    Ok(ExitCode::SUCCESS)
}

/// How many ended actions `actions list --all` shows.
const ACTIONS_HISTORY: u32 = 100;

/// `picket actions list`: what containment is in force (with `--all`, what ended too).
pub fn actions_list(data_dir: &Path, all: bool) -> anyhow::Result<ExitCode> {
    let path = data_dir.join(STATE_FILE);
    if !path.exists() {
        println!("no containment actions recorded ({} does not exist yet)", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rows = actuator::list(&path, all, ACTIONS_HISTORY)?;
    if rows.is_empty() {
        println!("{}", if all { "no containment actions recorded" } else { "nothing in force" });
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now();
    let mut out = io::stdout().lock();
    let head = ["ID", "ACTION", "TARGET", "RULE", "SINCE", "UNTIL", "LEFT", "STATE"];
    let table: Vec<[String; 8]> = rows.iter().map(|r| action_row(r, now)).collect();
    let mut width = head.map(str::len);
    for row in &table {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l
    };
    writeln!(out, "{}", line(&head))?;
    for row in &table {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn action_row(r: &Record, now: SystemTime) -> [String; 8] {
    let (until, left) = match r.until {
        None => ("-".to_string(), "no end".to_string()),
        Some(u) => {
            let left = match u.duration_since(now) {
                Ok(d) if r.state.in_force() => short_duration(d.as_secs()),
                _ => "-".to_string(),
            };
            (whole_seconds(u), left)
        }
    };
    let mut state = r.state.as_str().to_string();
    if let Some(note) =
        r.note.as_deref().filter(|_| !r.state.in_force() || r.state.as_str() == "revert_failed")
    {
        state.push_str(&format!(" ({note})"));
    }
    [
        r.id.to_string(),
        r.action.to_string(),
        r.target.clone(),
        r.rule_id.clone(),
        whole_seconds(r.since),
        until,
        left,
        state,
    ]
}

/// RFC 3339 UTC, to the second.
fn whole_seconds(t: SystemTime) -> String {
    let ns = Timestamp::from(t).unix_nanos();
    Timestamp::from_unix_nanos(ns - ns.rem_euclid(1_000_000_000)).to_string()
}

/// `3d4h`, `1h2m`, `59m58s`, `7s`: the two largest units.
fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// `picket actions revert ID`: undo one action; the running agent journals it.
pub fn actions_revert(data_dir: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let id: u64 = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not an action id (a number from `picket actions list`)"))?;
    let path = data_dir.join(STATE_FILE);
    if !path.exists() {
        anyhow::bail!("no containment action {id}: {} does not exist", path.display());
    }
    let backend = HostBackend::new(NetOptions::default());
    let r = actuator::revert(&path, id, &backend, SystemTime::now())?;
    println!("reverted action {}: {} {} (rule {})", r.id, r.action, r.target, r.rule_id);
    Ok(ExitCode::SUCCESS)
}
