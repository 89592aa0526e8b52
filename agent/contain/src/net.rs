//! Network containment: block_ip and isolate_host (nftables, table `inet picket` only).
//!
//! Everything lives in picket's own table, `table inet picket`; no other table is ever read or
//! written, so the rest of the host's firewall is left exactly as it was, and removing the table
//! removes every trace of picket.
//!
//! ```text
//! table inet picket {
//!     set block4 { type ipv4_addr; size 65536; flags timeout; }     # blocked addresses, each with
//!     set block6 { type ipv6_addr; size 65536; flags timeout; }     #   its own timeout (or none)
//!     chain block_in  { type filter hook input   priority -10; ip saddr @block4 drop; ... }
//!     chain block_fwd { type filter hook forward priority -10; ip saddr/daddr @block4 drop; ... }
//!     chain block_out { type filter hook output  priority -10; ip daddr @block4 drop; ... }
//!     # only while isolated:
//!     set iso_allow4, iso_allow6 { flags interval; }                 # allowed networks
//!     chain iso_in, iso_fwd, iso_out { policy drop; lo, allowed networks, management, NDP }
//! }
//! ```
//!
//! # Two ways to the kernel, each where it fits
//!
//! - **Set elements (block, unblock, list) go over netlink, in process** (`net/netlink.rs`, a
//!   few hundred lines on `rustix` sockets). A block is one `sendto` of a batch and one `recv` of
//!   the acks: one kernel transaction, ~15 µs. The issue's bar is 2 ms from the auth-log line to
//!   the kernel, and one `nft` process costs ~5 ms, so nothing on this path spawns.
//! - **The table, chains, rules and isolation are nft scripts** run as `nft -f -` (one script =
//!   one transaction, ~5–30 ms). They change rarely, and rules written in nft's language are
//!   readable and reviewable; encoding rule expressions by hand is libnftnl's job.
//!
//! Per block of one address with a timeout, measured on the 2-core dev VM with
//! `cargo bench -p picket-contain --bench net` (in a namespace the bench makes; ranges are over
//! runs on a machine shared with other builds):
//!
//! | way to the kernel | per block |
//! |---|---|
//! | netlink in process (this module), fresh / re-block / unblock | 15 / 18 / 13 µs (up to 36 loaded) |
//! | one long-lived `nft -i` fed on stdin (acknowledges nothing; errors are text on stderr) | 0.3–1.2 ms |
//! | spawn `nft -j -f -` with JSON (what the `nftables` crate does) | 4.5–9.5 ms |
//! | spawn `nft add element ...` | 5.7–9.8 ms |
//! | netlink, 1000 addresses in one call (one transaction) | 9 ms |
//!
//! The netlink crates were no option: `rustables` is GPL-3.0 (picket is Apache-2.0), and
//! `nftnl`/`mnl` bind the C libraries libnftnl (GPL-2.0) and libmnl, a cross-build burden.
//!
//! # Block semantics
//!
//! [`NetContainment::block`] sends, per set, *add* (a no-op where the address is already there),
//! *delete*, *add with the new TTL*, in one transaction: the latest block wins (a new TTL
//! replaces the old one, `None` makes it permanent), and the call never fails, or aborts a
//! transaction, because an address was or wasn't there. (An exclusive add with a fallback on
//! EEXIST was measured too: a fresh block took 6 µs instead of 13, but every re-block then paid
//! for an aborted transaction, which waits for an RCU grace period: ~14 ms here.) `nft monitor`
//! therefore shows a block as `add element`, `delete element`, `add element`, from one commit.
//! [`NetContainment::unblock`] is *add* then *delete*, so unblocking an absent address is fine.
//! Calls are cut into transactions of at most [`MAX_PER_TRANSACTION`] addresses; each is atomic.
//! If someone deleted the table (`nft flush ruleset`), the next block recreates it and retries.
//!
//! # Isolation
//!
//! [`NetContainment::isolate`] adds `iso_*` chains with `policy drop` that let through only
//! loopback, the allowed networks (all traffic, both ways: broker, protected CIDRs), management
//! access (inbound TCP to a port from a network, and its replies), IPv6 neighbour discovery (or
//! IPv6 to the allowed peers could not work) and, if asked, DHCP. Connections that exist to other
//! peers stop at once (the rules match every packet, not only new ones). Isolating again replaces
//! the allow-list atomically. [`NetContainment::release`] deletes exactly those chains and sets,
//! so the ruleset afterwards is byte-identical to the one before isolation.
//!
//! # Namespaces
//!
//! Production works in the agent's own (the host's) network namespace: `NetOptions::default()`.
//! Tests and benches set [`NetOptions::netns`] to a namespace they made with `ip netns add`: the
//! netlink socket is then opened, and `nft` started, from a thread that entered that namespace
//! ([`Netns::run`]), and both stay there. The caller's own threads never change namespace.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use picket_contain::net::{Isolation, NetContainment, NetOptions};
//!
//! let mut net = NetContainment::open(NetOptions::default())?;
//! net.block(&[("203.0.113.7".parse().unwrap(), Some(Duration::from_secs(600)))])?;
//! for b in net.blocked()? {
//!     println!("{} expires in {:?}", b.ip, b.expires_in);
//! }
//! net.isolate(&Isolation { allow: vec!["192.0.2.10/32".parse().unwrap()], ..Isolation::default() })?;
//! net.release()?;
//! # Ok::<(), picket_contain::net::NetError>(())
//! ```

