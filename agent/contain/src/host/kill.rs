//! kill: one process or its tree, through pidfds, SIGTERM then SIGKILL.
//!
//! # Why freeze first, then signal children first
//!
//! Walking /proc for children and killing them one by one races with the tree itself: a parent
//! (a supervisor, a fork bomb, a shell loop) forks a replacement for every child we kill, and a
//! child whose parent died first is reparented to init and drops out of the ppid walk. So a tree
//! kill first *freezes* the tree: SIGSTOP to the root, then repeated /proc scans that SIGSTOP
//! every new descendant until a scan finds none (a stopped process cannot fork; a fork that was
//! already in flight shows up in the next scan). Each member is held by a pidfd from the moment
//! it is found, so reparenting no longer loses it and a recycled pid cannot be hit. The frozen
//! tree then gets SIGTERM children first (deepest first, root last) and SIGCONT so TERM handlers
//! run; after the grace period survivors are frozen again, new descendants collected, and all of
//! them get SIGKILL.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::error::{HostError, Refusal};
use super::proc::{
    PF_KTHREAD, ancestors, parent_links, pids_of_uid, process_info, read_stat, read_tgid, read_uids,
};

/// /proc scans while freezing a tree or a user's processes. A tree that still grows after this
/// many rounds is killed as far as it was found.
const FREEZE_ROUNDS: usize = 64;

/// How long to wait for SIGKILLed processes to be gone before reporting them as still alive
/// (a process in uninterruptible sleep dies only when its I/O returns).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Most processes held at once (one pidfd each); keeps a fork bomb from exhausting our fds.
const MAX_MEMBERS: usize = 4096;

/// What a kill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillOutcome {
    /// Every pid that was signalled, in the order SIGTERM was sent (children before parents).
    pub signalled: Vec<i32>,
    /// Ended within the grace period (SIGTERM, or already exiting).
    pub ended_by_term: Vec<i32>,
    /// Needed SIGKILL.
    pub ended_by_kill: Vec<i32>,
    /// Still there after SIGKILL and a further wait (uninterruptible sleep).
    pub still_alive: Vec<i32>,
    /// Processes seen but not held (too many, or fd exhaustion): not signalled.
    pub untracked: usize,
}

/// The last-line refusal for `pid`, if any: PID 0/1, our own process (or one of its threads),
/// our ancestors, kernel threads. `None` means the host module would act on it (the safety layer
/// above may still refuse). A pid that does not exist is not refused here.
pub fn kill_refusal(pid: i32) -> Option<Refusal> {
    if pid <= 1 {
        return Some(Refusal::Init);
    }
    let me = own_pid();
    if pid == me || read_tgid(pid) == Some(me) {
        return Some(Refusal::OwnProcess);
    }
    if ancestors(me).contains(&pid) {
        return Some(Refusal::OwnAncestor);
    }
    if process_info(pid).is_some_and(|i| i.is_kernel_thread) {
        return Some(Refusal::KernelThread);
    }
    None
}

/// Ends process `pid` (and with `tree`, all its descendants): SIGTERM, then SIGKILL to whatever
/// is still alive after `grace`.
///
/// `start_time` is field 22 of /proc/PID/stat as seen in the event that led here; if `pid` now
/// has another start time it was recycled and nothing is signalled.
///
/// # Errors
/// [`HostError::RefusedProcess`] for the built-in refusals ([`kill_refusal`]),
/// [`HostError::StartTimeMismatch`] on PID reuse, [`HostError::NoSuchProcess`] if it is gone,
/// [`HostError::Process`] if the first signal could not be sent.
pub fn kill(pid: i32, start_time: u64, tree: bool, grace: Duration) -> Result<KillOutcome, HostError> {
    if let Some(reason) = kill_refusal(pid) {
        return Err(HostError::RefusedProcess { pid, reason });
    }
    let fd = open_pidfd(pid)?;
    // The pidfd names whatever held `pid` when it was opened. Reading the start time *after*
    // opening proves it is the caller's process: that process started before the event and is
    // still alive now, so it held the pid at the moment of the open too.
    let found = read_stat(pid).map(|(_, s)| s.start_time).ok_or(HostError::NoSuchProcess { pid })?;
    if found != start_time {
        return Err(HostError::StartTimeMismatch { pid, expected: start_time, found });
    }
    let mut group = Group::new();
    group.members.push(Member { pid, depth: 0, fd, exited: false });
    if tree {
        // Freezing the root first is what stops it from forking while we walk its children.
        send(&group.members[0], Signal::STOP).map_err(|e| signal_error(pid, e))?;
        group.freeze(&Scope::Tree);
    }
    let (outcome, errors) = group.terminate(&Scope::from_tree(tree), grace);
    // A tree's root already took SIGSTOP above, so only a lone target can fail here.
    if let Some((_, e)) = errors.into_iter().find(|(p, _)| *p == pid)
        && !tree
    {
        return Err(signal_error(pid, e));
    }
    Ok(outcome)
}

