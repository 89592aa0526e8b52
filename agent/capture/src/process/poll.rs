//! The fallback when the process connector cannot be used (no CAP_NET_ADMIN, or not in the
//! initial network namespace): /proc is scanned at a fixed interval
//! (`sources.process.poll_interval_secs`), and what appeared or went since the last scan becomes
//! `process.start` / `process.exit` with `event.module = "poll"` (the connector's are
//! `"netlink"`). The status says `running (degraded: ...)`.
//!
//! What is lost, by design: a process that starts and ends between two scans is never seen; a
//! process that execs without forking keeps its pid and start time, so its new program is not
//! seen either; `process.exit` has no `exit_code` (only the parent learns it), and its
//! `@timestamp` is the scan that missed it. `process.start` has the process's own start time
//! (from /proc/PID/stat). Without root, other users' `exe`, `cwd` and exec filename cannot be
//! read: `process.executable` is then `argv[0]` when it is a path.
//!
//! The scans feed the same [`Tracker`] as the connector (a fork and an exec for each new process,
//! an exit for each gone), so the events carry the same fields, parents included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::netlink::{ConnEvent, Message};
use super::procfs::ProcReader;
use super::{ProcessSource, TICKS_PER_SEC, Tracker, boot_offset, cache, deliver, hash::Hasher, wall_offset};
use crate::{EventTx, SourceStatus};
use picket_event::EventKind;

/// `event.module` of the events polling makes.
pub const MODULE: &str = "poll";

/// How often the stop flag is looked at while waiting for the next scan.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the last scan saw: pid → start time in ticks (a pid whose start time changed is a new
/// process).
#[derive(Debug, Default)]
pub struct Scan {
    known: HashMap<u32, u64>,
}

impl Scan {
    /// Compare `now` (pid, ppid, start ticks) with the last scan: the messages for the tracker,
    /// exits (at `now_mono`) first, then forks and execs oldest first so parents come before
    /// children. `boot_offset_ns` places start ticks on CLOCK_MONOTONIC.
    pub fn diff(&mut self, now: &[(u32, u32, u64)], now_mono: u64, boot_offset_ns: u64) -> Vec<Message> {
        let msg = |ts, event| Message { cpu: u32::MAX, seq: 0, timestamp_ns: ts, event };
        let mut out = Vec::new();
        let current: HashMap<u32, u64> = now.iter().map(|&(pid, _, t)| (pid, t)).collect();
        let mut gone: Vec<u32> =
            self.known.iter().filter(|(pid, t)| current.get(pid) != Some(t)).map(|(pid, _)| *pid).collect();
        gone.sort_unstable();
        for pid in gone {
            out.push(msg(now_mono, ConnEvent::Exit { pid, tgid: pid, exit_code: 0, parent_tgid: None }));
        }
        let mut new: Vec<_> = now.iter().filter(|(pid, _, t)| self.known.get(pid) != Some(t)).collect();
        new.sort_by_key(|&&(pid, _, t)| (t, pid));
        for &&(pid, ppid, ticks) in &new {
            let ts = ticks.saturating_mul(1_000_000_000 / TICKS_PER_SEC).saturating_sub(boot_offset_ns);
            out.push(msg(ts, ConnEvent::Fork { parent_tgid: ppid, child_pid: pid, child_tgid: pid }));
            out.push(msg(ts, ConnEvent::Exec { pid, tgid: pid }));
        }
        self.known = current;
        out
    }
}

/// The processes running now: (pid, ppid, start ticks).
fn scan(fs: &mut ProcReader) -> Vec<(u32, u32, u64)> {
    let mut out = Vec::new();
    for pid in ProcReader::pids() {
        if let Some(st) = fs.stat(pid) {
            out.push((pid, st.ppid, st.start_ticks));
        }
    }
    out
}

fn mono_ns() -> u64 {
    u64::try_from(super::clock_ns(rustix::time::ClockId::Monotonic)).unwrap_or(0)
}

