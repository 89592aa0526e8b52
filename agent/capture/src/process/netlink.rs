//! The netlink process connector (`cn_proc`): the socket, the subscription, and a pure parser of
//! the messages the kernel multicasts.
//!
//! Wire format (native endian, `include/uapi/linux/{netlink,connector,cn_proc}.h`): every
//! datagram holds one `nlmsghdr` (16 bytes), then a `cn_msg` (20 bytes: `id.idx`, `id.val`,
//! `seq`, `ack`, `len`, `flags`), then `len` bytes of `proc_event`: `what`, `cpu`,
//! `timestamp_ns` (CLOCK_MONOTONIC), then the per-kind data at offset 16.
//!
//! `cn_msg.seq` is a per-CPU counter the kernel bumps for every proc event it sends (with
//! `proc_event.cpu` saying which CPU): a hole in it is a message this socket never got, whether the
//! socket buffer overflowed (`ENOBUFS`) or the kernel failed to allocate it. [`SeqTracker`] turns
//! the holes into an exact loss count.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, recvfrom, sendto, socket_with, sockopt,
};

/// `CN_IDX_PROC` / `CN_VAL_PROC`: the connector id of the process events.
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `NLMSG_DONE`: the message type the connector expects requests in.
const NLMSG_DONE: u16 = 3;
/// `PROC_CN_MCAST_LISTEN` / `PROC_CN_MCAST_IGNORE`.
const MCAST_LISTEN: u32 = 1;
const MCAST_IGNORE: u32 = 2;

const NLMSG_HDR: usize = 16;
const CN_MSG_HDR: usize = 20;
/// `proc_event` up to the union.
const EVENT_HDR: usize = 16;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_EVENT_UID: u32 = 4;
const PROC_EVENT_GID: u32 = 0x40;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// A process event, as much of it as picket uses. Pids are the kernel's: `pid` is the thread id,
/// `tgid` the process id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// A new task: a process when `child_pid == child_tgid`, else a thread.
    Fork { parent_tgid: u32, child_pid: u32, child_tgid: u32 },
    /// A successful execve. The kernel sends it after the new image is loaded, before it runs.
    Exec { pid: u32, tgid: u32 },
    /// A task ended. `exit_code` is the wait status (`code << 8`, or the signal number);
    /// `parent_tgid` is absent on kernels older than 4.18.
    Exit { pid: u32, tgid: u32, exit_code: u32, parent_tgid: Option<u32> },
    /// A task's user ids changed (`commit_creds`: a set*uid call, or the exec of a setuid
    /// program): the new real and effective uid. Sent for any change of the real, effective,
    /// saved or filesystem uid, per thread.
    Uid { pid: u32, tgid: u32, ruid: u32, euid: u32 },
    /// The same for group ids.
    Gid { pid: u32, tgid: u32, rgid: u32, egid: u32 },
    /// The reply to a subscription request: `err` is an errno (0: subscribed).
    Ack { err: u32, ack: u32 },
    /// sid, ptrace, comm, coredump: not used.
    Other,
}

/// One message: where it came from in the kernel's per-CPU sequence, when, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub cpu: u32,
    pub seq: u32,
    /// CLOCK_MONOTONIC nanoseconds when the kernel sent it.
    pub timestamp_ns: u64,
    pub event: ConnEvent,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parse every connector message in one datagram, appending them to `out`. Messages that are
