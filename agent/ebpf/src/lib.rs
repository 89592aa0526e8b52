//! Exec tracing with eBPF: every exec in the kernel, with the filename exactly as execve got it
//! and the new program's argv, even for a process that exits microseconds later.
//!
//! Design:
//! - `bpf/exec.bpf.c` (compiled by build.rs with clang, embedded here, loaded by aya) is a
//!   `raw_tracepoint/sched_process_exec` program. It reads `bprm->filename` (the path the program
//!   was started by, as given: symlinks not followed, so a BusyBox applet keeps its own name)
//!   and the argv block `mm->arg_start..arg_end` of the new program. Kernel struct offsets are
//!   read at start from `/sys/kernel/btf/vmlinux` by a streaming reader ([`btf`]) and handed to
//!   the program as read-only globals, so one object serves every kernel with BTF. Not CO-RE:
//!   aya's CO-RE parses the whole kernel BTF, ~17 MB of peak memory; this costs ~80 KiB (the
//!   object is loaded by `load.rs`, not aya's `EbpfLoader`, whose constructor parses it too). A
//!   raw tracepoint needs no tracefs mount and no BPF trampoline.
//! - Records go through a BPF ring buffer (bounded, [`ExecTracerOptions::ring_bytes`]); one the
//!   ring has no room for is counted in a per-CPU counter map and reported by
//!   [`ExecTracer::lost`]. Nothing waits: the kernel never blocks an exec on us.
//! - Synchronous: the caller polls [`ExecTracer::as_raw_fd`] (readable while records wait) or
//!   calls [`ExecTracer::wait`], then [`ExecTracer::drain`].
//!
//! Correlation with cn_proc and `/proc`: `pid` and `ppid` are pids of the initial pid namespace
//! (the ones cn_proc and host `/proc` use). Only successful execs are recorded, after the point
//! of no return and before the new program runs. In the kernel's `exec_binprm()` this
//! tracepoint fires just before cn_proc's `PROC_EVENT_EXEC` is sent, and the program commits
//! the record to the ring before it returns, so a consumer that reads a batch of cn_proc messages and
//! then drains the tracer holds the record of every exec in that batch: match by pid, oldest
//! first (a pid can exec twice). For a `#!` script, `filename` is the script as passed and
//! `argv` the kernel's rewritten one (`/bin/sh`, script, args). A relative `filename` (`./x`)
//! must be resolved against the process's cwd by the consumer. Times: `boot_ns` is
//! `CLOCK_BOOTTIME` (`bpf_ktime_get_boot_ns`), `mono_ns` `CLOCK_MONOTONIC` (cn_proc's
//! `timestamp_ns` clock), and `start_boot_ns` the task's `start_boottime` (its fork), from which
//! `/proc/PID/stat` field 22 is made (`start_boot_ns / (1e9 / CLK_TCK)`): with the pid it names
//! one process across pid reuse.
//!
//! Costs: ~1.4 µs of kernel time per exec (measured with `exectrace --bench`), kernel memory of
//! the ring plus a ~20.5 KiB scratch record per CPU. In user space, starting adds ~0.7 MB to the
//! peak RSS (tests/rss.rs, release build): 520 KiB of it is the ring buffer's mapping, which the
//! kernel maps whole at once with its data pages twice (default 2 x 256 KiB + 2 control pages);
//! the BTF reader ~80 KiB, code paged in the rest.
//!
//! Needs: Linux 5.8+ (ring buffer, `bpf_ktime_get_boot_ns`), kernel BTF, a 64-bit kernel, and
//! root (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN). [`ExecTracer::start`] says which is missing.

pub mod btf;
mod load;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};

#[cfg(picket_ebpf_object)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec.bpf.o")));
#[cfg(not(picket_ebpf_object))]
static OBJECT: Option<&[u8]> = None;

/// The argv bytes the BPF program can copy at most (`ARGV_BUF` in exec.bpf.c).
pub const ARGV_MAX_BYTES: u32 = 16384;
/// The filename bytes kept at most, without the NUL (PATH_MAX - 1).
pub const FILENAME_MAX_BYTES: usize = 4095;
/// Smallest ring: must hold the largest record (header + 4 KiB filename + 16 KiB argv).
const RING_MIN: u32 = 64 * 1024;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEPOINT: &std::ffi::CStr = c"sched_process_exec";