/// Poll until `stop`. `why`: why the connector cannot be used, for the status.
pub fn run(every: Duration, why: &str, out: &EventTx, status: &SourceStatus, stop: &AtomicBool) {
    let hasher = Hasher::start(out.clone()).ok();
    let mut fs = ProcReader::default();
    let boot = boot_offset();
    let mut tracker = Tracker::new(cache::ProcCache::default(), boot);
    let mut state = Scan::default();
    // What runs already is learnt, not reported.
    let first = scan(&mut fs);
    let _ = state.diff(&first, mono_ns(), boot);
    for &(pid, _, _) in first.iter().take(cache::MAX_ENTRIES / 2) {
        let snap = fs.snapshot(pid);
        tracker.learn(pid, &snap);
    }
    let base = format!(
        "degraded: polling /proc every {}s ({why}): processes shorter than that are not seen, exit codes unknown",
        every.as_secs_f64()
    );
    let mut unhashed = 0u64;
    let mut shown = String::new();
    let mut next = Instant::now() + every;
    loop {
        let line = if unhashed > 0 {
            format!("running ({base}; {unhashed} without hash (hasher busy))")
        } else {
            format!("running ({base})")
        };
        if line != shown {
            status.set(ProcessSource::NAME, line.clone());
            shown = line;
        }
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) || out.is_closed() {
                return;
            }
            std::thread::sleep(STOP_CHECK.min(next.saturating_duration_since(Instant::now())));
        }
        next += every;
        if next < Instant::now() {
            next = Instant::now() + every;
        }
        let now = scan(&mut fs);
        let batch = state.diff(&now, mono_ns(), boot);
        let mut closed = false;
        let mut gone = 0u64;
        tracker.handle_batch(&batch, &mut fs, &mut (), wall_offset(), &mut |mut ev, program| {
            // Gone between the listing and the read: never seen, not reported, counted as
            // `process.vanished` (as the connector's).
            if ev.kind == EventKind::ProcessStart && ev.message.is_some() {
                gone += 1;
                return;
            }
            ev.event.module = Some(MODULE.to_string());
            if ev.kind == EventKind::ProcessExit
                && let Some(p) = ev.process.as_mut()
            {
                p.exit_code = None;
                ev.message = Some("exit seen by polling /proc: exit code unknown, time approximate".into());
            }
            if !deliver(out, hasher.as_ref(), ev, program, &mut unhashed) {
                closed = true;
            }
        });
        if gone > 0 {
            out.count_drop("vanished", gone);
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_become_exits_then_starts_oldest_first() {
        let mut s = Scan::default();
        assert_eq!(s.diff(&[(1, 0, 5), (10, 1, 100)], 0, 0).len(), 4);
        // 10 ended; 21 and then its child 20 started (oldest first, whatever the pids).
        let b = s.diff(&[(1, 0, 5), (21, 1, 300), (20, 21, 400)], 9_000, 0);
        let kinds: Vec<_> = b.iter().map(|m| m.event).collect();
        assert_eq!(
            kinds,
            [
                ConnEvent::Exit { pid: 10, tgid: 10, exit_code: 0, parent_tgid: None },
                ConnEvent::Fork { parent_tgid: 1, child_pid: 21, child_tgid: 21 },
                ConnEvent::Exec { pid: 21, tgid: 21 },
                ConnEvent::Fork { parent_tgid: 21, child_pid: 20, child_tgid: 20 },
                ConnEvent::Exec { pid: 20, tgid: 20 },
            ]
        );
        assert_eq!(b[0].timestamp_ns, 9_000);
        assert_eq!(b[1].timestamp_ns, 3_000_000_000, "start ticks on the monotonic clock");
        // A reused pid: the old process ended, a new one started.
        let b = s.diff(&[(1, 0, 5), (21, 1, 999), (20, 21, 400)], 0, 0);
        assert_eq!(b.len(), 3);
        assert!(matches!(b[0].event, ConnEvent::Exit { pid: 21, .. }));
        assert!(s.diff(&[(1, 0, 5), (21, 1, 999), (20, 21, 400)], 0, 0).is_empty());
    }
}
