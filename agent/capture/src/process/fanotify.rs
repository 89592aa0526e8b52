//! The path of every exec, from fanotify `FAN_OPEN_EXEC`, for processes gone before /proc was
//! read.
//!
//! One notification-class group (`FAN_CLASS_NOTIF`: the kernel never waits for it; containment's
//! exec guard is a separate permission-class group) with `FAN_OPEN_EXEC` marks on every
//! filesystem in /proc/self/mountinfo but the pseudo and FUSE ones ([`skip_fs`]):
//! `FAN_MARK_FILESYSTEM`, else `FAN_MARK_MOUNT`. The mount table is looked at again every
//! [`REMARK_EVERY`], so a filesystem mounted later (mounts told apart by mount id, so also one
//! mounted over an old mount point) is covered from then on.
//!
//! The kernel queues a `FAN_OPEN_EXEC` record, synchronously, each time `execve` opens a file:
//! the program, then (for a `#!` script) its interpreter, then the ELF interpreter (`ld.so`) of a
//! dynamic program. All before the exec completes and `cn_proc` sends `PROC_EVENT_EXEC`. So once a
//! connector batch has been received, the records of its execs are already in the fanotify
//! queue: the reader drains the queue after each batch ([`ExecPaths::drain`]) and takes, per exec,
//! the oldest record *group* of that pid ([`ExecPaths::take`]).
//!
//! A group is the program's record plus the interpreters' records that follow it for the same
//! pid; which records are interpreters is decided from the files themselves ([`classify`], from
//! the first KiB read through the event's fd, cached per file version): a `#!` script is followed
//! by its interpreter, an ELF with `PT_INTERP` by `ld.so`. The group keeps the program's path
//! (`/proc/self/fd/N`, symlinks resolved: the same as `/proc/PID/exe`, not execve's filename), its
//! [`FileKey`] and its fd (for hashing a program that is gone or deleted).
//!
//! When /proc could be read, the group taken is the oldest whose running file (the program, or a
//! script's interpreter) is `/proc/PID/exe`; older ones are dropped; none matching is counted as
//! a mismatch and nothing is taken.
//!
//! Limits: an exec that fails after the kernel opened the file (a wrong-architecture ELF, a
//! missing `ld.so`) leaves a group no exec takes: the next exec of that pid, if /proc is gone by
//! then, is given the failed file's path. Programs on filesystems mounted in other mount
//! namespaces only (a container's overlay) are not marked: their execs have no record, and the
//! path is only from /proc.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use super::hash::FileKey;

/// Filesystems nothing is executed from (or that fanotify cannot mark): not marked. FUSE
/// filesystems (`fuse`, `fuse.*`, `fuseblk`) are not marked either ([`skip_fs`]): opening their
/// files for a record's fd would wait on the user's FUSE daemon and stall the reader.
pub const SKIP_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "efivarfs",
    "hugetlbfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
];

/// Whether a filesystem type is left unmarked: [`SKIP_FS`] and every FUSE type.
pub fn skip_fs(fstype: &str) -> bool {
    fstype.starts_with("fuse") || SKIP_FS.contains(&fstype)
}

/// How often the mount table is read again for new filesystems.
pub const REMARK_EVERY: Duration = Duration::from_secs(10);
/// At most this many groups wait to be taken (each holds an open fd); past it the oldest go.
pub const MAX_GROUPS: usize = 256;
/// A group not taken within this long is dropped (its exec failed, or was on a pid never seen).
pub const EXPIRE: Duration = Duration::from_secs(5);
/// Interpreter records are expected this soon after the program's (same execve).
const FOLLOW_WINDOW: Duration = Duration::from_millis(200);
/// Remembered file classifications.
const MAX_CLASSES: usize = 4096;

/// What a file opened for exec is, as far as grouping needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A `#!` script: the interpreter's record follows.
    Script,
    /// An ELF with an interpreter (`PT_INTERP`): `ld.so`'s record follows.
    DynamicElf,
    /// A static ELF, an ELF interpreter itself, or anything else: nothing follows.
    Plain,
}

impl Class {
    fn follow_ups(self) -> u8 {
        match self {
            Class::Script | Class::DynamicElf => 1,
            Class::Plain => 0,
        }
    }
}

