//! Real-time priority for the reader thread, with a governor that gives it up under load.
//!
//! Why: a short-lived program (`/bin/true`) lives well under a millisecond after its exec, and
//! once it exits its argv and exec path are gone from /proc. Measured on the 2-core build VM at
//! 1,000 execs/s, a normal-priority reader woke 0.5–1 ms late at the 90th percentile and lost the
//! details of 10–30 % of the programs (`nice -20` did not help); at `SCHED_FIFO` priority 1 it
//! woke within ~50 µs (p90) and lost 0–1 %. Priority 1 is the lowest real-time level: it only
//! jumps ahead of normal tasks, never ahead of other real-time work.
//!
//! What real-time priority does not fix: a reader whose CPU is idle must first be woken. On the
//! build VM (haltpoll cpuidle, shared host) that took long enough at 100 execs/s that 5–40 % of
//! `/bin/true` runs vanished; with the vCPUs kept busy by idle-priority load, none did. The
//! complete fix is a source that does not race the process (the exec tracepoint, or fanotify
//! correlated with the exec).
//!
//! Why a governor: a real-time thread that is kept busy (an exec flood, a fork bomb) could starve
//! the rest of a small single-core device. Every second the thread's CPU time is looked at; above
//! [`DEMOTE_ABOVE`] of one core it goes back to normal scheduling (and will lose more details,
//! counted as `process.vanished`), and below [`PROMOTE_BELOW`] it takes real-time again. The
//! kernel's own real-time throttling (95 % by default) is the backstop.

use std::io;
use std::time::{Duration, Instant};

/// Share of one core above which the reader drops real-time priority.
pub const DEMOTE_ABOVE: f64 = 0.5;
/// Share below which it takes it again.
pub const PROMOTE_BELOW: f64 = 0.2;
/// How often the share is measured.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Scheduling of the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_FIFO`, priority 1.
    RealTime,
    /// `SCHED_OTHER`.
    Normal,
}

/// Put the calling thread (not the process) under `policy`. Fails without CAP_SYS_NICE (or
/// RLIMIT_RTPRIO), or when the cgroup has no real-time budget.
#[allow(unsafe_code)]
pub fn set_thread_policy(policy: Policy) -> io::Result<()> {
    let (policy, priority) = match policy {
        Policy::RealTime => (libc::SCHED_FIFO, 1),
        Policy::Normal => (libc::SCHED_OTHER, 0),
    };
    // The kernel's `struct sched_param` is one int; libc's differs by target (musl's has four
    // more fields), so the system call gets the kernel's layout.
    #[repr(C)]
    struct KernelSchedParam {
        sched_priority: libc::c_int,
    }
    let param = KernelSchedParam { sched_priority: priority };
    // The raw system call, not libc's wrapper: on Linux it applies to one thread (pid 0 = the
    // caller), and musl's wrapper refuses (ENOSYS) because POSIX means the whole process.
    // SAFETY: sched_setscheduler only reads one `sched_param` through the pointer, which points
    // to a live local for the duration of the call; the integer arguments are passed as longs as
    // the system call ABI expects. Nothing is written to our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            libc::c_long::from(0i32),
            libc::c_long::from(policy),
            &raw const param,
        )
    };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// What the governor should do, given the policy now and the share of a core used last period.
pub fn decide(now: Policy, busy: f64) -> Option<Policy> {
    match now {
        Policy::RealTime if busy > DEMOTE_ABOVE => Some(Policy::Normal),
        Policy::Normal if busy < PROMOTE_BELOW => Some(Policy::RealTime),
        _ => None,
    }
}

fn thread_cpu_ns() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec.saturating_mul(1_000_000_000).saturating_add(t.tv_nsec)
}

/// Keeps the reader thread real-time while it is cheap. Call [`Governor::tick`] from the thread
/// itself, often (it does nothing until a period has passed).
#[derive(Debug)]
pub struct Governor {
    policy: Policy,
    /// Real-time was refused: stay normal, do not retry.
    refused: Option<String>,
    since: Instant,
    cpu_at: i64,
    /// How many times it had to give real-time up.
    pub demotions: u64,
}

impl Governor {
    /// Try real-time for the calling thread.
    pub fn start() -> Governor {
        let (policy, refused) = match set_thread_policy(Policy::RealTime) {
            Ok(()) => (Policy::RealTime, None),
            Err(e) => (Policy::Normal, Some(e.to_string())),
        };
        Governor { policy, refused, since: Instant::now(), cpu_at: thread_cpu_ns(), demotions: 0 }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Why real-time priority could not be had, if it could not.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    pub fn tick(&mut self) {
        let wall = self.since.elapsed();
        if wall < PERIOD || self.refused.is_some() {
            return;
        }
        let cpu = thread_cpu_ns();
        let used = u64::try_from(cpu - self.cpu_at).unwrap_or(0);
        let busy = Duration::from_nanos(used).as_secs_f64() / wall.as_secs_f64();
        self.since = Instant::now();
        self.cpu_at = cpu;
        if let Some(next) = decide(self.policy, busy)
            && set_thread_policy(next).is_ok()
        {
            if next == Policy::Normal {
                self.demotions += 1;
            }
            self.policy = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governor_gives_up_real_time_when_busy_and_takes_it_back_when_idle() {
        assert_eq!(decide(Policy::RealTime, 0.9), Some(Policy::Normal));
        assert_eq!(decide(Policy::RealTime, 0.3), None);
        assert_eq!(decide(Policy::Normal, 0.3), None, "hysteresis");
        assert_eq!(decide(Policy::Normal, 0.05), Some(Policy::RealTime));
    }

    #[test]
    fn setting_normal_policy_on_a_thread_works_unprivileged() {
        std::thread::spawn(|| set_thread_policy(Policy::Normal).unwrap()).join().unwrap();
    }
}
