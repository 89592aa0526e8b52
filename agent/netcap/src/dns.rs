//! DNS messages (UDP port 53, or the first message of a TCP/53 segment) parsed with `simple-dns`.

use std::net::{Ipv4Addr, Ipv6Addr};

use simple_dns::Packet as DnsPacket;
use simple_dns::rdata::RData;

/// A parsed DNS message: what `net.dns` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// First question's name, without the trailing dot (as tshark prints it).
    pub name: String,
    /// First question's type, e.g. `A`, `AAAA`, `MX`, or `TYPE65` for unnamed ones.
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, ...: responses only.
    pub rcode: Option<&'static str>,
    /// Addresses in A and AAAA answers.
    pub resolved: Vec<String>,
}

/// Why a payload was not a DNS message we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsSkip {
    /// Did not parse as DNS.
    Malformed,
    /// Parsed, but has no question (nothing to name).
    NoQuestion,
}

/// ECS `dns.response_code` names (RFC 1035, 2136, 6895).
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "RESERVED",
    }
}

/// Names of common query types; others print as `TYPE<n>` (RFC 3597).
pub fn qtype_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    name.to_string()
}

/// Parse one DNS message.
pub fn parse(payload: &[u8]) -> Result<DnsMessage, DnsSkip> {
    if payload.len() < 12 {
        return Err(DnsSkip::Malformed);
    }
    // The header fields are read directly: simple-dns folds the extended rcode of an OPT record in,
    // and the question type as a number is what we want.
    let id = u16::from_be_bytes([payload[0], payload[1]]);
    let response = payload[2] & 0x80 != 0;
    let rcode = payload[3] & 0x0f;
    let pkt = DnsPacket::parse(payload).map_err(|_| DnsSkip::Malformed)?;
    let q = pkt.questions.first().ok_or(DnsSkip::NoQuestion)?;
    let mut name = q.qname.to_string();
    if name.ends_with('.') {
        name.pop();
    }
    let qtype = qtype_name(u16::from(q.qtype));
    let mut resolved = Vec::new();
    if response {
        for rr in &pkt.answers {
            match &rr.rdata {
                RData::A(a) => resolved.push(Ipv4Addr::from(a.address).to_string()),
                RData::AAAA(a) => resolved.push(Ipv6Addr::from(a.address).to_string()),
                _ => {}
            }
        }
    }
    Ok(DnsMessage { id, response, name, qtype, rcode: response.then(|| rcode_name(rcode)), resolved })
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA};
    use simple_dns::{CLASS, Name, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE};

    #[test]
    fn a_query_and_its_answer_parse() {
        let mut q = DnsPacket::new_query(7);
        q.questions.push(Question::new(
            Name::new_unchecked("www.example.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let bytes = q.build_bytes_vec().unwrap();
        let m = parse(&bytes).unwrap();
        assert_eq!(
            (m.id, m.response, m.name.as_str(), m.qtype.as_str(), m.rcode),
            (7, false, "www.example.test", "A", None)
        );

        let mut r = DnsPacket::new_reply(7);
        r.questions.push(Question::new(
            Name::new_unchecked("www.example.test"),
            QTYPE::TYPE(TYPE::AAAA),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        r.answers.push(ResourceRecord::new(
            Name::new_unchecked("www.example.test"),
            CLASS::IN,
            60,
            RData::A(A { address: 0x0a00_0005 }),
        ));
        r.answers.push(ResourceRecord::new(
            Name::new_unchecked("www.example.test"),
            CLASS::IN,
            60,
            RData::AAAA(AAAA { address: 1 }),
        ));
        *r.rcode_mut() = RCODE::NameError;
        let m = parse(&r.build_bytes_vec().unwrap()).unwrap();
        assert!(m.response);
        assert_eq!(m.qtype, "AAAA");
        assert_eq!(m.rcode, Some("NXDOMAIN"));
        assert_eq!(m.resolved, ["10.0.0.5", "::1"]);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(parse(b"hello"), Err(DnsSkip::Malformed));
        assert_eq!(parse(&[0xff; 40]), Err(DnsSkip::Malformed));
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(4242), "TYPE4242");
    }
}
