//! The flow table: packets grouped by 5-tuple into flows, with bounded memory.
//!
//! A plain state machine (no I/O, no clock): time comes from the packets. A flow starts with its
//! first packet and is reported twice, at its start and at its end. The *source* is the side that
//! opened it: for TCP the sender of a SYN without ACK (a SYN-ACK seen first means the receiver
//! opened it), otherwise the sender of the first packet seen.
//!
//! A TCP flow ends after both FINs or an RST, but only once it has been quiet for
//! [`FlowConfig::linger`], so the final ACKs still count towards it (tshark counts them too). A new
//! SYN on a closed flow ends it at once and starts another (port reuse). Any flow ends when idle
//! for its timeout, when the table is full and it is among the stalest eighth (counted in
//! [`FlowStats::evicted`]; a closed flow still lingering goes first and ends as closed, not
//! counted), or when the capture ends ([`FlowTable::flush`]).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::decode::{Packet, proto, tcp_flag};

/// Flow table settings.
#[derive(Debug, Clone, Copy)]
pub struct FlowConfig {
    /// Most flows held at once. Each costs about 150 bytes with the map's overhead.
    pub max_flows: usize,
    /// Idle time after which an open TCP flow ends.
    pub tcp_timeout_ns: i64,
    /// Idle time after which a UDP, ICMP or other flow ends.
    pub udp_timeout_ns: i64,
    /// How long a closed TCP flow (FIN both ways or RST) lingers for its last packets.
    pub linger_ns: i64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 16_384,
            tcp_timeout_ns: 300 * 1_000_000_000,
            udp_timeout_ns: 60 * 1_000_000_000,
            linger_ns: 5 * 1_000_000_000,
        }
    }
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// FIN from both sides.
    Fin,
    Rst,
    /// A new SYN reused the 5-tuple of a closed flow.
    Reused,
    Idle,
    /// The table was full.
    Evicted,
    /// The capture or replay ended.
    CaptureEnd,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Reused => "reused",
            EndReason::Idle => "idle",
            EndReason::Evicted => "evicted",
            EndReason::CaptureEnd => "capture_end",
        }
    }
}

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Side {
    pub ip: IpAddr,
    pub port: u16,
}

/// What the table reports: a flow that started or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub proto: u8,
    /// The side that opened the flow.
    pub src: Side,
    pub dst: Side,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Packets and IP bytes from `src` to `dst`, and back.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Union of the TCP flags seen, either way.
    pub tcp_flags: u8,
    /// `None` for a start, the reason for an end.
    pub end: Option<EndReason>,
}

/// Counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub started: u64,
    pub ended: u64,
    /// Open flows ended early because the table was full.
    pub evicted: u64,
    pub active: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    lo: Side,
    hi: Side,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    /// Whether the opener is `lo` of the key.
    src_is_lo: bool,
    first_ns: i64,
    last_ns: i64,
    packets: [u64; 2],
    bytes: [u64; 2],
    tcp_flags: u8,
    /// FIN seen from src, from dst.
    fin: [bool; 2],
    /// Closed by FIN both ways or RST: ends after the linger.
    closed: Option<EndReason>,
}

/// The flow table. Feed it packets in time order; it calls `emit` for every start and end.
#[derive(Debug)]
pub struct FlowTable {
    cfg: FlowConfig,
    flows: HashMap<Key, Flow>,
    stats: FlowStats,
    next_sweep_ns: i64,
    expired: Vec<Key>,
    /// Scratch for picking eviction victims.
    ages: Vec<i64>,
}

