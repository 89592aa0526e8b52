//! A device without libpcap: the network source says so in its status and returns, the agent runs
//! on. libpcap is hidden from a child of this test binary by bind-mounting an empty file over
//! every `libpcap.so*` in a mount namespace only that child has (`unshare --mount`); the host's
//! files are untouched. Needs root and `unshare`.

#![cfg(feature = "pcap")]

use std::process::Command;

use picket_capture::{Drops, EventTx, SourceStatus, shutdown_pair};
use picket_netcap::live::{LiveConfig, SOURCE, run_blocking};

const HELPER_ENV: &str = "PICKET_NO_LIBPCAP_HELPER";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn without_libpcap_the_network_source_reports_it_unavailable_and_returns() {
    if !is_root() || Command::new("unshare").arg("--help").output().is_err() {
        eprintln!(
            "\n*** SKIPPED without_libpcap_the_network_source_reports_it_unavailable: needs root and unshare ***\n"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&exe)
        .args(["--exact", "helper_without_libpcap", "--nocapture", "--include-ignored"])
        .env(HELPER_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helper failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("HIDDEN "), "the helper hid no libpcap file:\n{stdout}");
    assert!(
        stdout.contains("STATUS unavailable:") && stdout.contains("libpcap cannot be loaded"),
        "{stdout}"
    );
}

#[test]
#[ignore = "helper: run by without_libpcap_the_network_source_reports_it_unavailable_and_returns"]
fn helper_without_libpcap() {
    assert_eq!(
        std::env::var(HELPER_ENV).as_deref(),
        Ok("1"),
        "run only by its test, in its own mount namespace"
    );
    // Every libpcap.so* on the loader's usual paths: an empty file in its place fails dlopen.
    let mut hidden = 0;
    for dir in [
        "/lib",
        "/usr/lib",
        "/lib64",
        "/usr/lib64",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/local/lib",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libpcap.so") {
                let path = e.path();
                let ok = Command::new("mount").args(["--bind", "/dev/null"]).arg(&path).status();
                assert!(ok.is_ok_and(|s| s.success()), "bind-mounting over {}", path.display());
                println!("HIDDEN {}", path.display());
                hidden += 1;
            }
        }
    }
    assert!(hidden > 0, "no libpcap.so* found to hide: is libpcap installed? (scripts/test-deps.sh)");
    // Run on a plain thread, as the agent's spawn_blocking does; it must return, not block.
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let out = EventTx::new("network", tx, Drops::default());
    let status = SourceStatus::default();
    let (_trigger, shutdown) = shutdown_pair();
    let cfg = LiveConfig { interface: "lo".into(), ..LiveConfig::default() };
    let st = status.clone();
    let result = std::thread::spawn(move || run_blocking(cfg, out, st, shutdown)).join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    println!("STATUS {}", status.snapshot().get(SOURCE).cloned().unwrap_or_default());
}