/// Classify a file from its first bytes (at least the ELF program headers: 1 KiB covers them for
/// every toolchain's layout; program headers beyond what was read count as none).
pub fn classify(head: &[u8]) -> Class {
    if head.starts_with(b"#!") {
        return Class::Script;
    }
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Class::Plain;
    }
    let is64 = head[4] == 2;
    let le = head[5] == 1;
    let rd16 = |at: usize| -> Option<u64> {
        let b: [u8; 2] = head.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) }))
    };
    let rd32 = |at: usize| -> Option<u64> {
        let b: [u8; 4] = head.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }))
    };
    let rd64 = |at: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(at..at + 8)?.try_into().ok()?;
        Some(if le { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    };
    let (phoff, phentsize, phnum) =
        if is64 { (rd64(32), rd16(54), rd16(56)) } else { (rd32(28), rd16(42), rd16(44)) };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Class::Plain;
    };
    const PT_INTERP: u64 = 3;
    for i in 0..phnum.min(64) {
        let Some(at) = phoff.checked_add(i * phentsize).and_then(|a| usize::try_from(a).ok()) else { break };
        match rd32(at) {
            Some(PT_INTERP) => return Class::DynamicElf,
            Some(_) => {}
            None => break,
        }
    }
    Class::Plain
}

/// One exec's record group: the program's file.
#[derive(Debug)]
pub struct ExecFile {
    /// The file's path as the kernel names it (symlinks resolved; ` (deleted)` if unlinked).
    pub path: String,
    /// What `/proc/PID/exe` shows for this exec: `path`, or for a `#!` script its interpreter.
    pub running: String,
    pub key: Option<FileKey>,
    /// The program opened for exec (read-only), for hashing.
    pub fd: Option<OwnedFd>,
    seen: Instant,
}

impl ExecFile {
    /// A group of one file (a program that is not a script).
    pub fn new(path: String, key: Option<FileKey>, fd: Option<OwnedFd>) -> ExecFile {
        ExecFile { running: path.clone(), path, key, fd, seen: Instant::now() }
    }
}

/// Correlation outcomes since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// An exec whose /proc was gone got its path from fanotify.
    pub used: u64,
    /// A live exec's group agreed with /proc/PID/exe.
    pub confirmed: u64,
    /// A live exec's oldest group did not match /proc/PID/exe: left untaken.
    pub mismatched: u64,
    /// An exec whose /proc was gone had no group (not marked, or the queue overflowed).
    pub missing: u64,
    /// Groups dropped untaken (expired, or past [`MAX_GROUPS`]).
    pub expired: u64,
    /// The kernel's fanotify queue overflowed (records lost).
    pub overflows: u64,
}

/// The fanotify group and the per-pid record groups waiting for their exec.
#[derive(Debug)]
pub struct ExecPaths {
    fan: Fanotify,
    /// Mount ids (mountinfo field 1) marked, pruned to the current mounts at each re-read.
    marked: std::collections::HashSet<u32>,
    marked_at: Instant,
    groups: HashMap<u32, VecDeque<ExecFile>>,
    total: usize,
    /// pid → (interpreter records still expected, when the last record came, whether the last
    /// record was a script's: the next one is then what the process runs).
    following: HashMap<u32, (u8, Instant, bool)>,
    classes: HashMap<FileKey, Class>,
    head: Vec<u8>,
    pub counts: Counts,
}