/// Ends every process whose real or effective uid is `uid` (the user's sessions). Never touches
/// our own process, its ancestors, PID 1 or kernel threads.
pub(crate) fn end_processes_of_uid(uid: u32, grace: Duration) -> KillOutcome {
    let mut group = Group::new();
    group.freeze(&Scope::Uid(uid));
    if group.members.is_empty() {
        return KillOutcome { untracked: group.untracked, ..KillOutcome::default() };
    }
    group.terminate(&Scope::Uid(uid), grace).0
}

/// Which processes belong to a group being ended.
enum Scope {
    /// Only the root process.
    Single,
    /// The root and every descendant.
    Tree,
    /// Every process with this real or effective uid.
    Uid(u32),
}

impl Scope {
    fn from_tree(tree: bool) -> Scope {
        if tree { Scope::Tree } else { Scope::Single }
    }
}

struct Member {
    pid: i32,
    /// Distance from the root (0 for the root, or for every member of a uid group).
    depth: u32,
    fd: OwnedFd,
    exited: bool,
}

struct Group {
    members: Vec<Member>,
    /// PID 1, our own pid and our ancestors: never added.
    protected: Vec<i32>,
    untracked: usize,
}

impl Group {
    fn new() -> Group {
        let me = own_pid();
        let mut protected = ancestors(me);
        protected.push(me);
        protected.push(1);
        Group { members: Vec::new(), protected, untracked: 0 }
    }

    fn contains(&self, pid: i32) -> bool {
        self.members.iter().any(|m| m.pid == pid)
    }

    fn depth_of(&self, pid: i32) -> Option<u32> {
        self.members.iter().find(|m| m.pid == pid).map(|m| m.depth)
    }

    /// Finds members of `scope` not yet held, holds and SIGSTOPs them, until a scan finds none.
    fn freeze(&mut self, scope: &Scope) {
        for _ in 0..FREEZE_ROUNDS {
            if self.add_new(scope) == 0 {
                return;
            }
        }
    }

    /// One /proc scan; returns how many new members were held and stopped.
    fn add_new(&mut self, scope: &Scope) -> usize {
        let candidates: Vec<(i32, u32)> = match scope {
            Scope::Single => Vec::new(),
            Scope::Tree => parent_links()
                .into_iter()
                .filter_map(|(pid, ppid)| Some((pid, self.depth_of(ppid)? + 1)))
                .collect(),
            Scope::Uid(uid) => pids_of_uid(*uid).into_iter().map(|pid| (pid, 0)).collect(),
        };
        let mut added = 0;
        for (pid, depth) in candidates {
            if self.contains(pid) || self.protected.contains(&pid) {
                continue;
            }
            if self.members.len() >= MAX_MEMBERS {
                self.untracked += 1;
                continue;
            }
            let Ok(fd) = open_pidfd(pid) else {
                // Gone already, or we are out of fds.
                if read_stat(pid).is_some() {
                    self.untracked += 1;
                }
                continue;
            };
            // Re-check membership now that the pidfd pins the process: the pid may have been
            // recycled between the scan and the open.
            let Some((_, stat)) = read_stat(pid) else { continue };
            let still_member = match scope {
                Scope::Single => false,
                Scope::Tree => self.contains(stat.ppid),
                Scope::Uid(uid) => matches!(read_uids(pid), Some((r, e)) if r == *uid || e == *uid),
            };
            if !still_member || stat.flags & PF_KTHREAD != 0 {
                continue;
            }
            let member = Member { pid, depth, fd, exited: false };
            // A stopped process cannot fork; ESRCH just means it is already gone.
            let _ = send(&member, Signal::STOP);
            self.members.push(member);
            added += 1;
        }
        added
    }

