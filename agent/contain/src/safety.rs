//! The safety layer's rules: which targets are never acted on, and how many actions of each type
//! may run per minute. Plain data and pure checks; [`crate::actuator`] applies them before every
//! action, in monitor mode too (a dry run says `refused` where the real run would).
//!
//! Protected, whatever a policy says:
//!
//! - **addresses**: loopback, unspecified, multicast and broadcast addresses; the networks in
//!   `containment.protected_cidrs`; the broker's addresses (the uplink must survive any block);
//!   the default gateways (from `/proc/net/route` and `/proc/net/ipv6_route`: blocking the gateway
//!   cuts the device off from everything).
//! - **processes**: PID 1, kernel threads, picket itself and its ancestors (the host module's own
//!   refusals, [`crate::host::kill_refusal`]), processes whose name is in
//!   `containment.protected_process_names`, and processes running as root unless
//!   `containment.allow_root`.
//! - **accounts**: root (uid 0) unless `allow_root`, the account picket runs as, and (in the host
//!   module) system accounts below `UID_MIN`.
//! - **files** (quarantine, deny_exec): anything under `containment.protected_paths`, picket's own
//!   executable, its data directory and the quarantine directory itself.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::host::ProcInfo;

/// The six containment actions, as policies name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    BlockIp,
    Kill,
    DenyExec,
    Quarantine,
    IsolateHost,
    LockAccount,
}

impl ActionKind {
    /// Every kind, in a fixed order (the index of [`Budgets::per_minute`]).
    pub const ALL: [ActionKind; 6] = [
        ActionKind::BlockIp,
        ActionKind::Kill,
        ActionKind::DenyExec,
        ActionKind::Quarantine,
        ActionKind::IsolateHost,
        ActionKind::LockAccount,
    ];