impl ExecPaths {
    /// Create the group and mark the filesystems. Fails without CAP_SYS_ADMIN or kernel support
    /// (`FAN_OPEN_EXEC` is Linux 5.0), or when nothing could be marked.
    pub fn open() -> Result<ExecPaths, String> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| format!("fanotify_init: {e}"))?;
        let mut me = ExecPaths {
            fan,
            marked: std::collections::HashSet::new(),
            marked_at: Instant::now(),
            groups: HashMap::new(),
            total: 0,
            following: HashMap::new(),
            classes: HashMap::new(),
            head: vec![0; 1024],
            counts: Counts::default(),
        };
        let errors = me.mark_mounts();
        if me.marked.is_empty() {
            return Err(format!("fanotify_mark: nothing could be marked: {}", errors.join("; ")));
        }
        Ok(me)
    }

    /// Mark every mount of /proc/self/mountinfo not yet marked (by mount id, so a new filesystem
    /// mounted at an old path is marked too) and forget the ids no longer mounted; returns the
    /// errors.
    fn mark_mounts(&mut self) -> Vec<String> {
        self.marked_at = Instant::now();
        let mut errors = Vec::new();
        let Ok(bytes) = std::fs::read("/proc/self/mountinfo") else {
            return vec!["cannot read /proc/self/mountinfo".into()];
        };
        let mounts = parse_mountinfo(&String::from_utf8_lossy(&bytes));
        let current: std::collections::HashSet<u32> = mounts.iter().map(|m| m.0).collect();
        self.marked.retain(|id| current.contains(id));
        for (id, point, fstype) in mounts {
            // A mount point that is not UTF-8 cannot be named from the lossy text: not marked.
            if skip_fs(&fstype) || self.marked.contains(&id) || point.contains('\u{FFFD}') {
                continue;
            }
            let mask = MaskFlags::FAN_OPEN_EXEC;
            let add = MarkFlags::FAN_MARK_ADD;
            let r = self
                .fan
                .mark(add | MarkFlags::FAN_MARK_FILESYSTEM, mask, rustix::fs::CWD, Some(point.as_str()))
                .or_else(|_| {
                    self.fan.mark(
                        add | MarkFlags::FAN_MARK_MOUNT,
                        mask,
                        rustix::fs::CWD,
                        Some(point.as_str()),
                    )
                });
            match r {
                Ok(()) => {
                    self.marked.insert(id);
                }
                Err(e) => errors.push(format!("{point} ({fstype}): {e}")),
            }
        }
        errors
    }

    /// How many mount points are marked.
    pub fn marked(&self) -> usize {
        self.marked.len()
    }

    /// Read every queued record into the per-pid groups (non-blocking), expire old groups, and
    /// now and then mark new mounts.
    pub fn drain(&mut self) {
        let now = Instant::now();
        loop {
            let events = match self.fan.read_events() {
                Ok(ev) if ev.is_empty() => break,
                Ok(ev) => ev,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: empty
            };
            for ev in events {
                if !ev.check_version() {
                    continue;
                }
                if ev.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                    self.counts.overflows += 1;
                    // Which record belongs to which exec is no longer known.
                    self.clear();
                    continue;
                }
                let Some(fd) = ev.fd() else { continue };
                let Ok(pid) = u32::try_from(ev.pid()) else { continue };
                self.record(pid, fd, now);
            }
        }
        self.expire(now);
        if self.marked_at.elapsed() >= REMARK_EVERY {
            let _ = self.mark_mounts();
        }
    }

    fn clear(&mut self) {
        let n: usize = self.groups.values().map(VecDeque::len).sum();
        self.counts.expired += u64::try_from(n).unwrap_or(u64::MAX);
        self.groups.clear();
        self.following.clear();
        self.total = 0;
    }

    fn record(&mut self, pid: u32, fd: BorrowedFd<'_>, now: Instant) {
        let key = rustix::fs::fstat(fd).ok().map(|st| FileKey::from_stat(&st));
        let class = self.class(fd, key);
        let path_of = |fd: BorrowedFd<'_>| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        // An interpreter of the exec under way: not a new group.
        if let Some((left, at, after_script)) = self.following.get_mut(&pid)
            && *left > 0
            && now.duration_since(*at) <= FOLLOW_WINDOW
        {
            *left = *left - 1 + class.follow_ups();
            *at = now;
            if std::mem::replace(after_script, class == Class::Script)
                && let Some(running) = path_of(fd)
                && let Some(group) = self.groups.get_mut(&pid).and_then(|q| q.back_mut())
            {
                group.running = running;
            }
            if *left == 0 {
                self.following.remove(&pid);
            }
            return;
        }
        if class.follow_ups() > 0 {
            self.following.insert(pid, (class.follow_ups(), now, class == Class::Script));
        } else {
            self.following.remove(&pid);
        }
        let Some(path) = path_of(fd) else { return };
        if self.total >= MAX_GROUPS {
            self.drop_oldest();
        }
        let mut file = ExecFile::new(path, key, fd.try_clone_to_owned().ok());
        file.seen = now;
        self.groups.entry(pid).or_default().push_back(file);
        self.total += 1;
    }

    fn class(&mut self, fd: BorrowedFd<'_>, key: Option<FileKey>) -> Class {
        if let Some(c) = key.and_then(|k| self.classes.get(&k)) {
            return *c;
        }
        let n = rustix::io::pread(fd, &mut self.head[..], 0).unwrap_or(0);
        let c = classify(&self.head[..n]);
        if let Some(k) = key {
            if self.classes.len() >= MAX_CLASSES {
                self.classes.clear();
            }
            self.classes.insert(k, c);
        }
        c
    }

    fn drop_oldest(&mut self) {
        let oldest = self.groups.iter().filter_map(|(pid, q)| Some((q.front()?.seen, *pid))).min();
        if let Some((_, pid)) = oldest {
            self.pop(pid);
            self.counts.expired += 1;
        }
    }

    fn pop(&mut self, pid: u32) -> Option<ExecFile> {
        let q = self.groups.get_mut(&pid)?;
        let f = q.pop_front();
        if q.is_empty() {
            self.groups.remove(&pid);
        }
        if f.is_some() {
            self.total -= 1;
        }
        f
    }

    fn expire(&mut self, now: Instant) {
        let before = self.total;
        self.groups.retain(|_, q| {
            q.retain(|f| now.duration_since(f.seen) < EXPIRE);
            !q.is_empty()
        });
        self.total = self.groups.values().map(VecDeque::len).sum();
        self.counts.expired += u64::try_from(before - self.total).unwrap_or(0);
        self.following.retain(|_, (_, at, _)| now.duration_since(*at) <= FOLLOW_WINDOW);
    }

    /// The program of `pid`'s oldest waiting exec. `exe`: what /proc/PID/exe showed, if it could
    /// be read: the oldest group that runs that file is taken, and older ones (execs that failed
    /// after the kernel opened the file) are dropped; when none does, nothing is taken (the exec
    /// was on a filesystem not marked, or its group is still to come).
    pub fn take(&mut self, pid: u32, exe: Option<&str>) -> Option<ExecFile> {
        let q = self.groups.get(&pid)?;
        if let Some(exe) = exe {
            let Some(at) = q.iter().position(|f| f.running == exe) else {
                self.counts.mismatched += 1;
                return None;
            };
            for _ in 0..at {
                self.pop(pid);
                self.counts.expired += 1;
            }
            self.counts.confirmed += 1;
        }
        self.pop(pid)
    }

    /// Groups waiting.
    pub fn waiting(&self) -> usize {
        self.total
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }
}