mod netlink;
mod netns;
mod nft;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

pub use ipnet::IpNet;
pub use netns::Netns;

use netlink::{Change, Elem};
use rustix::io::Errno;

/// picket's table: family `inet`, name `picket`. The only table this module touches.
pub const TABLE: &str = "picket";
const SET4: &str = "block4";
const SET6: &str = "block6";
/// Capacity of each block set. A full set refuses more blocks ([`NetError::SetFull`]) rather than
/// growing without bound.
pub const SET_CAPACITY: u32 = 65_536;
const ISO_SET4: &str = "iso_allow4";
const ISO_SET6: &str = "iso_allow6";
const ISO_CHAINS: [&str; 3] = ["iso_in", "iso_fwd", "iso_out"];

/// The longest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most addresses changed in one kernel transaction; longer calls are cut into several.
pub const MAX_PER_TRANSACTION: usize = 1024;

/// Errors of network containment. Nothing here panics; every failure is one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("nft program {program:?} not found (is the nftables package installed?)")]
    NftMissing { program: PathBuf },
    #[error("could not run nft program {program:?}: {source}")]
    NftSpawn { program: PathBuf, source: io::Error },
    #[error("nft ({program:?}) failed, {status}: {stderr}")]
    NftFailed { program: PathBuf, status: String, stderr: String },
    #[error("network namespace {name:?}: {source}")]
    Netns { name: String, source: io::Error },
    #[error("nf_tables netlink, {op}: {source}")]
    Netlink { op: &'static str, source: io::Error },
    #[error("block set of table inet {TABLE} is full ({SET_CAPACITY} addresses)")]
    SetFull,
    #[error("invalid address {ip}: {reason}")]
    InvalidAddress { ip: IpAddr, reason: &'static str },
    #[error("invalid network {net}: {reason}")]
    InvalidNetwork { net: IpNet, reason: &'static str },
    #[error("invalid TTL {ttl:?}: {reason}")]
    InvalidTtl { ttl: Duration, reason: &'static str },
    #[error("invalid management port {port}: {reason}")]
    InvalidPort { port: u16, reason: &'static str },
}

/// How to reach nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// The `nft` program that loads the table, chains and isolation rules. Default `nft`, looked
    /// up in `PATH`.
    pub nft: PathBuf,
    /// Work inside this named network namespace (`ip netns add NAME`) instead of the caller's.
    /// For tests and benches; production leaves it `None`.
    pub netns: Option<String>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions { nft: PathBuf::from("nft"), netns: None }
    }
}

/// A blocked address as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub ip: IpAddr,
    /// The TTL it was blocked with; `None` for a block without end.
    pub ttl: Option<Duration>,
    /// Time left before the kernel drops it by itself; `None` for a block without end.
    pub expires_in: Option<Duration>,
}

/// What stays reachable while the host is isolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Networks with which all traffic is kept, both ways: the broker's addresses,
    /// `containment.protected_cidrs`, management hosts. Host bits must be zero (`10.1.2.0/24`, or
    /// `/32` and `/128` for one host); `/0` is refused.
    pub allow: Vec<IpNet>,
    /// Management access kept: inbound TCP to a local port from a network, and its replies.
    pub mgmt: Vec<MgmtAccess>,
    /// Keep DHCP (v4 client 68↔67, v6 client 546↔547) so the device keeps its address while
    /// isolated; without it a lease that runs out cuts the device off from the broker too.
    pub dhcp: bool,
}

