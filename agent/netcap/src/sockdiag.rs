//! A flow's local socket from the kernel's own lookup, over `NETLINK_SOCK_DIAG`: one request per
//! flow side (`SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`), answered from the kernel's socket hash
//! in microseconds. Reading `/proc/net/tcp` instead walks the whole hash table, sized by the
//! machine's memory rather than its sockets: 71 % of the attribution thread's time under a steady
//! stream of new flows (docs/BENCHMARKS.md, "With packets").
//!
//! The kernel's lookup already does what [`procnet::find`](crate::procnet::find) does by hand over
//! the tables: the connection's own socket first, else the listening (TCP) or bound (UDP) socket
//! for the local address and port, a specific address before the wildcard, dual-stack sockets for
//! IPv4 flows. A TCP connection the server has not accepted yet, or a TIME_WAIT remnant, is a
//! socket without an inode; for those the listener is asked for.
//!
//! Where `inet_diag` is missing (a kernel without it, a module that cannot be loaded), [`SockDiag::new`]
//! finds out by looking up two sockets it makes itself, and the caller reads the tables instead.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink, sockopt};

use crate::decode::proto;
use crate::procnet::{Found, tcp_state, unmap};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the 48-byte socket id.
const REQ_LEN: usize = NLMSG_HDRLEN + 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const MSG_LEN: usize = 72;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// How long a reply may take before the lookup counts as failed.
const TIMEOUT: Duration = Duration::from_millis(200);

/// What the kernel said about one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    state: u8,
    remote_port: u16,
    uid: u32,
    inode: u64,
}