/// How often (in packet time) idle and closed flows are swept.
const SWEEP_EVERY_NS: i64 = 1_000_000_000;
/// When the table is full, this fraction (1/n) of it, the least recently seen, is ended at once:
/// one O(n) pass per n/8 new flows keeps eviction O(1) amortized and its choice deterministic.
const EVICT_FRACTION: usize = 8;

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> FlowTable {
        let cfg = FlowConfig { max_flows: cfg.max_flows.max(1), ..cfg };
        FlowTable {
            cfg,
            flows: HashMap::with_capacity(cfg.max_flows.min(4096)),
            stats: FlowStats::default(),
            next_sweep_ns: i64::MIN,
            expired: Vec::new(),
            ages: Vec::new(),
        }
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats { active: self.flows.len() as u64, ..self.stats }
    }

    /// Account one packet at time `ts_ns`.
    pub fn packet(&mut self, ts_ns: i64, p: &Packet<'_>, emit: &mut impl FnMut(FlowRecord)) {
        if ts_ns >= self.next_sweep_ns {
            self.sweep(ts_ns, emit);
            self.next_sweep_ns = ts_ns.saturating_add(SWEEP_EVERY_NS);
        }
        let (sport, dport) =
            if matches!(p.proto, proto::TCP | proto::UDP) { (p.sport, p.dport) } else { (0, 0) };
        let a = Side { ip: p.src, port: sport };
        let b = Side { ip: p.dst, port: dport };
        let from_lo = a <= b;
        let key =
            if from_lo { Key { proto: p.proto, lo: a, hi: b } } else { Key { proto: p.proto, lo: b, hi: a } };
        let is_tcp = p.proto == proto::TCP;
        let syn_only = is_tcp && p.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN;

        if let Some(f) = self.flows.get(&key) {
            // A fresh SYN on a flow that has closed: the 5-tuple is being reused.
            if syn_only && f.closed.is_some() {
                let f = *f;
                self.flows.remove(&key);
                self.end(&key, &f, EndReason::Reused, emit);
            }
        }
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.cfg.max_flows {
                self.evict_one(emit);
            }
            // Who opened it: a SYN-ACK seen first was sent by the side that was opened to.
            let synack =
                is_tcp && p.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == (tcp_flag::SYN | tcp_flag::ACK);
            let sender_is_src = !synack;
            let src_is_lo = from_lo == sender_is_src;
            let f = Flow {
                src_is_lo,
                first_ns: ts_ns,
                last_ns: ts_ns,
                packets: [0; 2],
                bytes: [0; 2],
                tcp_flags: 0,
                fin: [false; 2],
                closed: None,
            };
            self.flows.insert(key, f);
            self.stats.started += 1;
            let mut start = record(&key, &f, None);
            start.tcp_flags = p.tcp_flags;
            emit(start);
        }
        let Some(f) = self.flows.get_mut(&key) else { return };
        let dir = usize::from(from_lo != f.src_is_lo);
        f.packets[dir] += 1;
        f.bytes[dir] += u64::from(p.ip_len);
        f.last_ns = f.last_ns.max(ts_ns);
        if is_tcp {
            f.tcp_flags |= p.tcp_flags;
            if p.tcp_flags & tcp_flag::RST != 0 {
                f.closed.get_or_insert(EndReason::Rst);
            }
            if p.tcp_flags & tcp_flag::FIN != 0 {
                f.fin[dir] = true;
                if f.fin == [true, true] {
                    f.closed.get_or_insert(EndReason::Fin);
                }
            }
        }
    }

    /// End every flow idle past its timeout or closed past its linger, as of `now_ns`.
    pub fn sweep(&mut self, now_ns: i64, emit: &mut impl FnMut(FlowRecord)) {
        let cfg = self.cfg;
        self.expired.clear();
        self.expired.extend(self.flows.iter().filter_map(|(k, f)| {
            let idle = now_ns.saturating_sub(f.last_ns);
            let limit = match (f.closed, k.proto) {
                (Some(_), _) => cfg.linger_ns,
                (None, proto::TCP) => cfg.tcp_timeout_ns,
                (None, _) => cfg.udp_timeout_ns,
            };
            (idle > limit).then_some(*k)
        }));
        let mut expired = std::mem::take(&mut self.expired);
        // Ends come out in the order the flows started, so replay output is deterministic.
        expired.sort_by_key(|k| self.flows.get(k).map(|f| (f.first_ns, f.last_ns)));
        for k in &expired {
            if let Some(f) = self.flows.remove(k) {
                self.end(k, &f, f.closed.unwrap_or(EndReason::Idle), emit);
            }
        }
        self.expired = expired;
    }

    /// End every flow (the capture is over).
    pub fn flush(&mut self, emit: &mut impl FnMut(FlowRecord)) {
        let mut all: Vec<(Key, Flow)> = self.flows.drain().collect();
        all.sort_by_key(|(_, f)| (f.first_ns, f.last_ns));
        for (k, f) in all {
            self.end(&k, &f, f.closed.unwrap_or(EndReason::CaptureEnd), emit);
        }
    }

    fn evict_one(&mut self, emit: &mut impl FnMut(FlowRecord)) {
        // Closed flows (only lingering for their last ACKs) go first, then the least recently seen;
        // among closed flows too the least recently seen first, so a table full of them (a port
        // scan) loses an eighth at a time, not all at once in one long burst of events.
        let age = |f: &Flow| if f.closed.is_some() { f.last_ns.saturating_sub(1 << 62) } else { f.last_ns };
        self.ages.clear();
        self.ages.extend(self.flows.values().map(age));
        let n = (self.ages.len() / EVICT_FRACTION).max(1);
        let (_, &mut cutoff, _) = self.ages.select_nth_unstable(n - 1);
        let mut victims: Vec<(Key, Flow)> = Vec::with_capacity(n);
        self.flows.retain(|k, f| {
            // Ties at the cutoff may take a few more than n; never fewer than one.
            let evict = age(f) <= cutoff;
            if evict {
                victims.push((*k, *f));
            }
            !evict
        });
        victims.sort_by_key(|(_, f)| (f.first_ns, f.last_ns));
        for (k, f) in victims {
            match f.closed {
                // Already over (FIN both ways or RST), only lingering for its last ACKs: it ends
                // as what it was, and nothing is lost (a port scan is all such flows).
                Some(why) => self.end(&k, &f, why, emit),
                None => {
                    self.stats.evicted += 1;
                    self.end(&k, &f, EndReason::Evicted, emit);
                }
            }
        }
    }

    fn end(&mut self, k: &Key, f: &Flow, why: EndReason, emit: &mut impl FnMut(FlowRecord)) {
        self.stats.ended += 1;
        emit(record(k, f, Some(why)));
    }
}