/// TCP to local port `tcp_port` from network `from`, e.g. SSH from the operators' subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MgmtAccess {
    pub from: IpNet,
    pub tcp_port: u16,
}

/// picket's nftables state: the netlink socket for set elements, and how to run `nft`.
#[derive(Debug)]
pub struct NetContainment {
    nft: PathBuf,
    netns: Option<Netns>,
    sock: netlink::Socket,
}

impl NetContainment {
    /// Ensures `table inet picket` with its block sets and chains (idempotent: existing blocks are
    /// kept, the block rules rewritten), and opens the netlink socket.
    pub fn open(opts: NetOptions) -> Result<NetContainment, NetError> {
        let netns = opts.netns.as_deref().map(Netns::open).transpose()?;
        nft::run(&opts.nft, netns.as_ref(), &schema_script())?;
        let sock = match &netns {
            Some(ns) => ns.run(netlink::Socket::open)?,
            None => netlink::Socket::open(),
        }
        .map_err(|source| NetError::Netlink { op: "open socket", source })?;
        Ok(NetContainment { nft: opts.nft, netns, sock })
    }

    /// Re-runs the table setup of [`NetContainment::open`].
    pub fn ensure(&mut self) -> Result<(), NetError> {
        nft::run(&self.nft, self.netns.as_ref(), &schema_script())
    }

    /// Blocks each address, for its TTL (`None`: until unblocked), in one transaction per
    /// [`MAX_PER_TRANSACTION`] addresses. An address already blocked gets the new TTL. The whole
    /// call is refused if any address or TTL is invalid (unspecified, loopback, multicast or
    /// broadcast addresses; a TTL under 1 ms or over [`MAX_TTL`]). IPv4-mapped IPv6 addresses are
    /// blocked as the IPv4 address they carry.
    pub fn block(&mut self, ips: &[(IpAddr, Option<Duration>)]) -> Result<(), NetError> {
        let mut elems = Vec::with_capacity(ips.len());
        for &(ip, ttl) in ips {
            elems.push(Elem { ip: block_target(ip)?, timeout_ms: ttl.map(ttl_ms).transpose()? });
        }
        let elems = dedup_last_wins(elems);
        for chunk in elems.chunks(MAX_PER_TRANSACTION) {
            let (v4, v6) = split_families(chunk);
            let mut changes = Vec::new();
            for (set, elems) in [(SET4, &v4), (SET6, &v6)] {
                if !elems.is_empty() {
                    changes.push(Change::Add { set, elems });
                    changes.push(Change::Del { set, elems });
                    changes.push(Change::Add { set, elems });
                }
            }
            self.commit("block", &changes)?;
        }
        Ok(())
    }

    /// Unblocks each address; one that isn't blocked is no error.
    pub fn unblock(&mut self, ips: &[IpAddr]) -> Result<(), NetError> {
        let elems: Vec<Elem> =
            ips.iter().map(|ip| Elem { ip: ip.to_canonical(), timeout_ms: None }).collect();
        let elems = dedup_last_wins(elems);
        for chunk in elems.chunks(MAX_PER_TRANSACTION) {
            let (v4, v6) = split_families(chunk);
            let mut changes = Vec::new();
            for (set, elems) in [(SET4, &v4), (SET6, &v6)] {
                if !elems.is_empty() {
                    changes.push(Change::Add { set, elems });
                    changes.push(Change::Del { set, elems });
                }
            }
            match self.commit("unblock", &changes) {
                // A full set can't take the transient add: delete only what is there.
                Err(NetError::SetFull) => self.unblock_present(chunk)?,
                other => other?,
            }
        }
        Ok(())
    }

