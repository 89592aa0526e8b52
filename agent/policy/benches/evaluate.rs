//! Policy evaluation throughput: 100 rules, a mixed event stream mostly not matching.
//! Bar (PRODUCT.md): ≥ 1,000,000 events/s on one core.
//!
//! cargo bench -p picket-policy --bench evaluate -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use picket_policy::{Engine, StateLimits, load_str};

#[path = "../tests/common/mod.rs"]
mod common;

fn evaluate(c: &mut Criterion) {
    let set = Arc::new(load_str(&common::hundred_rules(), "bench.yaml").expect("bench rules load"));
    let mut group = c.benchmark_group("evaluate_100_rules");

    let events = common::non_matching_events(10_000);
    group.throughput(Throughput::Elements(u64::try_from(events.len()).unwrap_or(0)));
    group.bench_function("no_match", |b| {
        let mut engine = Engine::new(set.clone(), StateLimits::default());
        let mut out = Vec::new();
        b.iter(|| {
            for ev in &events {
                engine.evaluate(black_box(ev), &mut out);
            }
            out.clear();
        });
    });

    let events = common::mixed_events(10_000);
    group.bench_function("mixed_1pct_match", |b| {
        let mut engine = Engine::new(set.clone(), StateLimits::default());
        let mut out = Vec::new();
        b.iter(|| {
            for ev in &events {
                engine.evaluate(black_box(ev), &mut out);
            }
            black_box(out.len());
            out.clear();
        });
    });
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