fn record(k: &Key, f: &Flow, end: Option<EndReason>) -> FlowRecord {
    let (src, dst) = if f.src_is_lo { (k.lo, k.hi) } else { (k.hi, k.lo) };
    FlowRecord {
        proto: k.proto,
        src,
        dst,
        first_ns: f.first_ns,
        last_ns: f.last_ns,
        packets: f.packets,
        bytes: f.bytes,
        tcp_flags: f.tcp_flags,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, len: u32) -> Packet<'static> {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: proto::TCP,
            sport,
            dport,
            ip_len: len,
            tcp_flags: flags,
            payload: &[],
        }
    }

    const S: u8 = tcp_flag::SYN;
    const A: u8 = tcp_flag::ACK;
    const F: u8 = tcp_flag::FIN;
    const R: u8 = tcp_flag::RST;

    #[test]
    fn a_tcp_connection_starts_ends_after_linger_and_counts_both_ways() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        let mut e = |r| out.push(r);
        // Server (lower address) answers; the client opened it.
        let c = "10.0.0.9";
        let s = "10.0.0.1";
        t.packet(0, &pkt(c, 5000, s, 80, S, 60), &mut e);
        t.packet(1, &pkt(s, 80, c, 5000, S | A, 60), &mut e);
        t.packet(2, &pkt(c, 5000, s, 80, A, 52), &mut e);
        t.packet(3, &pkt(c, 5000, s, 80, F | A, 52), &mut e);
        t.packet(4, &pkt(s, 80, c, 5000, F | A, 52), &mut e);
        t.packet(5, &pkt(c, 5000, s, 80, A, 52), &mut e);
        t.sweep(5 + 6_000_000_000, &mut e);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].end, None);
        assert_eq!(out[0].src.ip.to_string(), c);
        let end = &out[1];
        assert_eq!(end.end, Some(EndReason::Fin));
        assert_eq!((end.src.port, end.dst.port), (5000, 80));
        assert_eq!(end.packets, [4, 2]);
        assert_eq!(end.bytes, [60 + 52 * 3, 112]);
        assert_eq!(end.tcp_flags, S | A | F);
        assert_eq!((end.first_ns, end.last_ns), (0, 5));
    }

    #[test]
    fn a_synack_seen_first_makes_its_receiver_the_source() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        t.packet(0, &pkt("10.0.0.1", 80, "10.0.0.9", 5000, S | A, 60), &mut |r| out.push(r));
        assert_eq!(out[0].src.ip.to_string(), "10.0.0.9");
        assert_eq!(out[0].dst.port, 80);
    }

    #[test]
    fn a_new_syn_on_a_reset_flow_starts_another() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        let mut e = |r| out.push(r);
        t.packet(0, &pkt("10.0.0.9", 5000, "10.0.0.1", 81, S, 60), &mut e);
        t.packet(1, &pkt("10.0.0.1", 81, "10.0.0.9", 5000, R | A, 40), &mut e);
        t.packet(2, &pkt("10.0.0.9", 5000, "10.0.0.1", 81, S, 60), &mut e);
        let ends: Vec<_> = out.iter().filter_map(|r| r.end).collect();
        assert_eq!(ends, [EndReason::Reused]);
        assert_eq!(out.iter().filter(|r| r.end.is_none()).count(), 2);
    }

    #[test]
    fn a_full_table_evicts_and_counts_and_never_grows() {
        let mut t = FlowTable::new(FlowConfig { max_flows: 8, ..FlowConfig::default() });
        let mut ends = 0;
        for i in 0..100u16 {
            t.packet(i64::from(i), &pkt("10.0.0.9", 1000 + i, "10.0.0.1", 80, S, 60), &mut |r| {
                ends += usize::from(r.end.is_some());
            });
            assert!(t.stats().active <= 8);
        }
        // Each time the table is full, the stalest eighth (at least one) goes.
        assert_eq!(t.stats().evicted, 92);
        assert_eq!(ends, 92);
    }

    #[test]
    fn a_full_table_evicts_the_stalest_eighth_not_the_busy_flows() {
        let mut t = FlowTable::new(FlowConfig { max_flows: 64, ..FlowConfig::default() });
        let mut evicted = Vec::new();
        for i in 0..64u16 {
            t.packet(i64::from(i), &pkt("10.0.0.9", 1000 + i, "10.0.0.1", 80, S, 60), &mut |_| {});
        }
        // Flows 0..8 stay busy; 8..16 are now the stalest.
        for i in 0..8u16 {
            t.packet(100, &pkt("10.0.0.9", 1000 + i, "10.0.0.1", 80, A, 52), &mut |_| {});
        }
        t.packet(101, &pkt("10.0.0.9", 5000, "10.0.0.1", 80, S, 60), &mut |r| {
            if r.end == Some(EndReason::Evicted) {
                evicted.push(r.src.port);
            }
        });
        assert_eq!(evicted, (1008..1016).collect::<Vec<u16>>());
        assert_eq!(t.stats().evicted, 8);
        assert_eq!(t.stats().active, 57);
    }

    #[test]
    fn a_closed_flow_pushed_out_of_a_full_table_ends_as_closed_and_is_not_counted() {
        let mut t = FlowTable::new(FlowConfig { max_flows: 8, ..FlowConfig::default() });
        let mut ends = Vec::new();
        // A scan: SYN, RST for each port; every flow is closed and lingering.
        for i in 0..20u16 {
            let mut e = |r: FlowRecord| ends.extend(r.end);
            t.packet(i64::from(i) * 2, &pkt("10.0.0.9", 40000, "10.0.0.1", 1 + i, S, 60), &mut e);
            t.packet(i64::from(i) * 2 + 1, &pkt("10.0.0.1", 1 + i, "10.0.0.9", 40000, R | A, 40), &mut e);
        }
        assert_eq!(t.stats().evicted, 0);
        // One at a time (an eighth of 8), the oldest first: never the whole table in one burst.
        assert_eq!(ends.len(), 12);
        assert_eq!(t.stats().active, 8);
        assert!(ends.iter().all(|&e| e == EndReason::Rst), "{ends:?}");
    }

    #[test]
    fn idle_flows_end_and_flush_ends_the_rest() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        let mut e = |r| out.push(r);
        let mut u = pkt("10.0.0.9", 5353, "10.0.0.1", 53, 0, 40);
        u.proto = proto::UDP;
        t.packet(0, &u, &mut e);
        t.packet(0, &pkt("10.0.0.9", 5000, "10.0.0.1", 22, S, 60), &mut e);
        t.sweep(61_000_000_000, &mut e);
        t.flush(&mut e);
        let ends: Vec<_> = out.iter().filter_map(|r| r.end).collect();
        assert_eq!(ends, [EndReason::Idle, EndReason::CaptureEnd]);
        assert_eq!(t.stats().active, 0);
    }
}