/// A `NETLINK_SOCK_DIAG` socket that answers "which socket is this flow's".
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    /// A socket, checked by looking up a TCP listener and a UDP socket made for the purpose.
    /// An error means: read the tables.
    pub fn new() -> io::Result<SockDiag> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(TIMEOUT))?;
        let mut d = SockDiag { fd, seq: 0, buf: vec![0; 4096] };
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let nowhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        for (p, local) in [(proto::TCP, tcp.local_addr()?), (proto::UDP, udp.local_addr()?)] {
            match d.find(p, local, nowhere)? {
                Found::Listener { .. } => {}
                other => {
                    return Err(io::Error::other(format!(
                        "sock_diag does not find its own test socket ({other:?})"
                    )));
                }
            }
        }
        Ok(d)
    }

    /// The local socket of the flow side `local` ↔ `remote` over `p` (TCP or UDP).
    pub fn find(&mut self, p: u8, local: SocketAddr, remote: SocketAddr) -> io::Result<Found> {
        let found = |r: Reply| {
            let uid = r.uid;
            if r.remote_port == 0 {
                Found::Listener { inode: r.inode, uid }
            } else {
                Found::Socket { inode: r.inode, uid }
            }
        };
        match self.lookup(p, local, remote)? {
            Some(r) if r.inode != 0 => return Ok(found(r)),
            _ => {}
        }
        if p == proto::TCP {
            // Not accepted yet, or only a TIME_WAIT remnant: the listener on the port serves it.
            let any = SocketAddr::new(unspecified_like(local.ip()), 0);
            if let Some(r) = self.lookup(p, local, any)?
                && r.inode != 0
                && r.state == tcp_state::LISTEN
            {
                return Ok(found(r));
            }
        }
        Ok(Found::Gone)
    }

    fn lookup(&mut self, p: u8, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<Reply>> {
        let (local, remote) = (unmapped(local), unmapped(remote));
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        // TCP's lookup takes the socket's view (source = local end); UDP's takes the packet's,
        // the other way round ("src and dst are swapped for historical reasons", udp_diag.c).
        let (src, dst) = if p == proto::UDP { (remote, local) } else { (local, remote) };
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; REQ_LEN];
        req[0..4].copy_from_slice(&u32::try_from(REQ_LEN).unwrap_or(0).to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        let r = &mut req[NLMSG_HDRLEN..];
        r[0] = family;
        r[1] = p;
        r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        r[8..10].copy_from_slice(&src.port().to_be_bytes());
        r[10..12].copy_from_slice(&dst.port().to_be_bytes());
        put_ip(&mut r[12..28], src.ip());
        put_ip(&mut r[28..44], dst.ip());
        r[48..56].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
        let to = netlink::SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&self.fd, &req, SendFlags::empty(), &to)?;
        loop {
            let (n, _) = rustix::net::recv(self.fd.as_fd(), &mut self.buf[..], RecvFlags::empty())?;
            let msg = &self.buf[..n.min(self.buf.len())];
            if msg.len() < NLMSG_HDRLEN + 4 {
                return Err(io::Error::other("short sock_diag reply"));
            }
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            let seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
            if seq != self.seq {
                continue; // an answer to an earlier request that timed out
            }
            let body = &msg[NLMSG_HDRLEN..];
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                return match code {
                    0 => Ok(None),
                    c if c == -rustix::io::Errno::NOENT.raw_os_error() => Ok(None),
                    c => Err(io::Error::from_raw_os_error(-c)),
                };
            }
            if kind != SOCK_DIAG_BY_FAMILY || body.len() < MSG_LEN {
                return Err(io::Error::other(format!(
                    "unexpected sock_diag reply (type {kind}, {} bytes)",
                    body.len()
                )));
            }
            let u32_at = |i: usize| u32::from_ne_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
            return Ok(Some(Reply {
                state: body[1],
                remote_port: u16::from_be_bytes([body[6], body[7]]),
                uid: u32_at(64),
                inode: u64::from(u32_at(68)),
            }));
        }
    }
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(a.ip()), a.port())
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match unmap(ip) {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn put_ip(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out[..16].copy_from_slice(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procnet;
    use std::net::TcpStream;

    /// What the tables say, to compare with.
    fn from_tables(p: u8, local: SocketAddr, remote: SocketAddr) -> Found {
        let names = if p == proto::UDP { ["udp", "udp6"] } else { ["tcp", "tcp6"] };
        let mut v = Vec::new();
        for n in names {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{n}")) {
                procnet::parse_table(&text, &mut v);
            }
        }
        procnet::find(&v, local, remote)
    }

    fn inode(f: Found) -> u64 {
        match f {
            Found::Socket { inode, .. } | Found::Listener { inode, .. } => inode,
            Found::Gone => 0,
        }
    }

    #[test]
    fn tcp_client_server_and_listener_are_the_sockets_the_tables_name() {
        let mut d = SockDiag::new().unwrap();
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let server = l.local_addr().unwrap();
        let c = TcpStream::connect(server).unwrap();
        let client = c.local_addr().unwrap();
        // Not accepted yet: the server side is the listener.
        let before = d.find(proto::TCP, server, client).unwrap();
        assert!(matches!(before, Found::Listener { .. }), "{before:?}");
        assert_eq!(before, from_tables(proto::TCP, server, client));
        let (_accepted, _) = l.accept().unwrap();
        for (local, remote) in [(client, server), (server, client)] {
            let f = d.find(proto::TCP, local, remote).unwrap();
            assert!(matches!(f, Found::Socket { .. }), "{f:?}");
            assert_eq!(f, from_tables(proto::TCP, local, remote));
            assert_ne!(inode(f), 0);
        }
        // Closed: the client's side leaves a TIME_WAIT remnant (no inode) and no listener serves
        // its port.
        drop(c);
        drop(_accepted);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(d.find(proto::TCP, client, server).unwrap(), Found::Gone);
    }

    #[test]
    fn udp_connected_and_bound_sockets_and_ipv6_are_found() {
        let mut d = SockDiag::new().unwrap();
        let bound = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let b = bound.local_addr().unwrap();
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        peer.connect(b).unwrap();
        let p = peer.local_addr().unwrap();
        let f = d.find(proto::UDP, p, b).unwrap();
        assert!(matches!(f, Found::Socket { .. }), "{f:?}");
        assert_eq!(f, from_tables(proto::UDP, p, b));
        let f = d.find(proto::UDP, b, p).unwrap();
        assert!(matches!(f, Found::Listener { .. }), "{f:?}");
        assert_eq!(f, from_tables(proto::UDP, b, p));
        // IPv6, where the host has it.
        if let Ok(l6) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
            let s6 = l6.local_addr().unwrap();
            let c6 = TcpStream::connect(s6).unwrap();
            let (_a6, _) = l6.accept().unwrap();
            let f = d.find(proto::TCP, c6.local_addr().unwrap(), s6).unwrap();
            assert!(matches!(f, Found::Socket { .. }), "{f:?}");
            assert_eq!(f, from_tables(proto::TCP, c6.local_addr().unwrap(), s6));
        } else {
            eprintln!("SKIP part: no IPv6 loopback here");
        }
        // Nothing there at all.
        let nobody = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        assert_eq!(d.find(proto::UDP, nobody, b).unwrap(), Found::Gone);
    }

    #[test]
    fn a_dual_stack_listener_serves_an_ipv4_flow() {
        let Ok(l) = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) else {
            eprintln!("SKIP: no IPv6 here");
            return;
        };
        let mut d = SockDiag::new().unwrap();
        let port = l.local_addr().unwrap().port();
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let c = TcpStream::connect(server).unwrap();
        let client = c.local_addr().unwrap();
        let f = d.find(proto::TCP, server, client).unwrap();
        assert!(matches!(f, Found::Listener { .. }), "{f:?}");
        assert_eq!(f, from_tables(proto::TCP, server, client));
    }
}
