//! Process events from the netlink process connector (`cn_proc`): `process.start` for every
//! exec, `process.exit` for every process that ends and `process.setid` for every change of a
//! process's real or effective user or group id, enriched from /proc.
//!
//! | kernel (cn_proc)            | picket                                                        |
//! |-----------------------------|---------------------------------------------------------------|
//! | `PROC_EVENT_FORK` (process) | no event; the child enters the process table with its parent  |
//! | `PROC_EVENT_FORK` (thread)  | nothing                                                       |
//! | `PROC_EVENT_EXEC`           | `process.start`, /proc read at once                           |
//! | `PROC_EVENT_EXIT` (process) | `process.exit` with `exit_code` and `event.duration`          |
//! | `PROC_EVENT_EXIT` (thread)  | nothing                                                       |
//! | `PROC_EVENT_UID` / `_GID`   | `process.setid` (`event.action` `uid_change` / `gid_change`) when the real or effective id changed; the table takes the new ids |
//! | sid, comm, ptrace, coredump | nothing                                                       |
//!
//! # Fields
//!
//! `process.start`: `process.pid`, `process.executable` (execve's filename made absolute,
//! symlinks not followed: see [`procfs`] for how, and its limits), `process.resolved_executable`
//! (/proc/PID/exe), `process.name` (base name of `executable`, else the kernel's `comm`),
//! `process.args` (argv in full up to [`procfs::MAX_CMDLINE`] bytes), `process.command_line`
//! (argv joined by single spaces, no quoting), `process.working_directory`,
//! `process.start_ticks` (field 22 of /proc/PID/stat, which containment checks against PID
//! reuse), `process.parent.{pid,name,executable,command_line}` (from the process table, so they
//! are there even when the parent is gone from /proc), `user.id` and `user.name` (the effective
//! user). `@timestamp` is the kernel's time of the exec, not the time picket read /proc. Also:
//! `process.hash.sha256` of the file running ([`hash`]: cached per file version, computed on
//! another thread), `process.fileless` and `process.fileless_reason` (`memfd`, `deleted`,
//! `dev_shm`: [`hash::fileless_reason`]), `process.cgroup` (when not the root cgroup) and
//! `container.id` / `container.runtime` (from /proc/PID/cgroup: [`procfs::parse_cgroup`]).
//! `event.module` is `netlink`, or `poll` for the fallback ([`poll`]).
//!
//! `process.exit`: `process.pid`, `process.exit_code` (the exit status, or 128 + the signal
//! number for a process killed by a signal, as shells report it; `message` then names the
//! signal), `event.duration` (nanoseconds since the fork, when it was seen), and what the process
//! table knew: `name`, `executable`, `command_line` (cut at
//! [`cache::MAX_CACHED_COMMAND_LINE`]), `start_ticks`, `parent.pid`, and `user.*` (the
//! effective user it last ran as).
//!
//! `process.start` also carries `process.user.id`/`.name` (effective), `process.real_user.*`,
//! `process.group.id` and `process.real_group.id` (from /proc/PID/status).
//!
//! `process.setid`: the new ids (`process.user`, `process.real_user`, `process.group`,
//! `process.real_group`; `user.*` is the new effective user), the effective ids before the change
//! as the table knew them (`process.previous_user.id`, `process.previous_group.id`; absent when it
//! did not), and the process's context: `name`, `executable`, `command_line`, `start_ticks`,
//! `parent.*` from the table, `resolved_executable`, `cgroup` and `container.*` from /proc. The
//! exec of a setuid program changes the ids before the kernel reports the exec: such a change
//! is sent after that exec's `process.start`, with its program ([`Tracker`]'s `on_setid`).
//!
//! # Losses, counted
//!
//! * Messages the kernel could not deliver (the socket buffer overflowed: `ENOBUFS`) are counted
//!   exactly from holes in the kernel's per-CPU sequence numbers as drops `process.overrun`.
//! * A process gone (or already a zombie) before /proc could be read, or one that exec'd again
//!   before the first exec was handled, still gets its `process.start`, with what is known
//!   (`pid`; `parent.*` from the fork; `name`, `start_ticks` and the user while a zombie still
//!   shows them) and a `message` saying so; it is counted as `process.vanished`. The event is
//!   not lost, only thin; and its `executable` and `resolved_executable` come from fanotify
//!   ([`fanotify`]: the file the kernel opened for the exec, symlinks resolved), when fanotify
//!   could be set up. An exec the eBPF tracer recorded in full (filename and argv: [`bpf`]) is
//!   needs nothing of /proc's `cmdline`, `auxv` and `mem`: they are not read (three opens fewer
//!   per exec); whether it vanished is then told by `/proc/PID/exe`.
//! * A full pipeline queue drops events as `process.queue_full`, like every source.
//! * The status line shows the counts: `running (12 lost to 1 overruns; 3 vanished before /proc
//!   was read, 3 of them with their path from fanotify)`, fanotify queue overflows, events sent
//!   without a hash because the hasher was busy or the program changed before it was read
//!   ([`hash`]), whether fanotify is missing (`no exec paths for
//!   vanished processes: ...`), and whether the reader runs below real-time priority.
//!
//! # Threads
//!
//! One dedicated thread (`picket-process`) blocks in `recv` on the netlink socket, reads /proc
//! and sends with [`EventTx::send`] (never waits); the async side only waits for shutdown. After
//! each batch it drains the fanotify group (non-blocking). A second thread (`picket-hash`) hashes
//! programs not yet in the hash cache and sends their `process.start` itself. The
//! thread runs at real-time priority while that is cheap (see [`sched`] for why, with numbers,
//! and the governor that bounds it). Messages already queued are handled as one batch: /proc is
//! read for every exec in the batch, fragile parts first ([`procfs::Part`]), before any event is
//! built, and an exec followed by another exec of the same pid in the batch is known to be stale
//! without reading /proc. Socket buffer: [`netlink::RCVBUF`]; process table bounds:
//! [`cache::MAX_ENTRIES`], [`cache::MAX_BYTES`].
//!
//! # Requirements and limits
//!
//! Subscribing needs CAP_NET_ADMIN, reading the exec filename and other users' /proc entries
//! needs root (CAP_SYS_PTRACE), fanotify needs CAP_SYS_ADMIN, and the connector serves only the
//! initial network namespace. Without the connector the source polls /proc at
//! `sources.process.poll_interval_secs` ([`poll`]: `running (degraded: ...)`), or, with polling
//! off, the status says `unavailable: ...` once and the agent runs on without process events.
//! With the `ebpf` feature, each exec's filename and argv come from the eBPF exec tracer
//! ([`bpf`]) when the kernel allows it. The polling fallback sees no uid/gid changes. A main thread
//! that exits while other threads run is reported as the process's exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use picket_event::{Container, Event, EventKind, Group, ParentProcess, Process, Timestamp, User, severity};
use tokio::sync::oneshot;

use crate::{CaptureError, EventTx, SendError, Shutdown, SourceStatus};

pub mod bpf;
pub mod cache;
pub mod fanotify;
pub mod hash;
pub mod netlink;
pub mod poll;
pub mod procfs;
pub mod sched;

use cache::{Image, ProcCache};
use fanotify::{ExecFile, ExecPaths};
use hash::{FileKey, Hasher};
use netlink::{ConnEvent, Connector, Message, Recv, SeqTracker};
use procfs::{Part, ProcReader, Snapshot};

const DATASET: &str = "picket.process";
const MODULE: &str = "netlink";

/// At most this many queued messages are handled as one batch.
pub const BATCH: usize = 256;

/// How long the subscription's answer from the kernel is waited for.
const ACK_WAIT: Duration = Duration::from_secs(1);

/// How often the status line is refreshed (when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Clock ticks per second in /proc/PID/stat: USER_HZ is 100 on every Linux ABI.
const TICKS_PER_SEC: u64 = 100;

/// At most this many uid/gid changes wait for the exec they belong to; past it the oldest is
/// sent as it is.
pub const MAX_PENDING_SETID: usize = 64;

/// A uid/gid change waits at most this long (kernel time) for the exec it belongs to.
pub const SETID_WAIT_NS: u64 = 1_000_000_000;

/// Which ids a uid/gid change message set, and to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdChange {
    User { real: u32, effective: u32 },
    Group { real: u32, effective: u32 },
}

/// A `process.setid` waiting for the exec it belongs to.
#[derive(Debug)]
struct PendingSetid {
    tgid: u32,
    mono_ns: u64,
    ev: Event,
}

/// Where the tracker gets /proc facts from: the real /proc ([`ProcReader`]) or a test double.
pub trait Procfs {
    /// Read one part of what /proc shows of `pid` into `snap`.
    fn read_part(&mut self, pid: u32, part: Part, snap: &mut Snapshot);
    /// Everything readable about `pid` now.
    fn snapshot(&mut self, pid: u32) -> Snapshot {
        let mut s = Snapshot::default();
        for part in Part::ALL {
            self.read_part(pid, part, &mut s);
        }
        self.done();
        s
    }
    /// The reads of a batch are over: let go of what was held for them ([`ProcReader::forget`]).
    fn done(&mut self) {}
    /// The name of user `uid`.
    fn user_name(&mut self, uid: u32) -> Option<String>;
}