/// (mount id, mount point, filesystem type) of each line of /proc/self/mountinfo. Octal escapes
/// in the mount point (`\040` for a space) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(Ok(id)) = left.split(' ').next().map(str::parse) else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let Some(fstype) = right.split(' ').next() else { continue };
        out.push((id, unescape(point), fstype.to_string()));
    }
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    #[test]
    fn mountinfo_lines() {
        let t = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                 25 22 0:21 / /proc rw - proc proc rw\n\
                 30 22 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw\n\
                 garbage\n";
        assert_eq!(
            parse_mountinfo(t),
            [
                (22, "/".to_string(), "ext4".to_string()),
                (25, "/proc".to_string(), "proc".to_string()),
                (30, "/mnt/a b".to_string(), "tmpfs".to_string())
            ]
        );
        // A mount point that is not UTF-8 survives the lossy read as U+FFFD (then not marked).
        let raw = b"40 22 0:41 / /mnt/\xff rw - ext4 /dev/sdb rw\n";
        let got = parse_mountinfo(&String::from_utf8_lossy(raw));
        assert_eq!(got.len(), 1);
        assert!(got[0].1.contains('\u{FFFD}'));
    }

    #[test]
    fn fuse_and_pseudo_filesystems_are_skipped() {
        for t in ["fuse", "fuseblk", "fuse.sshfs", "fuse.gvfsd-fuse", "fusectl", "proc", "cgroup2"] {
            assert!(skip_fs(t), "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "vfat"] {
            assert!(!skip_fs(t), "{t}");
        }
    }

    #[test]
    fn classifies_scripts_and_elf_programs() {
        assert_eq!(classify(b"#!/bin/sh\necho\n"), Class::Script);
        assert_eq!(classify(b"hello"), Class::Plain);
        assert_eq!(classify(b""), Class::Plain);
        let read = |p: &str| {
            let mut b = vec![0; 1024];
            let n = File::open(p).unwrap().read_at(&mut b, 0).unwrap();
            b.truncate(n);
            b
        };
        // This test binary is dynamic (cargo's default); ld.so is not.
        assert_eq!(classify(&read("/proc/self/exe")), Class::DynamicElf);
        let interp =
            ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-musl-x86_64.so.1"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists());
        if let Some(p) = interp {
            assert_eq!(classify(&read(p)), Class::Plain, "{p}");
        }
        // Cut ELF headers never panic.
        let me = read("/proc/self/exe");
        for n in 0..me.len() {
            let _ = classify(&me[..n]);
        }
    }
}
