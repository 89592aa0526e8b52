//! The captures in `tests/data/` were made by `tests/netns_vs_tshark.rs` (curl, dig against
//! dnsmasq, ping and an nmap SYN scan between two namespaces; `PICKET_SAVE_PCAPS=DIR`), recorded by
//! tcpdump on the veth (Ethernet) and on `any` (Linux cooked v1 and v2), plus the Ethernet one
//! converted to pcapng by editcap. They need no root: the checks here run everywhere, and the
//! comparison with tshark runs wherever tshark is installed (CI installs it; without it that part
//! prints SKIPPED loudly).

mod common;

use std::path::PathBuf;

use common::*;
use picket_event::EventKind;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

const FILES: [&str; 4] = ["lab-eth.pcap", "lab-sll.pcap", "lab-sll2.pcap", "lab-eth.pcapng"];

#[test]
fn lab_captures_match_tshark_flow_for_flow_and_message_for_message() {
    if !tshark_available() {
        eprintln!(
            "\n*** SKIPPED lab_captures_match_tshark: tshark is not installed (scripts/test-deps.sh) ***\n"
        );
        return;
    }
    for f in FILES {
        let file = data(f);
        let (events, report) = picket_events(&file);
        assert_eq!(report.stats.frames, tshark_frames(&file), "{f}");
        assert_eq!(picket_tcp(&events), tshark_tcp(&file), "{f}: TCP flows");
        assert_eq!(picket_dns(&events), tshark_dns(&file), "{f}: DNS");
    }
}

#[test]
fn every_link_type_and_format_gives_the_same_events() {
    let (first, _) = picket_events(&data(FILES[0]));
    for f in &FILES[1..] {
        let (events, report) = picket_events(&data(f));
        assert_eq!(report.stats.malformed + report.stats.unsupported_link, 0, "{f}: {:?}", report.stats);
        assert_eq!(picket_tcp(&events), picket_tcp(&first), "{f}");
        assert_eq!(picket_dns(&events), picket_dns(&first), "{f}");
    }
}

#[test]
fn the_lab_capture_reads_as_curl_dig_ping_and_a_scan() {
    let (events, report) = picket_events(&data("lab-eth.pcap"));
    assert!(!report.truncated);
    let flows: Vec<_> = events.iter().filter(|e| e.kind == EventKind::NetFlow).collect();
    let starts = flows.iter().filter(|e| e.event.action.as_deref() == Some("flow_start")).count();
    let ends = flows.iter().filter(|e| e.event.action.as_deref() == Some("flow_end")).count();
    assert_eq!(starts, ends, "every flow that starts also ends");
    assert_eq!(report.stats.flows_started, starts as u64);

    // The scan: one source, over 200 distinct destination ports on one host.
    let mut ports: Vec<u16> = flows
        .iter()
        .filter(|e| e.event.action.as_deref() == Some("flow_start"))
        .filter(|e| e.source.as_ref().unwrap().ip.as_deref() == Some("10.77.0.1"))
        .filter_map(|e| e.destination.as_ref().unwrap().port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(ports.len() > 200, "{} distinct ports", ports.len());

    // An HTTP flow over IPv6 with a full handshake and close.
    let v6 = flows
        .iter()
        .find(|e| {
            e.event.action.as_deref() == Some("flow_end")
                && e.destination.as_ref().unwrap().ip.as_deref() == Some("fd77::2")
                && e.destination.as_ref().unwrap().port == Some(8080)
        })
        .expect("the curl over IPv6");
    let n = v6.network.as_ref().unwrap();
    assert_eq!(n.r#type.as_deref(), Some("ipv6"));
    let flags = n.tcp_flags.as_ref().unwrap();
    for f in ["SYN", "ACK", "FIN"] {
        assert!(flags.iter().any(|x| x == f), "{flags:?}");
    }
    assert!(v6.destination.as_ref().unwrap().bytes.unwrap() > 4000, "the page came back");
    assert!(v6.event.duration.is_some());

    // ICMP is a flow too, without ports.
    let icmp = flows
        .iter()
        .find(|e| e.network.as_ref().unwrap().transport.as_deref() == Some("icmp"))
        .expect("the ping");
    assert_eq!(icmp.destination.as_ref().unwrap().port, None);

    // DNS: names, types, answers and rcodes.
    let dns = picket_dns(&events);
    let answer = |name: &str| dns.iter().find(|d| d.response && d.name == name).cloned();
    assert_eq!(answer("web.picket.test").unwrap().resolved, ["10.77.0.2"]);
    assert_eq!(answer("v6.picket.test").unwrap().resolved, ["fd77::2"]);
    assert_eq!(answer("nope.picket.test").unwrap().rcode.as_deref(), Some("REFUSED"));
    assert_eq!(answer("blocked.picket.test").unwrap().rcode.as_deref(), Some("NXDOMAIN"));
    let qtypes: Vec<_> =
        events.iter().filter_map(|e| e.dns.as_ref()).filter_map(|d| d.question.r#type.as_deref()).collect();
    for t in ["A", "AAAA", "MX"] {
        assert!(qtypes.contains(&t), "{t} in {qtypes:?}");
    }
    // A flow to an address a DNS answer named carries the name.
    assert!(
        flows.iter().any(|e| e.destination.as_ref().unwrap().domain.as_deref() == Some("web.picket.test")),
        "destination.domain from the DNS answer"
    );
}

#[test]
fn events_validate_against_the_committed_schema_shape() {
    // Round trip through JSON: what `picket replay` prints parses back to the same event.
    let (events, _) = picket_events(&data("lab-sll2.pcap"));
    for ev in events.iter().take(50) {
        let json = serde_json::to_string(ev).unwrap();
        let back: picket_event::Event = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, ev);
    }
}

#[test]
fn the_shipped_scan_policies_catch_the_nmap_scan_in_the_lab_capture() {
    use std::sync::Arc;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/discovery");
    let set = picket_policy::load_paths(&[dir]).unwrap();
    let mut engine = picket_policy::Engine::new(Arc::new(set), picket_policy::StateLimits::default());
    let (events, _) = picket_events(&data("lab-eth.pcap"));
    let mut decisions = Vec::new();
    for ev in &events {
        engine.evaluate(ev, &mut decisions);
    }
    let fired: Vec<_> = decisions.iter().map(|d| d.rule_id.to_string()).collect();
    // 201 ports: one alert per 25 distinct ports (the window resets after firing).
    assert!(fired.iter().all(|r| r == "port-scan"), "{fired:?}");
    assert_eq!(fired.len(), 8, "{fired:?}");
}
