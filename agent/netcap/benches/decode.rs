//! Decode rate: a synthetic capture (`support/synth.rs`: interleaved TCP connections, DNS, ICMP) from
//! memory into `net.flow` / `net.dns` events. The side-by-side figure against tshark on the same
//! file comes from `agent/netcap/bench/replay-vs-tshark.sh` (docs/BENCHMARKS.md, network).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use picket_netcap::{NetConfig, NetDecoder, decode, pcapfile::PcapReader};

#[path = "support/synth.rs"]
mod synth;

fn bench(c: &mut Criterion) {
    const PACKETS: usize = 200_000;
    let file = synth::capture(PACKETS);
    let mut frames = Vec::new();
    let mut r = PcapReader::new(&file[..]).unwrap();
    while let Some(rec) = r.next().unwrap() {
        frames.push((rec.ts_nanos, rec.data.to_vec()));
    }
    let mut g = c.benchmark_group("netcap");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(10);
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for (_, f) in &frames {
                if let decode::Decoded::Ip(p) = decode::decode(decode::linktype::ETHERNET, f) {
                    n = n.wrapping_add(u32::from(p.dport));
                }
            }
            n
        });
    });
    g.bench_function("replay_file_to_events", |b| {
        b.iter(|| {
            let mut events = 0u64;
            picket_netcap::replay(&file[..], NetConfig::default(), |_| {
                events += 1;
                Ok(())
            })
            .unwrap();
            events
        });
    });
    g.bench_function("decoder_frames_to_events", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut dec = NetDecoder::new(NetConfig::default());
            for (ts, f) in &frames {
                dec.frame(*ts, decode::linktype::ETHERNET, f, &mut out);
                out.clear();
            }
            dec.finish(&mut out);
            out.clear();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
