//! Reading processes from /proc: identity (pid + start time), parent, owner, kernel-thread flag.

use std::path::PathBuf;

/// `PF_KTHREAD` in the `flags` field of /proc/PID/stat (include/linux/sched.h).
pub(crate) const PF_KTHREAD: u64 = 0x0020_0000;

/// Most parent links followed by [`ancestors`]; a guard against a loop in a racing /proc read.
const MAX_ANCESTRY: usize = 4096;

/// What the host module knows about a process, read from /proc at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id (0 for PID 1 and kthreadd).
    pub ppid: i32,
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot. pid + start_time names
    /// one process for the life of the machine.
    pub start_time: u64,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Command name (field 2 of /proc/PID/stat, at most 15 bytes, lossy UTF-8).
    pub comm: String,
    /// Target of /proc/PID/exe, when readable (`None` for kernel threads and exited processes).
    pub exe: Option<PathBuf>,
    /// PF_KTHREAD is set.
    pub is_kernel_thread: bool,
    /// State letter (R, S, D, Z, T, ...).
    pub state: char,
}

/// The fields of /proc/PID/stat the host module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub ppid: i32,
    pub flags: u64,
    pub start_time: u64,
}

/// Parses /proc/PID/stat. `comm` may hold spaces and parentheses, so it is whatever lies between
/// the first `(` and the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<(String, Stat)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    // Fields from 3 (state) on; field N is at index N - 3.
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some((comm, Stat { state, ppid, flags, start_time }))
}

/// Reads and parses /proc/PID/stat.
pub(crate) fn read_stat(pid: i32) -> Option<(String, Stat)> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes))
}

/// Real and effective uid from the `Uid:` line of /proc/PID/status.
pub(crate) fn read_uids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_ascii_whitespace().map(|s| s.parse::<u32>());
    let real = ids.next()?.ok()?;
    let effective = ids.next()?.ok()?;
    Some((real, effective))
}

/// The thread-group id (the process a thread id belongs to) from /proc/PID/status.
pub(crate) fn read_tgid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()
}

/// Everything the host module knows about `pid`, or `None` if it does not exist (or vanished
/// while being read).
pub fn process_info(pid: i32) -> Option<ProcInfo> {
    if pid <= 0 {
        return None;
    }
    let (comm, stat) = read_stat(pid)?;
    let (uid, euid) = read_uids(pid)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    Some(ProcInfo {
        pid,
        ppid: stat.ppid,
        start_time: stat.start_time,
        uid,
        euid,
        comm,
        exe,
        is_kernel_thread: stat.flags & PF_KTHREAD != 0,
        state: stat.state,
    })
}

/// The parent, grandparent, ... of `pid`, nearest first, up to and including PID 1 (or the first
/// process whose parent is 0 or unreadable). Empty if `pid` does not exist.
pub fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut current = pid;
    while out.len() < MAX_ANCESTRY {
        let Some((_, stat)) = read_stat(current) else { break };
        if stat.ppid <= 0 || out.contains(&stat.ppid) || stat.ppid == pid {
            break;
        }
        out.push(stat.ppid);
        current = stat.ppid;
    }
    out
}

/// Every numeric entry of /proc: the pids alive at the moment of the scan.
pub(crate) fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter(|p| *p > 0).collect()
}

/// One scan of /proc: (pid, ppid) for every process.
pub(crate) fn parent_links() -> Vec<(i32, i32)> {
    all_pids().into_iter().filter_map(|pid| read_stat(pid).map(|(_, s)| (pid, s.ppid))).collect()
}

/// Pids whose real or effective uid is `uid`.
pub(crate) fn pids_of_uid(uid: u32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| matches!(read_uids(*pid), Some((r, e)) if r == uid || e == uid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm_parses() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let (comm, stat) = parse_stat(line).unwrap();
        assert_eq!(comm, "a) b (c)");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.flags, 4_194_560);
        assert_eq!(stat.start_time, 98765);
    }

    #[test]
    fn kernel_thread_flag_is_read_from_stat_flags() {
        let line = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 \
                    18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0";
        let (_, stat) = parse_stat(line).unwrap();
        assert_ne!(stat.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn truncated_stat_is_rejected_not_panicking() {
        assert!(parse_stat("12 (x").is_none());
        assert!(parse_stat("12 (x) S 1").is_none());
        assert!(parse_stat(")(").is_none());
    }

    #[test]
    fn own_process_is_readable_and_has_ancestors() {
        let me = i32::try_from(std::process::id()).unwrap();
        let info = process_info(me).unwrap();
        assert_eq!(info.pid, me);
        assert!(!info.is_kernel_thread);
        assert!(info.exe.is_some());
        let chain = ancestors(me);
        assert_eq!(chain.first(), Some(&info.ppid));
        assert!(!chain.contains(&me));
    }
}