    /// The name used in policies, events (`event.action`) and `containment.db`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::BlockIp => "block_ip",
            ActionKind::Kill => "kill",
            ActionKind::DenyExec => "deny_exec",
            ActionKind::Quarantine => "quarantine",
            ActionKind::IsolateHost => "isolate_host",
            ActionKind::LockAccount => "lock_account",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    const fn index(self) -> usize {
        match self {
            ActionKind::BlockIp => 0,
            ActionKind::Kill => 1,
            ActionKind::DenyExec => 2,
            ActionKind::Quarantine => 3,
            ActionKind::IsolateHost => 4,
            ActionKind::LockAccount => 5,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most actions of each kind carried out per minute (a sliding 60-second window). The excess is
/// journaled as `skipped`: a policy gone wrong, or an attacker feeding it, cannot turn picket into
/// the thing that takes the device down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    per_minute: [u32; 6],
}

impl Budgets {
    /// The budget for `kind`.
    pub fn get(&self, kind: ActionKind) -> u32 {
        self.per_minute[kind.index()]
    }

    /// Sets the budget for `kind`; 0 means never.
    pub fn set(&mut self, kind: ActionKind, per_minute: u32) {
        self.per_minute[kind.index()] = per_minute;
    }
}

impl Default for Budgets {
    /// block_ip 60, kill 10, deny_exec 10, quarantine 10, isolate_host 1, lock_account 5 per minute.
    fn default() -> Self {
        Budgets { per_minute: [60, 10, 10, 10, 1, 5] }
    }
}

/// The sliding windows behind [`Budgets`]: when each recent action of each kind ran.
#[derive(Debug, Clone, Default)]
pub struct BudgetTracker {
    recent: [VecDeque<SystemTime>; 6],
}

/// The window a budget counts over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);

impl BudgetTracker {
    /// Takes one unit of `kind`'s budget at `now`, or says why not.
    pub fn take(&mut self, budgets: &Budgets, kind: ActionKind, now: SystemTime) -> Result<(), String> {
        let limit = budgets.get(kind);
        let q = &mut self.recent[kind.index()];
        while q.front().is_some_and(|t| now.duration_since(*t).is_ok_and(|d| d >= BUDGET_WINDOW)) {
            q.pop_front();
        }
        if q.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(format!(
                "budget reached: at most {limit} {kind} per minute (containment.budget_per_minute.{kind})"
            ));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Addresses that may change while the agent runs (the broker's, resolved from its host name),
/// shared between whoever resolves them and the safety checks.
#[derive(Debug, Clone, Default)]
pub struct SharedAddrs(Arc<Mutex<Vec<IpAddr>>>);

impl SharedAddrs {
    /// A fixed list.
    pub fn new(addrs: Vec<IpAddr>) -> SharedAddrs {
        SharedAddrs(Arc::new(Mutex::new(addrs)))
    }

    /// Replaces the list.
    pub fn set(&self, addrs: Vec<IpAddr>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
    }

    /// The list now.
    pub fn get(&self) -> Vec<IpAddr> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Keeps the list filled with the addresses of `host`: resolves it on a thread of its own (DNS
    /// can take seconds on a device that is offline, and must never hold up the pipeline), again
    /// every 10 minutes, or every 30 seconds while it fails. The thread ends when every other
    /// handle on this list is gone.
    pub fn resolve_in_background(&self, host: String, port: u16) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.set(vec![ip]);
            return;
        }
        let weak = Arc::downgrade(&self.0);
        let _ = std::thread::Builder::new().name("picket-broker-dns".into()).spawn(move || {
            loop {
                let resolved: Option<Vec<IpAddr>> =
                    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                        .ok()
                        .map(|it| it.map(|a| a.ip().to_canonical()).collect());
                let Some(list) = weak.upgrade() else { return };
                let wait = match resolved {
                    Some(addrs) if !addrs.is_empty() => {
                        *list.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
                        Duration::from_secs(600)
                    }
                    _ => Duration::from_secs(30),
                };
                drop(list);
                // Sleep in short steps so the thread notices soon when nobody needs it any more.
                let mut slept = Duration::ZERO;
                while slept < wait {
                    std::thread::sleep(Duration::from_secs(1));
                    slept += Duration::from_secs(1);
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
            }
        });
    }
}

/// What is never acted on (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// `containment.protected_cidrs`: never blocked, kept reachable while isolated.
    pub cidrs: Vec<IpNet>,
    /// The broker's addresses.
    pub broker: SharedAddrs,
    /// `containment.protected_process_names`: matched against the process name (`comm`) and the
    /// file name of its executable.
    pub process_names: Vec<String>,
    /// `containment.allow_root`: allow killing root processes and locking root.
    pub allow_root: bool,
    /// `containment.protected_paths`, plus picket's own executable, data and quarantine dirs.
    pub paths: Vec<PathBuf>,
}

impl Protected {
    /// Why `ip` must not be blocked, if it must not. `gateways` are the default gateways now.
    pub fn ip_refusal(&self, ip: IpAddr, gateways: &[IpAddr]) -> Option<String> {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return Some(format!("{ip} is a loopback address"));
        }
        if ip.is_unspecified() {
            return Some(format!("{ip} is the unspecified address"));
        }
        if ip.is_multicast() {
            return Some(format!("{ip} is a multicast address"));
        }
        if let IpAddr::V4(v4) = ip
            && v4.is_broadcast()
        {
            return Some(format!("{ip} is the broadcast address"));
        }
        if let Some(net) = self.cidrs.iter().find(|n| n.contains(&ip)) {
            return Some(format!("{ip} is in protected network {net} (containment.protected_cidrs)"));
        }
        if self.broker.get().iter().any(|b| b.to_canonical() == ip) {
            return Some(format!("{ip} is the broker's address (the uplink must stay reachable)"));
        }
        if gateways.iter().any(|g| g.to_canonical() == ip) {
            return Some(format!("{ip} is the default gateway"));
        }
        None
    }

    /// Why the process `info` must not be killed, beyond the host module's own refusals.
    pub fn process_refusal(&self, info: &ProcInfo) -> Option<String> {
        let exe_name =
            info.exe.as_ref().and_then(|e| e.file_name()).map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = self
            .process_names
            .iter()
            .find(|n| **n == info.comm || exe_name.as_deref().is_some_and(|e| e == n.as_str()))
        {
            return Some(format!(
                "pid {} is {name}, a protected process name (containment.protected_process_names)",
                info.pid
            ));
        }
        if !self.allow_root && (info.uid == 0 || info.euid == 0) {
            return Some(format!(
                "pid {} ({}) runs as root and containment.allow_root is false",
                info.pid, info.comm
            ));
        }
        None
    }

    /// Why the account `user` (uid `uid` if known) must not be locked. `own_uid` is picket's.
    pub fn account_refusal(&self, user: &str, uid: Option<u32>, own_uid: u32) -> Option<String> {
        if !self.allow_root && (user == "root" || uid == Some(0)) {
            return Some(format!("{user} is root (uid 0) and containment.allow_root is false"));
        }
        if uid == Some(own_uid) {
            return Some(format!("{user} is the account picket runs as"));
        }
        None
    }

    /// Why `path` must not be quarantined or denied exec.
    pub fn path_refusal(&self, path: &Path) -> Option<String> {
        if !path.is_absolute() {
            return Some(format!("{} is not an absolute path", path.display()));
        }
        let clean = lexical(path);
        if let Some(p) = self.paths.iter().find(|p| clean.starts_with(lexical(p))) {
            return Some(format!(
                "{} is under protected path {} (containment.protected_paths, or picket's own files)",
                path.display(),
                p.display()
            ));
        }
        None
    }
}

/// `p` without `.` components and with `..` applied lexically, so `/usr/bin/../bin/sh` is seen
/// under `/usr/bin`. (Symlinks are not resolved: the file is acted on by the path given.)
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The default gateways of the network namespace picket runs in: IPv4 from `/proc/net/route`,
/// IPv6 from `/proc/net/ipv6_route`. Unreadable files give none.
pub fn default_gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route_v4(&text).into_iter().map(IpAddr::V4));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route_v6(&text).into_iter().map(IpAddr::V6));
    }
    out.dedup();
    out
}