impl Procfs for ProcReader {
    fn read_part(&mut self, pid: u32, part: Part, snap: &mut Snapshot) {
        ProcReader::read_part(self, pid, part, snap);
    }

    fn done(&mut self) {
        self.forget();
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        ProcReader::user_name(self, uid)
    }
}

/// Where the tracker gets each exec's file from when /proc is gone: fanotify ([`ExecPaths`]), a
/// test double, or nothing (`()`).
pub trait ExecSource {
    /// The file of `pid`'s oldest exec not yet taken; `exe` is /proc/PID/exe when it was read
    /// (a record naming another file is then left in place).
    fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile>;

    /// The kernel's record of `pid`'s oldest exec not yet taken: execve's filename and argv
    /// ([`bpf`]), when the eBPF tracer runs.
    fn take_name(&mut self, _pid: u32) -> Option<bpf::ExecName> {
        None
    }

    /// The eBPF tracer holds all of `pid`'s exec that /proc's [`Part::Program`] would give
    /// ([`bpf::ExecNames::complete`]): that part is not read.
    fn has_program(&self, _pid: u32) -> bool {
        false
    }
}

/// What the reader has besides /proc: fanotify's files and the eBPF tracer's names.
#[derive(Debug, Default)]
pub struct Execs {
    pub paths: Option<ExecPaths>,
    pub names: Option<bpf::ExecNames>,
}

impl ExecSource for Execs {
    fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile> {
        ExecSource::take(&mut self.paths, pid, exe)
    }

    fn take_name(&mut self, pid: u32) -> Option<bpf::ExecName> {
        self.names.as_mut().and_then(|n| n.take(pid))
    }

    fn has_program(&self, pid: u32) -> bool {
        self.names.as_ref().is_some_and(|n| n.complete(pid))
    }
}

impl ExecSource for () {
    fn take(&mut self, _: u32, _: Option<&str>) -> Option<ExecFile> {
        None
    }
}

impl<T: ExecSource> ExecSource for Option<T> {
    fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile> {
        self.as_mut().and_then(|s| s.take(pid, exe))
    }

    fn take_name(&mut self, pid: u32) -> Option<bpf::ExecName> {
        self.as_mut().and_then(|s| s.take_name(pid))
    }

    fn has_program(&self, pid: u32) -> bool {
        self.as_ref().is_some_and(|s| s.has_program(pid))
    }
}

impl ExecSource for ExecPaths {
    fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile> {
        ExecPaths::take(self, pid, exe)
    }
}

/// The file a `process.start` ran, for hashing: its version, and how to open it.
#[derive(Debug)]
pub struct Program {
    pub key: FileKey,
    pub open: Opener,
}

/// How to open a program's file.
#[derive(Debug)]
pub enum Opener {
    /// `/proc/PID/exe` (works for deleted files and memfds while the process lives).
    Proc(u32),
    /// Already open (fanotify's fd).
    Fd(std::os::fd::OwnedFd),
}

impl Opener {
    pub fn open(self) -> Option<std::fs::File> {
        match self {
            Opener::Proc(pid) => std::fs::File::open(format!("/proc/{pid}/exe")).ok(),
            Opener::Fd(fd) => Some(std::fs::File::from(fd)),
        }
    }
}

/// What a batch added to the loss counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Kernel messages missed (sequence holes).
    pub lost: u64,
    /// `process.start` events sent without /proc details.
    pub vanished: u64,
    /// Of those, the ones whose program path came from fanotify.
    pub vanished_with_path: u64,
}

/// Turns connector messages into events: the process table and the loss accounting. No I/O of
/// its own; /proc comes through [`Procfs`].
#[derive(Debug, Default)]
pub struct Tracker {
    cache: ProcCache,
    seq: SeqTracker,
    /// Per message of the batch being handled: its /proc snapshot (execs not known to be stale).
    snaps: Vec<Option<Snapshot>>,
    /// Per message: an exec of the same pid follows in the batch.
    stale: Vec<bool>,
    last_exec: std::collections::HashMap<u32, usize>,
    /// uid/gid changes waiting for their exec, oldest first (at most [`MAX_PENDING_SETID`]).
    pending: std::collections::VecDeque<PendingSetid>,
    /// CLOCK_BOOTTIME minus CLOCK_MONOTONIC (time spent suspended), to place /proc start times.
    boot_offset_ns: u64,
}

impl Tracker {
    /// `boot_offset_ns`: CLOCK_BOOTTIME minus CLOCK_MONOTONIC now (0 if never suspended).
    pub fn new(cache: ProcCache, boot_offset_ns: u64) -> Tracker {
        Tracker { cache, boot_offset_ns, ..Tracker::default() }
    }

    pub fn cache(&self) -> &ProcCache {
        &self.cache
    }

    /// Remember a process seen in a /proc scan (at start), so its children's events name it.
    pub fn learn(&mut self, pid: u32, snap: &Snapshot) {
        let Some(stat) = &snap.stat else { return };
        let start_ns =
            stat.start_ticks.saturating_mul(1_000_000_000 / TICKS_PER_SEC).checked_sub(self.boot_offset_ns);
        self.cache.insert(
            pid,
            cache::Entry {
                ppid: Some(stat.ppid),
                image: (!snap.is_vanished()).then(|| Arc::new(image_of(snap))),
                start_ns,
                start_ticks: Some(stat.start_ticks),
                ids: snap.ids,
                ..cache::Entry::default()
            },
        );
    }

    /// Handle one batch of messages in kernel order, calling `emit` for each event.
    /// `wall_offset_ns` turns the kernel's CLOCK_MONOTONIC stamps into wall-clock time.
    pub fn handle_batch(
        &mut self,
        batch: &[Message],
        fs: &mut impl Procfs,
        execs: &mut impl ExecSource,
        wall_offset_ns: i64,
        emit: &mut impl FnMut(Event, Option<Program>),
    ) -> BatchCounts {
        let mut counts = BatchCounts::default();
        // Which execs are already superseded by a later exec of the same pid in this batch.
        self.last_exec.clear();
        self.stale.clear();
        self.stale.resize(batch.len(), false);
        for (i, m) in batch.iter().enumerate() {
            if let ConnEvent::Exec { tgid, .. } = m.event
                && let Some(prev) = self.last_exec.insert(tgid, i)
            {
                self.stale[prev] = true;
            }
        }
        // Read /proc for every live exec first: that is the race against the process's exit.
        // Part by part across the batch, so the last exec's argv is not read after the first
        // one's every file.
        self.snaps.clear();
        self.snaps.resize(batch.len(), None);
        for part in Part::ALL {
            for (i, m) in batch.iter().enumerate() {
                if let ConnEvent::Exec { tgid, .. } = m.event
                    && !self.stale[i]
                {
                    let snap = self.snaps[i].get_or_insert_default();
                    if part == Part::Program && execs.has_program(tgid) {
                        continue;
                    }
                    fs.read_part(tgid, part, snap);
                }
            }
        }
        fs.done();
        for (i, m) in batch.iter().enumerate() {
            counts.lost += self.seq.observe(m.cpu, m.seq);
            let ts = wall_time(m.timestamp_ns, wall_offset_ns);
            match m.event {
                ConnEvent::Fork { parent_tgid, child_pid, child_tgid } if child_pid == child_tgid => {
                    self.cache.fork(parent_tgid, child_tgid, m.timestamp_ns);
                }
                ConnEvent::Exec { tgid, .. } => {
                    let snap = self.snaps[i].take();
                    let (ev, program, vanished, with_path) =
                        self.on_exec(tgid, snap, m.timestamp_ns, ts, fs, execs);
                    counts.vanished += u64::from(vanished);
                    counts.vanished_with_path += u64::from(vanished && with_path);
                    // A uid change waiting for this exec (a setuid program) names the program
                    // it ran; it follows the program's start.
                    let setids = self.take_pending(tgid);
                    let setids: Vec<Event> = setids.into_iter().map(|s| in_exec_context(s, &ev)).collect();
                    emit(ev, program);
                    for s in setids {
                        emit(s, None);
                    }
                }
                ConnEvent::Exit { pid, tgid, exit_code, parent_tgid } if pid == tgid => {
                    for s in self.take_pending(tgid) {
                        emit(s, None);
                    }
                    emit(self.on_exit(tgid, exit_code, parent_tgid, m.timestamp_ns, ts, fs), None);
                }
                ConnEvent::Uid { pid, tgid, ruid, euid } => {
                    let change = IdChange::User { real: ruid, effective: euid };
                    self.on_setid(pid, tgid, change, i, m.timestamp_ns, ts, fs, emit);
                }
                ConnEvent::Gid { pid, tgid, rgid, egid } => {
                    let change = IdChange::Group { real: rgid, effective: egid };
                    self.on_setid(pid, tgid, change, i, m.timestamp_ns, ts, fs, emit);
                }
                _ => {}
            }
        }
        counts
    }

