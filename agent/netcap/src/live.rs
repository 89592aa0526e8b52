//! Live capture through libpcap (feature `pcap`; loaded when the source starts, [`crate::libpcap`]), on a plain thread: packets are decoded as they
//! come and the events go into the pipeline through the bounded [`EventTx`] (a full queue drops
//! and counts, `network.queue_full`). Packets the kernel dropped are counted as
//! `network.kernel_drop`, flows the table evicted as `network.flow_evicted`. Flows with a local
//! end get their process ([`crate::attribute`], off the packet path).
//!
//! The source's status line says, once a second, what libpcap counted and how attribution went:
//! `running (packets: 51234 received, 12 dropped by the kernel, 0 by the interface; processes:
//! 40 attributed, 0 not found, 3 gone, 0 late)`. `received` is libpcap's `ps_recv` (on Linux it
//! includes the dropped ones), `dropped by the kernel` `ps_drop` (the ring buffer was full),
//! `by the interface` `ps_ifdrop`.

use std::time::{Duration, Instant};

use picket_capture::{CaptureError, EventTx, SendError, Shutdown, SourceStatus};
use picket_event::{Event, Timestamp};

use crate::attribute::{AttrStats, Attributor};
use crate::libpcap::{Capture, Next, Options, Stat};
use crate::{NetConfig, NetDecoder};

/// Source name in `agent.health` and drop counters.
pub const SOURCE: &str = "network";

/// Live capture settings (`[sources.network]`).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Interface name; `any` captures on all (Linux cooked capture).
    pub interface: String,
    /// BPF filter, e.g. `not port 8883` (empty: everything).
    pub filter: String,
    /// Bytes kept of each packet: enough for headers and a DNS message.
    pub snaplen: i32,
    /// Kernel ring buffer in bytes.
    pub buffer_size: i32,
    /// Put the local process on flows with a local end (`sources.network.attribute_processes`).
    pub attribute_processes: bool,
    pub decoder: NetConfig,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            interface: "any".into(),
            filter: String::new(),
            // A full Ethernet frame: DNS answers up to the usual EDNS size (1,232) are not cut.
            snaplen: 1600,
            buffer_size: 4 * 1024 * 1024,
            attribute_processes: true,
            decoder: NetConfig { module: "pcap", ..NetConfig::default() },
        }
    }
}

/// Longest a captured packet waits in a partly filled ring block before it is decoded.
const BLOCK_MS: i32 = 50;

fn unavailable(message: String) -> CaptureError {
    CaptureError::Unavailable { source_name: SOURCE, message }
}

