//! Seal and open of full batches (256 and 1024 events of ~450 bytes, the shape `picket run`
//! journals), and the envelope's size overhead per event.
//!
//! `cargo bench -p picket-wire --bench wire -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use picket_wire::{BatchInput, Identity, Keyring, open, seal};

/// A process.exec event as the journal stores it, ~450 bytes.
fn event(seq: u64) -> String {
    format!(
        concat!(
            r#"{{"@timestamp":"2026-11-23T19:37:{:02}.{:09}Z","#,
            r#""event":{{"action":"exec","dataset":"picket.process","module":"process","severity":0}},"#,
            r#""host":{{"id":"4b2d3c1e5f6a47b8a9c0d1e2f3a4b5c6"}},"kind":"process.exec","#,
            r#""process":{{"command_line":"curl -fsS http://10.0.0.5/fw.json -o /tmp/fw.json","#,
            r#""entity_id":"a3f1c2d4e5b6","executable":"/usr/bin/curl","name":"curl","#,
            r#""parent":{{"name":"sh","pid":{}}},"pid":{}}},"schema_version":1,"seq":{},"#,
            r#""user":{{"id":"0","name":"root"}}}}"#
        ),
        seq % 60,
        seq * 7919 % 1_000_000_000,
        17_000 + seq % 1000,
        18_000 + seq % 5000,
        seq
    )
}

fn bench(c: &mut Criterion) {
    let device = Identity::generate("4b2d3c1e5f6a47b8a9c0d1e2f3a4b5c6").unwrap();
    let mut keyring = Keyring::new();
    keyring.insert(device.id(), device.public_key());
    let input = BatchInput {
        stream_id: [5; 16],
        boot_id: [7; 16],
        batch_seq: 9,
        prev_hash: [1; 32],
        created_ns: 0,
        flags: 0,
    };

    for n in [256u64, 1024] {
        let events: Vec<String> = (1_000_000..1_000_000 + n).map(event).collect();
        let lines: Vec<&str> = events.iter().map(String::as_str).collect();
        let payload: usize = events.iter().map(String::len).sum();
        let sealed = seal(&device, input, &lines).unwrap();
        // Overhead = everything but the JSON texts: prefix, header, signature, one '\n' per event.
        let overhead = sealed.bytes.len() - payload;
        println!(
            "batch of {n}: {} bytes, {:.0} B/event JSON, envelope overhead {overhead} B ({:.2} B/event)",
            sealed.bytes.len(),
            payload as f64 / n as f64,
            overhead as f64 / n as f64
        );

        let mut group = c.benchmark_group(format!("batch_{n}"));
        group.throughput(Throughput::Elements(n));
        group.bench_function("seal", |b| {
            b.iter(|| seal(&device, black_box(input), black_box(&lines)).unwrap())
        });
        group.bench_function("open", |b| {
            b.iter_batched(
                || sealed.bytes.clone(),
                |bytes| open(black_box(&bytes), &keyring, 16 << 20).unwrap(),
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