    /// SIGTERM (children first) + SIGCONT, wait `grace`, then freeze again, collect late
    /// arrivals and SIGKILL every survivor. Also returns the members SIGTERM could not be sent to
    /// (other than already gone): they still get SIGKILL.
    fn terminate(mut self, scope: &Scope, grace: Duration) -> (KillOutcome, Vec<(i32, Errno)>) {
        // Deepest first, so the root (depth 0) is last: a parent never sees its children die
        // before it is told to go itself, and never outlives them by our doing.
        self.members.sort_by_key(|m| std::cmp::Reverse(m.depth));
        let mut outcome = KillOutcome::default();
        let mut errors = Vec::new();
        for m in &self.members {
            match send(m, Signal::TERM) {
                Ok(()) | Err(Errno::SRCH) => outcome.signalled.push(m.pid),
                Err(e) => errors.push((m.pid, e)),
            }
        }
        if errors.len() == self.members.len() && matches!(scope, Scope::Single) {
            return (outcome, errors);
        }
        for m in &self.members {
            let _ = send(m, Signal::CONT);
        }
        wait_exited(&mut self.members, deadline_after(grace));
        outcome.ended_by_term = self.members.iter().filter(|m| m.exited).map(|m| m.pid).collect();
        if outcome.ended_by_term.len() == self.members.len() {
            outcome.untracked = self.untracked;
            return (outcome, errors);
        }

        // Survivors: freeze them (and anything they forked meanwhile), then SIGKILL all.
        let before = self.members.len();
        for m in self.members.iter().filter(|m| !m.exited) {
            let _ = send(m, Signal::STOP);
        }
        if !matches!(scope, Scope::Single) {
            self.freeze(scope);
        }
        for m in self.members.iter().filter(|m| !m.exited) {
            let _ = send(m, Signal::KILL);
        }
        for m in &self.members[before..] {
            outcome.signalled.push(m.pid);
        }
        wait_exited(&mut self.members, deadline_after(KILL_WAIT));
        for m in &self.members {
            if outcome.ended_by_term.contains(&m.pid) {
                continue;
            }
            if m.exited {
                outcome.ended_by_kill.push(m.pid);
            } else {
                outcome.still_alive.push(m.pid);
            }
        }
        outcome.untracked = self.untracked;
        (outcome, errors)
    }
}

/// Waits until every member's pidfd reports exit, or `deadline`.
fn wait_exited(members: &mut [Member], deadline: Instant) {
    loop {
        let pending: Vec<usize> = (0..members.len()).filter(|i| !members[*i].exited).collect();
        if pending.is_empty() {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(remaining.subsec_nanos()),
        };
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> =
                pending.iter().map(|i| PollFd::new(&members[*i].fd, PollFlags::IN)).collect();
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
            pending.iter().zip(&fds).filter(|(_, fd)| !fd.revents().is_empty()).map(|(i, _)| *i).collect()
        };
        if ready.is_empty() {
            return; // timed out
        }
        for i in ready {
            members[i].exited = true;
        }
    }
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, HostError> {
    let raw = Pid::from_raw(pid).ok_or(HostError::NoSuchProcess { pid })?;
    pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
        Errno::SRCH => HostError::NoSuchProcess { pid },
        e => HostError::Process { op: "pidfd_open", pid, source: e.into() },
    })
}

fn send(m: &Member, sig: Signal) -> Result<(), Errno> {
    pidfd_send_signal(&m.fd, sig)
}

fn signal_error(pid: i32, e: Errno) -> HostError {
    HostError::Process { op: "pidfd_send_signal", pid, source: e.into() }
}

/// `now + d`, saturating at a year instead of overflowing on an absurd grace period.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(365 * 24 * 3600))).unwrap_or(now)
}

pub(crate) fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}
