//! A minimal nf_tables netlink client: add, delete and dump set elements, and ask whether a chain or
//! a set exists. This is the hot path of block_ip: one `sendto` of a batch (one kernel
//! transaction) and one `recv` of its acks, about 20–40 µs, where spawning `nft` costs ~5 ms.
//!
//! Everything else (the table, chains, rules, isolation) is written in nft's own language and
//! loaded with `nft -f -` (see `nft.rs`): those are rare, and readable rules are worth more there
//! than microseconds. Encoding rule expressions by hand is what libnftnl is for, and we do not
//! link it (C, GPL-2.0) nor rustables (GPL-3.0); see the module docs of `net`.
//!
//! Wire format (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`):
//! a message is a 16-byte `nlmsghdr` (host byte order), a 4-byte `nfgenmsg`, then attributes,
//! each a 4-byte header and a payload padded to 4 bytes. Keys and timeouts travel in network byte
//! order. Parsing never trusts a length: malformed input gives an error, never a panic.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink as nl, sockopt,
};

const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// Elements per netlink message. An attribute's length is a u16, so the element list of one
/// message must stay under 64 KiB: an IPv6 element with a timeout takes 40 bytes, 1024 take 40 KiB.
pub(crate) const MAX_ELEMS_PER_MSG: usize = 1024;

/// How long to wait for the kernel's answer before giving up. The kernel answers in microseconds;
/// this only bounds a wedged socket, so the caller gets an error instead of hanging.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Socket buffers asked for (with the root-only `*BUFFORCE`, falling back to the default ~208 KiB):
/// room for the largest transaction `net` sends (3 messages × 1024 IPv6 elements ≈ 125 KiB).
const SOCKET_BUFFER: usize = 1 << 20;

/// Receive buffer: the kernel fills dump messages up to 32 KiB; twice that leaves margin.
const RECV_BUFFER: usize = 64 * 1024;

/// One set element to add or delete: the address is the key; the timeout, in milliseconds, only
/// matters for additions (`None`: no timeout, the element stays until deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elem {
    pub ip: IpAddr,
    pub timeout_ms: Option<u64>,
}

/// One change in a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// `NFT_MSG_NEWSETELEM` without `NLM_F_EXCL`: an element already there is left as it is.
    Add { set: &'a str, elems: &'a [Elem] },
    /// `NFT_MSG_DELSETELEM`: every element must exist (within the transaction) or it all fails.
    Del { set: &'a str, elems: &'a [Elem] },
}

/// A set element as the kernel dumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpedElem {
    /// The key bytes, network order: 4 for IPv4, 16 for IPv6.
    pub key: Vec<u8>,
    /// The timeout it was added with, in ms.
    pub timeout_ms: Option<u64>,
    /// Time left before it expires, in ms.
    pub expires_ms: Option<u64>,
}

