//! The socket tables of `/proc/net/{tcp,tcp6,udp,udp6}` and finding a flow's socket in them.
//!
//! Pure parsing and matching, no I/O: [`crate::attribute`] reads the files (of the agent's own
//! network namespace) and uses these to turn a flow's 4-tuple into a socket inode.
//!
//! A line looks like (`sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`):
//!
//! ```text
//!    0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 ...
//! ```
//!
//! Addresses are the kernel's 32-bit words printed with `%08X` in host byte order (so `0100007F`
//! is 127.0.0.1 on a little-endian host; IPv6 is four such words), ports `%04X`. Lines that do
//! not parse are skipped: the files are the kernel's, but a parser that trusts nothing costs
//! nothing here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP states of the `st` column that matter here.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 0x01;
    pub const SYN_SENT: u8 = 0x02;
    pub const SYN_RECV: u8 = 0x03;
    pub const TIME_WAIT: u8 = 0x06;
    pub const LISTEN: u8 = 0x0A;
}

/// One socket of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The `st` column (TCP states; UDP shows 07 unconnected, 01 connected).
    pub state: u8,
    pub uid: u32,
    /// 0 for what no file descriptor holds: TIME_WAIT remnants, half-open connections not yet
    /// accepted (SYN_RECV).
    pub inode: u64,
}

/// Hex digits only (`from_str_radix` would also take a sign).
fn hex(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// One address word as the kernel printed it: `%08X` of the native-endian u32.
fn word(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 {
        return None;
    }
    Some(hex(s)?.to_ne_bytes())
}

/// `ADDR:PORT` of either family.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    if p.len() != 4 || !a.is_ascii() {
        return None;
    }
    let port = u16::try_from(hex(p)?).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(a)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&a[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Decimal digits only.
fn dec<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One line of a table; `None` for the header and anything malformed.
pub fn parse_line(line: &str) -> Option<SockEntry> {
    let mut f = line.split_ascii_whitespace();
    let sl = f.next()?;
    if !sl.ends_with(':') || !sl[..sl.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let st = f.next()?;
    if st.len() != 2 {
        return None;
    }
    let state = u8::try_from(hex(st)?).ok()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt
    let mut f = f.skip(3);
    let uid = dec(f.next()?)?;
    let _timeout = f.next()?;
    let inode = dec(f.next()?)?;
    Some(SockEntry { local, remote, state, uid, inode })
}

/// Every socket of a table's text (header and malformed lines skipped).
pub fn parse_table(text: &str, out: &mut Vec<SockEntry>) {
    out.extend(text.lines().filter_map(parse_line));
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a dual-stack socket shows IPv4 peers) as
/// the IPv4 address it carries.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    unmap(a) == unmap(b)
}

/// What the tables say about a flow's local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The socket of this exact connection.
    Socket { inode: u64, uid: u32 },
    /// No socket of its own (not accepted yet, or unconnected UDP): the listening or bound socket
    /// that serves the local address and port.
    Listener { inode: u64, uid: u32 },
    /// No socket a process could hold: closed, or only a TIME_WAIT remnant left.
    Gone,
}

