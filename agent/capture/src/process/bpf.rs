//! Exec filenames and argv from the eBPF exec tracer ([`picket_ebpf`], feature `ebpf`).
//!
//! The tracer's record of an exec is in its ring before cn_proc sends the exec (docs of
//! `picket-ebpf`), so draining it after each batch of connector messages holds the record of
//! every exec in the batch. Records wait here per pid, oldest first, until the exec's
//! `process.start` takes them ([`ExecNames::take`]); one not taken within [`KEEP`] (its exec
//! message was lost) or past [`MAX_RECORDS`] is dropped and counted.
//!
//! Why prefer them to /proc even when /proc could be read: they are what the kernel got, at the
//! exec. `/proc/PID/cmdline` and the `AT_EXECFN` string are in the process's own memory, which it
//! can rewrite (a miner renaming itself `[kworker/0:1]`) before picket reads them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Records waiting for their exec, at most.
pub const MAX_RECORDS: usize = 4096;
/// How long a record waits for its exec message.
pub const KEEP: Duration = Duration::from_secs(10);

/// One exec as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecName {
    /// execve's filename as passed: symlinks not followed, possibly relative.
    pub filename: String,
    /// argv of the new program; `None` when the tracer had to cut it or could not read it.
    pub argv: Option<Vec<String>>,
    /// `/proc/PID/stat` field 22 of the process (names it across pid reuse).
    pub start_ticks: u64,
}

/// What happened to the tracer's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Taken by a `process.start`.
    pub used: u64,
    /// Never taken: waited past [`KEEP`] or pushed out past [`MAX_RECORDS`].
    pub dropped: u64,
    /// Lost in the kernel (the ring was full) or unreadable: those execs fall back to /proc.
    pub lost: u64,
}

/// A record waiting: its number (arrival order), arrival time and content.
type Entry = (u64, Instant, ExecName);

#[derive(Debug, Default)]
#[cfg_attr(not(feature = "ebpf"), allow(dead_code))] // filled by the tracer only
struct Waiting {
    by_pid: HashMap<u32, VecDeque<Entry>>,
    /// Arrival order: (pid, number, time). Entries of records already taken stay until they
    /// reach the front.
    order: VecDeque<(u32, u64, Instant)>,
    next: u64,
    /// Records in `by_pid`.
    len: usize,
    counts: Counts,
}

#[cfg_attr(not(feature = "ebpf"), allow(dead_code))]
impl Waiting {
    fn push(&mut self, pid: u32, name: ExecName, now: Instant) {
        // The order entries are bounded too (taken records leave theirs behind).
        while (self.len >= MAX_RECORDS || self.order.len() >= 4 * MAX_RECORDS) && self.drop_front() {}
        self.len += 1;
        self.next += 1;
        self.by_pid.entry(pid).or_default().push_back((self.next, now, name));
        self.order.push_back((pid, self.next, now));
    }

    /// Remove the front of the arrival order; a record still waiting there is dropped. False
    /// when nothing is left.
    fn drop_front(&mut self) -> bool {
        let Some((pid, n, _)) = self.order.pop_front() else { return false };
        if let Some(q) = self.by_pid.get_mut(&pid)
            && q.front().is_some_and(|(m, _, _)| *m == n)
        {
            q.pop_front();
            if q.is_empty() {
                self.by_pid.remove(&pid);
            }
            self.len -= 1;
            self.counts.dropped += 1;
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|&(_, _, at)| now.duration_since(at) >= KEEP) {
            self.drop_front();
        }
    }

    /// Exactly one record of `pid` waits, and it has argv.
    fn complete(&self, pid: u32) -> bool {
        self.by_pid.get(&pid).is_some_and(|q| q.len() == 1 && q[0].2.argv.is_some())
    }

    fn take(&mut self, pid: u32) -> Option<ExecName> {
        let q = self.by_pid.get_mut(&pid)?;
        let (_, _, name) = q.pop_front()?;
        if q.is_empty() {
            self.by_pid.remove(&pid);
        }
        self.len -= 1;
        self.counts.used += 1;
        Some(name)
    }
}

