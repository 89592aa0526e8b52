//! `run_tests`: failures are reported with file, line and case name, never silently passed.

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("picket-policy-runner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RULE: &str = "
id: two-failures
description: two failures from one address in a minute
mitre: T1110
on: auth.failure
threshold: {count: 2, within: 1m, by: source.ip}
severity: low
actions:
  - block_ip: {ttl: 10m}
";

#[test]
fn a_wrong_expectation_fails_with_file_line_and_case_name() {
    let dir = scratch("wrong");
    std::fs::write(dir.join("r.yaml"), RULE).unwrap();
    std::fs::write(
        dir.join("r.test.yaml"),
        "\
- name: passes
  events:
    - {kind: auth.failure, source: {ip: 192.0.2.1}, repeat: 2}
  expect:
    - {rule: two-failures, event: 1, actions: [{block_ip: {ip: 192.0.2.1, ttl: 10m}}]}
- name: wrong trigger index
  events:
    - {kind: auth.failure, source: {ip: 192.0.2.1}, repeat: 2}
  expect:
    - {rule: two-failures, event: 0}
- name: expects nothing but gets an alert
  events:
    - {kind: auth.failure, source: {ip: 192.0.2.1}, t: 0s}
    - {kind: auth.failure, source: {ip: 192.0.2.1}, t: 59s}
  expect: []
- name: wrong ttl
  events:
    - {kind: auth.failure, source: {ip: 192.0.2.1}, repeat: 2}
  expect:
    - {rule: two-failures, actions: [{block_ip: {ip: 192.0.2.1, ttl: 1h}}]}
",
    )
    .unwrap();
    let report = picket_policy::run_tests(std::slice::from_ref(&dir));
    let text = report.to_string();
    assert_eq!(report.passed(), 1, "{text}");
    assert_eq!(report.failed(), 3, "{text}");
    assert!(text.contains("r.test.yaml:6: wrong trigger index"), "{text}");
    assert!(text.contains("at event 1 instead of 0"), "{text}");
    assert!(text.contains("expected 0 alerts, got 1"), "{text}");
    assert!(text.contains("\"ttl_secs\":600"), "{text}");
    assert!(text.ends_with("1 passed, 3 failed"), "{text}");
    // A policy file given directly runs the tests beside it.
    let direct = picket_policy::run_tests(&[dir.join("r.yaml")]);
    assert_eq!(direct.cases.len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_test_file_or_policy_is_an_error_not_a_pass() {
    let dir = scratch("broken");
    std::fs::write(dir.join("r.yaml"), RULE).unwrap();
    std::fs::write(dir.join("r.test.yaml"), "- name: x\n  events: [{kind: auth.nope}]\n  expect: []\n")
        .unwrap();
    std::fs::write(dir.join("orphan.test.yaml"), "[]\n").unwrap();
    std::fs::write(dir.join("bad.yaml"), "id: bad\n").unwrap();
    let report = picket_policy::run_tests(std::slice::from_ref(&dir));
    let text = report.to_string();
    assert!(!report.ok(), "{text}");
    assert!(text.contains("r.test.yaml:2:"), "{text}");
    assert!(text.contains("orphan.test.yaml:1:1: no policy file beside this test"), "{text}");
    assert!(text.contains("bad.yaml:1:1: bad: a rule needs a `description`"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
