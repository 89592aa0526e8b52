//! Which local process a live flow belongs to: flow → socket inode (`/proc/net/*`) → pid (the
//! process holding `socket:[inode]` among `/proc/*/fd`) → `process.*` and `user.*` on the
//! `net.flow` events.
//!
//! # Where the cost goes
//!
//! Finding the pid of an inode means reading every fd link of every process: milliseconds to tens
//! of milliseconds on a busy host. So it is never done on the packet path:
//!
//! - The capture thread hands each local flow's start to a worker thread through a bounded queue
//!   ([`QUEUE`]; full: the flow goes out unattributed, counted `queue_full`, and so do all new
//!   flows for [`BACK_OFF`] after, so a port scan or flood does not also cost the worker's
//!   table reads), and holds the flow's
//!   events, in order with everything after them, until the answer comes or [`HOLD`] has passed
//!   (then they go out unattributed, counted `late`). Nothing is dropped for attribution, and the
//!   packet path only does a channel send.
//! - The worker takes the waiting requests as one batch and asks the kernel for each flow's
//!   socket over `NETLINK_SOCK_DIAG` ([`SockDiag`]: a hash lookup, microseconds). Where that is
//!   missing it reads the socket tables (`/proc/net/*`) it needs once per batch, at most every
//!   [`TABLES_EVERY`]. It looks the inodes up in an inode → pid cache (at most [`MAX_INODES`];
//!   sockets past it are not cached, counted `cache_full`). On a miss it rescans `/proc/*/fd`, but
//!   at most once per [`RESCAN_EVERY`]: a burst of new connections costs one scan, not one each.
//!   The scan replaces the whole cache, so closed sockets leave it.
//! - What a pid is (executable, name, user) is kept per pid, checked against the process's start
//!   time, so a server accepting many connections is read once.
//!
//! The lookup happens right at the flow's first packet, while the socket exists: the client's
//! socket is there from `connect`; a server's connection is not accepted yet at the SYN, so the
//! listening socket on that port names the server. A connection whose socket is gone before the
//! worker looks (a very short one, or one whose start was only seen late) is counted `gone`,
//! never guessed. A socket no visible process holds (one of the kernel's, or a process in a
//! namespace whose /proc we cannot see) is counted `not_found`.
//!
//! Which side: for an `outbound` flow the source, `inbound` the destination; for an `internal`
//! one (both ends on this host) the side that opened it, else the other. The `flow_end` carries
//! the same process as the start. Sockets are looked up in the agent's own network namespace
//! only: flows of containers with their own namespace are counted `gone` (their tables are
//! elsewhere).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use picket_capture::process::procfs::{self, ProcReader};
use picket_event::{Event, EventKind, Process, User};

use crate::decode::proto;
use crate::procnet::{self, Found, SockEntry};
use crate::sockdiag::SockDiag;

/// Longest a flow's events wait for their process.
pub const HOLD: Duration = Duration::from_millis(1000);
/// Flows waiting for the worker at most.
pub const QUEUE: usize = 1024;
/// Most events held back at once (a flood of new flows): past it the oldest go out unattributed.
pub const MAX_HELD: usize = 8192;
/// Socket inodes remembered at most (each ~16 bytes in the map).
pub const MAX_INODES: usize = 65_536;
/// `/proc/*/fd` is rescanned at most this often.
pub const RESCAN_EVERY: Duration = Duration::from_millis(100);
/// Processes whose details are remembered.
const MAX_PROCS: usize = 1024;
/// Most requests the worker answers in one batch.
const BATCH: usize = QUEUE;
/// The socket tables are read at most this often. Reading them walks the kernel's whole socket
/// hash tables (~3 ms for tcp + tcp6 on a 2-core test machine, whatever the namespace holds):
/// under a flood of new flows (a port scan) the requests wait and are answered as one batch.
pub const TABLES_EVERY: Duration = Duration::from_millis(25);
/// The worker's nice value: it is best effort, the capture thread comes first.
const NICE: i32 = 10;