    fn on_exec(
        &mut self,
        pid: u32,
        snap: Option<Snapshot>,
        mono_ns: u64,
        ts: Timestamp,
        fs: &mut impl Procfs,
        execs: &mut impl ExecSource,
    ) -> (Event, Option<Program>, bool, bool) {
        let mut ev = base_event(EventKind::ProcessStart, ts);
        // No snapshot: a later exec of the same pid was already queued, so /proc shows that one.
        let stale = snap.is_none();
        let snap = snap.unwrap_or_default();
        // The kernel's own record of this exec (eBPF): execve's filename and argv as they were at
        // the exec. Preferred to /proc's, which live in the process's memory and may have been
        // rewritten since (`[kworker/0:1]`). A record of an earlier process with this pid is
        // dropped.
        let name = execs
            .take_name(pid)
            .filter(|n| snap.stat.as_ref().is_none_or(|s| s.start_ticks == n.start_ticks));
        let vanished = snap.is_vanished();
        // This exec's record from fanotify: checked against /proc/PID/exe when that was read.
        let file = execs.take(pid, snap.exe.as_deref());
        let known = self.cache.peek(pid);
        let ppid = snap.stat.as_ref().map(|s| s.ppid).or(known.and_then(|e| e.ppid));
        let mut p = Process { pid: Some(pid), ..Process::default() };
        let mut image = (!vanished).then(|| image_of(&snap));
        p.resolved_executable = snap.exe.clone();
        if let Some(img) = &image {
            p.name = Some(img.name.clone());
            p.executable.clone_from(&img.executable);
        } else {
            p.name = snap.stat.as_ref().map(|s| s.comm.clone());
            let what = if stale {
                "process exec'd again before /proc could be read"
            } else {
                "process exited before /proc could be read"
            };
            ev.message = Some(match &file {
                Some(_) => format!("{what}; executable from fanotify (symlinks resolved)"),
                None => what.to_string(),
            });
            if let Some(f) = &file {
                p.executable = Some(f.path.clone());
                p.resolved_executable = Some(f.running.clone());
                let name = p.name.clone().unwrap_or_else(|| procfs::base_name(&f.path).to_string());
                p.name = Some(name.clone());
                image = Some(Image {
                    name,
                    executable: Some(f.path.clone()),
                    command_line: None,
                    resolved: Some(f.running.clone()),
                });
            }
        }
        let mut argv = snap.argv;
        if let Some(n) = name.as_ref() {
            let executable = procfs::executable(
                Some(&n.filename),
                None,
                snap.cwd.as_deref(),
                p.resolved_executable.as_deref(),
            )
            .or_else(|| p.executable.clone());
            if let Some(e) = &executable {
                p.name = Some(procfs::base_name(e).to_string());
            }
            p.executable = executable;
            if n.argv.is_some() {
                argv.clone_from(&n.argv);
            }
            image = Some(Image {
                name: p.name.clone().unwrap_or_default(),
                executable: p.executable.clone(),
                command_line: argv
                    .as_ref()
                    .map(|a| cache::truncate(&a.join(" "), cache::MAX_CACHED_COMMAND_LINE).to_string()),
                resolved: p.resolved_executable.clone(),
            });
            if let Some(m) = ev.message.as_mut() {
                m.push_str(if n.argv.is_some() {
                    "; executable and arguments from eBPF"
                } else {
                    "; executable from eBPF"
                });
            }
        }
        if let Some(why) = hash::fileless_reason(p.resolved_executable.as_deref(), p.executable.as_deref()) {
            p.fileless = Some(true);
            p.fileless_reason = Some(why.to_string());
        }
        if let Some(cg) = &snap.cgroup {
            if cg.path != "/" {
                p.cgroup = Some(cg.path.clone());
            }
            if let Some(id) = &cg.container_id {
                ev.container = Some(Container { id: id.clone(), runtime: cg.runtime.map(str::to_string) });
            }
        }
        let with_path = file.is_some() || name.is_some();
        let program = match (file, snap.exe_key) {
            (Some(ExecFile { key: Some(key), fd: Some(fd), .. }), _) => {
                Some(Program { key, open: Opener::Fd(fd) })
            }
            (_, Some(key)) if !vanished => Some(Program { key, open: Opener::Proc(pid) }),
            _ => None,
        };
        p.working_directory = snap.cwd.clone();
        p.start_ticks = snap.stat.as_ref().map(|s| s.start_ticks);
        if let Some(argv) = argv {
            p.command_line = Some(argv.join(" "));
            p.args = Some(argv);
        }
        if let Some(ids) = snap.ids {
            ev.user = Some(User { id: Some(ids.euid.to_string()), name: fs.user_name(ids.euid) });
            set_user_ids(&mut p, ids.uid, ids.euid, fs);
            set_group_ids(&mut p, ids.gid, ids.egid);
        }
        if let Some(ppid) = ppid.filter(|&p| p != 0) {
            p.parent = Some(self.parent(ppid, fs));
        }
        self.cache.exec(pid, ppid, image, p.start_ticks, mono_ns);
        if let Some(ids) = snap.ids {
            self.cache.set_ids(pid, ids);
        }
        ev.process = Some(p);
        (ev, program, vanished, with_path)
    }

    /// A uid or gid change of task `pid` of process `tgid`, the `i`th message of the batch.
    ///
    /// The kernel sends it from `commit_creds`, for every thread (glibc applies set*id to all
    /// threads) and for changes of the saved and filesystem ids too: a change that leaves the
    /// real and effective ids the table knows as they were is not reported. The table takes the
    /// new ids, so the process's later events carry them.
    ///
    /// The exec of a setuid or setgid program changes the effective id *before* the kernel sends
    /// the exec: the table still shows the program that called execve. So a change that kept the
    /// real id (what such an exec does) waits for that exec when one follows in the batch, or
    /// when /proc/PID/exe already shows another file than the table knows; it is sent after the
    /// exec's `process.start`, with its program. It waits at most [`SETID_WAIT_NS`] (see
    /// [`Tracker::flush_setid`]) or until the process exits. A change of the real id is a
    /// set*id call: it is sent at once, with the program the table knows.
    #[allow(clippy::too_many_arguments)]
    fn on_setid(
        &mut self,
        pid: u32,
        tgid: u32,
        change: IdChange,
        i: usize,
        mono_ns: u64,
        ts: Timestamp,
        fs: &mut impl Procfs,
        emit: &mut impl FnMut(Event, Option<Program>),
    ) {
        let old = self.cache.peek(tgid).and_then(|e| e.ids);
        let same = |o: procfs::Ids| match change {
            IdChange::User { real, effective } => (o.uid, o.euid) == (real, effective),
            IdChange::Group { real, effective } => (o.gid, o.egid) == (real, effective),
        };
        if old.is_some_and(same) {
            return;
        }
        // What /proc shows now: the file running, and the ids the message does not carry.
        let mut snap = Snapshot::default();
        fs.read_part(tgid, Part::Files, &mut snap);
        fs.read_part(tgid, Part::Task, &mut snap);
        fs.done();
        let new = old.or(snap.ids).map(|mut ids| {
            match change {
                IdChange::User { real, effective } => (ids.uid, ids.euid) = (real, effective),
                IdChange::Group { real, effective } => (ids.gid, ids.egid) = (real, effective),
            }
            ids
        });
        let real_kept = old.is_none_or(|o| match change {
            IdChange::User { real, .. } => o.uid == real,
            IdChange::Group { real, .. } => o.gid == real,
        });
        let mut ev = base_event(EventKind::ProcessSetid, ts);
        ev.event.action = Some(match change {
            IdChange::User { .. } => "uid_change".to_string(),
            IdChange::Group { .. } => "gid_change".to_string(),
        });
        let (mut p, container) = self.table_context(tgid, &snap, fs);
        let known_file =
            self.cache.peek(tgid).and_then(|e| e.image.as_ref()).and_then(|i| i.resolved.clone());
        match (change, new) {
            (_, Some(ids)) => {
                set_user_ids(&mut p, ids.uid, ids.euid, fs);
                set_group_ids(&mut p, ids.gid, ids.egid);
            }
            (IdChange::User { real, effective }, None) => set_user_ids(&mut p, real, effective, fs),
            (IdChange::Group { real, effective }, None) => set_group_ids(&mut p, real, effective),
        }
        if let Some(o) = old {
            p.previous_user = Some(User { id: Some(o.euid.to_string()), name: None });
            p.previous_group = Some(Group { id: Some(o.egid.to_string()), name: None });
        }
        ev.user.clone_from(&p.user);
        ev.process = Some(p);
        ev.container = container;
        if let Some(ids) = new {
            self.cache.set_ids(tgid, ids);
        }
        if pid != tgid {
            ev.message = Some(format!("changed by thread {pid}"));
        }
        let exec_follows = self.last_exec.get(&tgid).is_some_and(|&j| j > i);
        let exec_running = known_file.is_none() || snap.exe != known_file;
        if real_kept && (exec_follows || exec_running) {
            if self.pending.len() >= MAX_PENDING_SETID
                && let Some(oldest) = self.pending.pop_front()
            {
                emit(oldest.ev, None);
            }
            self.pending.push_back(PendingSetid { tgid, mono_ns, ev });
        } else {
            emit(ev, None);
        }
    }

