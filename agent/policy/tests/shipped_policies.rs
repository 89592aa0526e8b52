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

/// The events the auth-log parser makes of real sshd lines (its golden file over
/// `real-sshd.log`: sshpass, one password per connection, several lines per attempt) through the
/// shipped rules: ssh-brute-force fires at the fifth real attempt from 10.251.0.2, not at the
/// fifth auth.failure line, and the publickey login that follows the failures fires
/// login-after-failures. The file holds the same session twice (ISO, then classic timestamps);
/// each half runs on a fresh engine.
#[test]
fn real_sshd_events_fire_per_attempt_not_per_line() {
    use std::sync::Arc;

    use picket_event::Event;
    use picket_policy::{Engine, StateLimits};

    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../capture/tests/data/auth/real-sshd.expected.ndjson");
    let text = std::fs::read_to_string(&golden).unwrap();
    let set = Arc::new(picket_policy::load_paths(&[shipped()]).unwrap_or_else(|e| panic!("{e}")));
    let mut halves: Vec<Vec<(String, Event)>> = vec![Vec::new()];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let msg = v["line"].as_str().unwrap().to_string();
        if msg.ends_with("Received signal 15; terminating.") {
            halves.push(Vec::new());
        }
        if let Some(ev) = v.get("event") {
            let ev: Event = serde_json::from_value(ev.clone()).unwrap();
            halves.last_mut().unwrap().push((msg, ev));
        }
    }
    halves.retain(|h| !h.is_empty());
    assert_eq!(halves.len(), 2);
    for half in &halves {
        let mut engine = Engine::new(set.clone(), StateLimits::default());
        let mut out = Vec::new();
        let mut fired = Vec::new();
        for (msg, ev) in half {
            engine.evaluate(ev, &mut out);
            fired.extend(out.drain(..).map(|d| (d.rule_id.to_string(), msg.clone())));
        }
        let attempts = half
            .iter()
            .filter(|(m, _)| m.contains(": Failed password for ") && m.contains(" 10.251.0.2 "))
            .count();
        assert_eq!(attempts, 6, "six failed attempts from 10.251.0.2 in each half");
        assert_eq!(fired.len(), 2, "{fired:#?}");
        assert_eq!(fired[0].0, "ssh-brute-force");
        assert!(
            fired[0].1.ends_with("Failed password for root from 10.251.0.2 port 47712 ssh2"),
            "fired at {:?}, not at the fifth attempt",
            fired[0].1
        );
        assert_eq!(fired[1].0, "login-after-failures");
        assert!(fired[1].1.contains("Accepted publickey for root from 10.251.0.2"), "{:?}", fired[1].1);
    }
}