/// Outcome counters, shared between the capture thread and the worker.
#[derive(Debug, Default)]
pub struct Counters {
    pub attributed: AtomicU64,
    pub not_found: AtomicU64,
    pub gone: AtomicU64,
    pub late: AtomicU64,
    pub queue_full: AtomicU64,
    pub cache_full: AtomicU64,
    pub fd_scans: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrStats {
    /// Flows given a process. With the four below: every local TCP or UDP flow, once.
    pub attributed: u64,
    /// The socket was there, but no process we can see holds it.
    pub not_found: u64,
    /// The socket was gone (or only a TIME_WAIT remnant) when looked for.
    pub gone: u64,
    /// The events went out unattributed before the answer came: after [`HOLD`], or at once
    /// because attribution was backing off from a flood ([`BACK_OFF`]).
    pub late: u64,
    /// The worker's queue was full: not looked up.
    pub queue_full: u64,
    /// Sockets not cached because the cache was full.
    pub cache_full: u64,
    /// `/proc/*/fd` scans done.
    pub fd_scans: u64,
}

impl Counters {
    pub fn snapshot(&self) -> AttrStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AttrStats {
            attributed: g(&self.attributed),
            not_found: g(&self.not_found),
            gone: g(&self.gone),
            late: g(&self.late),
            queue_full: g(&self.queue_full),
            cache_full: g(&self.cache_full),
            fd_scans: g(&self.fd_scans),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A flow as its events name it: transport, source, destination.
type FlowKey = (u8, SocketAddr, SocketAddr);

/// The process (and user) a flow is attributed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub process: Process,
    pub user: Option<User>,
}

#[derive(Debug)]
struct Request {
    id: u64,
    proto: u8,
    /// (local, remote) to try in order.
    sides: Vec<(SocketAddr, SocketAddr)>,
}

#[derive(Debug)]
enum Outcome {
    Owner(Arc<Owner>),
    NotFound,
    Gone,
}

#[derive(Debug)]
struct Held {
    ev: Event,
    key: Option<FlowKey>,
    /// The request this event waits for (a flow start).
    waits: Option<u64>,
    since: Instant,
}

/// The capture thread's side: events in, the same events out in the same order, flow events of
/// local flows with their process.
#[derive(Debug)]
pub struct Attributor {
    tx: Option<SyncSender<Request>>,
    rx: Receiver<(u64, Outcome)>,
    counters: Arc<Counters>,
    next_id: u64,
    /// Requests not answered yet, with their flow.
    pending: HashMap<u64, FlowKey>,
    /// Flows started and attributed, until they end.
    known: HashMap<FlowKey, Arc<Owner>>,
    held: VecDeque<Held>,
    max_known: usize,
    /// When the worker's queue was last found full: for [`BACK_OFF`] after it, no lookups.
    full_at: Option<Instant>,
}

/// After the worker's queue was found full (a flood of new flows, e.g. a port scan), flows are
/// not looked up for this long (counted `queue_full`): the worker's CPU goes back to the capture.
pub const BACK_OFF: Duration = Duration::from_secs(1);

impl Attributor {
    /// Start the worker thread. `max_flows` bounds the flows remembered between start and end.
    pub fn spawn(max_flows: usize) -> std::io::Result<Attributor> {
        let (tx, req_rx) = mpsc::sync_channel(QUEUE);
        let (rep_tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("picket-netattr".into())
            .spawn(move || Worker::new(c).run(&req_rx, &rep_tx))?;
        Ok(Attributor {
            tx: Some(tx),
            rx,
            counters,
            next_id: 0,
            pending: HashMap::new(),
            known: HashMap::new(),
            held: VecDeque::new(),
            max_known: max_flows.max(1),
            full_at: None,
        })
    }

    pub fn stats(&self) -> AttrStats {
        self.counters.snapshot()
    }

    /// Whether events are waiting for the worker (the caller should come back soon).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Take an event to send: it comes out of [`Attributor::ready`] in order.
    pub fn push(&mut self, ev: Event) {
        let mut held = Held { key: None, waits: None, since: Instant::now(), ev };
        if held.ev.kind == EventKind::NetFlow
            && let Some((key, sides)) = local_sides(&held.ev)
        {
            held.key = Some(key);
            if held.ev.event.action.as_deref() == Some("flow_start") {
                held.waits = self.request(key, sides);
            }
        }
        self.held.push_back(held);
    }

    fn request(&mut self, key: FlowKey, sides: Vec<(SocketAddr, SocketAddr)>) -> Option<u64> {
        let tx = self.tx.as_ref()?;
        if self.full_at.is_some_and(|t| t.elapsed() < BACK_OFF) {
            bump(&self.counters.queue_full);
            return None;
        }
        let id = self.next_id;
        match tx.try_send(Request { id, proto: key.0, sides }) {
            Ok(()) => {
                self.next_id += 1;
                self.pending.insert(id, key);
                Some(id)
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.full_at = Some(Instant::now());
                bump(&self.counters.queue_full);
                None
            }
        }
    }

    fn take_replies(&mut self) {
        while let Ok((id, outcome)) = self.rx.try_recv() {
            // An answer for a start already sent (late) is of no use any more.
            let Some(key) = self.pending.remove(&id) else { continue };
            match outcome {
                Outcome::Owner(o) => {
                    bump(&self.counters.attributed);
                    if self.known.len() >= self.max_known {
                        // Flows whose end never came (cannot happen while the flow table and
                        // this agree, but stay bounded whatever happens).
                        self.known.clear();
                    }
                    self.known.insert(key, o);
                }
                Outcome::NotFound => bump(&self.counters.not_found),
                Outcome::Gone => bump(&self.counters.gone),
            }
        }
    }

    /// Hand on every event that is ready: those not waiting, those whose answer came, and those
    /// that waited [`HOLD`] (or were pushed out by [`MAX_HELD`]).
    pub fn ready(&mut self, send: impl FnMut(Event)) {
        self.release(false, send);
    }

    fn release(&mut self, all: bool, mut send: impl FnMut(Event)) {
        self.take_replies();
        // While backing off from a flood, nothing waits for the worker: what it still has queued
        // would hold everything behind it.
        let all = all || self.full_at.is_some_and(|t| t.elapsed() < BACK_OFF);
        while let Some(h) = self.held.front() {
            let waiting = h.waits.is_some_and(|id| self.pending.contains_key(&id));
            if waiting && !all && h.since.elapsed() < HOLD && self.held.len() <= MAX_HELD {
                break;
            }
            let Some(mut h) = self.held.pop_front() else { break };
            if waiting {
                if let Some(id) = h.waits {
                    self.pending.remove(&id);
                }
                bump(&self.counters.late);
            }
            if let Some(key) = h.key {
                let owner = if h.ev.event.action.as_deref() == Some("flow_end") {
                    self.known.remove(&key)
                } else {
                    self.known.get(&key).cloned()
                };
                if let Some(o) = owner {
                    h.ev.process = Some(o.process.clone());
                    h.ev.user.clone_from(&o.user);
                }
            }
            send(h.ev);
        }
    }

    /// The capture is over: wait (at most [`HOLD`]) for the answers still due, then hand on
    /// everything. The worker thread ends.
    pub fn finish(&mut self, mut send: impl FnMut(Event)) {
        let deadline = Instant::now() + HOLD;
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.take_replies();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.release(true, &mut send);
        self.tx = None;
    }
}

/// The flow's key and the local sides to look up, from a `net.flow` event with
/// `network.direction` (set when the host's addresses are known).
fn local_sides(ev: &Event) -> Option<(FlowKey, Vec<(SocketAddr, SocketAddr)>)> {
    let net = ev.network.as_ref()?;
    let p = match net.transport.as_deref()? {
        "tcp" => proto::TCP,
        "udp" => proto::UDP,
        _ => return None,
    };
    let addr = |e: Option<&picket_event::Endpoint>| -> Option<SocketAddr> {
        let e = e?;
        Some(SocketAddr::new(e.ip.as_deref()?.parse::<IpAddr>().ok()?, e.port?))
    };
    let src = addr(ev.source.as_ref())?;
    let dst = addr(ev.destination.as_ref())?;
    let sides = match net.direction.as_deref()? {
        "outbound" => vec![(src, dst)],
        "inbound" => vec![(dst, src)],
        "internal" => vec![(src, dst), (dst, src)],
        _ => return None,
    };
    Some(((p, src, dst), sides))
}

/// The worker thread's state.
struct Worker {
    counters: Arc<Counters>,
    /// Socket inode → the lowest pid holding it, as of the last scan.
    inodes: HashMap<u64, u32>,
    last_scan: Option<Instant>,
    procs: HashMap<u32, (u64, Arc<Owner>)>,
    reader: ProcReader,
    /// The kernel's own lookup, one request per flow side; `None` where `inet_diag` is missing
    /// (or stopped answering): then the tables are read.
    diag: Option<SockDiag>,
    tables: [Option<Vec<SockEntry>>; 2],
}

impl Worker {
    fn new(counters: Arc<Counters>) -> Worker {
        Worker {
            counters,
            inodes: HashMap::new(),
            last_scan: None,
            procs: HashMap::new(),
            reader: ProcReader::default(),
            diag: SockDiag::new().ok(),
            tables: [None, None],
        }
    }