/// not process events, or are cut short, are skipped: this never panics on any input.
pub fn parse_datagram(mut buf: &[u8], out: &mut Vec<Message>) {
    while buf.len() >= NLMSG_HDR {
        let Some(len) = u32_at(buf, 0).and_then(|l| usize::try_from(l).ok()) else { return };
        if len < NLMSG_HDR || len > buf.len() {
            return;
        }
        if let Some(m) = parse_cn_msg(&buf[NLMSG_HDR..len]) {
            out.push(m);
        }
        // NLMSG_ALIGN: messages are padded to 4 bytes.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
}

fn parse_cn_msg(b: &[u8]) -> Option<Message> {
    if u32_at(b, 0)? != CN_IDX_PROC || u32_at(b, 4)? != CN_VAL_PROC {
        return None;
    }
    let seq = u32_at(b, 8)?;
    let ack = u32_at(b, 12)?;
    let len = usize::from(u16_at(b, 16)?);
    let ev = b.get(CN_MSG_HDR..CN_MSG_HDR + len)?;
    let what = u32_at(ev, 0)?;
    let cpu = u32_at(ev, 4)?;
    let timestamp_ns = u64_at(ev, 8)?;
    let d = &ev[EVENT_HDR.min(ev.len())..];
    let event = match what {
        PROC_EVENT_FORK => ConnEvent::Fork {
            parent_tgid: u32_at(d, 4)?,
            child_pid: u32_at(d, 8)?,
            child_tgid: u32_at(d, 12)?,
        },
        PROC_EVENT_EXEC => ConnEvent::Exec { pid: u32_at(d, 0)?, tgid: u32_at(d, 4)? },
        PROC_EVENT_EXIT => ConnEvent::Exit {
            pid: u32_at(d, 0)?,
            tgid: u32_at(d, 4)?,
            exit_code: u32_at(d, 8)?,
            parent_tgid: u32_at(d, 20),
        },
        // `struct id_proc_event`: pid, tgid, then `union { ruid; rgid }`, `union { euid; egid }`.
        PROC_EVENT_UID => ConnEvent::Uid {
            pid: u32_at(d, 0)?,
            tgid: u32_at(d, 4)?,
            ruid: u32_at(d, 8)?,
            euid: u32_at(d, 12)?,
        },
        PROC_EVENT_GID => ConnEvent::Gid {
            pid: u32_at(d, 0)?,
            tgid: u32_at(d, 4)?,
            rgid: u32_at(d, 8)?,
            egid: u32_at(d, 12)?,
        },
        PROC_EVENT_NONE => ConnEvent::Ack { err: u32_at(d, 0)?, ack },
        _ => ConnEvent::Other,
    };
    Some(Message { cpu, seq, timestamp_ns, event })
}

/// Build the request that subscribes (`listen`) or unsubscribes a socket; `ack` comes back
/// plus one in the kernel's [`ConnEvent::Ack`].
pub fn subscribe_request(listen: bool, ack: u32) -> Vec<u8> {
    let total = NLMSG_HDR + CN_MSG_HDR + 4;
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes());
    b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes()); // flags
    b.extend_from_slice(&0u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    b.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    b.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // seq
    b.extend_from_slice(&ack.to_ne_bytes());
    b.extend_from_slice(&4u16.to_ne_bytes()); // len
    b.extend_from_slice(&0u16.to_ne_bytes()); // flags
    b.extend_from_slice(&(if listen { MCAST_LISTEN } else { MCAST_IGNORE }).to_ne_bytes());
    b
}

/// Counts messages missing from the kernel's per-CPU sequences.
#[derive(Debug, Default)]
pub struct SeqTracker {
    /// Next expected seq per CPU (index), `None` before the first message from that CPU.
    next: Vec<Option<u32>>,
}

/// More CPUs than this are not tracked (their losses go uncounted, nothing else changes).
const MAX_CPUS: usize = 8192;

impl SeqTracker {
    /// Record one message; returns how many messages from its CPU were missed before it.
    pub fn observe(&mut self, cpu: u32, seq: u32) -> u64 {
        let Ok(i) = usize::try_from(cpu) else { return 0 };
        if i >= MAX_CPUS {
            return 0;
        }
        if self.next.len() <= i {
            self.next.resize(i + 1, None);
        }
        let lost = match self.next[i] {
            // A seq behind the expected one (a counter reset, or a reordering we do not expect)
            // is not counted as a loss: wrapping_sub would make it look like 4 billion.
            Some(want) => match seq.wrapping_sub(want) {
                gap if gap < u32::MAX / 2 => u64::from(gap),
                _ => 0,
            },
            None => 0,
        };
        self.next[i] = Some(seq.wrapping_add(1));
        lost
    }
}

