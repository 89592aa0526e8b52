//! The live view of `picket run`: one line per journaled event (alerts and actions always;
//! routine events up to [`ROUTINE_LINES_PER_SEC`], the rest summed up), source state changes as
//! they happen, and a status line every `agent.status_interval_secs`.
//!
//! The view reads from its own bounded queue and never slows the journal: when it falls behind,
//! events are skipped on screen (and counted in the next status line), never in the journal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use picket_capture::{Drops, Shutdown, SourceStatus};
use picket_event::{Event, EventKind, Retention, Timestamp, severity};
use tokio::sync::mpsc;

use crate::runtime::{JournalCounters, queue_depth};

/// Routine event lines per second before the view summarises instead.
pub const ROUTINE_LINES_PER_SEC: u32 = 20;

static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Hand a journaled event to the view without waiting (called by the journal thread).
pub fn offer(live: &mpsc::Sender<Box<Event>>, ev: Box<Event>) {
    // Past half the queue, routine events (mostly summed up on screen anyway) leave the room to
    // alerts and actions, which a commit of hundreds of routine events could otherwise crowd out.
    let crowded = ev.kind.retention() == Retention::Routine && live.capacity() * 2 < live.max_capacity();
    if crowded || live.try_send(ev).is_err() {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(
    mut rx: mpsc::Receiver<Box<Event>>,
    status_interval: Duration,
    counters: Arc<JournalCounters>,
    drops: Drops,
    sources: SourceStatus,
    source_depth: mpsc::WeakSender<Box<Event>>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(status_interval);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut shown_this_second = 0u32;
    let mut unshown = 0u64;
    let mut known_sources: BTreeMap<String, String> = BTreeMap::new();
    let mut stopping = false;
    // Read now: at shutdown the queue is gone.
    let queue_cap = source_depth.upgrade().map_or(0, |tx| tx.max_capacity());
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                if ev.kind.retention() == Retention::Keep || shown_this_second < ROUTINE_LINES_PER_SEC {
                    if ev.kind.retention() == Retention::Routine {
                        shown_this_second += 1;
                    }
                    println!("{}", line(&ev));
                } else {
                    unshown += 1;
                }
            }
            _ = second.tick() => {
                if unshown > 0 {
                    println!("{}  … {unshown} more events (picket journal export shows all)", clock(Timestamp::now()));
                    unshown = 0;
                }
                shown_this_second = 0;
                report_source_changes(&sources, &mut known_sources);
            }
            _ = tick.tick() => {
                println!("{}", status_line(&counters, &drops, &sources, &source_depth, queue_cap));
            }
            _ = shutdown.wait(), if !stopping => {
                stopping = true;
            }
        }
    }
    report_source_changes(&sources, &mut known_sources);
    println!("{}", status_line(&counters, &drops, &sources, &source_depth, queue_cap));
}

fn report_source_changes(sources: &SourceStatus, known: &mut BTreeMap<String, String>) {
    for (name, state) in sources.snapshot() {
        if known.get(&name) != Some(&state) {
            println!("{}  source {name}: {state}", clock(Timestamp::now()));
            known.insert(name, state);
        }
    }
}

fn status_line(
    counters: &JournalCounters,
    drops: &Drops,
    sources: &SourceStatus,
    source_depth: &mpsc::WeakSender<Box<Event>>,
    queue_cap: usize,
) -> String {
    let skipped = SKIPPED.swap(0, Ordering::Relaxed);
    let running: Vec<String> =
        sources.snapshot().into_iter().filter(|(_, s)| s.starts_with("running")).map(|(n, _)| n).collect();
    let mut s = format!(
        "{}  ── status: {} events journaled, last seq {}, {} dropped, queue {}/{}, sources running: {}",
        clock(Timestamp::now()),
        counters.journaled.load(Ordering::Relaxed),
        counters.last_seq.load(Ordering::Relaxed),
        drops.total(),
        queue_depth(source_depth),
        queue_cap,
        if running.is_empty() { "none".to_string() } else { running.join(", ") },
    );
    if skipped > 0 {
        s.push_str(&format!(", {skipped} not shown (view behind)"));
    }
    s
}

/// One event as one line: time, kind, severity when not info, the most telling field, seq.
pub fn line(ev: &Event) -> String {
    let what = subject(ev);
    let sev = if ev.event.severity > severity::INFO {
        format!(" [{}]", severity::name(ev.event.severity))
    } else {
        String::new()
    };
    let marker = match ev.kind {
        EventKind::Alert => "ALERT ",
        EventKind::Action => "ACTION ",
        _ => "",
    };
    format!("{}  {marker}{:<13}{sev} {what}  seq={}", clock(ev.timestamp), ev.kind.as_str(), ev.seq)
}

fn subject(ev: &Event) -> String {
    if let Some(g) = &ev.gap {
        return format!(
            "{} events evicted from seq {}..={} ({})",
            g.count, g.first_seq, g.last_seq, g.reason
        );
    }
    if let Some(r) = &ev.rule {
        return match &ev.message {
            Some(m) => format!("{}: {m}", r.id),
            None => r.id.clone(),
        };
    }
    if let Some(f) = &ev.file {
        return match &f.target_path {
            Some(to) => format!("{} -> {to}", f.path),
            None => f.path.clone(),
        };
    }
    if let Some(exe) = ev.process.as_ref().and_then(|p| p.executable.as_ref().or(p.name.as_ref())) {
        return exe.clone();
    }
    if let Some(ip) = ev.source.as_ref().and_then(|s| s.ip.as_ref()) {
        return ip.clone();
    }
    ev.message.clone().unwrap_or_default()
}

/// `HH:MM:SS` in UTC, as in the events.
fn clock(t: Timestamp) -> String {
    let s = t.to_string();
    s.get(11..19).unwrap_or(&s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_event::File;

    #[test]
    fn line_shows_time_kind_path_and_seq() {
        let mut ev = Event::new(EventKind::FileRename, Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
        ev.seq = 42;
        ev.file = Some(File { path: "/a".into(), target_path: Some("/b".into()), ..Default::default() });
        assert_eq!(line(&ev), "22:13:20  file.rename   /a -> /b  seq=42");
    }
}