    fn run(mut self, rx: &Receiver<Request>, tx: &mpsc::Sender<(u64, Outcome)>) {
        // Lower than the capture thread (nice is per thread on Linux): when the CPU is short,
        // answers come late (counted), packets are not dropped for them.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_read: Option<Instant> = None;
        while let Ok(first) = rx.recv() {
            if self.diag.is_none()
                && let Some(t) = last_read
                && t.elapsed() < TABLES_EVERY
            {
                std::thread::sleep(TABLES_EVERY - t.elapsed());
            }
            last_read = Some(Instant::now());
            batch.push(first);
            while batch.len() < BATCH
                && let Ok(r) = rx.try_recv()
            {
                batch.push(r);
            }
            self.tables = [None, None];
            // Sockets first, for the whole batch: that is the race against short connections.
            let found: Vec<Found> = batch.iter().map(|r| self.socket_of(r)).collect();
            let missing = found.iter().any(|f| match f {
                Found::Socket { inode, .. } | Found::Listener { inode, .. } => {
                    !self.inodes.contains_key(inode)
                }
                Found::Gone => false,
            });
            let mut reread = false;
            if missing {
                self.rescan();
                // The tables are read again (once) for sockets no process turned out to hold.
                self.tables = [None, None];
                reread = true;
            }
            for (r, f) in batch.drain(..).zip(found) {
                let outcome = match f {
                    Found::Gone => Outcome::Gone,
                    Found::Socket { inode, .. } | Found::Listener { inode, .. } => {
                        match self.inodes.get(&inode).copied().and_then(|pid| self.owner(pid)) {
                            Some(o) => Outcome::Owner(o),
                            // Closed while the fds were scanned: gone, not ownerless.
                            None if reread && !self.still_there(&r, inode) => Outcome::Gone,
                            None => Outcome::NotFound,
                        }
                    }
                };
                if tx.send((r.id, outcome)).is_err() {
                    return;
                }
            }
        }
    }