/// The kernel struct members the program reads: its global holding the byte offset, the struct,
/// the member, and whether the program can do without it (then the global is `u32::MAX`).
/// `task_struct.start_boottime` came in 5.5; the others are older than the 5.8 needed.
pub const KERNEL_MEMBERS: [(&str, &str, &str, bool); 10] = [
    ("off_bprm_filename", "linux_binprm", "filename", true),
    ("off_task_pid", "task_struct", "pid", true),
    ("off_task_tgid", "task_struct", "tgid", true),
    ("off_task_real_parent", "task_struct", "real_parent", true),
    ("off_task_mm", "task_struct", "mm", true),
    ("off_task_cred", "task_struct", "cred", true),
    ("off_task_start_boottime", "task_struct", "start_boottime", false),
    ("off_mm_arg_start", "mm_struct", "arg_start", true),
    ("off_mm_arg_end", "mm_struct", "arg_end", true),
    ("off_cred_euid", "cred", "euid", true),
];
const LOAD_ATTEMPTS: u32 = 5;

// Layout of `struct exec_hdr` in exec.bpf.c, native byte order.
const HDR_LEN: usize = 64;
const FLAG_FILENAME_TRUNCATED: u32 = 1;
const FLAG_ARGV_TRUNCATED: u32 = 2;
const FLAG_FILENAME_FAULT: u32 = 4;
const FLAG_ARGV_FAULT: u32 = 8;

/// What [`ExecTracer::start`] sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecTracerOptions {
    /// Ring buffer size in bytes: a power of two, at least 64 KiB (the kernel also wants a
    /// multiple of the page size). A short exec takes ~100 bytes of it. Default 256 KiB.
    pub ring_bytes: u32,
    /// Argv bytes sent per exec, at most [`ARGV_MAX_BYTES`]; longer argv is cut and the record
    /// says `truncated`. Default 4096.
    pub argv_max_bytes: u32,
}

impl Default for ExecTracerOptions {
    fn default() -> Self {
        ExecTracerOptions { ring_bytes: 256 * 1024, argv_max_bytes: 4096 }
    }
}

/// One exec, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    /// Process id (tgid), initial pid namespace.
    pub pid: u32,
    /// Thread id; equals `pid` after an exec (the kernel makes the exec'ing thread the leader).
    pub tid: u32,
    /// Parent's tgid (`real_parent`).
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Effective user id after the exec (setuid programs applied).
    pub euid: u32,
    /// `CLOCK_BOOTTIME` at the exec, nanoseconds.
    pub boot_ns: u64,
    /// `CLOCK_MONOTONIC` at the exec, nanoseconds (the clock of cn_proc's timestamps).
    pub mono_ns: u64,
    /// The task's start (its fork) in `CLOCK_BOOTTIME` ns, the source of `/proc/PID/stat`
    /// field 22; 0 when the kernel has no `start_boottime` (before 5.5).
    pub start_boot_ns: u64,
    /// `bprm->filename`: the path execve was given, not resolved (may be relative), at most
    /// [`FILENAME_MAX_BYTES`]. For fexecve/execveat with an fd, the kernel's `/dev/fd/N[/name]`.
    pub filename: Vec<u8>,
    /// The new program's arguments, `argv[0]` first, cut at `argv_max_bytes` (the last one may
    /// then be partial).
    pub argv: Vec<Vec<u8>>,
    /// The whole argv block's size in bytes, before the cut.
    pub argv_total_bytes: u64,
    /// The filename or argv was cut. A filename of exactly 4095 bytes is reported cut too (the
    /// kernel's string copy cannot tell them apart).
    pub truncated: bool,
    /// The kernel could not read the filename or the argv (left empty).
    pub read_fault: bool,
}

