//! picket's network source: packets to `net.flow` and `net.dns` events.
//!
//! The same [`NetDecoder`] serves the live source (libpcap, behind the `pcap` feature) and
//! `picket replay --format pcap`, which reads capture files with the pure-Rust [`pcapfile`] reader,
//! so replay also works in builds without libpcap. The decoder is a state machine without I/O:
//! frames in, events out, time from the packets.
//!
//! - [`decode`]: link layer (Ethernet + VLAN, Linux cooked v1/v2, raw IP, loopback), IP, TCP, UDP,
//!   ICMP; fragments counted, never a panic.
//! - [`flow`]: 5-tuple flow table with a hard cap (evictions counted): a `net.flow` event when a
//!   flow starts (`event.action: flow_start`) and when it ends (`flow_end`, with bytes and packets
//!   each way, TCP flags seen and `event.duration`).
//! - [`dns`]: one `net.dns` event per DNS message (`event.action: query` or `answer`).
//!
//! ```
//! use picket_netcap::{NetConfig, NetDecoder, decode::linktype};
//! let mut frame = Vec::new();
//! etherparse::PacketBuilder::ipv4([10, 0, 0, 9], [10, 0, 0, 1], 64)
//!     .tcp(40000, 80, 1, 1024).syn()
//!     .write(&mut frame, &[]).unwrap();
//! let mut dec = NetDecoder::new(NetConfig::default());
//! let mut events = Vec::new();
//! dec.frame(1_700_000_000_000_000_000, linktype::RAW, &frame, &mut events);
//! dec.finish(&mut events);
//! let start = serde_json::to_value(&events[0]).unwrap();
//! assert_eq!(start["kind"], "net.flow");
//! assert_eq!(start["destination"]["port"], 80);
//! assert_eq!(events[1].event.action.as_deref(), Some("flow_end"));
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;

use picket_event::{Dns, DnsQuestion, Endpoint, Event, EventKind, Network, Timestamp, severity};

#[cfg(feature = "pcap")]
pub mod attribute;
pub mod decode;
pub mod dns;
pub mod flow;
#[cfg(feature = "pcap")]
pub mod libpcap;
#[cfg(feature = "pcap")]
pub mod live;
pub mod pcapfile;
pub mod procnet;
#[cfg(feature = "pcap")]
pub mod sockdiag;

use decode::{Decoded, Packet, proto, tcp_flag};
use flow::{FlowConfig, FlowRecord, FlowTable};

/// `event.dataset` of every event this crate makes.
pub const DATASET: &str = "picket.network";

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub flows: FlowConfig,
    /// Most addresses remembered from DNS answers (to fill `destination.domain` on flows).
    pub max_names: usize,
    /// `event.module`: `pcap` for live capture, `pcap_file` for replay.
    pub module: &'static str,
    /// Addresses of this host: when set, flows and DNS get `network.direction`.
    pub local_addrs: Vec<IpAddr>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            flows: FlowConfig::default(),
            max_names: 4096,
            module: "pcap_file",
            local_addrs: Vec::new(),
        }
    }
}

/// What the decoder saw. `agent.health` and `picket replay` report these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub frames: u64,
    pub ip_packets: u64,
    /// IP fragments (counted, not tracked in flows).
    pub fragments: u64,
    pub not_ip: u64,
    pub unsupported_link: u64,
    pub malformed: u64,
    pub dns_messages: u64,
    pub dns_malformed: u64,
    pub flows_started: u64,
    pub flows_ended: u64,
    /// Open flows ended early because the table was full.
    pub flows_evicted: u64,
    pub flows_active: u64,
}

/// Frames in, `net.flow` / `net.dns` events out.
#[derive(Debug)]
pub struct NetDecoder {
    cfg: NetConfig,
    flows: FlowTable,
    /// Address → the name a DNS answer gave it (bounded by `max_names`).
    names: HashMap<IpAddr, String>,
    stats: NetStats,
    pending: Vec<FlowRecord>,
}

impl NetDecoder {
    pub fn new(cfg: NetConfig) -> NetDecoder {
        NetDecoder {
            flows: FlowTable::new(cfg.flows),
            cfg,
            names: HashMap::new(),
            stats: NetStats::default(),
            pending: Vec::new(),
        }
    }

