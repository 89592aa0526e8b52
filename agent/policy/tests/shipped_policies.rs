//! The policies shipped in `policies/` load cleanly and pass the test cases beside them.

use std::path::PathBuf;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn shipped_policies_load_without_errors() {
    let set = picket_policy::load_paths(&[shipped()]).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = set.rules().map(|r| &*r.id).collect();
    for want in ["ssh-brute-force", "sudo-brute-force", "password-spraying", "login-after-failures"] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
}

#[test]
fn shipped_policy_tests_all_pass() {
    let report = picket_policy::run_tests(&[shipped()]);
    println!("{report}");
    assert!(report.cases.len() >= 4, "expected at least 4 cases, found {}", report.cases.len());
    assert_eq!(report.failed(), 0, "{report}");
}
