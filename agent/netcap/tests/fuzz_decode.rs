//! Malformed, truncated and random input never panics: the frame decoder, the DNS parser, the
//! whole decoder (flows, DNS), and the capture file reader.

use picket_netcap::decode::{self, linktype};
use picket_netcap::{NetConfig, NetDecoder, pcapfile::PcapReader};
use proptest::prelude::*;

const LINKTYPES: [u32; 8] = [
    linktype::ETHERNET,
    linktype::LINUX_SLL,
    linktype::LINUX_SLL2,
    linktype::RAW,
    linktype::NULL,
    linktype::LOOP,
    linktype::IPV6,
    4242,
];

/// Real frames from the lab capture, to mutate (random bytes alone rarely get past the headers).
fn seeds() -> Vec<(u32, Vec<u8>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lab-sll2.pcap");
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.linktype, rec.data.to_vec()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_never_panic(lt in prop::sample::select(LINKTYPES.to_vec()), data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::decode(lt, &data);
        let mut dec = NetDecoder::new(NetConfig::default());
        let mut out = Vec::new();
        dec.frame(0, lt, &data, &mut out);
        dec.finish(&mut out);
    }

    #[test]
    fn mutated_and_truncated_real_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        ts in any::<i64>(),
    ) {
        thread_local!(static SEEDS: Vec<(u32, Vec<u8>)> = seeds());
        let (lt, mut frame) = SEEDS.with(|s| pick.get(s).clone());
        for (at, v) in flips {
            let i = at.index(frame.len());
            frame[i] = v;
        }
        let len = cut.index(frame.len() + 1);
        frame.truncate(len);
        let mut dec = NetDecoder::new(NetConfig::default());
        let mut out = Vec::new();
        dec.frame(ts, lt, &frame, &mut out);
        dec.frame(ts.saturating_add(1), lt, &frame, &mut out);
        dec.tick(ts.saturating_add(i64::MAX / 2), &mut out);
        dec.finish(&mut out);
    }

    #[test]
    fn random_dns_payloads_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = picket_netcap::dns::parse(&data);
    }

    #[test]
    fn corrupt_capture_files_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        ng in any::<bool>(),
    ) {
        thread_local!(static FILES: (Vec<u8>, Vec<u8>) = (
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lab-eth.pcap")).unwrap()[..4000].to_vec(),
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lab-eth.pcapng")).unwrap()[..4000].to_vec(),
        ));
        let mut file = FILES.with(|f| if ng { f.1.clone() } else { f.0.clone() });
        for (at, v) in flips {
            let i = at.index(file.len());
            file[i] = v;
        }
        file.truncate(cut.index(file.len() + 1));
        let _ = picket_netcap::replay(&file[..], NetConfig::default(), |_| Ok(()));
    }
}
