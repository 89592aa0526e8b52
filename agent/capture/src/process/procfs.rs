//! Reading one process out of /proc, fast, and the pure parsers of the files involved.
//!
//! The reads race the process: a short-lived program can exit (and its memory is gone at once:
//! `cmdline`, `auxv`, `mem`, `exe` and `cwd` of a zombie are empty or unreadable) within a
//! millisecond of its exec. So what needs the process alive is read first — argv, the exec
//! filename, `exe`, `cwd` — and what a zombie still shows last (`stat`, `status`).
//!
//! # How `process.executable` is found
//!
//! The contract is execve's `filename` argument, made absolute, symlinks not followed. Linux
//! keeps that string: execve copies it to the top of the new stack and passes its address to the
//! program as the auxiliary vector entry `AT_EXECFN`; `/proc/PID/auxv` gives the address and
//! `/proc/PID/mem` the bytes (root, or CAP_SYS_PTRACE over the target). So:
//!
//! 1. `AT_EXECFN`, exactly as given to execve (after the caller's own `PATH` search, which libc's
//!    `execvp` does before the syscall): `/bin/true`, `./x`, `/usr/bin/nc` (not
//!    `/usr/bin/nc.openbsd`), `/bin/ls` for a BusyBox applet. For a `#!` script it is the
//!    script's path (argv then starts with the interpreter).
//! 2. A relative name is joined to `/proc/PID/cwd`, read right after; `.` components and
//!    repeated slashes are dropped, `..` is kept (resolving it could cross a symlink).
//! 3. `fexecve` and `execveat(fd, "")` give the kernel no path (`/dev/fd/N`): then the resolved
//!    file (`/proc/PID/exe`, e.g. `/memfd:x (deleted)`) is used.
//! 4. If the exec filename cannot be read (the process was already exiting), `argv[0]` is used when
//!    it is a path (shells and `execv` callers pass the filename there too; a program can lie in
//!    `argv[0]`, which is why it is only the fallback), else the resolved file.
//!
//! Limits: the string lives in the process's own writable stack, so a program can overwrite it
//! (as it can its argv) — it is read within microseconds of the exec, before the program's own
//! code has run in all but the slowest cases; a relative name is resolved against the cwd at read
//! time, which a program could have changed by then; `AT_EXECFN` is read as native-word pairs,
//! so for a 32-bit program on a 64-bit kernel the resolved file is used.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, Mode, OFlags};
use std::time::{Duration, Instant, SystemTime};

/// argv beyond this many bytes is cut (the last argument shortened): an attacker controls argv
/// length (up to ~2 MB), and every event sits in bounded queues counted in events, not bytes.
pub const MAX_CMDLINE: usize = 64 * 1024;

/// `PATH_MAX`: the kernel's bound on the exec filename, NUL included.
const PATH_MAX: usize = 4096;

/// `AT_EXECFN`: the auxv entry holding the address of the exec filename.
const AT_EXECFN: u64 = 31;

/// The reads, in the order they are made: what an exiting process loses first comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// argv (`cmdline`) and the exec filename (`auxv`, `mem`): gone when the memory is released,
    /// at the start of exit.
    Program,
    /// `exe` and `cwd`: gone a little later in exit.
    Files,
    /// `stat` and `status`: still there while the process is a zombie.
    Task,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Program, Part::Files, Part::Task];
}

/// What /proc showed of one process. `None` fields could not be read (gone, kernel thread).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub argv: Option<Vec<String>>,
    /// argv was cut at [`MAX_CMDLINE`].
    pub argv_truncated: bool,
    /// The exec filename (`AT_EXECFN`), as execve got it: maybe relative.
    pub execfn: Option<String>,
    /// `/proc/PID/exe`: the file, symlinks resolved.
    pub exe: Option<String>,
    pub cwd: Option<String>,
    pub stat: Option<Stat>,
    pub ids: Option<Ids>,
    /// The version of the file running (stat of `/proc/PID/exe`), for the hash cache.
    pub exe_key: Option<super::hash::FileKey>,
    /// `/proc/PID/cgroup`, parsed.
    pub cgroup: Option<Cgroup>,
}

