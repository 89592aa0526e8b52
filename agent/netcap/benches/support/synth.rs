//! A synthetic but realistic capture for benchmarks: Ethernet frames of interleaved TCP
//! connections (handshake, data both ways, FIN close), DNS queries and answers over UDP, and a
//! little ICMP, ~1,000 connections open at any time. Deterministic (fixed seed).

use etherparse::PacketBuilder;
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet as Dns, QCLASS, QTYPE, Question, ResourceRecord, TYPE};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Conn {
    client: [u8; 4],
    server: [u8; 4],
    cport: u16,
    sport: u16,
    step: u32,
    len: u32,
}

fn pcap_header() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(0xa1b2_c3d4u32.to_le_bytes());
    f.extend(2u16.to_le_bytes());
    f.extend(4u16.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend(65535u32.to_le_bytes());
    f.extend(1u32.to_le_bytes());
    f
}

fn record(out: &mut Vec<u8>, ts_us: u64, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap();
    out.extend(u32::try_from(ts_us / 1_000_000).unwrap().to_le_bytes());
    out.extend(u32::try_from(ts_us % 1_000_000).unwrap().to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend(frame);
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// A classic pcap file of about `packets` frames.
pub fn capture(packets: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = pcap_header();
    let mut conns: Vec<Conn> = Vec::new();
    let payload = vec![0x42u8; 1460];
    let mut frame = Vec::with_capacity(1600);
    let mut ts = 1_700_000_000_000_000u64;
    let mut n = 0usize;
    let mut next_port = 1024u16;
    while n < packets {
        ts += 10;
        frame.clear();
        let r = rng.below(100);
        if r < 10 {
            // A DNS query and its answer.
            let id = u16::try_from(rng.below(65536)).unwrap();
            let name = format!("host{}.example{}.test", rng.below(5000), rng.below(50));
            let mut q = Dns::new_query(id);
            q.questions.push(Question::new(
                Name::new_unchecked(&name),
                QTYPE::TYPE(TYPE::A),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
            let qb = q.build_bytes_vec().unwrap();
            let client =
                [10, 0, u8::try_from(rng.below(256)).unwrap(), u8::try_from(rng.below(256)).unwrap()];
            let cport = u16::try_from(1024 + rng.below(60000)).unwrap();
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(client, [10, 0, 0, 53], 64)
                .udp(cport, 53)
                .write(&mut frame, &qb)
                .unwrap();
            record(&mut out, ts, &frame);
            let mut a = Dns::new_reply(id);
            a.questions.push(Question::new(
                Name::new_unchecked(&name),
                QTYPE::TYPE(TYPE::A),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
            a.answers.push(ResourceRecord::new(
                Name::new_unchecked(&name),
                CLASS::IN,
                300,
                RData::A(A { address: u32::try_from(rng.below(1 << 32)).unwrap() }),
            ));
            let ab = a.build_bytes_vec().unwrap();
            frame.clear();
            PacketBuilder::ethernet2(MAC_B, MAC_A)
                .ipv4([10, 0, 0, 53], client, 64)
                .udp(53, cport)
                .write(&mut frame, &ab)
                .unwrap();
            ts += 10;
            record(&mut out, ts, &frame);
            n += 2;
            continue;
        }
        if r < 12 {
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4([10, 0, 1, 1], [10, 0, 1, u8::try_from(rng.below(256)).unwrap()], 64)
                .icmpv4_echo_request(1, u16::try_from(n % 65536).unwrap())
                .write(&mut frame, &payload[..56])
                .unwrap();
            record(&mut out, ts, &frame);
            n += 1;
            continue;
        }
        if conns.len() < 1000 {
            next_port = if next_port == u16::MAX { 1024 } else { next_port + 1 };
            conns.push(Conn {
                client: [10, 1, u8::try_from(rng.below(256)).unwrap(), u8::try_from(rng.below(256)).unwrap()],
                server: [
                    172,
                    16,
                    u8::try_from(rng.below(16)).unwrap(),
                    u8::try_from(rng.below(256)).unwrap(),
                ],
                cport: next_port,
                sport: if rng.below(2) == 0 { 443 } else { 80 },
                step: 0,
                len: u32::try_from(6 + rng.below(20)).unwrap(),
            });
        }
        let i = usize::try_from(rng.below(conns.len() as u64)).unwrap();
        let c = &mut conns[i];
        let to_server = c.step == 0 || c.step == 2 || (c.step > 2 && c.step.is_multiple_of(3));
        let (src, dst, sp, dp, smac, dmac) = if to_server {
            (c.client, c.server, c.cport, c.sport, MAC_A, MAC_B)
        } else {
            (c.server, c.client, c.sport, c.cport, MAC_B, MAC_A)
        };
        let b = PacketBuilder::ethernet2(smac, dmac).ipv4(src, dst, 64).tcp(sp, dp, c.step * 1000, 65535);
        let last = c.step + 2 >= c.len;
        let data: &[u8] = match c.step {
            0..=2 => &[],
            _ if last => &[],
            _ if to_server => &payload[..200],
            _ => &payload[..1400],
        };
        let b = match c.step {
            0 => b.syn(),
            1 => b.syn().ack(1),
            _ if last => b.fin().ack(1),
            _ => b.ack(1).psh(),
        };
        b.write(&mut frame, data).unwrap();
        record(&mut out, ts, &frame);
        n += 1;
        c.step += 1;
        if c.step >= c.len {
            conns.swap_remove(i);
        }
    }
    out
}