/// Find the socket of the local side `local` talking to `remote`, in the entries of the tables
/// for the flow's transport (both families: a dual-stack socket shows IPv4 flows in the `6`
/// table). The connection's own socket wins; else, for a server whose connection is not accepted
/// yet or an unconnected UDP socket, the socket bound to the local port (on that address or the
/// wildcard) with no peer.
pub fn find(entries: &[SockEntry], local: SocketAddr, remote: SocketAddr) -> Found {
    let exact = entries.iter().find(|e| {
        e.inode != 0
            && e.local.port() == local.port()
            && e.remote.port() == remote.port()
            && same_ip(e.local.ip(), local.ip())
            && same_ip(e.remote.ip(), remote.ip())
    });
    if let Some(e) = exact {
        return Found::Socket { inode: e.inode, uid: e.uid };
    }
    // A specific address beats the wildcard, as in the kernel's own lookup.
    let bound = |specific: bool| {
        entries.iter().find(|e| {
            e.inode != 0
                && e.local.port() == local.port()
                && e.remote.ip().is_unspecified()
                && e.remote.port() == 0
                && matches!(e.state, tcp_state::LISTEN | 0x07)
                && if specific {
                    same_ip(e.local.ip(), local.ip())
                } else {
                    // `0.0.0.0` serves IPv4 only; `::` both (dual stack, the Linux default).
                    e.local.ip().is_unspecified() && !(e.local.is_ipv4() && unmap(local.ip()).is_ipv6())
                }
        })
    };
    match bound(true).or_else(|| bound(false)) {
        Some(e) => Found::Listener { inode: e.inode, uid: e.uid },
        None => Found::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from a little-endian host (x86_64), like every target picket ships for.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 01004E0A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   2: 01004E0A:1F90 02004E0A:D431 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1
   3: 01004E0A:1F90 02004E0A:D432 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   4: 01004E0A:D433 02004E0A:0050 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   5: 01004E0A:9C40 02004E0A:0050 02 00000000:00000000 01:00000064 00000002  1000        0 3003 1 0000000000000000 100 0 0 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 4004 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 0000000000000000FFFF00000200007F:C350 01 00000000:00000000 00:00000000 00000000    33        0 4005 1 0000000000000000 20 4 30 10 -1
   2: 000080FE00000000FF005452563412FE:0016 000080FE00000000FF005452010000FE:E2A4 01 00000000:00000000 02:0009A4C8 00000000     0        0 4006 2 0000000000000000 20 4 0 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_ipv4_and_ipv6_tables() {
        let mut v = Vec::new();
        parse_table(TCP, &mut v);
        assert_eq!(v.len(), 6, "header skipped");
        assert_eq!(
            v[0],
            SockEntry {
                local: sa("127.0.0.1:631"),
                remote: sa("0.0.0.0:0"),
                state: tcp_state::LISTEN,
                uid: 0,
                inode: 12345
            }
        );
        assert_eq!(v[2].local, sa("10.78.0.1:8080"));
        assert_eq!(v[2].remote, sa("10.78.0.2:54321"));
        assert_eq!(v[5].uid, 1000);
        assert_eq!(v[5].state, tcp_state::SYN_SENT);
        let mut v6 = Vec::new();
        parse_table(TCP6, &mut v6);
        assert_eq!(v6.len(), 3);
        assert_eq!(v6[0].local, sa("[::]:8081"));
        assert_eq!(v6[1].local, sa("[::ffff:127.0.0.1]:8081"));
        assert_eq!(v6[2].local, sa("[fe80::5254:ff:fe12:3456]:22"));
        assert_eq!(v6[2].remote.ip(), "fe80::5254:ff:fe00:1".parse::<IpAddr>().unwrap());
        assert_eq!(v6[2].remote.port(), 0xE2A4);
        assert_eq!(v6[2].inode, 4006);
    }

    #[test]
    fn hostile_lines_are_skipped_not_trusted() {
        let bad = [
            "",
            "   ",
            "0: 0100007F:0277",
            "x: 0100007F:0277 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "0 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007G:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F:02771 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F:0277 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 1",
            "0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 -1 0 1",
            "0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 99999999999999999999999",
            "0: 0100007F:0277 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0",
            "0: 0100007F:+277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: +100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F:0277 00000000:0000 +A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 +0 0 1",
            "0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 +1",
            "0: 01éé007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
            "0: 0000000000000000000000000000éé:0277 00000000:0000 0A 0:0 0:0 0 0 0 1",
        ];
        for line in bad {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        // Mixed garbage around one good line: only that one comes out, nothing panics.
        let text = format!("{}\n\0\u{7f}\n{}\n", bad.join("\n"), TCP.lines().nth(1).unwrap());
        let mut v = Vec::new();
        parse_table(&text, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].inode, 12345);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn finds_the_connection_then_the_listener_and_says_gone_for_remnants() {
        let mut v = Vec::new();
        parse_table(TCP, &mut v);
        parse_table(TCP6, &mut v);
        // The server side of an accepted connection.
        assert_eq!(
            find(&v, sa("10.78.0.1:8080"), sa("10.78.0.2:54321")),
            Found::Socket { inode: 2002, uid: 0 }
        );
        // Not accepted yet (SYN_RECV, inode 0): the listener on that address.
        assert_eq!(
            find(&v, sa("10.78.0.1:8080"), sa("10.78.0.2:54322")),
            Found::Listener { inode: 2001, uid: 0 }
        );
        // The client side while connecting.
        assert_eq!(
            find(&v, sa("10.78.0.1:40000"), sa("10.78.0.2:80")),
            Found::Socket { inode: 3003, uid: 1000 }
        );
        // Only a TIME_WAIT remnant left.
        assert_eq!(find(&v, sa("10.78.0.1:54323"), sa("10.78.0.2:80")), Found::Gone);
        // An IPv4 flow on a dual-stack socket shows as ::ffff:... in tcp6.
        assert_eq!(
            find(&v, sa("127.0.0.1:8081"), sa("127.0.0.2:50000")),
            Found::Socket { inode: 4005, uid: 33 }
        );
        // ... and a new one to the same port finds the `::` listener.
        assert_eq!(
            find(&v, sa("10.78.0.1:8081"), sa("10.78.0.9:50001")),
            Found::Listener { inode: 4004, uid: 33 }
        );
        // Nothing on that port at all.
        assert_eq!(find(&v, sa("10.78.0.1:9"), sa("10.78.0.2:1")), Found::Gone);
    }

    #[test]
    fn a_mapped_address_is_its_ipv4_address() {
        assert_eq!(unmap("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(unmap("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}
