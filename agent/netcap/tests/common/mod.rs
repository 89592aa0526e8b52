//! Shared by the tests: picket's view and tshark's view of a capture file, in one comparable form.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use picket_event::{Event, EventKind};
use picket_netcap::{NetConfig, ReplayReport};

/// One TCP connection, direction-free: both ends with what each sent (packets, IP bytes), sorted.
pub type Conn = [(String, u64, u64); 2];

/// One DNS message as both decoders see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsRow {
    pub name: String,
    pub response: bool,
    pub rcode: Option<String>,
    pub resolved: Vec<String>,
}

pub fn picket_events(file: &Path) -> (Vec<Event>, ReplayReport) {
    let f = std::fs::File::open(file).unwrap();
    let mut events = Vec::new();
    let report = picket_netcap::replay(std::io::BufReader::new(f), NetConfig::default(), |ev| {
        events.push(ev.clone());
        Ok(())
    })
    .unwrap();
    (events, report)
}

fn endpoint(ip: &str, port: u64) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

fn conn(mut a: (String, u64, u64), mut b: (String, u64, u64)) -> Conn {
    if b < a {
        std::mem::swap(&mut a, &mut b);
    }
    [a, b]
}

/// picket's TCP flows (from the `flow_end` events), sorted.
pub fn picket_tcp(events: &[Event]) -> Vec<Conn> {
    let mut out: Vec<Conn> = events
        .iter()
        .filter(|e| e.kind == EventKind::NetFlow && e.event.action.as_deref() == Some("flow_end"))
        .filter(|e| e.network.as_ref().and_then(|n| n.transport.as_deref()) == Some("tcp"))
        .map(|e| {
            let s = e.source.as_ref().unwrap();
            let d = e.destination.as_ref().unwrap();
            conn(
                (
                    endpoint(s.ip.as_deref().unwrap(), u64::from(s.port.unwrap())),
                    s.packets.unwrap(),
                    s.bytes.unwrap(),
                ),
                (
                    endpoint(d.ip.as_deref().unwrap(), u64::from(d.port.unwrap())),
                    d.packets.unwrap(),
                    d.bytes.unwrap(),
                ),
            )
        })
        .collect();
    out.sort();
    out
}

pub fn picket_dns(events: &[Event]) -> Vec<DnsRow> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::NetDns)
        .map(|e| {
            let d = e.dns.as_ref().unwrap();
            let mut resolved = d.resolved_ip.clone().unwrap_or_default();
            resolved.sort();
            DnsRow {
                name: d.question.name.clone(),
                response: e.event.action.as_deref() == Some("answer"),
                rcode: d.response_code.clone(),
                resolved,
            }
        })
        .collect()
}

pub fn tshark_available() -> bool {
    Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r"]).arg(file).args([
        "-n",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// tshark's TCP conversations (by `tcp.stream`), in the same form.
pub fn tshark_tcp(file: &Path) -> Vec<Conn> {
    let rows = tshark_fields(
        file,
        "tcp",
        &[
            "tcp.stream",
            "ip.src",
            "ipv6.src",
            "tcp.srcport",
            "ip.dst",
            "ipv6.dst",
            "tcp.dstport",
            "ip.len",
            "ipv6.plen",
        ],
    );
    // stream -> (first sender, [(endpoint, packets, bytes); 2])
    let mut streams: BTreeMap<u64, [(String, u64, u64); 2]> = BTreeMap::new();
    for r in rows {
        let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        let stream: u64 = get(0).parse().unwrap();
        let (src, dst, len) = if get(1).is_empty() {
            (get(2), get(5), get(8).parse::<u64>().unwrap() + 40)
        } else {
            (get(1), get(4), get(7).parse::<u64>().unwrap())
        };
        let s = endpoint(src, get(3).parse().unwrap());
        let d = endpoint(dst, get(6).parse().unwrap());
        let e = streams.entry(stream).or_insert_with(|| [(s.clone(), 0, 0), (d.clone(), 0, 0)]);
        let i = usize::from(e[0].0 != s);
        e[i].1 += 1;
        e[i].2 += len;
    }
    let mut out: Vec<Conn> = streams.into_values().map(|[a, b]| conn(a, b)).collect();
    out.sort();
    out
}

pub fn tshark_dns(file: &Path) -> Vec<DnsRow> {
    const RCODES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET",
        "NOTAUTH", "NOTZONE",
    ];
    tshark_fields(
        file,
        "dns",
        &["dns.qry.name", "dns.flags.response", "dns.flags.rcode", "dns.a", "dns.aaaa"],
    )
    .into_iter()
    .map(|r| {
        let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        let response = matches!(get(1), "1" | "True" | "true");
        let mut resolved: Vec<String> = [get(3), get(4)]
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        resolved.sort();
        DnsRow {
            name: get(0).to_string(),
            response,
            rcode: response.then(|| RCODES[get(2).parse::<usize>().unwrap()].to_string()),
            resolved,
        }
    })
    .collect()
}

/// tshark's count of frames in a file (for sanity: both read every frame).
pub fn tshark_frames(file: &Path) -> u64 {
    tshark_fields(file, "frame", &["frame.number"]).len() as u64
}