/// Where a process sits in the cgroup tree, and the container that implies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cgroup {
    /// The cgroup v2 path (the `0::` line), else the v1 `name=systemd` one.
    pub path: String,
    /// A container id (64 hex digits) found in the path.
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `crio` or `podman`, when the path says.
    pub runtime: Option<&'static str>,
}

/// Parse `/proc/PID/cgroup`. Container ids are recognised in the forms the runtimes use:
/// `docker-ID.scope`, `/docker/ID`, `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`,
/// and a bare `ID` component (Kubernetes `cgroupfs` layouts).
pub fn parse_cgroup(b: &[u8]) -> Option<Cgroup> {
    let text = std::str::from_utf8(b).ok()?;
    let mut v1 = None;
    let mut v2 = None;
    let mut any = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if id == "0" && ctrl.is_empty() {
            v2 = Some(path);
        } else if ctrl == "name=systemd" {
            v1 = Some(path);
        } else if any.is_none() {
            any = Some(path);
        }
    }
    let path = v2.or(v1).or(any)?;
    let (container_id, runtime) = container_of(path).map_or((None, None), |(i, r)| (Some(i), r));
    Some(Cgroup { path: path.to_string(), container_id, runtime })
}

fn container_of(path: &str) -> Option<(String, Option<&'static str>)> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
    let mut prev = "";
    // The innermost component that names a container wins.
    let mut found = None;
    for comp in path.split('/') {
        let base = comp.strip_suffix(".scope").unwrap_or(comp);
        let (prefix, id) = match base.rfind('-') {
            Some(i) => (&base[..i], &base[i + 1..]),
            None => ("", base),
        };
        if is_id(id) {
            let runtime = match (prefix, prev) {
                ("docker", _) | ("", "docker") => Some("docker"),
                ("cri-containerd", _) => Some("containerd"),
                ("crio", _) => Some("crio"),
                ("libpod", _) | ("", "libpod") => Some("podman"),
                _ => None,
            };
            found = Some((id.to_ascii_lowercase(), runtime));
        }
        prev = comp;
    }
    found
}

impl Snapshot {
    /// Nothing about the program was readable: it was gone (or a zombie) before we looked.
    pub fn is_vanished(&self) -> bool {
        self.argv.is_none() && self.execfn.is_none() && self.exe.is_none()
    }

    /// `process.executable`: see the module docs.
    pub fn executable(&self) -> Option<String> {
        let argv0 = self.argv.as_ref().and_then(|a| a.first()).map(String::as_str);
        executable(self.execfn.as_deref(), argv0, self.cwd.as_deref(), self.exe.as_deref())
    }
}

/// The fields of `/proc/PID/stat` picket uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `comm`: the first 15 bytes of the exec filename's base name, or what the program set.
    pub comm: String,
    /// One letter: `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Real and effective user and group ids (`/proc/PID/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