    pub fn stats(&self) -> NetStats {
        let f = self.flows.stats();
        NetStats {
            flows_started: f.started,
            flows_ended: f.ended,
            flows_evicted: f.evicted,
            flows_active: f.active,
            ..self.stats
        }
    }

    /// One captured frame: pushes the events it causes onto `out`.
    pub fn frame(&mut self, ts_nanos: i64, linktype: u32, data: &[u8], out: &mut Vec<Event>) {
        self.stats.frames += 1;
        let p = match decode::decode(linktype, data) {
            Decoded::Ip(p) => p,
            Decoded::Fragment => {
                self.stats.fragments += 1;
                return;
            }
            Decoded::NotIp => {
                self.stats.not_ip += 1;
                return;
            }
            Decoded::UnsupportedLink => {
                self.stats.unsupported_link += 1;
                return;
            }
            Decoded::Malformed => {
                self.stats.malformed += 1;
                return;
            }
        };
        self.stats.ip_packets += 1;
        let mut pending = std::mem::take(&mut self.pending);
        self.flows.packet(ts_nanos, &p, &mut |r| pending.push(r));
        for r in pending.drain(..) {
            out.push(self.flow_event(&r));
        }
        self.pending = pending;
        if (p.sport == 53 || p.dport == 53) && matches!(p.proto, proto::UDP | proto::TCP) {
            self.dns(ts_nanos, &p, out);
        }
    }

    /// Advance time without a packet (live capture on a quiet link): ends idle flows.
    pub fn tick(&mut self, now_nanos: i64, out: &mut Vec<Event>) {
        let mut pending = std::mem::take(&mut self.pending);
        self.flows.sweep(now_nanos, &mut |r| pending.push(r));
        for r in pending.drain(..) {
            out.push(self.flow_event(&r));
        }
        self.pending = pending;
    }

