//! Write the benchmark capture: `cargo run --release -p picket-netcap --example mkpcap -- FILE [PACKETS]`.

#[path = "../benches/support/synth.rs"]
mod synth;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: mkpcap FILE [PACKETS]");
    let n: usize = args.next().map_or(1_000_000, |s| s.parse().expect("PACKETS"));
    std::fs::write(&path, synth::capture(n)).expect("write");
    eprintln!("{path}: {n} packets");
}