    /// The uid/gid changes of `tgid` waiting for its exec.
    fn take_pending(&mut self, tgid: u32) -> Vec<Event> {
        if !self.pending.iter().any(|p| p.tgid == tgid) {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut self.pending).into_iter().partition(|p| p.tgid == tgid);
        self.pending = rest;
        mine.into_iter().map(|p: PendingSetid| p.ev).collect::<Vec<_>>()
    }

    /// Send the uid/gid changes that waited [`SETID_WAIT_NS`] for an exec that did not come (a
    /// seteuid call while /proc already showed the next program, or a lost exec message) as they
    /// are, with the program the table knew. `now_mono_ns`: CLOCK_MONOTONIC now (`u64::MAX`:
    /// all of them, when the source stops).
    pub fn flush_setid(&mut self, now_mono_ns: u64, emit: &mut impl FnMut(Event, Option<Program>)) {
        while let Some(p) = self.pending.front() {
            if now_mono_ns.saturating_sub(p.mono_ns) < SETID_WAIT_NS {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                emit(p.ev, None);
            }
        }
    }

    /// `process.*` and `container.*` of `pid` from the table and from `snap` (what /proc shows
    /// now: the file running, stat, cgroup).
    fn table_context(
        &mut self,
        pid: u32,
        snap: &Snapshot,
        fs: &mut impl Procfs,
    ) -> (Process, Option<Container>) {
        let mut p = Process { pid: Some(pid), ..Process::default() };
        let entry = self.cache.get(pid).cloned();
        if let Some(img) = entry.as_ref().and_then(|e| e.image.as_ref()) {
            p.name = Some(img.name.clone());
            p.executable.clone_from(&img.executable);
            p.command_line.clone_from(&img.command_line);
        } else {
            p.name = snap.stat.as_ref().map(|s| s.comm.clone());
        }
        p.resolved_executable = snap.exe.clone();
        p.start_ticks =
            entry.as_ref().and_then(|e| e.start_ticks).or(snap.stat.as_ref().map(|s| s.start_ticks));
        let mut container = None;
        if let Some(cg) = &snap.cgroup {
            if cg.path != "/" {
                p.cgroup = Some(cg.path.clone());
            }
            if let Some(id) = &cg.container_id {
                container = Some(Container { id: id.clone(), runtime: cg.runtime.map(str::to_string) });
            }
        }
        let ppid = entry.and_then(|e| e.ppid).or(snap.stat.as_ref().map(|s| s.ppid)).filter(|&p| p != 0);
        if let Some(ppid) = ppid {
            p.parent = Some(self.parent(ppid, fs));
        }
        (p, container)
    }

    /// `process.parent.*` for `ppid`: from the table, else read from /proc once and remembered.
    fn parent(&mut self, ppid: u32, fs: &mut impl Procfs) -> ParentProcess {
        if self.cache.get(ppid).is_none() {
            let snap = fs.snapshot(ppid);
            if !snap.is_vanished() {
                self.learn(ppid, &snap);
            }
        }
        let img = self.cache.get(ppid).and_then(|e| e.image.clone());
        ParentProcess {
            pid: Some(ppid),
            name: img.as_ref().map(|i| i.name.clone()),
            executable: img.as_ref().and_then(|i| i.executable.clone()),
            command_line: img.as_ref().and_then(|i| i.command_line.clone()),
        }
    }

    fn on_exit(
        &mut self,
        pid: u32,
        status: u32,
        parent_tgid: Option<u32>,
        mono_ns: u64,
        ts: Timestamp,
        fs: &mut impl Procfs,
    ) -> Event {
        let mut ev = base_event(EventKind::ProcessExit, ts);
        let entry = self.cache.remove(pid);
        let (code, signal) = decode_exit(status);
        let mut p = Process { pid: Some(pid), exit_code: Some(code), ..Process::default() };
        if let Some(sig) = signal {
            let core = if status & 0x80 != 0 { " (core dumped)" } else { "" };
            ev.message = Some(format!("killed by signal {sig}{core}"));
        }
        // The kernel reports parent 0 when the parent already reaped the process (it reads the
        // parent only while the task is still hashed): fall back to what the table knew.
        let ppid =
            parent_tgid.filter(|&p| p != 0).or(entry.as_ref().and_then(|e| e.ppid)).filter(|&p| p != 0);
        if let Some(e) = entry {
            if let Some(img) = &e.image {
                p.name = Some(img.name.clone());
                p.executable.clone_from(&img.executable);
                p.command_line.clone_from(&img.command_line);
            }
            p.start_ticks = e.start_ticks;
            ev.event.duration = e.start_ns.map(|s| mono_ns.saturating_sub(s));
            // The effective user it last ran as: a uid change since its exec is in the table.
            if let Some(ids) = e.ids {
                ev.user = Some(User { id: Some(ids.euid.to_string()), name: fs.user_name(ids.euid) });
            }
        }
        if let Some(ppid) = ppid {
            let img = self.cache.peek(ppid).and_then(|e| e.image.clone());
            p.parent = Some(ParentProcess {
                pid: Some(ppid),
                name: img.as_ref().map(|i| i.name.clone()),
                executable: img.as_ref().and_then(|i| i.executable.clone()),
                ..ParentProcess::default()
            });
        }
        ev.process = Some(p);
        ev
    }
}

/// (exit code, killing signal) from a wait status: `code << 8` for an exit, the signal number
/// (`| 0x80` with a core dump) for a kill, which reports as 128 + signal.
pub fn decode_exit(status: u32) -> (i32, Option<u32>) {
    let sig = status & 0x7f;
    if sig == 0 {
        (i32::from(u8::try_from((status >> 8) & 0xff).unwrap_or(0)), None)
    } else {
        (128 + i32::from(u8::try_from(sig).unwrap_or(0)), Some(sig))
    }
}

/// `process.user` and `process.real_user`.
fn set_user_ids(p: &mut Process, real: u32, effective: u32, fs: &mut impl Procfs) {
    p.user = Some(User { id: Some(effective.to_string()), name: fs.user_name(effective) });
    p.real_user = Some(User { id: Some(real.to_string()), name: fs.user_name(real) });
}

/// `process.group` and `process.real_group` (ids only: group names are not looked up).
fn set_group_ids(p: &mut Process, real: u32, effective: u32) {
    p.group = Some(Group { id: Some(effective.to_string()), name: None });
    p.real_group = Some(Group { id: Some(real.to_string()), name: None });
}

/// A uid/gid change that waited for its exec, given the exec's program: `start`'s process
/// context with the change's own ids.
fn in_exec_context(mut setid: Event, start: &Event) -> Event {
    let ids = setid.process.take().unwrap_or_default();
    let mut p = start.process.clone().unwrap_or_default();
    p.user = ids.user;
    p.real_user = ids.real_user;
    p.group = ids.group;
    p.real_group = ids.real_group;
    p.previous_user = ids.previous_user;
    p.previous_group = ids.previous_group;
    p.hash = None;
    setid.process = Some(p);
    setid.container.clone_from(&start.container);
    setid
}

fn image_of(snap: &Snapshot) -> Image {
    let executable = snap.executable();
    let name = match (&executable, &snap.stat) {
        (Some(e), _) => procfs::base_name(e).to_string(),
        (None, Some(s)) => s.comm.clone(),
        (None, None) => String::new(),
    };
    let command_line =
        snap.argv.as_ref().map(|a| cache::truncate(&a.join(" "), cache::MAX_CACHED_COMMAND_LINE).to_string());
    Image { name, executable, command_line, resolved: snap.exe.clone() }
}

fn base_event(kind: EventKind, ts: Timestamp) -> Event {
    let mut ev = Event::new(kind, ts);
    ev.event.severity = severity::INFO;
    ev.event.dataset = Some(DATASET.to_string());
    ev.event.module = Some(MODULE.to_string());
    ev
}

fn wall_time(mono_ns: u64, offset_ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(i64::try_from(mono_ns).unwrap_or(i64::MAX).saturating_add(offset_ns))
}

fn clock_ns(id: rustix::time::ClockId) -> i64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec.saturating_mul(1_000_000_000).saturating_add(t.tv_nsec)
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, now. Taken per batch, so a stepped wall clock is
/// followed.
fn wall_offset() -> i64 {
    clock_ns(rustix::time::ClockId::Realtime) - clock_ns(rustix::time::ClockId::Monotonic)
}

/// CLOCK_BOOTTIME minus CLOCK_MONOTONIC (time spent suspended).
fn boot_offset() -> u64 {
    let d = clock_ns(rustix::time::ClockId::Boottime) - clock_ns(rustix::time::ClockId::Monotonic);
    u64::try_from(d).unwrap_or(0)
}

/// The process source.
#[derive(Debug, Clone, Default)]
pub struct ProcessSource {
    poll_interval: Option<Duration>,
    no_ebpf: bool,
}

impl ProcessSource {
    /// The source's name in status and drop counters.
    pub const NAME: &'static str = "process";

    /// A source without the polling fallback: unavailable without the connector.
    pub fn new() -> ProcessSource {
        ProcessSource::default()
    }

    /// When the connector cannot be used, scan /proc every `interval` instead ([`poll`]);
    /// `None`: report the source unavailable.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Option<Duration>) -> ProcessSource {
        self.poll_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// Whether to try the eBPF exec tracer ([`bpf`]; on by default).
    #[must_use]
    pub fn with_ebpf(mut self, on: bool) -> ProcessSource {
        self.no_ebpf = !on;
        self
    }

