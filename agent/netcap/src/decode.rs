//! One captured frame to a [`Packet`]: link layer by hand (Ethernet with VLAN tags, Linux cooked
//! capture v1 and v2, raw IP, BSD loopback), IP and transport with etherparse's lax slicing, which
//! accepts packets cut short by the snaplen. Nothing here panics on any input (see the proptest in
//! `tests/fuzz_decode.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// `LINKTYPE_*` values we decode.
pub mod linktype {
    /// BSD loopback: 4-byte host-order address family.
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    /// Raw IP (DLT_RAW on some systems is 12 or 14; the LINKTYPE is 101).
    pub const RAW: u32 = 101;
    pub const DLT_RAW_12: u32 = 12;
    pub const DLT_RAW_14: u32 = 14;
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1 (`-i any`).
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u32 = 276;
}

/// TCP flag bits as in the header's 13th byte.
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
    /// Names in bit order, as `network.tcp_flags` lists them.
    pub const NAMES: [(u8, &str); 8] = [
        (SYN, "SYN"),
        (ACK, "ACK"),
        (FIN, "FIN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (URG, "URG"),
        (ECE, "ECE"),
        (CWR, "CWR"),
    ];
}

/// IP protocol numbers we name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// A decoded IP packet: what the flow table and the DNS parser need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// Ports for TCP and UDP; 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// Length of the IP packet as its header says (what was on the wire at layer 3).
    pub ip_len: u32,
    /// TCP flags; 0 for other protocols.
    pub tcp_flags: u8,
    /// Transport payload (TCP or UDP data) as captured; empty for others.
    pub payload: &'a [u8],
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// An IP packet with its transport decoded (or a transport we do not decode: ports 0).
    Ip(Packet<'a>),
    /// An IP fragment: counted, not tracked (flows would need reassembly).
    Fragment,
    /// Not IP (ARP, LLDP, ...).
    NotIp,
    /// A link type we do not decode.
    UnsupportedLink,
    /// Too short or inconsistent to decode.
    Malformed,
}

/// Decode one frame of link type `linktype`.
pub fn decode(linktype: u32, data: &[u8]) -> Decoded<'_> {
    let (ether_type, rest) = match linktype {
        linktype::ETHERNET => {
            if data.len() < 14 {
                return Decoded::Malformed;
            }
            (u16::from_be_bytes([data[12], data[13]]), &data[14..])
        }
        linktype::LINUX_SLL => {
            if data.len() < 16 {
                return Decoded::Malformed;
            }
            (u16::from_be_bytes([data[14], data[15]]), &data[16..])
        }
        linktype::LINUX_SLL2 => {
            if data.len() < 20 {
                return Decoded::Malformed;
            }
            (u16::from_be_bytes([data[0], data[1]]), &data[20..])
        }
        linktype::RAW | linktype::DLT_RAW_12 | linktype::DLT_RAW_14 | linktype::IPV4 | linktype::IPV6 => {
            match data.first().map(|b| b >> 4) {
                Some(4) => (0x0800, data),
                Some(6) => (0x86dd, data),
                _ => return Decoded::Malformed,
            }
        }
        linktype::NULL | linktype::LOOP => {
            if data.len() < 4 {
                return Decoded::Malformed;
            }
            // The family is in the capturing host's byte order: accept either.
            let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let fam = le.min(be);
            match fam {
                2 => (0x0800, &data[4..]),
                // AF_INET6 differs by OS: 10 Linux, 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS.
                10 | 24 | 28 | 30 => (0x86dd, &data[4..]),
                _ => return Decoded::NotIp,
            }
        }
        _ => return Decoded::UnsupportedLink,
    };
    decode_ether_type(ether_type, rest)
}

/// Decode from an EtherType on (VLAN tags are followed by etherparse).
pub fn decode_ether_type(ether_type: u16, data: &[u8]) -> Decoded<'_> {
    let sliced = LaxSlicedPacket::from_ether_type(EtherType(ether_type), data);
    let Some(net) = sliced.net else {
        // Either not IP (ARP, LLDP, ...), or a header too short or inconsistent to read.
        return if sliced.stop_err.is_some() { Decoded::Malformed } else { Decoded::NotIp };
    };
    let (src, dst, ip_len, payload) = match &net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                u32::from(h.total_len()),
                v4.payload(),
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                u32::from(h.payload_length()) + 40,
                v6.payload(),
            )
        }
        LaxNetSlice::Arp(_) => return Decoded::NotIp,
    };
    if payload.fragmented {
        return Decoded::Fragment;
    }
    let mut p = Packet {
        src,
        dst,
        proto: payload.ip_number.0,
        sport: 0,
        dport: 0,
        ip_len,
        tcp_flags: 0,
        payload: &[],
    };
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            p.sport = t.source_port();
            p.dport = t.destination_port();
            // Byte 13 of the TCP header holds the flags.
            p.tcp_flags = t.header_slice().get(13).copied().unwrap_or(0);
            p.payload = t.payload();
        }
        Some(TransportSlice::Udp(u)) => {
            p.sport = u.source_port();
            p.dport = u.destination_port();
            p.payload = u.payload();
        }
        Some(_) => {}
        None => {
            // TCP/UDP whose header was cut short by the snaplen: still a packet of the flow if
            // the ports made it.
            let raw = payload.payload;
            if matches!(p.proto, proto::TCP | proto::UDP) {
                if raw.len() < 4 {
                    return Decoded::Malformed;
                }
                p.sport = u16::from_be_bytes([raw[0], raw[1]]);
                p.dport = u16::from_be_bytes([raw[2], raw[3]]);
                if p.proto == proto::TCP && raw.len() >= 14 {
                    p.tcp_flags = raw[13];
                }
            }
        }
    }
    Decoded::Ip(p)
}