    fn unblock_present(&mut self, chunk: &[Elem]) -> Result<(), NetError> {
        let present: std::collections::HashSet<IpAddr> = self.blocked()?.into_iter().map(|b| b.ip).collect();
        let chunk: Vec<Elem> = chunk.iter().copied().filter(|e| present.contains(&e.ip)).collect();
        let (v4, v6) = split_families(&chunk);
        let mut changes = Vec::new();
        for (set, elems) in [(SET4, &v4), (SET6, &v6)] {
            if !elems.is_empty() {
                changes.push(Change::Del { set, elems });
            }
        }
        self.commit("unblock", &changes)
    }

    /// Sends one transaction; if the table or a set is missing (someone flushed the ruleset),
    /// recreates them and tries once more.
    fn commit(&mut self, op: &'static str, changes: &[Change<'_>]) -> Result<(), NetError> {
        match self.sock.commit(TABLE, changes) {
            Err(e) if is_errno(&e, Errno::NOENT) => {
                self.ensure()?;
                self.sock.commit(TABLE, changes).map_err(|source| kernel_error(op, source))
            }
            other => other.map_err(|source| kernel_error(op, source)),
        }
    }

    /// Every blocked address with its TTL and the time left, IPv4 first. Empty when the table is
    /// gone.
    pub fn blocked(&mut self) -> Result<Vec<Blocked>, NetError> {
        let mut out = Vec::new();
        for set in [SET4, SET6] {
            let elems = match self.sock.dump_set(TABLE, set) {
                Ok(elems) => elems,
                Err(e) if is_errno(&e, Errno::NOENT) => continue,
                Err(source) => return Err(NetError::Netlink { op: "list blocked", source }),
            };
            for e in elems {
                let ip = match e.key.len() {
                    4 => {
                        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(e.key.as_slice()).unwrap_or_default()))
                    }
                    16 => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(e.key.as_slice()).unwrap_or_default()))
                    }
                    n => {
                        let source =
                            io::Error::new(io::ErrorKind::InvalidData, format!("{n}-byte key in {set}"));
                        return Err(NetError::Netlink { op: "list blocked", source });
                    }
                };
                out.push(Blocked {
                    ip,
                    ttl: e.timeout_ms.map(Duration::from_millis),
                    expires_in: e.expires_ms.map(Duration::from_millis),
                });
            }
        }
        Ok(out)
    }

    /// Isolates the host: drops all traffic but loopback, `iso.allow`, `iso.mgmt`, IPv6 neighbour
    /// discovery and (if `iso.dhcp`) DHCP, in one transaction. Isolating again replaces the
    /// allow-list atomically.
    pub fn isolate(&mut self, iso: &Isolation) -> Result<(), NetError> {
        let script = isolate_script(iso)?;
        nft::run(&self.nft, self.netns.as_ref(), &script)
    }

    /// Ends isolation: deletes the `iso_*` chains and sets, in one transaction, leaving the ruleset
    /// as it was before [`NetContainment::isolate`]. Not isolated: nothing to do.
    pub fn release(&mut self) -> Result<(), NetError> {
        let mut script = String::new();
        for chain in ISO_CHAINS {
            if self
                .sock
                .chain_exists(TABLE, chain)
                .map_err(|source| NetError::Netlink { op: "release", source })?
            {
                let _ =
                    writeln!(script, "flush chain inet {TABLE} {chain}\ndelete chain inet {TABLE} {chain}");
            }
        }
        for set in [ISO_SET4, ISO_SET6] {
            if self
                .sock
                .set_exists(TABLE, set)
                .map_err(|source| NetError::Netlink { op: "release", source })?
            {
                let _ = writeln!(script, "delete set inet {TABLE} {set}");
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        nft::run(&self.nft, self.netns.as_ref(), &script)
    }

    /// Whether isolation is in force (its input chain exists).
    pub fn is_isolated(&mut self) -> Result<bool, NetError> {
        self.sock
            .chain_exists(TABLE, ISO_CHAINS[0])
            .map_err(|source| NetError::Netlink { op: "check isolation", source })
    }

    /// Deletes `table inet picket` and everything in it (blocks and isolation); no error if it is
    /// already gone. The next block recreates it.
    pub fn remove_table(&mut self) -> Result<(), NetError> {
        // `add` then `delete` in one transaction: idempotent on nft versions without `destroy`.
        nft::run(
            &self.nft,
            self.netns.as_ref(),
            &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
        )
    }
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

fn kernel_error(op: &'static str, source: io::Error) -> NetError {
    if is_errno(&source, Errno::NFILE) { NetError::SetFull } else { NetError::Netlink { op, source } }
}

/// An address that may be blocked, IPv4-mapped IPv6 turned into IPv4.
fn block_target(ip: IpAddr) -> Result<IpAddr, NetError> {
    let canonical = ip.to_canonical();
    let reason = if canonical.is_unspecified() {
        Some("unspecified address")
    } else if canonical.is_loopback() {
        Some("loopback address")
    } else if canonical.is_multicast() {
        Some("multicast address")
    } else if let IpAddr::V4(v4) = canonical
        && v4.is_broadcast()
    {
        Some("broadcast address")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::InvalidAddress { ip, reason }),
        None => Ok(canonical),
    }
}

/// A TTL in whole milliseconds, rounded up so a short TTL never becomes 0 (which the kernel
/// would read as "no timeout").
fn ttl_ms(ttl: Duration) -> Result<u64, NetError> {
    if ttl < Duration::from_millis(1) {
        return Err(NetError::InvalidTtl { ttl, reason: "shorter than 1 ms" });
    }
    if ttl > MAX_TTL {
        return Err(NetError::InvalidTtl { ttl, reason: "longer than a year" });
    }
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .map_err(|_| NetError::InvalidTtl { ttl, reason: "out of range" })
}

/// One element per address, keeping the last occurrence's TTL, in first-seen order.
fn dedup_last_wins(elems: Vec<Elem>) -> Vec<Elem> {
    let mut index: HashMap<IpAddr, usize> = HashMap::with_capacity(elems.len());
    let mut out: Vec<Elem> = Vec::with_capacity(elems.len());
    for e in elems {
        match index.get(&e.ip) {
            Some(&i) => out[i] = e,
            None => {
                index.insert(e.ip, out.len());
                out.push(e);
            }
        }
    }
    out
}

fn split_families(elems: &[Elem]) -> (Vec<Elem>, Vec<Elem>) {
    elems.iter().partition(|e| e.ip.is_ipv4())
}

/// The idempotent setup: `add` leaves what exists; the block chains are flushed and refilled so
/// their rules are exactly these, in the same transaction (no moment without them).
fn schema_script() -> String {
    let t = format!("inet {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    for (set, ty) in [(SET4, "ipv4_addr"), (SET6, "ipv6_addr")] {
        let _ = writeln!(s, "add set {t} {set} {{ type {ty}; size {SET_CAPACITY}; flags timeout; }}");
    }
    let chains = [
        ("block_in", "input", &["ip saddr @block4", "ip6 saddr @block6"][..]),
        (
            "block_fwd",
            "forward",
            &["ip saddr @block4", "ip daddr @block4", "ip6 saddr @block6", "ip6 daddr @block6"],
        ),
        ("block_out", "output", &["ip daddr @block4", "ip6 daddr @block6"]),
    ];
    for (chain, hook, _) in chains {
        let _ =
            writeln!(s, "add chain {t} {chain} {{ type filter hook {hook} priority -10; policy accept; }}");
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    for (chain, _, matches) in chains {
        for m in matches {
            let _ = writeln!(s, "add rule {t} {chain} {m} counter drop");
        }
    }
    s
}

fn check_net(net: IpNet) -> Result<IpNet, NetError> {
    if net.prefix_len() == 0 {
        return Err(NetError::InvalidNetwork { net, reason: "a /0 network would allow everything" });
    }
    if net.trunc() != net {
        return Err(NetError::InvalidNetwork {
            net,
            reason: "host bits set (did you mean the network address?)",
        });
    }
    Ok(net)
}

/// The isolation transaction: (re)create the allow sets and the `policy drop` chains, and fill them.
fn isolate_script(iso: &Isolation) -> Result<String, NetError> {
    let allow = iso.allow.iter().map(|&n| check_net(n)).collect::<Result<Vec<_>, _>>()?;
    for m in &iso.mgmt {
        check_net(m.from)?;
        if m.tcp_port == 0 {
            return Err(NetError::InvalidPort { port: 0, reason: "port 0" });
        }
    }
    let allow = IpNet::aggregate(&allow);
    let t = format!("inet {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    for (set, ty, v4) in [(ISO_SET4, "ipv4_addr", true), (ISO_SET6, "ipv6_addr", false)] {
        let _ = writeln!(s, "add set {t} {set} {{ type {ty}; flags interval; auto-merge; }}");
        let _ = writeln!(s, "flush set {t} {set}");
        let nets: Vec<String> =
            allow.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4).map(ToString::to_string).collect();
        if !nets.is_empty() {
            let _ = writeln!(s, "add element {t} {set} {{ {} }}", nets.join(", "));
        }
    }
    for (chain, hook) in ISO_CHAINS.iter().zip(["input", "forward", "output"]) {
        let _ = writeln!(s, "add chain {t} {chain} {{ type filter hook {hook} priority -5; policy drop; }}");
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    let mut rule = |chain: &str, body: &str| {
        let _ = writeln!(s, "add rule {t} {chain} {body}");
    };
    rule("iso_in", "iif \"lo\" accept");
    rule("iso_in", "ip saddr @iso_allow4 accept");
    rule("iso_in", "ip6 saddr @iso_allow6 accept");
    rule(
        "iso_in",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-redirect } \
         ip6 hoplimit 255 accept",
    );
    rule("iso_out", "oif \"lo\" accept");
    rule("iso_out", "ip daddr @iso_allow4 accept");
    rule("iso_out", "ip6 daddr @iso_allow6 accept");
    rule("iso_out", "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept");
    for m in &iso.mgmt {
        let (fam, port) = (if m.from.addr().is_ipv4() { "ip" } else { "ip6" }, m.tcp_port);
        rule("iso_in", &format!("{fam} saddr {} tcp dport {port} accept", m.from));
        rule("iso_out", &format!("{fam} daddr {} tcp sport {port} accept", m.from));
    }
    if iso.dhcp {
        rule("iso_in", "udp sport 67 udp dport 68 accept");
        rule("iso_in", "udp sport 547 udp dport 546 accept");
        rule("iso_out", "udp sport 68 udp dport 67 accept");
        rule("iso_out", "udp sport 546 udp dport 547 accept");
    }
    rule("iso_fwd", "ip saddr @iso_allow4 accept");
    rule("iso_fwd", "ip daddr @iso_allow4 accept");
    rule("iso_fwd", "ip6 saddr @iso_allow6 accept");
    rule("iso_fwd", "ip6 daddr @iso_allow6 accept");
    for chain in ISO_CHAINS {
        rule(chain, "counter drop");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Every statement names `inet picket`, and nothing else: the table is our only footprint.
    fn assert_only_our_table(script: &str) {
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(matches!(words[0], "add" | "flush" | "delete"), "{line}");
            assert_eq!(&words[2..4], ["inet", "picket"], "{line}");
        }
    }

    #[test]
    fn schema_touches_only_table_inet_picket() {
        let s = schema_script();
        assert_only_our_table(&s);
        assert!(s.contains("add set inet picket block4 { type ipv4_addr; size 65536; flags timeout; }"));
        assert!(s.contains("add rule inet picket block_in ip saddr @block4 counter drop"));
        assert!(s.contains("add rule inet picket block_out ip6 daddr @block6 counter drop"));
        assert!(!s.contains("delete"));
    }

    #[test]
    fn isolation_script_lists_allowed_networks_and_management() {
        let iso = Isolation {
            allow: vec![net("10.252.0.0/24"), net("10.252.0.7/32"), net("fd00:252::/64")],
            mgmt: vec![MgmtAccess { from: net("192.0.2.0/24"), tcp_port: 22 }],
            dhcp: true,
        };
        let s = isolate_script(&iso).unwrap();
        assert_only_our_table(&s);
        // The /32 inside the /24 is merged away.
        assert!(s.contains("add element inet picket iso_allow4 { 10.252.0.0/24 }"), "{s}");
        assert!(s.contains("add element inet picket iso_allow6 { fd00:252::/64 }"), "{s}");
        assert!(s.contains("add rule inet picket iso_in ip saddr 192.0.2.0/24 tcp dport 22 accept"));
        assert!(s.contains("add rule inet picket iso_out ip daddr 192.0.2.0/24 tcp sport 22 accept"));
        assert!(s.contains("udp sport 68 udp dport 67 accept"));
        assert!(s.contains("policy drop"));
        let empty = isolate_script(&Isolation::default()).unwrap();
        assert!(!empty.contains("add element"), "{empty}");
        assert!(!empty.contains("udp"), "{empty}");
    }

    #[test]
    fn isolation_refuses_bad_networks_and_ports() {
        for bad in ["0.0.0.0/0", "::/0", "10.252.0.1/24"] {
            let iso = Isolation { allow: vec![net(bad)], ..Isolation::default() };
            assert!(matches!(isolate_script(&iso), Err(NetError::InvalidNetwork { .. })), "{bad}");
        }
        let iso = Isolation {
            mgmt: vec![MgmtAccess { from: net("10.0.0.0/8"), tcp_port: 0 }],
            ..Isolation::default()
        };
        assert!(matches!(isolate_script(&iso), Err(NetError::InvalidPort { .. })));
    }

    #[test]
    fn block_targets_are_validated_and_canonical() {
        for bad in ["0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert!(matches!(block_target(ip(bad)), Err(NetError::InvalidAddress { .. })), "{bad}");
        }
        assert_eq!(block_target(ip("::ffff:10.252.0.2")).unwrap(), ip("10.252.0.2"));
        assert_eq!(block_target(ip("fd00:252::2")).unwrap(), ip("fd00:252::2"));
    }

    #[test]
    fn ttls_round_up_to_whole_milliseconds_and_are_bounded() {
        assert_eq!(ttl_ms(Duration::from_micros(1500)).unwrap(), 2);
        assert_eq!(ttl_ms(Duration::from_secs(2)).unwrap(), 2000);
        assert!(matches!(ttl_ms(Duration::ZERO), Err(NetError::InvalidTtl { .. })));
        assert!(matches!(ttl_ms(Duration::from_micros(999)), Err(NetError::InvalidTtl { .. })));
        assert!(matches!(ttl_ms(MAX_TTL + Duration::from_secs(1)), Err(NetError::InvalidTtl { .. })));
    }

    #[test]
    fn duplicate_addresses_keep_the_last_ttl() {
        let e = |s: &str, t: Option<u64>| Elem { ip: ip(s), timeout_ms: t };
        let out = dedup_last_wins(vec![e("10.0.0.1", Some(1)), e("10.0.0.2", None), e("10.0.0.1", Some(9))]);
        assert_eq!(out, vec![e("10.0.0.1", Some(9)), e("10.0.0.2", None)]);
    }

    #[test]
    fn a_missing_nft_is_an_error_value() {
        let opts = NetOptions { nft: PathBuf::from("/nonexistent/picket-test/nft"), netns: None };
        let err = NetContainment::open(opts).unwrap_err();
        assert!(matches!(err, NetError::NftMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/picket-test/nft"), "{err}");
    }

    #[test]
    fn a_failing_nft_is_an_error_value_with_its_status() {
        // `false` stands for an nft that refuses the script; it changes nothing anywhere.
        let opts = NetOptions { nft: PathBuf::from("false"), netns: None };
        let err = NetContainment::open(opts).unwrap_err();
        assert!(matches!(err, NetError::NftFailed { .. }), "{err:?}");
    }
}