    /// Runs until `shutdown` fires or the pipeline closes, then returns `Ok(())`. Without the
    /// privileges or kernel support the connector needs, it polls /proc if a poll interval was
    /// given (status `running (degraded: ...)`), else it sets the status to `unavailable: ...`
    /// and returns `Ok(())` at once.
    pub async fn run(
        self,
        out: EventTx,
        status: SourceStatus,
        mut shutdown: Shutdown,
    ) -> Result<(), CaptureError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, mut done_rx) = oneshot::channel();
        {
            let stop = Arc::clone(&stop);
            let status = status.clone();
            std::thread::Builder::new()
                .name("picket-process".into())
                .spawn(move || {
                    let _ = done_tx.send(reader(&self, &out, &status, &stop));
                })
                .map_err(|e| CaptureError::Failed {
                    source_name: Self::NAME,
                    message: format!("thread: {e}"),
                })?;
        }
        let ended = tokio::select! {
            () = shutdown.wait() => None,
            r = &mut done_rx => Some(r),
        };
        let result = match ended {
            Some(r) => r,
            None => {
                // The reader notices within its receive timeout.
                stop.store(true, Ordering::Relaxed);
                done_rx.await
            }
        };
        result.unwrap_or_else(|_| {
            Err(CaptureError::Failed { source_name: Self::NAME, message: "reader thread panicked".into() })
        })
    }
}

/// The counts the status line shows.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Stats {
    lost: u64,
    overruns: u64,
    vanished: u64,
    vanished_with_path: u64,
    /// Why there is no fanotify correlation, if there is none.
    no_fanotify: Option<String>,
    fanotify: fanotify::Counts,
    /// Why the eBPF exec tracer does not run, if it does not.
    no_ebpf: Option<String>,
    ebpf: bpf::Counts,
    /// Events sent without a hash because the hasher's queue was full.
    unhashed: u64,
    /// Events sent without a hash because the program opened was not the version looked up.
    changed: u64,
}

/// `running`, then what is worth knowing: losses, and a reader not at real-time priority.
fn status_line(st: &Stats, governor: &sched::Governor) -> String {
    let mut notes = Vec::new();
    if st.lost > 0 || st.overruns > 0 {
        notes.push(format!("{} lost to {} overruns", st.lost, st.overruns));
    }
    if st.vanished > 0 {
        notes.push(format!(
            "{} vanished before /proc was read, {} of them with their path from fanotify or eBPF",
            st.vanished, st.vanished_with_path
        ));
    }
    if let Some(why) = &st.no_fanotify {
        notes.push(format!("no exec paths for vanished processes: {why}"));
    }
    match &st.no_ebpf {
        Some(why) => notes.push(format!("exec names from /proc, not eBPF: {why}")),
        None => notes.push("exec names from eBPF".to_string()),
    }
    if st.ebpf.lost > 0 || st.ebpf.dropped > 0 {
        notes.push(format!(
            "eBPF: {} records lost in the kernel, {} never matched an exec",
            st.ebpf.lost, st.ebpf.dropped
        ));
    }
    let f = &st.fanotify;
    if f.overflows > 0 || f.mismatched > 0 {
        notes.push(format!(
            "fanotify: {} queue overflows, {} records not matching /proc",
            f.overflows, f.mismatched
        ));
    }
    if st.unhashed > 0 {
        notes.push(format!("{} without hash (hasher busy)", st.unhashed));
    }
    if st.changed > 0 {
        notes.push(format!("{} without hash (program changed)", st.changed));
    }
    if let Some(why) = governor.refused() {
        notes.push(format!("normal priority: real-time refused: {why}"));
    } else if governor.policy() == sched::Policy::Normal {
        notes.push("normal priority: busy".to_string());
    }
    if governor.demotions > 0 {
        notes.push(format!("left real-time {} times under load", governor.demotions));
    }
    if notes.is_empty() { "running".to_string() } else { format!("running ({})", notes.join("; ")) }
}

fn failed(message: String) -> CaptureError {
    CaptureError::Failed { source_name: ProcessSource::NAME, message }
}

/// The reader thread: subscribe, scan /proc, then receive until stopped.
/// A subscribed connector, the messages that came with its answer, overruns so far.
type Connected = (Connector, Vec<Message>, u64);

/// Open and subscribe. `Ok(Err(why))`: the connector cannot be used here.
fn connect(stop: &AtomicBool) -> Result<Result<Connected, String>, CaptureError> {
    let caps = std::fs::read("/proc/self/status").unwrap_or_default();
    if !procfs::status_has_cap(&caps, procfs::CAP_NET_ADMIN) {
        return Ok(Err("the netlink process connector needs CAP_NET_ADMIN (run as root)".into()));
    }
    let mut conn = match Connector::open() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let ack = std::process::id() | 0x5000_0000;
    if let Err(e) = conn.subscribe(ack) {
        return Ok(Err(e.to_string()));
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut overruns = 0u64;
    // The kernel answers the subscription among the events; keep the events that come with it.
    let deadline = Instant::now() + ACK_WAIT;
    'ack: while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let from = batch.len();
        match conn.recv(&mut buf, true).map_err(|e| failed(format!("receiving: {e}")))? {
            Recv::Data(n) => netlink::parse_datagram(&buf[..n], &mut batch),
            Recv::Overrun => {
                overruns += 1;
                continue;
            }
            Recv::Empty | Recv::Spoofed => continue,
        }
        for m in &batch[from..] {
            if let ConnEvent::Ack { err, ack: a } = m.event
                && a == ack.wrapping_add(1)
            {
                if err != 0 {
                    return Ok(Err(netlink::OpenError::Refused(err).to_string()));
                }
                break 'ack;
            }
        }
    }
    Ok(Ok((conn, batch, overruns)))
}

/// Send `ev`, hashing its program first when `program` says which and the hash is not cached
/// (then the hasher sends it). Returns false once the pipeline is closed.
fn deliver(
    out: &EventTx,
    hasher: Option<&Hasher>,
    mut ev: Event,
    program: Option<Program>,
    unhashed: &mut u64,
) -> bool {
    // Too large to hash: known from the file's size, without reading it.
    let program = program.filter(|p| p.key.size <= hash::MAX_HASH_BYTES);
    let mut to_hash = None;
    if let (Some(h), Some(prog)) = (hasher, program) {
        match h.cached(&prog.key) {
            Some(Some(sum)) => hash::set_hash(&mut ev, &sum),
            Some(None) => {}
            None => to_hash = prog.open.open().map(|file| (prog.key, file)),
        }
    }
    if let Some(h) = hasher {
        // Behind events still waiting for a hash, this one waits too: the order is kept.
        let needs_hash = to_hash.is_some();
        if needs_hash || h.busy() {
            match h.submit(hash::Job { event: Box::new(ev), hash: to_hash }) {
                None => return true,
                Some(back) => {
                    *unhashed += u64::from(needs_hash);
                    ev = back;
                }
            }
        }
    }
    out.send(ev) != Err(SendError::Closed)
}