/// `network.transport` for an IP protocol number.
pub fn transport_name(proto: u8) -> &'static str {
    match proto {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "ipv6-icmp",
        2 => "igmp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        89 => "ospf",
        132 => "sctp",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_v4(flags_syn: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(40000, 80, 1, 1024);
        let b = if flags_syn { b.syn() } else { b.ack(5).psh() };
        let mut out = Vec::new();
        b.write(&mut out, b"GET /").unwrap();
        out
    }

    fn expect_ip(d: Decoded<'_>) -> Packet<'_> {
        match d {
            Decoded::Ip(p) => p,
            other => panic!("expected an IP packet, got {other:?}"),
        }
    }

    #[test]
    fn ethernet_vlan_sll_sll2_and_raw_all_reach_the_same_tcp_packet() {
        let ip = tcp_v4(true);
        let mut eth = vec![0u8; 12];
        eth.extend([0x08, 0x00]);
        eth.extend(&ip);
        let mut vlan = vec![0u8; 12];
        vlan.extend([0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        vlan.extend(&ip);
        let mut qinq = vec![0u8; 12];
        qinq.extend([0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        qinq.extend(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend([0x08, 0x00]);
        sll.extend(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend([0u8; 18]);
        sll2.extend(&ip);
        for (lt, frame) in [
            (linktype::ETHERNET, &eth),
            (linktype::ETHERNET, &vlan),
            (linktype::ETHERNET, &qinq),
            (linktype::LINUX_SLL, &sll),
            (linktype::LINUX_SLL2, &sll2),
            (linktype::RAW, &ip),
        ] {
            let p = expect_ip(decode(lt, frame));
            assert_eq!(p.src, "10.0.0.1".parse::<IpAddr>().unwrap());
            assert_eq!((p.sport, p.dport, p.proto), (40000, 80, proto::TCP));
            assert_eq!(p.tcp_flags, tcp_flag::SYN);
            assert_eq!(p.payload, b"GET /");
            assert_eq!(p.ip_len, u32::try_from(ip.len()).unwrap());
        }
    }

    #[test]
    fn ipv6_udp_and_icmp_decode() {
        let mut out = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(5353, 53).write(&mut out, b"xy").unwrap();
        let p = expect_ip(decode(linktype::RAW, &out));
        assert!(p.src.is_ipv6());
        assert_eq!((p.proto, p.sport, p.dport, p.payload), (proto::UDP, 5353, 53, &b"xy"[..]));
        assert_eq!(p.ip_len, 40 + 8 + 2);
        let mut icmp = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
            .icmpv4_echo_request(1, 2)
            .write(&mut icmp, b"")
            .unwrap();
        let p = expect_ip(decode(linktype::RAW, &icmp));
        assert_eq!((p.proto, p.sport, p.dport), (proto::ICMP, 0, 0));
    }

    #[test]
    fn fragments_are_reported_as_such() {
        let mut ip = tcp_v4(false);
        // Set "more fragments".
        ip[6] |= 0x20;
        assert_eq!(decode(linktype::RAW, &ip), Decoded::Fragment);
        let mut ip = tcp_v4(false);
        // A non-first fragment (offset 8 bytes).
        ip[7] = 1;
        assert_eq!(decode(linktype::RAW, &ip), Decoded::Fragment);
    }

    #[test]
    fn snaplen_cut_tcp_keeps_ports_and_ip_length() {
        let ip = tcp_v4(false);
        let cut = &ip[..20 + 16];
        let p = expect_ip(decode(linktype::RAW, cut));
        assert_eq!((p.sport, p.dport), (40000, 80));
        assert_eq!(p.tcp_flags, tcp_flag::ACK | tcp_flag::PSH);
        assert_eq!(p.ip_len, u32::try_from(ip.len()).unwrap());
    }

    #[test]
    fn arp_is_not_ip_and_garbage_is_malformed() {
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06]);
        arp.extend([0u8; 28]);
        assert_eq!(decode(linktype::ETHERNET, &arp), Decoded::NotIp);
        assert_eq!(decode(linktype::ETHERNET, &[0u8; 5]), Decoded::Malformed);
        let mut bad = vec![0u8; 12];
        bad.extend([0x08, 0x00, 0x45]);
        assert_eq!(decode(linktype::ETHERNET, &bad), Decoded::Malformed);
        assert_eq!(decode(9999, &bad), Decoded::UnsupportedLink);
    }
}