/// The tracer and the records waiting for their exec.
pub struct ExecNames {
    #[cfg(feature = "ebpf")]
    tracer: picket_ebpf::ExecTracer,
    waiting: Waiting,
}

impl std::fmt::Debug for ExecNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecNames").field("counts", &self.waiting.counts).finish_non_exhaustive()
    }
}

impl ExecNames {
    /// Load and attach the tracer; the error says why eBPF is not available.
    pub fn open() -> Result<ExecNames, String> {
        #[cfg(feature = "ebpf")]
        {
            let tracer = picket_ebpf::ExecTracer::start(picket_ebpf::ExecTracerOptions::default())
                .map_err(|e| e.to_string())?;
            Ok(ExecNames { tracer, waiting: Waiting::default() })
        }
        #[cfg(not(feature = "ebpf"))]
        {
            Err("built without eBPF (the `ebpf` feature)".into())
        }
    }

    /// Take every record the tracer holds.
    pub fn drain(&mut self) {
        let now = Instant::now();
        self.waiting.expire(now);
        #[cfg(feature = "ebpf")]
        {
            let waiting = &mut self.waiting;
            self.tracer.drain(|r| {
                let name = ExecName {
                    filename: String::from_utf8_lossy(&r.filename).into_owned(),
                    argv: (!r.truncated && !r.read_fault)
                        .then(|| r.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()),
                    start_ticks: r.start_boot_ns / (1_000_000_000 / super::TICKS_PER_SEC),
                };
                waiting.push(r.pid, name, now);
            });
            self.waiting.counts.lost = self.tracer.lost();
        }
    }

    /// Whether the record of `pid`'s exec is all /proc's `cmdline`, `auxv` and `mem` would give:
    /// one record waits for it, with argv (two would leave open which is whose).
    pub fn complete(&self, pid: u32) -> bool {
        self.waiting.complete(pid)
    }

    /// The oldest record of `pid` not yet taken.
    pub fn take(&mut self, pid: u32) -> Option<ExecName> {
        self.waiting.take(pid)
    }

    pub fn counts(&self) -> Counts {
        self.waiting.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(f: &str) -> ExecName {
        ExecName { filename: f.into(), argv: Some(vec![f.into()]), start_ticks: 1 }
    }

    #[test]
    fn records_are_taken_per_pid_oldest_first() {
        let mut w = Waiting::default();
        let t = Instant::now();
        w.push(7, name("/bin/a"), t);
        w.push(8, name("/bin/x"), t);
        w.push(7, name("/bin/b"), t + Duration::from_millis(1));
        assert!(!w.complete(7), "two records: which is whose is open");
        assert!(w.complete(8));
        assert_eq!(w.take(7).unwrap().filename, "/bin/a");
        assert!(w.complete(7));
        assert_eq!(w.take(7).unwrap().filename, "/bin/b");
        assert_eq!(w.take(7), None);
        assert_eq!(w.take(8).unwrap().filename, "/bin/x");
        assert_eq!(w.counts.used, 3);
    }

    #[test]
    fn records_never_taken_expire_and_the_cap_drops_the_oldest() {
        let mut w = Waiting::default();
        let t = Instant::now();
        w.push(1, name("/old"), t);
        w.push(2, name("/new"), t + KEEP);
        w.expire(t + KEEP);
        assert_eq!(w.take(1), None, "waited its time");
        assert_eq!(w.counts.dropped, 1);
        assert!(w.take(2).is_some());

        let mut w = Waiting::default();
        for pid in 0..u32::try_from(MAX_RECORDS).unwrap() + 5 {
            w.push(pid, name("/x"), t);
        }
        assert_eq!(w.counts.dropped, 5);
        assert_eq!(w.take(0), None);
        assert!(w.take(5).is_some());
        assert_eq!(w.len, MAX_RECORDS - 1);
    }
}