/// Capture until shutdown. Blocks: run it on its own thread (`spawn_blocking`). When capture cannot
/// start (no privileges, no such interface, a bad filter) the status says `unavailable: ...` and
/// this returns `Ok`; an error while capturing returns `Err` (status `failed: ...`).
pub fn run_blocking(
    cfg: LiveConfig,
    tx: EventTx,
    status: SourceStatus,
    shutdown: Shutdown,
) -> Result<(), CaptureError> {
    let opts = Options {
        interface: &cfg.interface,
        snaplen: cfg.snaplen,
        buffer_size: cfg.buffer_size,
        promisc: false,
        // Not immediate mode: the kernel hands over a ring block when it is full or BLOCK_MS
        // old, so a busy link costs one wake-up per block rather than one per packet or two.
        immediate: false,
        timeout_ms: BLOCK_MS,
    };
    // Non-blocking (Capture::open), with our own poll: on Linux a blocking read never times out
    // on a quiet link (TPACKET_V3 starts its timer at the first packet), and we must see shutdown
    // and end idle flows.
    // Like the other sources: what is missing (libpcap, privileges, the interface) is said once
    // in the status and the agent runs on without this source.
    let mut cap = match Capture::open(&opts) {
        Ok(c) => c,
        Err(e) => {
            let e = unavailable(format!("opening {}: {e}", cfg.interface));
            status.set(SOURCE, format!("unavailable: {e}"));
            return Ok(());
        }
    };
    if !cfg.filter.is_empty()
        && let Err(e) = cap.set_filter(&cfg.filter)
    {
        let e = unavailable(format!("filter {:?}: {e}", cfg.filter));
        status.set(SOURCE, format!("unavailable: {e}"));
        return Ok(());
    }
    let linktype = u32::try_from(cap.datalink()).unwrap_or(u32::MAX);
    status.set(SOURCE, "running");
    let mut decoder = cfg.decoder;
    if decoder.local_addrs.is_empty() {
        // This host's addresses, so flows get `network.direction` (Sigma's `Initiated`). Read
        // once at start: an address added later counts as remote until the next start.
        decoder.local_addrs = crate::libpcap::local_addrs();
    }
    let max_flows = decoder.flows.max_flows;
    let mut dec = NetDecoder::new(decoder);
    let mut attr = if cfg.attribute_processes {
        match Attributor::spawn(max_flows) {
            Ok(a) => Some(a),
            Err(e) => {
                status.set(SOURCE, format!("running (no process attribution: worker thread: {e})"));
                None
            }
        }
    } else {
        None
    };
    let mut events = Vec::new();
    let mut kernel_dropped = 0u32;
    let mut evicted = 0u64;
    let mut last_check = Instant::now();
    loop {
        if shutdown.is_triggered() {
            break;
        }
        match cap.next_packet() {
            Ok(Next::Packet { ts_nanos, data }) => dec.frame(ts_nanos, linktype, data, &mut events),
            Ok(Next::Empty) => {
                // Nothing waiting: sleep in poll until there is, at most 250 ms.
                // Held flow events are looked at again soon.
                let nanos =
                    if attr.as_ref().is_some_and(Attributor::is_holding) { 5_000_000 } else { 250_000_000 };
                let mut fds =
                    [rustix::event::PollFd::from_borrowed_fd(cap.fd(), rustix::event::PollFlags::IN)];
                let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: nanos };
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
            }
            Err(e) => {
                let e =
                    CaptureError::Failed { source_name: SOURCE, message: format!("{}: {e}", cfg.interface) };
                status.set(SOURCE, format!("failed: {e}"));
                return Err(e);
            }
        }
        if deliver(&mut events, attr.as_mut(), &tx) == Err(SendError::Closed) {
            return Ok(());
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            dec.tick(Timestamp::now().unix_nanos(), &mut events);
            if let Some(s) = cap.stats() {
                let d = s.dropped.saturating_add(s.if_dropped);
                if d > kernel_dropped {
                    tx.count_drop("kernel_drop", u64::from(d - kernel_dropped));
                    kernel_dropped = d;
                }
                status.set(SOURCE, status_line(s, attr.as_ref().map(Attributor::stats)));
            }
            let ev_now = dec.stats().flows_evicted;
            if ev_now > evicted {
                tx.count_drop("flow_evicted", ev_now - evicted);
                evicted = ev_now;
            }
        }
    }
    dec.finish(&mut events);
    match attr.as_mut() {
        Some(a) => {
            for ev in events.drain(..) {
                a.push(ev);
            }
            a.finish(|ev| {
                let _ = tx.send(ev);
            });
        }
        None => {
            for ev in events.drain(..) {
                let _ = tx.send(ev);
            }
        }
    }
    if let Some(s) = cap.stats() {
        // The last of the kernel's drops too, so the counter ends equal to libpcap's.
        let d = s.dropped.saturating_add(s.if_dropped);
        if d > kernel_dropped {
            tx.count_drop("kernel_drop", u64::from(d - kernel_dropped));
        }
        status.set(SOURCE, status_line(s, attr.as_ref().map(Attributor::stats)));
    }
    Ok(())
}

/// Send the decoder's events, through the attributor when there is one (which may hold some back
/// for a moment, in order).
fn deliver(events: &mut Vec<Event>, attr: Option<&mut Attributor>, tx: &EventTx) -> Result<(), SendError> {
    if events.is_empty() && !attr.as_ref().is_some_and(|a| a.is_holding()) {
        return Ok(());
    }
    let mut result = Ok(());
    let mut send = |ev| {
        if result.is_ok() && tx.send(ev) == Err(SendError::Closed) {
            result = Err(SendError::Closed);
        }
    };
    match attr {
        Some(a) => {
            for ev in events.drain(..) {
                a.push(ev);
            }
            a.ready(send);
        }
        None => events.drain(..).for_each(&mut send),
    }
    result
}

/// The status line: libpcap's counters, and attribution's outcomes when it is on.
pub fn status_line(s: Stat, attr: Option<AttrStats>) -> String {
    let mut line = format!(
        "running (packets: {} received, {} dropped by the kernel, {} by the interface",
        s.received, s.dropped, s.if_dropped
    );
    if let Some(a) = attr {
        line.push_str(&format!(
            "; processes: {} attributed, {} not found, {} gone, {} late",
            a.attributed, a.not_found, a.gone, a.late
        ));
        if a.queue_full > 0 {
            line.push_str(&format!(", {} not looked up (queue full)", a.queue_full));
        }
        if a.cache_full > 0 {
            line.push_str(&format!(", {} sockets past the inode cache", a.cache_full));
        }
    }
    line.push(')');
    line
}