/// Parse `/proc/PID/stat`. `comm` is everything between the first `(` and the **last** `)`: a
/// program may name itself `a) R 1 (b` (comm can hold spaces and parentheses).
pub fn parse_stat(b: &[u8]) -> Option<Stat> {
    let open = memchr::memchr(b'(', b)?;
    let close = memchr::memrchr(b')', b)?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&b[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(b.get(close + 1..)?).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    // After ppid (field 4), start time is field 22: 17 fields further on.
    let start_ticks = f.nth(17)?.parse().ok()?;
    Some(Stat { comm, state, ppid, start_ticks })
}

/// Parse the `Uid:` and `Gid:` lines of `/proc/PID/status` (real, effective, saved, fs).
pub fn parse_status_ids(b: &[u8]) -> Option<Ids> {
    let mut uid = None;
    let mut gid = None;
    for line in b.split(|&c| c == b'\n') {
        let (target, rest) = if let Some(r) = line.strip_prefix(b"Uid:") {
            (&mut uid, r)
        } else if let Some(r) = line.strip_prefix(b"Gid:") {
            (&mut gid, r)
        } else {
            continue;
        };
        let text = std::str::from_utf8(rest).ok()?;
        let mut it = text.split_ascii_whitespace().map(str::parse::<u32>);
        let real = it.next()?.ok()?;
        let eff = it.next()?.ok()?;
        *target = Some((real, eff));
        if uid.is_some() && gid.is_some() {
            break;
        }
    }
    let (uid, euid) = uid?;
    let (gid, egid) = gid?;
    Some(Ids { uid, euid, gid, egid })
}

/// Split `/proc/PID/cmdline` into argv. `None` if empty (a kernel thread, or a process whose
/// memory is gone). Arguments are NUL-terminated; a program that rewrote its argv area may leave
/// no final NUL, which is tolerated. Invalid UTF-8 is replaced with U+FFFD.
pub fn parse_cmdline(b: &[u8]) -> Option<Vec<String>> {
    if b.is_empty() {
        return None;
    }
    let b = b.strip_suffix(b"\0").unwrap_or(b);
    Some(b.split(|&c| c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// The `AT_EXECFN` address in `/proc/PID/auxv` (pairs of native words, ending in `AT_NULL`).
pub fn parse_auxv_execfn(b: &[u8]) -> Option<u64> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |c: &[u8]| -> Option<u64> {
        let a: [u8; W] = c.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(a)).ok()
    };
    for pair in b.chunks_exact(2 * W) {
        let key = word(&pair[..W])?;
        match key {
            0 => return None,
            AT_EXECFN => return word(&pair[W..]).filter(|&a| a != 0),
            _ => {}
        }
    }
    None
}

/// `process.executable` from the exec filename, `argv[0]`, the cwd and the resolved file; see the
/// module docs for the rules.
pub fn executable(
    execfn: Option<&str>,
    argv0: Option<&str>,
    cwd: Option<&str>,
    exe: Option<&str>,
) -> Option<String> {
    let absolute = |f: &str| -> Option<String> {
        if f.starts_with('/') {
            Some(clean_path(f))
        } else {
            cwd.filter(|c| c.starts_with('/')).map(|cwd| clean_path(&format!("{cwd}/{f}")))
        }
    };
    match execfn {
        Some(f) if f.starts_with("/dev/fd/") => exe.map(str::to_string),
        Some(f) if !f.is_empty() => absolute(f).or_else(|| exe.map(str::to_string)),
        // The exec filename could not be read (the process was exiting): `argv[0]`, when it is a
        // path, is what shells and execv callers pass as the filename too.
        _ => argv0.filter(|a| a.contains('/')).and_then(absolute).or_else(|| exe.map(str::to_string)),
    }
}

/// An absolute path without `.` components or repeated slashes; `..` is kept.
pub fn clean_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for part in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The last path component (`process.name`).
pub fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Parse `/etc/passwd` into uid → name. Malformed lines are skipped; the first name of a uid wins.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else { continue };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if let Ok(uid) = uid.parse() {
            m.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    m
}

/// Whether `CapEff` in a `/proc/PID/status` text holds `cap` (a capability number).
pub fn status_has_cap(b: &[u8], cap: u32) -> bool {
    b.split(|&c| c == b'\n')
        .find_map(|l| l.strip_prefix(b"CapEff:"))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| cap < 64 && mask & (1u64 << cap) != 0)
}

/// `CAP_NET_ADMIN`, which subscribing to the process connector needs.
pub const CAP_NET_ADMIN: u32 = 12;

/// Reads /proc with reused buffers (no allocation per file but the strings it returns), and
/// keeps the uid → user name table.
///
/// Each process's files are opened relative to its `/proc/PID` directory, opened once for the
/// reads of one batch ([`ProcReader::forget`] closes them): the path walk to it is done once, not
/// once per file, a process gone before the first read costs one failed open instead of nine,
/// and a pid reused mid-batch by another process reads as gone rather than as the wrong one.
#[derive(Debug)]
pub struct ProcReader {
    buf: Vec<u8>,
    /// Bytes of `buf` the last read filled.
    len: usize,
    path: String,
    users: Users,
    /// `/proc/PID` directories open for this batch; `None`: the process was gone.
    dirs: Vec<(u32, Option<OwnedFd>)>,
}

/// At most this many `/proc/PID` directories are kept open (a batch with more execs reads the
/// rest by path).
const MAX_OPEN_DIRS: usize = 64;

impl Default for ProcReader {
    fn default() -> Self {
        ProcReader {
            buf: Vec::new(),
            len: 0,
            path: String::with_capacity(64),
            users: Users::default(),
            dirs: Vec::new(),
        }
    }
}

/// Where a process's files are read from.
enum Dir<'a> {
    Open(BorrowedFd<'a>),
    /// `/proc/PID` is gone: every read fails.
    Gone,
    /// Too many open: by path.
    Path,
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl ProcReader {
    fn set_path(&mut self, pid: u32, file: &str) {
        use std::fmt::Write as _;
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/{file}");
    }

    /// `/proc/PID`, opened on first use in this batch.
    fn dir(&mut self, pid: u32) -> Dir<'_> {
        let i = match self.dirs.iter().position(|(p, _)| *p == pid) {
            Some(i) => i,
            None if self.dirs.len() >= MAX_OPEN_DIRS => return Dir::Path,
            None => {
                self.set_path(pid, "");
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let fd = rustix::fs::open(self.path.as_str(), flags, Mode::empty()).ok();
                self.dirs.push((pid, fd));
                self.dirs.len() - 1
            }
        };
        match &self.dirs[i].1 {
            Some(fd) => Dir::Open(fd.as_fd()),
            None => Dir::Gone,
        }
    }

    /// Close the directories opened for this batch: a later batch must not read a reused pid
    /// through the directory of the process that had it before.
    pub fn forget(&mut self) {
        self.dirs.clear();
    }

    fn open(&mut self, pid: u32, file: &str) -> io::Result<File> {
        match self.dir(pid) {
            Dir::Open(d) => {
                Ok(File::from(rustix::fs::openat(d, file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?))
            }
            Dir::Gone => Err(gone()),
            Dir::Path => {
                self.set_path(pid, file);
                File::open(&self.path)
            }
        }
    }

    /// Read `/proc/PID/FILE` into the buffer ([`ProcReader::data`]), at most `max` bytes;
    /// returns whether it was cut. These files give all they have in one read when there is room,
    /// so a short read is the end (no second read just to see it).
    fn read(&mut self, pid: u32, file: &str, max: usize) -> io::Result<bool> {
        self.len = 0;
        let mut f = self.open(pid, file)?;
        // Zeroed once, to the largest size asked for: no memset per read.
        if self.buf.len() <= max {
            self.buf.resize(max + 1, 0);
        }
        let room = &mut self.buf[..=max];
        let mut have = 0;
        loop {
            let want = room.len() - have;
            let n = match f.read(&mut room[have..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            have += n;
            if n < want || have > max {
                break;
            }
        }
        self.len = have.min(max);
        Ok(have > max)
    }

    /// What the last [`ProcReader::read`] got.
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn readlink(&mut self, pid: u32, file: &str) -> Option<String> {
        let target = match self.dir(pid) {
            Dir::Open(d) => rustix::fs::readlinkat(d, file, Vec::new()).ok()?.into_bytes(),
            Dir::Gone => return None,
            Dir::Path => {
                self.set_path(pid, file);
                std::fs::read_link(&self.path).ok()?.into_os_string().into_vec()
            }
        };
        Some(String::from_utf8_lossy(&target).into_owned())
    }

    /// The version of the file `/proc/PID/exe` points at.
    fn exe_key(&mut self, pid: u32) -> Option<super::hash::FileKey> {
        match self.dir(pid) {
            Dir::Open(d) => rustix::fs::statat(d, "exe", AtFlags::empty())
                .ok()
                .map(|st| super::hash::FileKey::from_stat(&st)),
            Dir::Gone => None,
            Dir::Path => {
                self.set_path(pid, "exe");
                std::fs::metadata(&self.path).ok().map(|m| super::hash::FileKey::from_metadata(&m))
            }
        }
    }

    /// The exec filename: `AT_EXECFN` from auxv, then the string at that address.
    fn execfn(&mut self, pid: u32) -> Option<String> {
        self.read(pid, "auxv", 4096).ok()?;
        let addr = parse_auxv_execfn(self.data())?;
        let mem = self.open(pid, "mem").ok()?;
        let mut name = [0u8; PATH_MAX];
        let mut have = 0;
        // The string sits at the very top of the stack: read up to the page end first, as the
        // mapping may end right after it.
        let page = 4096u64;
        let mut want = usize::try_from(page - addr % page).unwrap_or(PATH_MAX).min(PATH_MAX);
        while have < PATH_MAX {
            let n = mem.read_at(&mut name[have..want], addr + u64::try_from(have).ok()?).ok()?;
            if n == 0 {
                break;
            }
            if let Some(end) = memchr::memchr(0, &name[have..have + n]) {
                let s = &name[..have + end];
                return (!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned());
            }
            have += n;
            want = PATH_MAX;
        }
        None
    }

    /// Read one [`Part`] of `pid` into `s`.
    pub fn read_part(&mut self, pid: u32, part: Part, s: &mut Snapshot) {
        match part {
            Part::Program => {
                if let Ok(cut) = self.read(pid, "cmdline", MAX_CMDLINE) {
                    s.argv = parse_cmdline(self.data());
                    s.argv_truncated = cut && s.argv.is_some();
                }
                s.execfn = self.execfn(pid);
            }
            Part::Files => {
                s.exe = self.readlink(pid, "exe");
                s.cwd = self.readlink(pid, "cwd");
                if s.exe.is_some() {
                    s.exe_key = self.exe_key(pid);
                }
            }
            Part::Task => {
                if self.read(pid, "stat", 4096).is_ok() {
                    s.stat = parse_stat(self.data());
                }
                if self.read(pid, "status", 16384).is_ok() {
                    s.ids = parse_status_ids(self.data());
                }
                if self.read(pid, "cgroup", 8192).is_ok() {
                    s.cgroup = parse_cgroup(self.data());
                }
            }
        }
    }

    /// `/proc/PID/stat` alone (what a polling scan needs of every process).
    pub fn stat(&mut self, pid: u32) -> Option<Stat> {
        let read = self.read(pid, "stat", 4096);
        self.forget();
        read.ok()?;
        parse_stat(self.data())
    }

    /// Everything picket reads about `pid`, the fragile parts first.
    pub fn snapshot(&mut self, pid: u32) -> Snapshot {
        let mut s = Snapshot::default();
        for part in Part::ALL {
            self.read_part(pid, part, &mut s);
        }
        self.forget();
        s
    }

    /// The user name of `uid`, from /etc/passwd (re-read when it changed, looked at most once a
    /// second). Directory users (LDAP, sssd) are not resolved.
    pub fn user_name(&mut self, uid: u32) -> Option<String> {
        self.users.name(uid)
    }

    /// Numeric entries of /proc: the processes running now.
    pub fn pids() -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
    }
}

/// uid → name from /etc/passwd, refreshed when the file's mtime or size changes.
#[derive(Debug, Default)]
struct Users {
    names: HashMap<u32, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

const USERS_RECHECK: Duration = Duration::from_secs(1);

impl Users {
    fn name(&mut self, uid: u32) -> Option<String> {
        if self.checked.is_none_or(|t| t.elapsed() >= USERS_RECHECK) {
            self.checked = Some(Instant::now());
            let path = "/etc/passwd";
            if let Ok(md) = std::fs::metadata(path) {
                let stamp = (md.modified().unwrap_or(SystemTime::UNIX_EPOCH), md.len());
                if self.stamp != Some(stamp) {
                    // Keep the old table if the file cannot be read (mid-update).
                    if let Ok(text) = std::fs::read_to_string(path) {
                        self.names = parse_passwd(&text);
                        self.stamp = Some(stamp);
                    }
                }
            }
        }
        self.names.get(&uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_comm_with_spaces_and_parentheses() {
        let line =
            b"4242 (a) R 1 (b c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 \
18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) R 1 (b c");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 17);
        assert_eq!(s.start_ticks, 98765);
    }

    #[test]
    fn stat_of_a_real_process_and_garbage() {
        let own = std::fs::read("/proc/self/stat").unwrap();
        let s = parse_stat(&own).unwrap();
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(s.start_ticks > 0);
        for bad in [&b""[..], b"1 (x", b"1 x) R", b"1 (x) R notanumber", b"1 (x) R 1 2 3", b")("] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn status_ids_real_and_effective() {
        let text =
            b"Name:\tsudo\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t27\t27\t27\n";
        assert_eq!(parse_status_ids(text), Some(Ids { uid: 1000, euid: 0, gid: 1000, egid: 27 }));
        assert_eq!(parse_status_ids(b"Uid:\t1\t1\t1\t1\n"), None, "no Gid line");
        assert_eq!(parse_status_ids(b"Uid:\tx\t1\nGid:\t1\t1\n"), None);
    }

    #[test]
    fn cmdline_splits_on_nul_keeps_empty_args_and_tolerates_rewrites() {
        assert_eq!(parse_cmdline(b"/bin/true\0arg1\0arg2\0").unwrap(), ["/bin/true", "arg1", "arg2"]);
        assert_eq!(parse_cmdline(b"sh\0-c\0\0x y\0").unwrap(), ["sh", "-c", "", "x y"]);
        assert_eq!(parse_cmdline(b"nginx: worker process").unwrap(), ["nginx: worker process"]);
        assert_eq!(parse_cmdline(b"a\xff\0").unwrap(), ["a\u{fffd}"]);
        assert_eq!(parse_cmdline(b""), None);
    }

    #[test]
    fn auxv_finds_execfn() {
        let mut b = Vec::new();
        for (k, v) in [(33usize, 0x7fff_0000usize), (31, 0x7fff_1234), (0, 0)] {
            b.extend_from_slice(&k.to_ne_bytes());
            b.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_auxv_execfn(&b), Some(0x7fff_1234));
        assert_eq!(parse_auxv_execfn(&b[16..]), Some(0x7fff_1234));
        assert_eq!(parse_auxv_execfn(&b[32..]), None, "AT_NULL first");
        assert_eq!(parse_auxv_execfn(&b[..16]), None);
        // Our own auxv has AT_EXECFN.
        assert!(parse_auxv_execfn(&std::fs::read("/proc/self/auxv").unwrap()).is_some());
    }

    #[test]
    fn executable_is_the_exec_path_made_absolute() {
        let exe = Some("/usr/bin/busybox");
        let a0 = Some("ls");
        assert_eq!(executable(Some("/bin/ls"), a0, Some("/root"), exe).unwrap(), "/bin/ls");
        assert_eq!(executable(Some("./x"), a0, Some("/tmp"), exe).unwrap(), "/tmp/x");
        assert_eq!(executable(Some("../bin/x"), a0, Some("/tmp/a"), exe).unwrap(), "/tmp/a/../bin/x");
        assert_eq!(executable(Some("//usr/./bin//nc"), a0, None, exe).unwrap(), "/usr/bin/nc");
        assert_eq!(executable(Some("x"), a0, None, exe).unwrap(), "/usr/bin/busybox", "relative, no cwd");
        let memfd = Some("/memfd:x (deleted)");
        assert_eq!(executable(Some("/dev/fd/3"), a0, Some("/"), memfd).unwrap(), "/memfd:x (deleted)");
        // No exec filename: `argv[0]` if it is a path, else the resolved file.
        assert_eq!(executable(None, Some("/bin/ls"), None, exe).unwrap(), "/bin/ls");
        assert_eq!(executable(None, Some("./ls"), Some("/bin"), exe).unwrap(), "/bin/ls");
        assert_eq!(executable(None, Some("./ls"), None, exe).unwrap(), "/usr/bin/busybox");
        assert_eq!(executable(None, a0, Some("/"), exe).unwrap(), "/usr/bin/busybox");
        assert_eq!(executable(None, None, None, None), None);
    }

    #[test]
    fn cgroups_and_container_ids() {
        let id = "3f4e9c0b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";
        let c = parse_cgroup(format!("0::/system.slice/docker-{id}.scope\n").as_bytes()).unwrap();
        assert_eq!((c.container_id.as_deref(), c.runtime), (Some(id), Some("docker")));
        let c =
            parse_cgroup(format!("12:pids:/docker/{id}\n1:name=systemd:/docker/{id}\n").as_bytes()).unwrap();
        assert_eq!(
            (c.path.as_str(), c.container_id.as_deref(), c.runtime),
            (format!("/docker/{id}").as_str(), Some(id), Some("docker"))
        );
        let k8s = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope\n"
        );
        let c = parse_cgroup(k8s.as_bytes()).unwrap();
        assert_eq!((c.container_id.as_deref(), c.runtime), (Some(id), Some("containerd")));
        let c = parse_cgroup(format!("0::/machine.slice/libpod-{id}.scope/container\n").as_bytes()).unwrap();
        assert_eq!((c.container_id.as_deref(), c.runtime), (Some(id), Some("podman")));
        let c = parse_cgroup(format!("0::/kubepods/besteffort/pod1/{id}\n").as_bytes()).unwrap();
        assert_eq!((c.container_id.as_deref(), c.runtime), (Some(id), None));
        let c = parse_cgroup(b"0::/user.slice/user-0.slice/session-3.scope\n").unwrap();
        assert_eq!((c.path.as_str(), c.container_id), ("/user.slice/user-0.slice/session-3.scope", None));
        assert_eq!(parse_cgroup(b""), None);
        assert_eq!(parse_cgroup(b"\xff"), None);
        // Our own.
        assert!(parse_cgroup(&std::fs::read("/proc/self/cgroup").unwrap()).is_some());
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(base_name("/usr/bin/nc"), "nc");
        assert_eq!(base_name("nc"), "nc");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/./"), "/");
    }

    #[test]
    fn passwd_and_capabilities() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n# c\nbad\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\ntoor:x:0:0::/:/bin/sh\n",
        );
        assert_eq!(m.get(&0).unwrap(), "root");
        assert_eq!(m.get(&33).unwrap(), "www-data");
        assert_eq!(m.len(), 2);
        assert!(status_has_cap(b"Name:\tx\nCapEff:\t000001fffeffffff\n", CAP_NET_ADMIN));
        assert!(!status_has_cap(b"CapEff:\t0000000000000000\n", CAP_NET_ADMIN));
        assert!(!status_has_cap(b"Name:\tx\n", CAP_NET_ADMIN));
    }

    #[test]
    fn snapshot_of_ourselves() {
        let mut r = ProcReader::default();
        let s = r.snapshot(std::process::id());
        assert!(!s.is_vanished());
        let argv0 = std::env::args().next().unwrap();
        assert_eq!(s.argv.as_ref().unwrap()[0], argv0);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(s.exe.as_deref(), exe.to_str());
        // cargo runs the test binary by its path: the exec filename is that path.
        assert!(s.executable().unwrap().ends_with(base_name(&argv0)), "{s:?}");
        assert_eq!(s.stat.unwrap().ppid, std::os::unix::process::parent_id());
        assert!(s.ids.is_some());
        assert!(r.snapshot(u32::MAX).is_vanished());
    }
}