    /// The capture is over: end every open flow.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let mut pending = std::mem::take(&mut self.pending);
        self.flows.flush(&mut |r| pending.push(r));
        for r in pending.drain(..) {
            out.push(self.flow_event(&r));
        }
        self.pending = pending;
    }

    fn direction(&self, src: IpAddr, dst: IpAddr) -> Option<String> {
        if self.cfg.local_addrs.is_empty() {
            return None;
        }
        let local = |ip: IpAddr| ip.is_loopback() || self.cfg.local_addrs.contains(&ip);
        Some(
            match (local(src), local(dst)) {
                (true, true) => "internal",
                (true, false) => "outbound",
                (false, true) => "inbound",
                (false, false) => "unknown",
            }
            .to_string(),
        )
    }

    fn base(&self, kind: EventKind, ts: i64, action: &str) -> Event {
        let mut ev = Event::new(kind, Timestamp::from_unix_nanos(ts));
        ev.event.severity = severity::INFO;
        ev.event.dataset = Some(DATASET.to_string());
        ev.event.module = Some(self.cfg.module.to_string());
        ev.event.action = Some(action.to_string());
        ev
    }

    fn flow_event(&self, r: &FlowRecord) -> Event {
        let has_ports = matches!(r.proto, proto::TCP | proto::UDP);
        let port = |p: u16| has_ports.then_some(p);
        let ts = if r.end.is_some() { r.last_ns } else { r.first_ns };
        let mut ev =
            self.base(EventKind::NetFlow, ts, if r.end.is_some() { "flow_end" } else { "flow_start" });
        let ended = r.end.is_some();
        ev.source = Some(Endpoint {
            ip: Some(r.src.ip.to_string()),
            port: port(r.src.port),
            bytes: ended.then_some(r.bytes[0]),
            packets: ended.then_some(r.packets[0]),
            domain: None,
        });
        ev.destination = Some(Endpoint {
            ip: Some(r.dst.ip.to_string()),
            port: port(r.dst.port),
            bytes: ended.then_some(r.bytes[1]),
            packets: ended.then_some(r.packets[1]),
            domain: self.names.get(&r.dst.ip).cloned(),
        });
        ev.network = Some(Network {
            transport: Some(decode::transport_name(r.proto).to_string()),
            r#type: Some(if r.src.ip.is_ipv4() { "ipv4" } else { "ipv6" }.to_string()),
            direction: self.direction(r.src.ip, r.dst.ip),
            bytes: ended.then(|| r.bytes[0] + r.bytes[1]),
            packets: ended.then(|| r.packets[0] + r.packets[1]),
            tcp_flags: (r.proto == proto::TCP).then(|| flag_names(r.tcp_flags)),
        });
        if let Some(why) = r.end {
            ev.event.duration = Some(u64::try_from(r.last_ns.saturating_sub(r.first_ns)).unwrap_or(0));
            ev.message = Some(format!("flow ended: {}", why.as_str()));
        }
        ev
    }

    fn dns(&mut self, ts: i64, p: &Packet<'_>, out: &mut Vec<Event>) {
        let payload = if p.proto == proto::TCP {
            // DNS over TCP: a 2-byte length, then the message; only a message that starts the
            // segment and fits in it is read.
            match p.payload {
                [hi, lo, rest @ ..]
                    if usize::from(u16::from_be_bytes([*hi, *lo])) <= rest.len() && !rest.is_empty() =>
                {
                    &rest[..usize::from(u16::from_be_bytes([*hi, *lo]))]
                }
                _ => return,
            }
        } else {
            p.payload
        };
        if payload.is_empty() {
            return;
        }
        let m = match dns::parse(payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.dns_malformed += 1;
                return;
            }
        };
        self.stats.dns_messages += 1;
        for ip in &m.resolved {
            if let Ok(addr) = ip.parse::<IpAddr>() {
                if self.names.len() >= self.cfg.max_names && !self.names.contains_key(&addr) {
                    // Bounded: forget an arbitrary name to make room.
                    if let Some(k) = self.names.keys().next().copied() {
                        self.names.remove(&k);
                    }
                }
                if self.cfg.max_names > 0 {
                    self.names.insert(addr, m.name.clone());
                }
            }
        }
        let mut ev = self.base(EventKind::NetDns, ts, if m.response { "answer" } else { "query" });
        ev.source =
            Some(Endpoint { ip: Some(p.src.to_string()), port: Some(p.sport), ..Endpoint::default() });
        ev.destination =
            Some(Endpoint { ip: Some(p.dst.to_string()), port: Some(p.dport), ..Endpoint::default() });
        ev.network = Some(Network {
            transport: Some(decode::transport_name(p.proto).to_string()),
            r#type: Some(if p.src.is_ipv4() { "ipv4" } else { "ipv6" }.to_string()),
            direction: self.direction(p.src, p.dst),
            ..Network::default()
        });
        ev.dns = Some(Dns {
            question: DnsQuestion { name: m.name, r#type: Some(m.qtype) },
            response_code: m.rcode.map(str::to_string),
            resolved_ip: (!m.resolved.is_empty()).then_some(m.resolved),
        });
        out.push(ev);
    }
}

/// `network.tcp_flags`: the names of the set bits.
pub fn flag_names(flags: u8) -> Vec<String> {
    tcp_flag::NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| (*n).to_string()).collect()
}

/// What [`replay`] ends with.
#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    pub stats: NetStats,
    /// The file ended in the middle of a record.
    pub truncated: bool,
}

/// Errors of [`replay`].
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    File(#[from] pcapfile::FileError),
    /// The consumer failed (e.g. stdout closed).
    #[error("writing events")]
    Sink(#[source] std::io::Error),
}

/// Decode a whole pcap or pcapng stream, calling `sink` for each event in order.
pub fn replay<R: Read>(
    input: R,
    cfg: NetConfig,
    mut sink: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<ReplayReport, ReplayError> {
    let mut reader = pcapfile::PcapReader::new(input)?;
    let mut dec = NetDecoder::new(cfg);
    let mut events = Vec::new();
    while let Some(rec) = reader.next()? {
        dec.frame(rec.ts_nanos, rec.linktype, rec.data, &mut events);
        for ev in events.drain(..) {
            sink(&ev).map_err(ReplayError::Sink)?;
        }
    }
    dec.finish(&mut events);
    for ev in events.drain(..) {
        sink(&ev).map_err(ReplayError::Sink)?;
    }
    Ok(ReplayReport { stats: dec.stats(), truncated: reader.truncated() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_follow_bit_order() {
        assert_eq!(flag_names(tcp_flag::SYN | tcp_flag::ACK | tcp_flag::FIN), ["SYN", "ACK", "FIN"]);
        assert!(flag_names(0).is_empty());
    }
}