/// A `NETLINK_NETFILTER` socket, bound to the network namespace it was created in.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket").field("fd", &self.fd).field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Socket {
    /// Opens a socket in the calling thread's network namespace; it stays there for its life.
    pub(crate) fn open() -> io::Result<Socket> {
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(nl::NETFILTER),
        )?;
        net::bind(&fd, &nl::SocketAddrNetlink::new(0, 0))?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(RECV_TIMEOUT))?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(RECV_TIMEOUT))?;
        // Best effort: without CAP_NET_ADMIN the defaults stay, and still hold one transaction.
        if sockopt::set_socket_send_buffer_size_force(&fd, SOCKET_BUFFER).is_err() {
            let _ = sockopt::set_socket_send_buffer_size(&fd, SOCKET_BUFFER);
        }
        if sockopt::set_socket_recv_buffer_size_force(&fd, SOCKET_BUFFER).is_err() {
            let _ = sockopt::set_socket_recv_buffer_size(&fd, SOCKET_BUFFER);
        }
        // Start sequence numbers somewhere that differs between runs, so a late answer to an
        // earlier process's socket id can't be taken for ours.
        let seq = std::process::id().wrapping_mul(7919);
        Ok(Socket { fd, seq, buf: vec![0; RECV_BUFFER] })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Applies `changes` to set elements of `table` (family inet) as one kernel transaction: all of
    /// it or none of it. Returns the first error the kernel reported.
    pub(crate) fn commit(&mut self, table: &str, changes: &[Change<'_>]) -> io::Result<()> {
        let mut out = Builder::default();
        let begin_seq = self.next_seq();
        out.batch_marker(NFNL_MSG_BATCH_BEGIN, begin_seq)?;
        let mut seqs = Vec::new();
        for change in changes {
            let (ty, flags, set, elems) = match *change {
                Change::Add { set, elems } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elems),
                Change::Del { set, elems } => (NFT_MSG_DELSETELEM, 0, set, elems),
            };
            for chunk in elems.chunks(MAX_ELEMS_PER_MSG) {
                let seq = self.next_seq();
                seqs.push(seq);
                out.setelem_msg(ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq, table, set, chunk)?;
            }
        }
        if seqs.is_empty() {
            return Ok(());
        }
        let end_seq = self.next_seq();
        out.batch_marker(NFNL_MSG_BATCH_END, end_seq)?;
        self.send(&out.buf)?;

        // Every message carries NLM_F_ACK, so each gets exactly one answer (0 or an error), all
        // delivered once the batch is done. A refusal of the whole batch (EPERM without
        // CAP_NET_ADMIN, ENOMEM) comes as one error on the batch-begin message instead.
        let mut pending = seqs.len();
        let mut first_err: Option<(usize, i32)> = None;
        while pending > 0 {
            let n = self.recv()?;
            for msg in Messages::new(&self.buf[..n]) {
                let msg = msg?;
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let errno = ack_errno(msg.payload)?;
                if msg.seq == begin_seq && errno != 0 {
                    return Err(errno_error(errno));
                }
                if let Some(pos) = seqs.iter().position(|&s| s == msg.seq) {
                    pending = pending.saturating_sub(1);
                    if errno != 0 && first_err.is_none_or(|(p, _)| pos < p) {
                        first_err = Some((pos, errno));
                    }
                }
            }
        }
        match first_err {
            Some((_, errno)) => Err(errno_error(errno)),
            None => Ok(()),
        }
    }

    /// Every element of `table`'s (inet) set `set`. Restarts (up to 3 times) when the kernel says
    /// the set changed during the dump, so the answer is one consistent snapshot.
    pub(crate) fn dump_set(&mut self, table: &str, set: &str) -> io::Result<Vec<DumpedElem>> {
        for _ in 0..3 {
            let seq = self.next_seq();
            let mut out = Builder::default();
            let start = out.msg_start(nft_type(NFT_MSG_GETSETELEM), NLM_F_REQUEST | NLM_F_DUMP, seq)?;
            out.nfgen(NFPROTO_INET, 0);
            out.attr_str(NFTA_SET_ELEM_LIST_TABLE, table)?;
            out.attr_str(NFTA_SET_ELEM_LIST_SET, set)?;
            out.finish(start)?;
            self.send(&out.buf)?;

            let mut elems = Vec::new();
            let mut interrupted = false;
            'dump: loop {
                let n = self.recv()?;
                for msg in Messages::new(&self.buf[..n]) {
                    let msg = msg?;
                    if msg.seq != seq {
                        continue;
                    }
                    interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                    match msg.ty {
                        NLMSG_DONE => break 'dump,
                        NLMSG_ERROR => match ack_errno(msg.payload)? {
                            0 => break 'dump,
                            errno => return Err(errno_error(errno)),
                        },
                        _ => parse_setelems(msg.payload, &mut elems)?,
                    }
                }
            }
            if !interrupted {
                return Ok(elems);
            }
        }
        Err(io::Error::other("set changed during every one of 3 dumps"))
    }

    /// Whether chain `name` exists in `table` (inet). A missing table is "no".
    pub(crate) fn chain_exists(&mut self, table: &str, name: &str) -> io::Result<bool> {
        self.exists(NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, table, name)
    }

    /// Whether set `name` exists in `table` (inet). A missing table is "no".
    pub(crate) fn set_exists(&mut self, table: &str, name: &str) -> io::Result<bool> {
        self.exists(NFT_MSG_GETSET, NFTA_SET_TABLE, NFTA_SET_NAME, table, name)
    }

    fn exists(
        &mut self,
        ty: u16,
        table_attr: u16,
        name_attr: u16,
        table: &str,
        name: &str,
    ) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut out = Builder::default();
        let start = out.msg_start(nft_type(ty), NLM_F_REQUEST | NLM_F_ACK, seq)?;
        out.nfgen(NFPROTO_INET, 0);
        out.attr_str(table_attr, table)?;
        out.attr_str(name_attr, name)?;
        out.finish(start)?;
        self.send(&out.buf)?;
        let mut found = false;
        loop {
            let n = self.recv()?;
            for msg in Messages::new(&self.buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                if msg.ty != NLMSG_ERROR {
                    found = true;
                    continue;
                }
                return match ack_errno(msg.payload)? {
                    0 => Ok(found),
                    e if e == Errno::NOENT.raw_os_error() => Ok(false),
                    e => Err(errno_error(e)),
                };
            }
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        let kernel = nl::SocketAddrNetlink::new(0, 0);
        loop {
            match net::sendto(&self.fd, buf, SendFlags::empty(), &kernel) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => return Err(io::Error::other(format!("netlink sent {n} of {} bytes", buf.len()))),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram into `self.buf`; returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            match net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty()) {
                Ok((_, full)) if full > self.buf.len() => {
                    return Err(io::Error::other(format!("netlink message of {full} bytes truncated")));
                }
                Ok((n, _)) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from nf_tables"));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn errno_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink message: {what}"))
}

