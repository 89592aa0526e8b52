//! Compiles the BPF objects with clang (`CLANG` overrides the command) and sets
//! `cfg(picket_ebpf_object)` when it did. Without clang the crate still builds: `ExecTracer::start`
//! then says so. A clang that is there but fails is a build error (a bug in the C).
//!
//! - bpf/exec.bpf.c: the exec tracer.
//! - bpf/core_offsets.bpf.c: test only; CO-RE field offsets that aya relocates against the
//!   kernel BTF, the reference tests/btf.rs checks the streaming BTF reader against (CO-RE needs
//!   clang 10+).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const OBJECTS: [&str; 2] = ["exec", "core_offsets"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(picket_ebpf_object)");
    for name in OBJECTS {
        println!("cargo::rerun-if-changed=bpf/{name}.bpf.c");
    }
    println!("cargo::rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // The object is read by the target's kernel: its byte order, whatever the build host's.
    let bpf_target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };

    for name in OBJECTS {
        let src = format!("bpf/{name}.bpf.c");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", bpf_target, "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!(
                    "cargo::warning=picket-ebpf: `{clang}` not found: built without the eBPF exec \
                     tracer (install clang, e.g. scripts/test-deps.sh)"
                );
                return;
            }
            Err(e) => panic!("picket-ebpf: running `{clang}` failed: {e}"),
            Ok(s) if !s.success() => panic!("picket-ebpf: `{clang}` failed on {src} ({s})"),
            Ok(_) => {}
        }
        // DWARF is only for humans; the loader needs .BTF (and CO-RE .BTF.ext), which
        // --strip-debug keeps. Optional: llvm-strip comes with the `llvm` package, not always
        // with clang.
        let _ = Command::new("llvm-strip").arg("--strip-debug").arg(&obj).status();
    }
    println!("cargo::rustc-cfg=picket_ebpf_object");
}