/// Why the tracer could not start. Each says plainly what is missing, for a log line before the
/// caller falls back to another exec source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// build.rs found no clang.
    #[error("built without the eBPF object: clang not found at build time")]
    ObjectMissing,
    /// A bad [`ExecTracerOptions`] field.
    #[error("invalid ExecTracerOptions.{field}: {reason}")]
    Options { field: &'static str, reason: &'static str },
    /// Not a kernel the program can run on.
    #[error("unsupported kernel: {0}")]
    Unsupported(String),
    /// No `/sys/kernel/btf/vmlinux`.
    #[error(
        "no kernel BTF ({BTF_PATH} missing: kernel built without CONFIG_DEBUG_INFO_BTF); \
         the exec tracer needs it to find kernel struct offsets"
    )]
    NoBtf,
    /// EPERM/EACCES from the bpf syscall.
    #[error(
        "eBPF not permitted ({stage}: {detail}): needs root (CAP_BPF and CAP_PERFMON, or \
         CAP_SYS_ADMIN); kernel lockdown=confidentiality or a security module can refuse it too"
    )]
    PermissionDenied { stage: &'static str, detail: String },
    /// The kernel is older than what the program needs.
    #[error("kernel {release} too old for the eBPF exec tracer (needs 5.8+): {stage}: {detail}")]
    KernelTooOld { release: String, stage: &'static str, detail: String },
    /// The kernel's BTF could not be read, or lacks a member the program reads.
    #[error("eBPF exec tracer: kernel struct offsets: {0}")]
    Btf(#[from] btf::BtfError),
    /// Anything else aya or the kernel refused.
    #[error("eBPF exec tracer: {stage} failed: {detail}")]
    Load { stage: &'static str, detail: String },
}

/// A running exec tracer. Dropping it detaches the program and frees the maps.
pub struct ExecTracer {
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    malformed: u64,
    // The program stays attached while `link` is open; the kernel keeps the maps it uses.
    link: OwnedFd,
    prog: OwnedFd,
}

impl fmt::Debug for ExecTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecTracer")
            .field("ring_fd", &self.ring.as_raw_fd())
            .field("link_fd", &self.link.as_raw_fd())
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl ExecTracer {
    /// Loads and attaches the program. Fails with a reason when eBPF cannot be used here.
    pub fn start(opts: ExecTracerOptions) -> Result<ExecTracer, Error> {
        if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < RING_MIN {
            return Err(Error::Options {
                field: "ring_bytes",
                reason: "must be a power of two of at least 65536",
            });
        }
        if opts.argv_max_bytes > ARGV_MAX_BYTES {
            return Err(Error::Options { field: "argv_max_bytes", reason: "must be at most 16384" });
        }
        let object = OBJECT.ok_or(Error::ObjectMissing)?;
        // The program reads kernel pointers as 8 bytes.
        if cfg!(target_pointer_width = "32") {
            return Err(Error::Unsupported(
                "32-bit kernels are not supported by the eBPF exec tracer".into(),
            ));
        }
        if !Path::new(BTF_PATH).exists() {
            return Err(Error::NoBtf);
        }

        let release = rustix::system::uname().release().to_string_lossy().into_owned();

        let wanted: Vec<(&str, &str)> = KERNEL_MEMBERS.iter().map(|(_, s, m, _)| (*s, *m)).collect();
        let offsets = btf::member_offsets(Path::new(BTF_PATH), &wanted)?;
        let mut globals = vec![("argv_cap", opts.argv_max_bytes)];
        for ((global, strukt, member, required), off) in KERNEL_MEMBERS.iter().zip(offsets) {
            match off {
                Some(off) => globals.push((global, off)),
                None if *required => {
                    return Err(Error::Btf(btf::BtfError::MissingMember {
                        path: BTF_PATH.into(),
                        strukt: (*strukt).to_owned(),
                        member: (*member).to_owned(),
                    }));
                }
                None => globals.push((global, u32::MAX)),
            }
        }

        let loaded = load::load(
            object,
            &globals,
            &[("events", opts.ring_bytes)],
            "picket_exec",
            TRACEPOINT,
            LOAD_ATTEMPTS,
        )
        .map_err(|(stage, e)| classify(stage, &*e, &release))?;
        let load::Loaded { prog, link, mut maps } = loaded;
        let mut take = |name: &str| {
            maps.remove(name)
                .ok_or_else(|| Error::Load { stage: "finding the map", detail: format!("no {name} map") })
        };
        let ring = RingBuf::try_from(Map::RingBuf(take("events")?))
            .map_err(|e| classify("opening the ring buffer", &e, &release))?;
        let lost = PerCpuArray::try_from(Map::PerCpuArray(take("lost")?))
            .map_err(|e| classify("opening the lost counter", &e, &release))?;
        Ok(ExecTracer { ring, lost, malformed: 0, link, prog })
    }

    /// Hands every record waiting to `f`, oldest first; returns how many. Records the kernel
    /// adds meanwhile are taken too, so under an endless exec storm use
    /// [`ExecTracer::drain_up_to`].
    pub fn drain(&mut self, f: impl FnMut(ExecRecord)) -> usize {
        self.drain_up_to(usize::MAX, f)
    }

    /// Like [`ExecTracer::drain`], stopping after `max` records (the fd stays readable while
    /// more wait: ring buffer readiness is level-triggered).
    pub fn drain_up_to(&mut self, max: usize, mut f: impl FnMut(ExecRecord)) -> usize {
        let mut n = 0;
        while n < max {
            // The item is released (its ring space freed) before `f` runs.
            let parsed = match self.ring.next() {
                Some(item) => parse_record(&item),
                None => break,
            };
            match parsed {
                Some(record) => {
                    f(record);
                    n += 1;
                }
                None => self.malformed += 1,
            }
        }
        n
    }

    /// Waits until records wait or `timeout` passes (`None`: forever); true when readable.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        // A timeout too large for a timespec waits forever.
        let timeout = timeout.and_then(|d| rustix::event::Timespec::try_from(d).ok());
        let mut fds = [rustix::event::PollFd::new(&self.ring, rustix::event::PollFlags::IN)];
        loop {
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Records lost: the ring buffer was full when the kernel had one (summed over CPUs), plus
    /// records that did not parse (none expected; [`ExecTracer::malformed`]).
    pub fn lost(&self) -> u64 {
        let kernel = self.lost.get(&0, 0).map(|per_cpu| per_cpu.iter().sum::<u64>()).unwrap_or(0);
        kernel + self.malformed
    }

    /// The program's run count and total time in the kernel. The kernel counts these only while
    /// run-time statistics are on (`sysctl kernel.bpf_stats_enabled=1`, or an fd from
    /// `BPF_ENABLE_STATS` held open, as the `exectrace --bench` example does); else both are 0.
    pub fn run_stats(&self) -> Option<(u64, Duration)> {
        let (count, ns) = load::run_stats(self.prog.as_fd()).ok()?;
        Some((count, Duration::from_nanos(ns)))
    }

    /// Records that came through the ring but did not parse (counted in `lost` too).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

impl AsRawFd for ExecTracer {
    /// The ring buffer's fd: readable (poll/epoll `IN`) while records wait.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl AsFd for ExecTracer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

/// Maps an aya error to one saying why eBPF is unavailable.
fn classify(stage: &'static str, e: &(dyn std::error::Error + 'static), release: &str) -> Error {
    let mut detail = e.to_string();
    let mut errno = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        let text = err.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        cur = err.source();
    }
    if matches!(errno, Some(code) if code == rustix::io::Errno::PERM.raw_os_error()
        || code == rustix::io::Errno::ACCESS.raw_os_error())
    {
        return Error::PermissionDenied { stage, detail };
    }
    if errno == Some(rustix::io::Errno::NOSYS.raw_os_error()) {
        return Error::Unsupported(format!(
            "no bpf() syscall (kernel without CONFIG_BPF_SYSCALL, or an emulator such as \
             qemu-user): {stage}: {detail}"
        ));
    }
    if kernel_older_than(release, (5, 8)) {
        return Error::KernelTooOld { release: release.to_owned(), stage, detail };
    }
    Error::Load { stage, detail }
}

/// True when `release` ("6.1.0-18-amd64") is a version below `want`; false when unparsable.
fn kernel_older_than(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < want,
        _ => false,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Parses one ring buffer record (`struct exec_hdr` + filename + argv block); None when its
/// lengths do not add up.
fn parse_record(b: &[u8]) -> Option<ExecRecord> {
    if b.len() < HDR_LEN {
        return None;
    }
    let flags = u32_at(b, 44);
    let fn_len = usize::try_from(u32_at(b, 48)).ok()?;
    let argv_len = usize::try_from(u32_at(b, 52)).ok()?;
    let filename = b.get(HDR_LEN..HDR_LEN.checked_add(fn_len)?)?.to_vec();
    let argv_start = HDR_LEN + fn_len;
    let block = b.get(argv_start..argv_start.checked_add(argv_len)?)?;
    Some(ExecRecord {
        boot_ns: u64_at(b, 0),
        mono_ns: u64_at(b, 8),
        start_boot_ns: u64_at(b, 16),
        pid: u32_at(b, 24),
        tid: u32_at(b, 28),
        ppid: u32_at(b, 32),
        uid: u32_at(b, 36),
        euid: u32_at(b, 40),
        filename,
        argv: split_argv(block),
        argv_total_bytes: u64_at(b, 56),
        truncated: flags & (FLAG_FILENAME_TRUNCATED | FLAG_ARGV_TRUNCATED) != 0,
        read_fault: flags & (FLAG_FILENAME_FAULT | FLAG_ARGV_FAULT) != 0,
    })
}

/// The kernel's argv block is each argument followed by a NUL; a cut block ends mid-argument,
/// kept as a partial last one. Empty arguments stay.
fn split_argv(block: &[u8]) -> Vec<Vec<u8>> {
    if block.is_empty() {
        return Vec::new();
    }
    let body = block.strip_suffix(&[0]).unwrap_or(block);
    body.split(|&c| c == 0).map(<[u8]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(flags: u32, filename: &[u8], argv: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1u64, 2, 3] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [
            10u32,
            11,
            12,
            13,
            14,
            flags,
            u32::try_from(filename.len()).unwrap(),
            u32::try_from(argv.len()).unwrap(),
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&99u64.to_ne_bytes());
        assert_eq!(b.len(), HDR_LEN);
        b.extend_from_slice(filename);
        b.extend_from_slice(argv);
        // The ring pads records to 8 bytes; padding must not be read as data.
        b.extend_from_slice(&[0; 5]);
        b
    }

    #[test]
    fn parses_header_filename_and_argv() {
        let r = parse_record(&record(0, b"/bin/nc", b"nc\0-l\0\0x\0")).unwrap();
        assert_eq!((r.boot_ns, r.mono_ns, r.start_boot_ns, r.argv_total_bytes), (1, 2, 3, 99));
        assert_eq!((r.pid, r.tid, r.ppid, r.uid, r.euid), (10, 11, 12, 13, 14));
        assert_eq!(r.filename, b"/bin/nc");
        assert_eq!(r.argv, [&b"nc"[..], b"-l", b"", b"x"]);
        assert!(!r.truncated && !r.read_fault);
    }

    #[test]
    fn cut_argv_keeps_partial_last_and_flags() {
        let r = parse_record(&record(FLAG_ARGV_TRUNCATED, b"/x", b"x\0abc")).unwrap();
        assert_eq!(r.argv, [&b"x"[..], b"abc"]);
        assert!(r.truncated);
        let r = parse_record(&record(FLAG_ARGV_FAULT, b"/x", b"")).unwrap();
        assert!(r.argv.is_empty() && r.read_fault);
    }

    #[test]
    fn rejects_lengths_past_the_record() {
        let mut b = record(0, b"/bin/true", b"true\0");
        b[48..52].copy_from_slice(&5000u32.to_ne_bytes());
        assert!(parse_record(&b).is_none());
        assert!(parse_record(&b[..HDR_LEN - 1]).is_none());
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_older_than("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_older_than("5.8.0", (5, 8)));
        assert!(!kernel_older_than("6.1.0-18-amd64", (5, 8)));
        assert!(!kernel_older_than("garbage", (5, 8)));
    }
}