/// The positive errno of an `NLMSG_ERROR` payload (0 is an ack).
fn ack_errno(payload: &[u8]) -> io::Result<i32> {
    let raw = payload.get(..4).ok_or_else(|| bad("short error message"))?;
    let code = i32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    Ok(code.checked_neg().unwrap_or(i32::MAX).max(0))
}

/// A message as received: header fields and the payload after the header.
#[derive(Debug)]
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of one datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<Msg<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let hdr = self.rest.get(..NLMSG_HDRLEN).ok_or_else(|| bad("short header"))?;
            let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let msg = Msg {
                ty: u16::from_ne_bytes([hdr[4], hdr[5]]),
                flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
                seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
                payload: self.rest.get(NLMSG_HDRLEN..len).ok_or_else(|| bad("length out of bounds"))?,
            };
            self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
            Ok(msg)
        })();
        if parsed.is_err() {
            self.rest = &[];
        }
        Some(parsed)
    }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// The attributes in `buf`: (type without flag bits, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let hdr = buf.get(..NLA_HDRLEN).ok_or_else(|| bad("short attribute"))?;
            let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
            let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
            let payload = buf.get(NLA_HDRLEN..len).ok_or_else(|| bad("attribute length"))?;
            buf = buf.get(align4(len)..).unwrap_or(&[]);
            Ok((ty, payload))
        })();
        if parsed.is_err() {
            buf = &[];
        }
        Some(parsed)
    })
}

fn be_u64(payload: &[u8]) -> io::Result<u64> {
    let b: [u8; 8] = payload.try_into().map_err(|_| bad("u64 attribute size"))?;
    Ok(u64::from_be_bytes(b))
}

/// Appends the elements of one `NFT_MSG_NEWSETELEM` dump message (payload after the header).
fn parse_setelems(payload: &[u8], out: &mut Vec<DumpedElem>) -> io::Result<()> {
    let attrs_buf = payload.get(4..).ok_or_else(|| bad("short nfgenmsg"))?;
    for attr in attrs(attrs_buf) {
        let (ty, list) = attr?;
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in attrs(list) {
            let (ty, elem) = elem?;
            if ty != NFTA_LIST_ELEM {
                continue;
            }
            let mut parsed = DumpedElem { key: Vec::new(), timeout_ms: None, expires_ms: None };
            for field in attrs(elem) {
                let (ty, value) = field?;
                match ty {
                    NFTA_SET_ELEM_KEY => {
                        for data in attrs(value) {
                            let (ty, data) = data?;
                            if ty == NFTA_DATA_VALUE {
                                parsed.key = data.to_vec();
                            }
                        }
                    }
                    NFTA_SET_ELEM_TIMEOUT => parsed.timeout_ms = Some(be_u64(value)?),
                    NFTA_SET_ELEM_EXPIRATION => parsed.expires_ms = Some(be_u64(value)?),
                    _ => {}
                }
            }
            if parsed.key.is_empty() {
                return Err(bad("set element without a key"));
            }
            out.push(parsed);
        }
    }
    Ok(())
}