/// How the connector could not be used. Each is a reason to report the source unavailable.
#[derive(Debug)]
pub enum OpenError {
    /// No netlink connector or no process events in this kernel.
    NoConnector(Errno),
    /// Not permitted (CAP_NET_ADMIN is needed to subscribe).
    Permission(Errno),
    /// The connector refuses us: it only serves the initial network namespace.
    OtherNamespace,
    /// The kernel answered the subscription with an error.
    Refused(u32),
    Io(&'static str, Errno),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoConnector(e) => {
                write!(f, "no netlink process connector in this kernel (CONFIG_PROC_EVENTS): {e}")
            }
            OpenError::Permission(e) => write!(f, "subscribing to process events needs CAP_NET_ADMIN: {e}"),
            OpenError::OtherNamespace => f.write_str(
                "the process connector only serves the initial network namespace; run picket there",
            ),
            OpenError::Refused(err) => {
                write!(
                    f,
                    "the process connector refused the subscription: {}",
                    Errno::from_raw_os_error(i32::try_from(*err).unwrap_or(i32::MAX))
                )
            }
            OpenError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// Socket receive buffer asked for (SO_RCVBUFFORCE, root only; falls back to what rmem_max
/// allows). Each message costs about 1 KiB of it (skb overhead), so 4 MiB holds ~4,000 messages:
/// at 1,000 execs/s (a fork, an exec and an exit each) over a second of backlog.
pub const RCVBUF: usize = 4 << 20;

/// How long a blocking receive waits before the reader looks at its stop flag.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// A subscribed connector socket.
#[derive(Debug)]
pub struct Connector {
    fd: OwnedFd,
    listening: bool,
}

/// What one receive brought.
#[derive(Debug)]
pub enum Recv {
    /// A datagram of `n` bytes from the kernel.
    Data(usize),
    /// Nothing within the timeout (or nothing waiting, for a non-blocking receive).
    Empty,
    /// The socket buffer overflowed: messages were lost (the sequence holes say how many).
    Overrun,
    /// A datagram from another sender than the kernel: ignored.
    Spoofed,
}

impl Connector {
    /// Open, bind to the process-events group, enlarge the buffer, set the receive timeout.
    /// Does not subscribe yet: see [`Connector::subscribe`].
    pub fn open() -> Result<Connector, OpenError> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::CONNECTOR),
        )
        .map_err(|e| match e {
            Errno::PROTONOSUPPORT | Errno::AFNOSUPPORT => OpenError::NoConnector(e),
            Errno::PERM | Errno::ACCESS => OpenError::Permission(e),
            e => OpenError::Io("netlink socket", e),
        })?;
        // Port 0: the kernel picks a unique one, so several sockets may coexist in one process.
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, CN_IDX_PROC)).map_err(|e| match e {
            Errno::PERM | Errno::ACCESS => OpenError::Permission(e),
            e => OpenError::Io("binding the netlink socket", e),
        })?;
        if sockopt::set_socket_recv_buffer_size_force(&fd, RCVBUF).is_err() {
            let _ = sockopt::set_socket_recv_buffer_size(&fd, RCVBUF);
        }
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(RECV_TIMEOUT))
            .map_err(|e| OpenError::Io("setting the receive timeout", e))?;
        Ok(Connector { fd, listening: false })
    }

    /// Ask the kernel for process events. The kernel's answer arrives as a [`ConnEvent::Ack`]
    /// with `ack + 1` among the events.
    pub fn subscribe(&mut self, ack: u32) -> Result<(), OpenError> {
        self.request(true, ack).map_err(|e| match e {
            Errno::CONNREFUSED => OpenError::OtherNamespace,
            Errno::PERM | Errno::ACCESS => OpenError::Permission(e),
            e => OpenError::Io("subscribing", e),
        })?;
        self.listening = true;
        Ok(())
    }

    fn request(&self, listen: bool, ack: u32) -> Result<(), Errno> {
        let req = subscribe_request(listen, ack);
        sendto(&self.fd, &req, SendFlags::empty(), &SocketAddrNetlink::new(0, 0)).map(|_| ())
    }

    /// Receive one datagram into `buf`; blocks up to [`RECV_TIMEOUT`] unless `wait` is false.
    pub fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<Recv> {
        let flags = if wait { RecvFlags::empty() } else { RecvFlags::DONTWAIT };
        match recvfrom(self.fd.as_fd(), &mut *buf, flags) {
            Ok((n, _, from)) => {
                // Only the kernel (port 0) speaks for the process connector; another local
                // process could unicast look-alike messages to our port.
                let kernel =
                    from.and_then(|a| SocketAddrNetlink::try_from(a).ok()).is_some_and(|a| a.pid() == 0);
                Ok(if kernel { Recv::Data(n) } else { Recv::Spoofed })
            }
            Err(Errno::AGAIN | Errno::INTR) => Ok(Recv::Empty),
            Err(Errno::NOBUFS) => Ok(Recv::Overrun),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        // Unsubscribe, so the kernel stops counting us as a listener (older kernels do not notice
        // a closed socket and keep generating events for nobody).
        if self.listening {
            let _ = self.request(false, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(seq: u32, ack: u32, what: u32, cpu: u32, ts: u64, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&cpu.to_ne_bytes());
        ev.extend_from_slice(&ts.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        let mut b = Vec::new();
        let total = NLMSG_HDR + CN_MSG_HDR + ev.len();
        b.extend_from_slice(&u32::try_from(total).unwrap().to_ne_bytes());
        b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        b.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&ack.to_ne_bytes());
        b.extend_from_slice(&u16::try_from(ev.len()).unwrap().to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&ev);
        b
    }

    #[test]
    fn parses_fork_exec_exit_and_ack() {
        let mut b = datagram(7, 0, PROC_EVENT_FORK, 1, 99, &[10, 10, 11, 11]);
        b.extend(datagram(8, 0, PROC_EVENT_EXEC, 1, 100, &[11, 11]));
        b.extend(datagram(9, 0, PROC_EVENT_EXIT, 0, 101, &[11, 11, 3 << 8, 17, 10, 10]));
        b.extend(datagram(0, 43, PROC_EVENT_NONE, 0, 102, &[0]));
        b.extend(datagram(1, 0, 0x200, 0, 103, &[11, 11, 0, 0, 0, 0]));
        let mut out = Vec::new();
        parse_datagram(&b, &mut out);
        let events: Vec<_> = out.iter().map(|m| m.event).collect();
        assert_eq!(
            events,
            [
                ConnEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 },
                ConnEvent::Exec { pid: 11, tgid: 11 },
                ConnEvent::Exit { pid: 11, tgid: 11, exit_code: 3 << 8, parent_tgid: Some(10) },
                ConnEvent::Ack { err: 0, ack: 43 },
                ConnEvent::Other,
            ]
        );
        assert_eq!((out[1].cpu, out[1].seq, out[1].timestamp_ns), (1, 8, 100));
    }

    #[test]
    fn old_kernel_exit_without_parent_and_garbage_never_panic() {
        let mut out = Vec::new();
        parse_datagram(&datagram(1, 0, PROC_EVENT_EXIT, 0, 1, &[5, 5, 9, 17]), &mut out);
        assert_eq!(out[0].event, ConnEvent::Exit { pid: 5, tgid: 5, exit_code: 9, parent_tgid: None });
        let good = datagram(1, 0, PROC_EVENT_EXEC, 0, 1, &[5, 5]);
        for cut in 0..good.len() {
            let mut out = Vec::new();
            parse_datagram(&good[..cut], &mut out);
            assert!(out.is_empty(), "cut at {cut}");
        }
        for len in [0u32, 3, 15, 0xffff_ffff] {
            let mut b = good.clone();
            b[..4].copy_from_slice(&len.to_ne_bytes());
            parse_datagram(&b, &mut Vec::new());
        }
        // Another connector id (not process events) is skipped.
        let mut other = good.clone();
        other[NLMSG_HDR..NLMSG_HDR + 4].copy_from_slice(&7u32.to_ne_bytes());
        let mut out = Vec::new();
        parse_datagram(&other, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn parses_uid_and_gid_changes_and_skips_them_cut_short() {
        let mut b = datagram(3, 0, PROC_EVENT_UID, 2, 50, &[21, 20, 65534, 0]);
        b.extend(datagram(4, 0, PROC_EVENT_GID, 2, 51, &[20, 20, 1000, 27]));
        let mut out = Vec::new();
        parse_datagram(&b, &mut out);
        let events: Vec<_> = out.iter().map(|m| m.event).collect();
        assert_eq!(
            events,
            [
                ConnEvent::Uid { pid: 21, tgid: 20, ruid: 65534, euid: 0 },
                ConnEvent::Gid { pid: 20, tgid: 20, rgid: 1000, egid: 27 },
            ]
        );
        assert_eq!((out[0].cpu, out[0].seq, out[0].timestamp_ns), (2, 3, 50));
        // Without the effective id the message is incomplete: skipped, not guessed.
        let mut out = Vec::new();
        parse_datagram(&datagram(5, 0, PROC_EVENT_UID, 0, 1, &[20, 20, 0]), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn subscribe_request_is_the_documented_layout() {
        let b = subscribe_request(true, 5);
        assert_eq!(b.len(), 40);
        assert_eq!(u32_at(&b, 0), Some(40));
        assert_eq!(u16_at(&b, 4), Some(NLMSG_DONE));
        assert_eq!(u32_at(&b, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&b, 28), Some(5));
        assert_eq!(u16_at(&b, 32), Some(4));
        assert_eq!(u32_at(&b, 36), Some(MCAST_LISTEN));
        assert_eq!(u32_at(&subscribe_request(false, 0), 36), Some(MCAST_IGNORE));
    }

    #[test]
    fn sequence_holes_are_counted_per_cpu() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0, 100), 0);
        assert_eq!(t.observe(3, 7), 0);
        assert_eq!(t.observe(0, 101), 0);
        assert_eq!(t.observe(0, 105), 3);
        assert_eq!(t.observe(3, 8), 0);
        // Wrap-around is not a loss; going backwards is not counted either.
        assert_eq!(t.observe(1, u32::MAX), 0);
        assert_eq!(t.observe(1, 0), 0);
        assert_eq!(t.observe(1, 2), 1);
        assert_eq!(t.observe(1, 1), 0);
        assert_eq!(t.observe(u32::MAX, 1), 0);
    }
}
