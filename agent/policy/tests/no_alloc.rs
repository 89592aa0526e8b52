//! The no-match path allocates nothing: 10,000 non-matching events against 100 rules.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; this test file alone opts out of
//! the workspace's `unsafe_code = "deny"`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use picket_policy::{Engine, StateLimits, load_str};

struct Counting;

thread_local! {
    // Count only on the measuring thread: the test harness allocates on its own threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator can be called while thread locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is a
// thread-local counter that itself never allocates (const-initialised `Cell`s).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout, which upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_no_match_path_allocates_nothing() {
    let set = load_str(&common::hundred_rules(), "bench.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 100);
    let mut engine = Engine::new(Arc::new(set), StateLimits::default());
    let events = common::non_matching_events(10_000);
    let mut out = Vec::new();
    // Warm up once: the regex engine fills its per-thread cache on first use.
    for ev in events.iter().take(100) {
        engine.evaluate(ev, &mut out);
    }
    assert!(out.is_empty(), "these events must match nothing: {out:?}");

    COUNTING.with(|c| c.set(true));
    for ev in &events {
        engine.evaluate(ev, &mut out);
    }
    COUNTING.with(|c| c.set(false));

    let allocs = ALLOCS.with(Cell::get);
    assert!(out.is_empty());

    // The counter itself works: a matching event (a decision pushed) is seen allocating.
    let hit = common::mixed_events(1000).into_iter().nth(500).unwrap();
    COUNTING.with(|c| c.set(true));
    engine.evaluate(&hit, &mut out);
    COUNTING.with(|c| c.set(false));
    assert_eq!(out.len(), 1, "the self-check event should match bench-0");
    assert!(ALLOCS.with(Cell::get) > allocs, "the counting allocator saw nothing");
    assert_eq!(allocs, 0, "evaluate allocated {allocs} times on 10,000 non-matching events");
}