/// Builds netlink messages into one buffer.
#[derive(Debug, Default)]
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// Starts a message; returns its offset for [`Builder::finish`].
    fn msg_start(&mut self, ty: u16, flags: u16, seq: u32) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 is the kernel
        Ok(start)
    }

    fn nfgen(&mut self, family: u8, res_id: u16) {
        self.buf.extend_from_slice(&[family, 0]); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn finish(&mut self, start: usize) -> io::Result<()> {
        let len = u32::try_from(self.buf.len() - start).map_err(|_| too_big())?;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    fn batch_marker(&mut self, ty: u16, seq: u32) -> io::Result<()> {
        let start = self.msg_start(ty, NLM_F_REQUEST, seq)?;
        self.nfgen(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES);
        self.finish(start)
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> io::Result<()> {
        let len = u16::try_from(NLA_HDRLEN + data.len()).map_err(|_| too_big())?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> io::Result<()> {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data)
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) -> io::Result<()> {
        let len = u16::try_from(self.buf.len() - start).map_err(|_| too_big())?;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn setelem_msg(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        table: &str,
        set: &str,
        elems: &[Elem],
    ) -> io::Result<()> {
        let start = self.msg_start(nft_type(ty), flags, seq)?;
        self.nfgen(NFPROTO_INET, 0);
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, table)?;
        self.attr_str(NFTA_SET_ELEM_LIST_SET, set)?;
        let list = self.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        for elem in elems {
            let item = self.nest_start(NFTA_LIST_ELEM);
            let key = self.nest_start(NFTA_SET_ELEM_KEY);
            match elem.ip {
                IpAddr::V4(ip) => self.attr(NFTA_DATA_VALUE, &ip.octets())?,
                IpAddr::V6(ip) => self.attr(NFTA_DATA_VALUE, &ip.octets())?,
            }
            self.nest_end(key)?;
            if ty == NFT_MSG_NEWSETELEM
                && let Some(ms) = elem.timeout_ms
            {
                self.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes())?;
            }
            self.nest_end(item)?;
        }
        self.nest_end(list)?;
        self.finish(start)
    }
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "netlink message too big")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn elem4(last: u8, timeout_ms: Option<u64>) -> Elem {
        Elem { ip: IpAddr::V4(Ipv4Addr::new(10, 252, 0, last)), timeout_ms }
    }

    #[test]
    fn setelem_message_has_the_layout_the_kernel_expects() {
        let mut b = Builder::default();
        b.setelem_msg(
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST | NLM_F_CREATE,
            7,
            "picket",
            "block4",
            &[elem4(2, Some(1500))],
        )
        .unwrap();
        let msgs: Vec<_> = Messages::new(&b.buf).collect::<io::Result<_>>().unwrap();
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(m.ty, (10 << 8) | 12);
        assert_eq!(m.seq, 7);
        assert_eq!(&m.payload[..4], &[NFPROTO_INET, 0, 0, 0]);
        let top: Vec<_> = attrs(&m.payload[4..]).collect::<io::Result<_>>().unwrap();
        assert_eq!(top[0], (NFTA_SET_ELEM_LIST_TABLE, &b"picket\0"[..]));
        assert_eq!(top[1], (NFTA_SET_ELEM_LIST_SET, &b"block4\0"[..]));
        assert_eq!(top[2].0, NFTA_SET_ELEM_LIST_ELEMENTS);
        // The dump parser reads the same shape back.
        let mut out = Vec::new();
        parse_setelems(m.payload, &mut out).unwrap();
        assert_eq!(
            out,
            vec![DumpedElem { key: vec![10, 252, 0, 2], timeout_ms: Some(1500), expires_ms: None }]
        );
    }

    #[test]
    fn deletions_carry_no_timeout_and_ipv6_keys_are_16_bytes() {
        let ip = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x252, 0, 0, 0, 0, 0, 2));
        let mut b = Builder::default();
        b.setelem_msg(
            NFT_MSG_DELSETELEM,
            NLM_F_REQUEST,
            1,
            "picket",
            "block6",
            &[Elem { ip, timeout_ms: Some(5) }],
        )
        .unwrap();
        let m = Messages::new(&b.buf).next().unwrap().unwrap();
        let mut out = Vec::new();
        parse_setelems(m.payload, &mut out).unwrap();
        assert_eq!(out[0].key.len(), 16);
        assert_eq!(out[0].timeout_ms, None);
    }

    #[test]
    fn a_full_chunk_of_ipv6_elements_fits_one_attribute() {
        let elems: Vec<Elem> = (0..MAX_ELEMS_PER_MSG)
            .map(|i| Elem {
                ip: IpAddr::V6(Ipv6Addr::from(u128::try_from(i).unwrap())),
                timeout_ms: Some(u64::MAX),
            })
            .collect();
        let mut b = Builder::default();
        b.setelem_msg(NFT_MSG_NEWSETELEM, NLM_F_REQUEST, 1, "picket", "block6", &elems).unwrap();
        assert!(b.buf.len() < 64 * 1024);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for junk in [&[1u8, 2, 3][..], &[200, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0; 15]] {
            assert!(Messages::new(junk).any(|m| m.is_err()));
        }
        // A zero-length header must not loop forever.
        let zero = [0u8; 16];
        assert!(Messages::new(&zero).take(3).any(|m| m.is_err()));
        assert!(attrs(&[2, 0, 1, 0]).any(|a| a.is_err()));
        assert!(attrs(&[0, 0, 1, 0]).take(3).any(|a| a.is_err()));
        assert!(parse_setelems(&[0, 0], &mut Vec::new()).is_err());
        assert!(ack_errno(&[1, 2]).is_err());
    }

    #[test]
    fn ack_errno_is_positive() {
        assert_eq!(ack_errno(&(-2i32).to_ne_bytes()).unwrap(), 2);
        assert_eq!(ack_errno(&0i32.to_ne_bytes()).unwrap(), 0);
        assert_eq!(ack_errno(&i32::MIN.to_ne_bytes()).unwrap(), i32::MAX);
    }
}