/// Gateways of default routes in `/proc/net/route` (destination and mask 0, gateway set). The
/// kernel prints each address as the hex of its in-memory (network order) value read as a native
/// integer, so the bytes come back with `to_ne_bytes`.
pub fn parse_route_v4(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(dest), Some(gw), Some(mask)) = (f.get(1), f.get(2), f.get(7)) else { continue };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        if let (Some(0), Some(g), Some(0)) = (hex(dest), hex(gw), hex(mask))
            && g != 0
        {
            let ip = Ipv4Addr::from(g.to_ne_bytes());
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Gateways of default routes in `/proc/net/ipv6_route` (destination `::/0`, next hop set).
pub fn parse_route_v6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(dest), Some(plen), Some(hop)) = (f.first(), f.get(1), f.get(4)) else { continue };
        let hex = |s: &str| u128::from_str_radix(s, 16).ok();
        if let (Some(0), Ok(0), Some(h)) = (hex(dest), u8::from_str_radix(plen, 16), hex(hop))
            && h != 0
        {
            let ip = Ipv6Addr::from(h);
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_routes_are_read_from_proc_net_route_and_ipv6_route() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        let expect = if cfg!(target_endian = "little") { "192.168.2.1" } else { "1.2.168.192" };
        assert_eq!(parse_route_v4(v4), vec![expect.parse::<Ipv4Addr>().unwrap()]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(parse_route_v6(v6), vec!["fe80::1".parse::<Ipv6Addr>().unwrap()]);
        assert!(parse_route_v4("garbage\nx y z\n").is_empty());
        assert!(parse_route_v6("garbage\n").is_empty());
    }

    #[test]
    fn protected_addresses_are_refused_with_the_reason() {
        let p = Protected {
            cidrs: vec!["10.1.0.0/16".parse().unwrap()],
            broker: SharedAddrs::new(vec![ip("192.0.2.9")]),
            ..Protected::default()
        };
        let gw = [ip("192.168.1.1")];
        for (target, why) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("10.1.2.3", "protected network 10.1.0.0/16"),
            ("::ffff:10.1.2.3", "protected network"),
            ("192.0.2.9", "broker"),
            ("192.168.1.1", "default gateway"),
        ] {
            let got = p.ip_refusal(ip(target), &gw).unwrap_or_else(|| panic!("{target} not refused"));
            assert!(got.contains(why), "{target}: {got}");
        }
        assert_eq!(p.ip_refusal(ip("203.0.113.7"), &gw), None);
        assert_eq!(p.ip_refusal(ip("2001:db8::7"), &gw), None);
    }

    fn proc_info(pid: i32, comm: &str, exe: &str, uid: u32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            start_time: 7,
            uid,
            euid: uid,
            comm: comm.into(),
            exe: Some(PathBuf::from(exe)),
            is_kernel_thread: false,
            state: 'S',
        }
    }

    #[test]
    fn protected_process_names_and_root_are_refused_unless_allowed() {
        let mut p =
            Protected { process_names: vec!["sshd".into(), "dropbear".into()], ..Protected::default() };
        assert!(p.process_refusal(&proc_info(50, "sshd", "/usr/sbin/sshd", 1000)).unwrap().contains("sshd"));
        // The executable's name counts too (comm can be changed by the process itself).
        assert!(p.process_refusal(&proc_info(50, "x", "/usr/sbin/dropbear", 1000)).is_some());
        assert!(p.process_refusal(&proc_info(50, "nc", "/usr/bin/nc", 0)).unwrap().contains("root"));
        assert_eq!(p.process_refusal(&proc_info(50, "nc", "/usr/bin/nc", 1000)), None);
        p.allow_root = true;
        assert_eq!(p.process_refusal(&proc_info(50, "nc", "/usr/bin/nc", 0)), None);
    }

    #[test]
    fn root_and_picket_own_account_are_not_locked() {
        let mut p = Protected::default();
        assert!(p.account_refusal("root", Some(0), 999).is_some());
        assert!(p.account_refusal("toor", Some(0), 999).is_some());
        assert!(p.account_refusal("svc", Some(999), 999).unwrap().contains("picket runs as"));
        assert_eq!(p.account_refusal("alice", Some(1000), 999), None);
        p.allow_root = true;
        assert_eq!(p.account_refusal("root", Some(0), 999), None);
    }

    #[test]
    fn protected_paths_cover_their_trees_lexically() {
        let p = Protected {
            paths: vec![PathBuf::from("/usr/bin"), PathBuf::from("/etc")],
            ..Protected::default()
        };
        assert!(p.path_refusal(Path::new("/usr/bin/sh")).is_some());
        assert!(p.path_refusal(Path::new("/tmp/../usr/bin/sh")).is_some());
        assert!(p.path_refusal(Path::new("/etc/passwd")).is_some());
        assert!(p.path_refusal(Path::new("relative/x")).unwrap().contains("absolute"));
        assert_eq!(p.path_refusal(Path::new("/tmp/evil")), None);
        assert_eq!(p.path_refusal(Path::new("/usr/bin2/x")), None);
    }

    #[test]
    fn budgets_allow_n_per_sliding_minute() {
        let mut b = Budgets::default();
        b.set(ActionKind::Kill, 2);
        b.set(ActionKind::IsolateHost, 0);
        let mut t = BudgetTracker::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(t.take(&b, ActionKind::Kill, t0).is_ok());
        assert!(t.take(&b, ActionKind::Kill, t0 + Duration::from_secs(10)).is_ok());
        let e = t.take(&b, ActionKind::Kill, t0 + Duration::from_secs(20)).unwrap_err();
        assert!(e.contains("at most 2 kill per minute"), "{e}");
        // Other kinds have their own budget.
        assert!(t.take(&b, ActionKind::BlockIp, t0).is_ok());
        assert!(t.take(&b, ActionKind::IsolateHost, t0).is_err());
        // A minute after the first, one unit is free again; a minute after the second, two.
        assert!(t.take(&b, ActionKind::Kill, t0 + Duration::from_secs(60)).is_ok());
        assert!(t.take(&b, ActionKind::Kill, t0 + Duration::from_secs(61)).is_err());
    }

    #[test]
    fn action_kinds_round_trip_through_their_names() {
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ActionKind::parse("nuke"), None);
    }
}