/// The reader thread: subscribe (or fall back to polling), scan /proc, then receive until
/// stopped.
fn reader(
    source: &ProcessSource,
    out: &EventTx,
    status: &SourceStatus,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let name = ProcessSource::NAME;
    let (conn, mut batch, mut overruns) = match connect(stop)? {
        Ok(c) => c,
        Err(why) => {
            match source.poll_interval {
                Some(every) => poll::run(every, &why, out, status, stop),
                None => status.set(name, format!("unavailable: {why}")),
            }
            return Ok(());
        }
    };
    let mut buf = vec![0u8; 16 * 1024];

    // Before the scan: an exec from now on has its fanotify record.
    let mut st = Stats::default();
    let mut execs = Execs::default();
    match ExecPaths::open() {
        Ok(p) => execs.paths = Some(p),
        Err(e) => st.no_fanotify = Some(e),
    }
    if source.no_ebpf {
        st.no_ebpf = Some("off (sources.process.ebpf)".into());
    } else {
        match bpf::ExecNames::open() {
            Ok(n) => execs.names = Some(n),
            Err(e) => st.no_ebpf = Some(e),
        }
    }
    let hasher = Hasher::start(out.clone()).ok();

    // Real-time from here on: the scan below and every /proc read race exiting processes.
    let mut governor = sched::Governor::start();
    let mut fs = ProcReader::default();
    let mut tracker = Tracker::new(ProcCache::default(), boot_offset());
    // What runs already, so the first events name their parents. Half the table at most: the
    // rest is for what starts from now on.
    for pid in ProcReader::pids() {
        if tracker.cache().len() >= cache::MAX_ENTRIES / 2 {
            break;
        }
        let snap = fs.snapshot(pid);
        tracker.learn(pid, &snap);
    }

    let mut closed = false;
    let mut shown = String::new();
    let mut last_status: Option<Instant> = None;
    let mut shown_policy = governor.policy();
    loop {
        governor.tick();
        // uid/gid changes whose exec did not come in time go out as they are.
        let now = u64::try_from(clock_ns(rustix::time::ClockId::Monotonic)).unwrap_or(0);
        let mut unhashed = 0u64;
        tracker.flush_setid(now, &mut |ev, program| {
            if !deliver(out, hasher.as_ref(), ev, program, &mut unhashed) {
                closed = true;
            }
        });
        st.unhashed += unhashed;
        st.overruns = overruns;
        if let Some(h) = &hasher {
            st.changed = h.counts.changed.load(Ordering::Relaxed);
        }
        if let Some(p) = &execs.paths {
            st.fanotify = p.counts;
        }
        if let Some(n) = &execs.names {
            st.ebpf = n.counts();
        }
        // Counts are shown at most once a second; a change of priority at once.
        let due =
            last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) || governor.policy() != shown_policy;
        if due {
            let line = status_line(&st, &governor);
            shown_policy = governor.policy();
            last_status = Some(Instant::now());
            if line != shown {
                status.set(name, line.clone());
                shown = line;
            }
        }
        if closed || stop.load(Ordering::Relaxed) || out.is_closed() {
            break;
        }
        if batch.is_empty() {
            match conn.recv(&mut buf, true).map_err(|e| failed(format!("receiving: {e}")))? {
                Recv::Data(n) => netlink::parse_datagram(&buf[..n], &mut batch),
                Recv::Overrun => overruns += 1,
                Recv::Empty | Recv::Spoofed => {}
            }
        }
        // Take what is already queued too, up to a batch.
        while !batch.is_empty() && batch.len() < BATCH {
            match conn.recv(&mut buf, false).map_err(|e| failed(format!("receiving: {e}")))? {
                Recv::Data(n) => netlink::parse_datagram(&buf[..n], &mut batch),
                Recv::Overrun => overruns += 1,
                Recv::Spoofed => {}
                Recv::Empty => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        // The records of the batch's execs are queued by now (fanotify's and the tracer's come
        // before the connector's message). Only execs have records: a batch of forks and exits
        // (two wake-ups in three) leaves them be, which saves two system calls.
        if batch.iter().any(|m| matches!(m.event, ConnEvent::Exec { .. })) {
            if let Some(p) = &mut execs.paths {
                p.drain();
            }
            if let Some(n) = &mut execs.names {
                n.drain();
            }
        }
        let mut unhashed = 0u64;
        let counts = tracker.handle_batch(&batch, &mut fs, &mut execs, wall_offset(), &mut |ev, program| {
            if !deliver(out, hasher.as_ref(), ev, program, &mut unhashed) {
                closed = true;
            }
        });
        batch.clear();
        st.unhashed += unhashed;
        if counts.lost > 0 {
            st.lost += counts.lost;
            out.count_drop("overrun", counts.lost);
        }
        if counts.vanished > 0 {
            st.vanished += counts.vanished;
            st.vanished_with_path += counts.vanished_with_path;
            out.count_drop("vanished", counts.vanished);
        }
    }
    if !closed {
        let mut unhashed = 0u64;
        tracker.flush_setid(u64::MAX, &mut |ev, program| {
            deliver(out, hasher.as_ref(), ev, program, &mut unhashed);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::{Ids, Stat};
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeProc {
        procs: HashMap<u32, Snapshot>,
        reads: Vec<u32>,
    }

    impl Procfs for FakeProc {
        fn read_part(&mut self, pid: u32, part: Part, snap: &mut Snapshot) {
            let Some(p) = self.procs.get(&pid) else { return };
            match part {
                Part::Program => {
                    self.reads.push(pid);
                    snap.argv.clone_from(&p.argv);
                    snap.execfn.clone_from(&p.execfn);
                }
                Part::Files => {
                    snap.exe.clone_from(&p.exe);
                    snap.cwd.clone_from(&p.cwd);
                }
                Part::Task => {
                    snap.stat.clone_from(&p.stat);
                    snap.ids = p.ids;
                    snap.cgroup.clone_from(&p.cgroup);
                }
            }
        }
        fn user_name(&mut self, uid: u32) -> Option<String> {
            (uid == 0).then(|| "root".into())
        }
    }

    fn snap(argv: &[&str], execfn: &str, exe: &str, ppid: u32) -> Snapshot {
        Snapshot {
            argv: Some(argv.iter().map(|s| s.to_string()).collect()),
            argv_truncated: false,
            execfn: Some(execfn.into()),
            exe: Some(exe.into()),
            cwd: Some("/root".into()),
            stat: Some(Stat { comm: "c".into(), state: 'R', ppid, start_ticks: 4242 }),
            ids: Some(Ids { uid: 1000, euid: 0, gid: 0, egid: 0 }),
            ..Snapshot::default()
        }
    }

    fn msg(seq: u32, ts: u64, event: ConnEvent) -> Message {
        Message { cpu: 0, seq, timestamp_ns: ts, event }
    }

    fn run(t: &mut Tracker, fs: &mut FakeProc, batch: &[Message]) -> (Vec<Event>, BatchCounts) {
        let mut out = Vec::new();
        let c = t.handle_batch(batch, fs, &mut (), 1_000, &mut |e, _| out.push(e));
        (out, c)
    }

    #[test]
    fn exec_becomes_a_start_event_with_the_exec_path_and_parent() {
        let mut fs = FakeProc::default();
        fs.procs.insert(10, snap(&["sh", "-c", "ls"], "/bin/sh", "/usr/bin/dash", 1));
        fs.procs.insert(11, snap(&["ls", "-l", "a  b"], "/bin/ls", "/bin/busybox", 10));
        let mut t = Tracker::default();
        let (evs, c) = run(
            &mut t,
            &mut fs,
            &[
                msg(0, 5, ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 }),
                msg(1, 7, ConnEvent::Exec { pid: 11, tgid: 11 }),
            ],
        );
        assert_eq!(c, BatchCounts::default());
        assert_eq!(evs.len(), 1);
        let ev = &evs[0];
        assert_eq!(ev.kind, EventKind::ProcessStart);
        assert_eq!(ev.timestamp, Timestamp::from_unix_nanos(1_007));
        let p = ev.process.as_ref().unwrap();
        assert_eq!(p.executable.as_deref(), Some("/bin/ls"));
        assert_eq!(p.resolved_executable.as_deref(), Some("/bin/busybox"));
        assert_eq!(p.name.as_deref(), Some("ls"));
        assert_eq!(p.command_line.as_deref(), Some("ls -l a  b"));
        assert_eq!(p.args.as_ref().unwrap().len(), 3);
        assert_eq!(p.start_ticks, Some(4242));
        let parent = p.parent.as_ref().unwrap();
        assert_eq!(parent.pid, Some(10));
        assert_eq!(parent.executable.as_deref(), Some("/bin/sh"), "parent read from /proc once");
        assert_eq!(parent.command_line.as_deref(), Some("sh -c ls"));
        assert_eq!(ev.user.as_ref().unwrap().id.as_deref(), Some("0"));
        assert_eq!(ev.user.as_ref().unwrap().name.as_deref(), Some("root"));
    }

    #[test]
    fn vanished_and_superseded_execs_keep_what_is_known() {
        let mut fs = FakeProc::default();
        fs.procs.insert(10, snap(&["sh"], "/bin/sh", "/usr/bin/dash", 1));
        fs.procs.insert(12, snap(&["true", "x"], "/bin/true", "/usr/bin/true", 10));
        let mut t = Tracker::default();
        let (evs, c) = run(
            &mut t,
            &mut fs,
            &[
                msg(0, 1, ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 }),
                msg(1, 2, ConnEvent::Exec { pid: 11, tgid: 11 }),
                msg(2, 3, ConnEvent::Fork { parent_tgid: 10, child_pid: 12, child_tgid: 12 }),
                msg(3, 4, ConnEvent::Exec { pid: 12, tgid: 12 }),
                msg(4, 5, ConnEvent::Exec { pid: 12, tgid: 12 }),
            ],
        );
        assert_eq!(c.vanished, 2);
        assert_eq!(evs.len(), 3);
        let gone = evs[0].process.as_ref().unwrap();
        assert_eq!(gone.pid, Some(11));
        assert_eq!(gone.parent.as_ref().unwrap().pid, Some(10), "ppid from the fork");
        assert_eq!(gone.parent.as_ref().unwrap().executable.as_deref(), Some("/bin/sh"));
        assert!(gone.executable.is_none() && gone.args.is_none());
        assert!(evs[0].message.as_deref().unwrap().contains("exited before"));
        assert!(evs[1].message.as_deref().unwrap().contains("exec'd again"));
        // The first exec of 12 was superseded in the same batch: /proc read once, for the last.
        assert!(evs[1].process.as_ref().unwrap().executable.is_none());
        assert_eq!(evs[2].process.as_ref().unwrap().executable.as_deref(), Some("/bin/true"));
        assert_eq!(fs.reads.iter().filter(|&&p| p == 12).count(), 1);
    }

    /// Records per pid, oldest first, as fanotify would queue them.
    #[derive(Default)]
    struct FakeExecs(HashMap<u32, Vec<String>>);

    impl ExecSource for FakeExecs {
        fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile> {
            let q = self.0.get_mut(&pid)?;
            if q.is_empty() || exe.is_some_and(|e| e != q[0]) {
                return None;
            }
            Some(ExecFile::new(q.remove(0), None, None))
        }
    }

    #[test]
    fn vanished_execs_get_their_path_from_fanotify_in_exec_order() {
        let mut fs = FakeProc::default();
        fs.procs.insert(10, snap(&["sh"], "/bin/sh", "/usr/bin/dash", 1));
        // 13 is alive and runs /usr/bin/b; its first record is an older exec's.
        fs.procs.insert(13, snap(&["b"], "/usr/bin/b", "/usr/bin/b", 10));
        let mut execs = FakeExecs::default();
        execs.0.insert(11, vec!["/usr/bin/true".into()]);
        execs.0.insert(12, vec!["/tmp/first".into(), "/tmp/second (deleted)".into()]);
        execs.0.insert(13, vec!["/usr/bin/a".into()]);
        let mut t = Tracker::default();
        let mut out = Vec::new();
        let c = t.handle_batch(
            &[
                msg(0, 1, ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 }),
                msg(1, 2, ConnEvent::Exec { pid: 11, tgid: 11 }),
                msg(2, 3, ConnEvent::Exec { pid: 12, tgid: 12 }),
                msg(3, 4, ConnEvent::Exec { pid: 12, tgid: 12 }),
                msg(4, 5, ConnEvent::Exec { pid: 13, tgid: 13 }),
                msg(5, 6, ConnEvent::Exit { pid: 11, tgid: 11, exit_code: 0, parent_tgid: Some(10) }),
            ],
            &mut fs,
            &mut execs,
            0,
            &mut |e, _| out.push(e),
        );
        assert_eq!((c.vanished, c.vanished_with_path), (3, 3));
        let p = |i: usize| out[i].process.clone().unwrap();
        assert_eq!(p(0).executable.as_deref(), Some("/usr/bin/true"));
        assert_eq!(p(0).resolved_executable.as_deref(), Some("/usr/bin/true"));
        assert_eq!(p(0).name.as_deref(), Some("true"));
        assert!(out[0].message.as_deref().unwrap().contains("from fanotify"));
        assert_eq!(p(0).parent.unwrap().pid, Some(10));
        // Two execs of 12, both gone: each gets its own record, in order.
        assert_eq!(p(1).executable.as_deref(), Some("/tmp/first"));
        assert_eq!(p(2).executable.as_deref(), Some("/tmp/second (deleted)"));
        assert_eq!((p(2).fileless, p(2).fileless_reason.as_deref()), (Some(true), Some("deleted")));
        assert_eq!(p(1).fileless, None);
        // Alive: /proc wins, and a record for another file is not taken.
        assert_eq!(p(3).executable.as_deref(), Some("/usr/bin/b"));
        assert_eq!(execs.0[&13].len(), 1);
        // The exit knows the program from the fanotify path.
        assert_eq!(out[4].kind, EventKind::ProcessExit);
        assert_eq!(p(4).executable.as_deref(), Some("/usr/bin/true"));
    }

    /// The tracer's records per pid, oldest first.
    #[derive(Default)]
    struct FakeNames(HashMap<u32, Vec<bpf::ExecName>>);

    impl ExecSource for FakeNames {
        fn take(&mut self, _: u32, _: Option<&str>) -> Option<ExecFile> {
            None
        }
        fn take_name(&mut self, pid: u32) -> Option<bpf::ExecName> {
            let q = self.0.get_mut(&pid)?;
            (!q.is_empty()).then(|| q.remove(0))
        }
        fn has_program(&self, pid: u32) -> bool {
            self.0.get(&pid).is_some_and(|q| q.len() == 1 && q[0].argv.is_some())
        }
    }

    /// An exec the eBPF tracer recorded in full is not read from /proc's argv and exec filename
    /// (they come from the record, also when the process was gone before /proc was read); one
    /// whose record has no argv is read from /proc as before.
    #[test]
    fn an_exec_the_tracer_recorded_in_full_skips_procs_program_reads() {
        let name = |f: &str, argv: Option<&[&str]>| bpf::ExecName {
            filename: f.into(),
            argv: argv.map(|a| a.iter().map(|s| s.to_string()).collect()),
            start_ticks: 4242,
        };
        let mut fs = FakeProc::default();
        fs.procs.insert(20, snap(&["stale", "argv"], "/bin/stale", "/usr/bin/nc.openbsd", 1));
        fs.procs.insert(22, snap(&["ls", "-l"], "/bin/ls", "/usr/bin/ls", 1));
        let mut names = FakeNames::default();
        names.0.insert(20, vec![name("/usr/bin/nc", Some(&["nc", "-l", "4444"]))]);
        // 21 is gone from /proc; 22's record has no argv (the tracer cut it).
        names.0.insert(21, vec![name("/tmp/x", Some(&["/tmp/x", "-q"]))]);
        names.0.insert(22, vec![name("/bin/ls", None)]);
        let mut t = Tracker::default();
        let mut out = Vec::new();
        let c = t.handle_batch(
            &[
                msg(0, 1, ConnEvent::Exec { pid: 20, tgid: 20 }),
                msg(1, 2, ConnEvent::Exec { pid: 21, tgid: 21 }),
                msg(2, 3, ConnEvent::Exec { pid: 22, tgid: 22 }),
            ],
            &mut fs,
            &mut names,
            0,
            &mut |e, _| out.push(e),
        );
        assert_eq!(fs.reads, vec![22], "only the exec without argv from the tracer reads /proc's");
        // 21 was gone: still counted (no user, cwd or resolved file), with its path from eBPF.
        assert_eq!((c.vanished, c.vanished_with_path), (1, 1));
        let p = |i: usize| out[i].process.clone().unwrap();
        assert_eq!(p(0).executable.as_deref(), Some("/usr/bin/nc"));
        assert_eq!(p(0).resolved_executable.as_deref(), Some("/usr/bin/nc.openbsd"));
        assert_eq!(p(0).command_line.as_deref(), Some("nc -l 4444"));
        assert_eq!(p(1).executable.as_deref(), Some("/tmp/x"));
        assert_eq!(p(1).name.as_deref(), Some("x"));
        assert_eq!(p(1).command_line.as_deref(), Some("/tmp/x -q"));
        assert_eq!(p(2).command_line.as_deref(), Some("ls -l"));
    }

    #[test]
    fn container_and_cgroup_from_proc() {
        let id = "a".repeat(64);
        let mut fs = FakeProc::default();
        let mut s = snap(&["x"], "/x", "/memfd:x (deleted)", 1);
        s.cgroup = procfs::parse_cgroup(format!("0::/system.slice/docker-{id}.scope\n").as_bytes());
        fs.procs.insert(5, s);
        let mut t = Tracker::default();
        let (evs, _) = run(&mut t, &mut fs, &[msg(0, 1, ConnEvent::Exec { pid: 5, tgid: 5 })]);
        let c = evs[0].container.as_ref().unwrap();
        assert_eq!((c.id.as_str(), c.runtime.as_deref()), (id.as_str(), Some("docker")));
        let p = evs[0].process.as_ref().unwrap();
        assert_eq!(p.cgroup.as_deref(), Some(format!("/system.slice/docker-{id}.scope").as_str()));
        assert_eq!(p.fileless_reason.as_deref(), Some("memfd"));
    }

    #[test]
    fn exit_carries_code_duration_and_program_and_empties_the_table() {
        let mut fs = FakeProc::default();
        fs.procs.insert(11, snap(&["true"], "/bin/true", "/usr/bin/true", 10));
        let mut t = Tracker::default();
        let (evs, _) = run(
            &mut t,
            &mut fs,
            &[
                msg(0, 100, ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 }),
                msg(1, 150, ConnEvent::Exec { pid: 11, tgid: 11 }),
                msg(2, 160, ConnEvent::Fork { parent_tgid: 11, child_pid: 13, child_tgid: 11 }),
                msg(3, 170, ConnEvent::Exit { pid: 13, tgid: 11, exit_code: 0, parent_tgid: Some(10) }),
                msg(4, 400, ConnEvent::Exit { pid: 11, tgid: 11, exit_code: 3 << 8, parent_tgid: Some(10) }),
                msg(5, 500, ConnEvent::Exit { pid: 99, tgid: 99, exit_code: 9, parent_tgid: Some(1) }),
                msg(6, 600, ConnEvent::Fork { parent_tgid: 10, child_pid: 14, child_tgid: 14 }),
                msg(7, 700, ConnEvent::Exit { pid: 14, tgid: 14, exit_code: 0, parent_tgid: Some(0) }),
            ],
        );
        assert_eq!(evs.len(), 4, "threads are not processes: {evs:#?}");
        let exit = &evs[1];
        assert_eq!(exit.kind, EventKind::ProcessExit);
        let p = exit.process.as_ref().unwrap();
        assert_eq!(p.exit_code, Some(3));
        assert_eq!(p.executable.as_deref(), Some("/bin/true"));
        assert_eq!(p.parent.as_ref().unwrap().pid, Some(10));
        assert_eq!(exit.event.duration, Some(300), "from the fork");
        let killed = &evs[2];
        assert_eq!(killed.process.as_ref().unwrap().exit_code, Some(137));
        assert_eq!(killed.message.as_deref(), Some("killed by signal 9"));
        assert!(t.cache().peek(11).is_none());
        let reaped = evs[3].process.as_ref().unwrap();
        assert_eq!(reaped.parent.as_ref().unwrap().pid, Some(10), "parent 0 from the kernel: the fork's");
    }

    fn uid(pid: u32, ruid: u32, euid: u32) -> ConnEvent {
        ConnEvent::Uid { pid, tgid: pid, ruid, euid }
    }

    fn uid_of(u: Option<&User>) -> Option<&str> {
        u.and_then(|u| u.id.as_deref())
    }

    fn gid_of(g: Option<&Group>) -> Option<&str> {
        g.and_then(|g| g.id.as_deref())
    }

    /// Effective, real, previous uid; effective, real, previous gid.
    fn ids_of(ev: &Event) -> [Option<&str>; 6] {
        let p = ev.process.as_ref().unwrap();
        [
            uid_of(p.user.as_ref()),
            uid_of(p.real_user.as_ref()),
            uid_of(p.previous_user.as_ref()),
            gid_of(p.group.as_ref()),
            gid_of(p.real_group.as_ref()),
            gid_of(p.previous_group.as_ref()),
        ]
    }

    /// Root runs `sh`, which drops to 65534 (setresgid, setresuid: the real ids change): each
    /// change is sent at once, with the program the table knows and the ids before it; a thread
    /// repeating it is not; the exit carries the new user.
    #[test]
    fn setid_calls_are_reported_at_once_with_the_ids_before() {
        let mut fs = FakeProc::default();
        let mut sh = snap(&["sh", "-c", "x"], "/bin/sh", "/usr/bin/dash", 1);
        sh.ids = Some(Ids { uid: 0, euid: 0, gid: 0, egid: 0 });
        fs.procs.insert(10, sh);
        let mut t = Tracker::default();
        let (evs, _) = run(
            &mut t,
            &mut fs,
            &[
                msg(0, 1, ConnEvent::Exec { pid: 10, tgid: 10 }),
                msg(1, 2, ConnEvent::Gid { pid: 10, tgid: 10, rgid: 65534, egid: 65534 }),
                msg(2, 3, uid(10, 65534, 65534)),
                // Another thread of 10 applying the same change (glibc's set*id broadcast).
                msg(3, 4, ConnEvent::Uid { pid: 12, tgid: 10, ruid: 65534, euid: 65534 }),
                msg(4, 5, ConnEvent::Exit { pid: 10, tgid: 10, exit_code: 0, parent_tgid: Some(1) }),
            ],
        );
        let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::ProcessStart,
                EventKind::ProcessSetid,
                EventKind::ProcessSetid,
                EventKind::ProcessExit
            ]
        );
        assert_eq!(ids_of(&evs[0])[..2], [Some("0"), Some("0")], "process.start carries the ids too");
        let gid = &evs[1];
        assert_eq!(gid.event.action.as_deref(), Some("gid_change"));
        assert_eq!(ids_of(gid), [Some("0"), Some("0"), Some("0"), Some("65534"), Some("65534"), Some("0")]);
        let setuid = &evs[2];
        assert_eq!(setuid.event.action.as_deref(), Some("uid_change"));
        assert_eq!(setuid.timestamp, Timestamp::from_unix_nanos(1_003));
        assert_eq!(
            ids_of(setuid),
            [Some("65534"), Some("65534"), Some("0"), Some("65534"), Some("65534"), Some("65534")]
        );
        assert_eq!(setuid.user.as_ref().unwrap().id.as_deref(), Some("65534"));
        let p = setuid.process.as_ref().unwrap();
        assert_eq!((p.pid, p.executable.as_deref()), (Some(10), Some("/bin/sh")));
        assert_eq!(p.command_line.as_deref(), Some("sh -c x"));
        assert_eq!(p.start_ticks, Some(4242));
        assert_eq!(p.parent.as_ref().unwrap().pid, Some(1));
        assert_eq!(
            evs[3].user.as_ref().unwrap().id.as_deref(),
            Some("65534"),
            "the exit's user is the new one"
        );
    }

    /// The exec of a setuid-root program by 65534: the kernel sends the uid change before the
    /// exec. Whether the exec is in the same batch or comes later, the change is sent after the
    /// program's `process.start` and names that program; without an exec it waits at most
    /// SETID_WAIT_NS.
    #[test]
    fn a_setuid_exec_names_the_program_it_ran() {
        let mut fs = FakeProc::default();
        let mut sh = snap(&["sh"], "/bin/sh", "/usr/bin/dash", 1);
        sh.ids = Some(Ids { uid: 65534, euid: 65534, gid: 65534, egid: 65534 });
        fs.procs.insert(10, sh.clone());
        let mut t = Tracker::default();
        let (evs, _) = run(&mut t, &mut fs, &[msg(0, 1, ConnEvent::Exec { pid: 10, tgid: 10 })]);
        assert_eq!(evs.len(), 1);
        // Same batch: the fork's child execs /usr/bin/su (setuid root).
        let mut su = snap(&["su", "-"], "/usr/bin/su", "/usr/bin/su", 10);
        su.ids = Some(Ids { uid: 65534, euid: 0, gid: 65534, egid: 65534 });
        fs.procs.insert(11, su.clone());
        let (evs, _) = run(
            &mut t,
            &mut fs,
            &[
                msg(1, 2, ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 }),
                msg(2, 3, uid(11, 65534, 0)),
                msg(3, 4, ConnEvent::Exec { pid: 11, tgid: 11 }),
            ],
        );
        let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::ProcessStart, EventKind::ProcessSetid]);
        let setid = &evs[1];
        assert_eq!(setid.timestamp, Timestamp::from_unix_nanos(1_003), "the kernel's time of the change");
        assert_eq!(ids_of(setid)[..3], [Some("0"), Some("65534"), Some("65534")]);
        let p = setid.process.as_ref().unwrap();
        assert_eq!(p.executable.as_deref(), Some("/usr/bin/su"));
        assert_eq!(p.args.as_ref().unwrap(), &["su", "-"]);
        assert_eq!(p.parent.as_ref().unwrap().pid, Some(10));
        // Another batch: /proc already shows the new file when the change is handled, and the
        // exec comes in the next batch.
        fs.procs.insert(12, su);
        let (evs, _) = run(
            &mut t,
            &mut fs,
            &[
                msg(4, 5, ConnEvent::Fork { parent_tgid: 10, child_pid: 12, child_tgid: 12 }),
                msg(5, 6, uid(12, 65534, 0)),
            ],
        );
        assert!(evs.is_empty(), "waits for its exec: {evs:#?}");
        let (evs, _) = run(&mut t, &mut fs, &[msg(6, 7, ConnEvent::Exec { pid: 12, tgid: 12 })]);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].kind, EventKind::ProcessSetid);
        assert_eq!(evs[1].process.as_ref().unwrap().executable.as_deref(), Some("/usr/bin/su"));
        // A seteuid call while /proc shows the program the table knows is sent at once.
        fs.procs.insert(12, {
            let mut s = snap(&["su", "-"], "/usr/bin/su", "/usr/bin/su", 10);
            s.ids = Some(Ids { uid: 65534, euid: 0, gid: 65534, egid: 65534 });
            s
        });
        let (evs, _) = run(&mut t, &mut fs, &[msg(7, 8, uid(12, 65534, 65534))]);
        assert_eq!(evs.len(), 1);
        assert_eq!(ids_of(&evs[0])[..3], [Some("65534"), Some("65534"), Some("0")]);
        // A change whose exec never comes (another file in /proc, no exec message) goes out
        // after SETID_WAIT_NS, as it is.
        fs.procs.insert(13, snap(&["x"], "/x", "/usr/bin/other", 10));
        let (evs, _) = run(
            &mut t,
            &mut fs,
            &[
                msg(8, 100, ConnEvent::Fork { parent_tgid: 10, child_pid: 13, child_tgid: 13 }),
                msg(9, 200, uid(13, 65534, 0)),
            ],
        );
        assert!(evs.is_empty());
        let mut out = Vec::new();
        t.flush_setid(200 + SETID_WAIT_NS - 1, &mut |e, _| out.push(e));
        assert!(out.is_empty());
        t.flush_setid(200 + SETID_WAIT_NS, &mut |e, _| out.push(e));
        assert_eq!(out.len(), 1);
        let p = out[0].process.as_ref().unwrap();
        assert_eq!(p.executable.as_deref(), Some("/bin/sh"), "the table's program");
        assert_eq!(p.resolved_executable.as_deref(), Some("/usr/bin/other"), "what /proc showed");
    }

    #[test]
    fn sequence_holes_count_as_lost() {
        let mut t = Tracker::default();
        let mut fs = FakeProc::default();
        let other = |s| msg(s, 0, ConnEvent::Other);
        let (_, c) = run(&mut t, &mut fs, &[other(10), other(11), other(15)]);
        assert_eq!(c.lost, 3);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(decode_exit(0), (0, None));
        assert_eq!(decode_exit(255 << 8), (255, None));
        assert_eq!(decode_exit(15), (143, Some(15)));
        assert_eq!(decode_exit(0x80 | 11), (139, Some(11)));
    }
}