    /// The socket table of a transport (both families), read once per batch.
    fn table(&mut self, p: u8) -> &[SockEntry] {
        let i = usize::from(p == proto::UDP);
        self.tables[i].get_or_insert_with(|| {
            let names = if p == proto::UDP { ["udp", "udp6"] } else { ["tcp", "tcp6"] };
            let mut v = Vec::new();
            for n in names {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{n}")) {
                    procnet::parse_table(&text, &mut v);
                }
            }
            v
        })
    }

    /// Whether the flow's socket is still there (asked again after the scan).
    fn still_there(&mut self, r: &Request, inode: u64) -> bool {
        match self.socket_of(r) {
            Found::Socket { inode: i, .. } | Found::Listener { inode: i, .. } => i == inode,
            Found::Gone => false,
        }
    }

    fn socket_of(&mut self, r: &Request) -> Found {
        if let Some(d) = &mut self.diag {
            let mut best = Found::Gone;
            let mut failed = false;
            for &(local, remote) in &r.sides {
                match d.find(r.proto, local, remote) {
                    Ok(f @ Found::Socket { .. }) => return f,
                    Ok(f @ Found::Listener { .. }) if best == Found::Gone => best = f,
                    Ok(_) => {}
                    Err(_) => failed = true,
                }
            }
            if !failed {
                return best;
            }
            // It stopped answering: the tables from now on.
            self.diag = None;
        }
        let table = self.table(r.proto);
        let mut best = Found::Gone;
        for &(local, remote) in &r.sides {
            match procnet::find(table, local, remote) {
                f @ Found::Socket { .. } => return f,
                f @ Found::Listener { .. } if best == Found::Gone => best = f,
                _ => {}
            }
        }
        best
    }

