//! Decode a capture into events (flows and DNS, no output) and print the rate:
//! `cargo run --release -p picket-netcap --example decode_rate -- FILE`.

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: decode_rate FILE");
    let file = std::fs::File::open(&path).expect("open");
    let start = Instant::now();
    let mut events = 0u64;
    let report = picket_netcap::replay(
        std::io::BufReader::with_capacity(1 << 20, file),
        picket_netcap::NetConfig::default(),
        |_| {
            events += 1;
            Ok(())
        },
    )
    .expect("replay");
    let secs = start.elapsed().as_secs_f64();
    let s = report.stats;
    println!(
        "{path}: {} frames, {} flows, {} DNS messages, {events} events in {secs:.3} s = {:.0} packets/s",
        s.frames,
        s.flows_started,
        s.dns_messages,
        s.frames as f64 / secs
    );
}
