//! Starting the exec tracer costs little memory: the growth of the process's peak RSS (VmHWM)
//! across `ExecTracer::start` and a first batch of records. Its own test binary, so no other
//! test's allocations fall into the window. Needs root like tests/exec.rs (skips loudly
//! otherwise, fails under PICKET_REQUIRE_EBPF=1).
//!
//! What the growth is made of (release build, this machine: +676..716 kB): the ring buffer's
//! mapping, 520 kB, which the kernel maps whole at mmap time (remap_vmalloc_range) with the data
//! pages twice, for records that wrap: 2 x 256 KiB (the default ring) + 2 control pages; the
//! streaming BTF reader, ~80 kB (two 64 KiB buffers); the parsed object and its instructions, a
//! few kB; the rest is code paged in. A debug build adds ~0.6 MB of code. Before, aya's CO-RE
//! parsed the whole kernel BTF: +19.5 MB. The bound, 2 MB, leaves room for the debug build and
//! stays far below the old cost; the agent's bar is 16 MB in all.

use std::process::{Command, Stdio};

use picket_ebpf::{ExecTracer, ExecTracerOptions};

const BOUND_KB: u64 = 2048;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn run_true(n: u32) {
    for _ in 0..n {
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
    }
}

#[test]
fn start_adds_little_to_peak_rss() {
    // Page in what is used either way (spawning, /proc reads) before the first reading.
    run_true(2);
    let before = status_kb("VmHWM:");
    let mut tracer = match ExecTracer::start(ExecTracerOptions::default()) {
        Ok(t) => t,
        Err(e) if std::env::var_os("PICKET_REQUIRE_EBPF").is_some() => {
            panic!("PICKET_REQUIRE_EBPF set but the tracer did not start: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n!!!!! *** SKIPPED (start_adds_little_to_peak_rss: eBPF exec tracer unavailable: {e}) ***\n"
            );
            return;
        }
    };
    let started = status_kb("VmHWM:");
    let mut records = 0;
    for _ in 0..20 {
        run_true(50);
        records += tracer.drain(|_| {});
    }
    let after = status_kb("VmHWM:");
    eprintln!(
        "VmHWM: {before} kB before start, {started} kB after (+{} kB), {after} kB after {records} \
         records (+{} kB in all); VmRSS now {} kB",
        started - before,
        after - before,
        status_kb("VmRSS:")
    );
    assert!(records >= 1000, "only {records} records");
    assert!(after - before < BOUND_KB, "peak RSS grew {} kB (bound {BOUND_KB} kB)", after - before);
}