    /// Rebuild the inode → pid map from `/proc/*/fd`, waiting first if the last scan was less
    /// than [`RESCAN_EVERY`] ago.
    fn rescan(&mut self) {
        if let Some(t) = self.last_scan {
            let since = t.elapsed();
            if since < RESCAN_EVERY {
                std::thread::sleep(RESCAN_EVERY - since);
            }
        }
        self.last_scan = Some(Instant::now());
        bump(&self.counters.fd_scans);
        self.inodes.clear();
        let full = scan_socket_owners(&mut self.inodes, MAX_INODES);
        if full > 0 {
            self.counters.cache_full.fetch_add(full, Ordering::Relaxed);
        }
    }

    /// What `pid` is, from the per-pid cache when it is still the same process.
    fn owner(&mut self, pid: u32) -> Option<Arc<Owner>> {
        let start = std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|b| procfs::parse_stat(&b))?;
        if let Some((ticks, o)) = self.procs.get(&pid)
            && *ticks == start.start_ticks
        {
            return Some(o.clone());
        }
        let snap = self.reader.snapshot(pid);
        let stat = snap.stat.as_ref()?;
        let executable = snap.executable();
        let name =
            executable.as_deref().map_or_else(|| stat.comm.clone(), |e| procfs::base_name(e).to_string());
        let process = Process {
            pid: Some(pid),
            name: Some(name),
            executable,
            resolved_executable: snap.exe.clone(),
            start_ticks: Some(stat.start_ticks),
            ..Process::default()
        };
        let user = snap
            .ids
            .map(|ids| User { id: Some(ids.euid.to_string()), name: self.reader.user_name(ids.euid) });
        let o = Arc::new(Owner { process, user });
        if self.procs.len() >= MAX_PROCS {
            self.procs.retain(|p, _| std::path::Path::new(&format!("/proc/{p}")).exists());
            if self.procs.len() >= MAX_PROCS {
                self.procs.clear();
            }
        }
        self.procs.insert(pid, (stat.start_ticks, o.clone()));
        Some(o)
    }
}

/// Fill `map` with socket inode → pid for every `socket:[N]` among `/proc/*/fd` (the lowest pid
/// when several share one), at most `max` entries. Returns how many sockets did not fit.
pub fn scan_socket_owners(map: &mut HashMap<u64, u32>, max: usize) -> u64 {
    let mut pids = ProcReader::pids();
    pids.sort_unstable();
    let mut left_out = 0u64;
    let mut path = String::with_capacity(32);
    for pid in pids {
        use std::fmt::Write as _;
        path.clear();
        let _ = write!(path, "/proc/{pid}/fd");
        let Ok(dir) = std::fs::read_dir(&path) else { continue };
        for entry in dir.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else { continue };
            if map.contains_key(&inode) {
                continue;
            }
            if map.len() >= max {
                left_out += 1;
                continue;
            }
            map.insert(inode, pid);
        }
    }
    left_out
}

/// The inode of an fd link `socket:[12345]`.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let n = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        for bad in
            [&b"socket:[]"[..], b"socket:[12a]", b"pipe:[1]", b"socket:[1", b"/dev/null", b"socket:[-1]"]
        {
            assert_eq!(socket_inode(bad), None);
        }
    }

    #[test]
    fn a_socket_of_this_process_is_found_through_proc() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        let mut v = Vec::new();
        procnet::parse_table(&std::fs::read_to_string("/proc/net/tcp").unwrap(), &mut v);
        let Found::Socket { inode, .. } = procnet::find(&v, c.local_addr().unwrap(), addr) else {
            panic!("client socket not in /proc/net/tcp");
        };
        let mut map = HashMap::new();
        assert_eq!(scan_socket_owners(&mut map, usize::MAX), 0);
        assert_eq!(map.get(&inode), Some(&std::process::id()));
        // Bounded: past the cap, sockets are counted, not kept.
        let mut small = HashMap::new();
        assert!(scan_socket_owners(&mut small, 1) >= 1);
        assert_eq!(small.len(), 1);
    }
}
