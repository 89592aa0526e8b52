//! End to end on a real OpenSSH server: `scripts/lab/sshd-lab.sh` starts sshd and rsyslogd in a
//! network namespace (their own configs, pid files and /dev/log, all in a temp dir), the real
//! `picket run` follows the lab's auth.log with the shipped policies — inside the same namespace,
//! so whatever it does to nftables lands there — and real `ssh` clients in a second namespace
//! guess passwords (and log in with a key). Nothing on the host changes.
//!
//! Needs root and the lab's tools (`scripts/test-deps.sh` installs them); without them the test
//! says SKIPPED on stderr and passes, unless `PICKET_REQUIRE_LAB=1` makes that a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PICKET: &str = env!("CARGO_BIN_EXE_picket");
const WAIT: Duration = Duration::from_secs(20);
const TOOLS: &[&str] =
    &["ip", "unshare", "mount", "setsid", "sshpass", "rsyslogd", "ssh", "ssh-keygen", "/usr/sbin/sshd"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing {} (scripts/test-deps.sh installs them)", missing.join(", ")));
    }
    // Root in a container without CAP_SYS_ADMIN cannot make the lab's namespaces.
    let ns = Command::new("unshare").args(["--mount", "--net", "true"]).output().ok()?;
    (!ns.status.success()).then(|| {
        format!(
            "cannot create namespaces: unshare --mount --net: {}",
            String::from_utf8_lossy(&ns.stderr).trim()
        )
    })
}

/// The lab in a temp dir; `down` runs on drop, also when the test panics.
struct Lab {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Lab {
    fn up() -> Lab {
        let mut lab = Lab { dir: tempfile::tempdir().unwrap(), env: HashMap::new() };
        lab.script(&["up"], &[]);
        let text = std::fs::read_to_string(lab.dir.path().join("lab.env")).unwrap();
        lab.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lab
    }

    fn var(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("{key} not in lab.env: {:?}", self.env))
    }

    /// `sshd-lab.sh <args[0]> DIR <args[1..]>`; panics with its output when it fails.
    fn script(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.command(args).envs(env.iter().copied()).output().expect("run sshd-lab.sh");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("lab| sshd-lab.sh {}: {}", args[0], text.trim());
        assert!(out.status.success(), "sshd-lab.sh {args:?} failed ({:?}):\n{text}", out.status);
        out
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(repo().join("scripts/lab/sshd-lab.sh"));
        c.arg(args[0]).arg(self.dir.path()).args(&args[1..]).stdin(Stdio::null());
        c
    }

    fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match self.command(&["down"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("sshd-lab.sh down failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("sshd-lab.sh down did not run: {e}"),
        }
    }
}

/// `picket run` in the lab's victim namespace on the lab's auth.log, file/process/network sources off.
struct Agent {
    child: Option<Child>,
    data_dir: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    fn start(lab: &Lab, mode: &str) -> Agent {
        let dir = lab.dir.path();
        let data_dir = dir.join("picket");
        let config = format!(
            "[agent]\ndata_dir = \"{}\"\nmode = \"{mode}\"\nstatus_interval_secs = 1\n\
             [policies]\npaths = [\"{}\"]\n\
             [sources.process]\nenabled = false\n[sources.file]\nenabled = false\n\
             [sources.network]\nenabled = false\n\
             [sources.auth]\nenabled = true\nfiles = [\"{}\"]\n",
            data_dir.display(),
            repo().join("policies").display(),
            lab.var("AUTH_LOG"),
        );
        let config_file = dir.join("picket.toml");
        std::fs::write(&config_file, config).unwrap();
        // `sshd-lab.sh exec` ends in an exec of picket: the child's pid is the agent's.
        let mut child = lab
            .command(&["exec", PICKET, "run", "--config", config_file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start picket run");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("agent| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent { child: Some(child), data_dir, lines: rx, seen: Vec::new() };
        agent.wait_line(|l| l.contains("source auth: running"));
        agent
    }

    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(l) = self.lines.recv_timeout(left) else { break };
            self.seen.push(l.clone());
            if pred(&l) {
                return l;
            }
        }
        panic!("no matching line from the agent within {WAIT:?}; saw:\n{}", self.seen.join("\n"));
    }

    fn export(&self) -> Vec<Value> {
        let out = Command::new(PICKET)
            .args(["journal", "export", "--data-dir", self.data_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l}: {e}")))
            .collect()
    }

    fn wait_journal(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.export();
            if events.iter().any(&pred) {
                return;
            }
            assert!(Instant::now() < deadline, "the journal never had {what}; it has:\n{events:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait; the agent must exit 0 within 5 s.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "the agent ignored SIGTERM for 5 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "the agent exited with {status:?}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn skip_or_fail(why: &str) {
    if std::env::var("PICKET_REQUIRE_LAB").is_ok_and(|v| v == "1") {
        panic!("PICKET_REQUIRE_LAB=1 but the sshd lab cannot run: {why}");
    }
    // Written to the real stderr, past the test harness's capture, so it shows in `make test`.
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!! SKIPPED (needs root + sshd lab): agent/picket/tests/lab.rs: {why}\n{bar}\n"
    );
}

fn str_of<'a>(e: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(e, |v, k| v.get(k)).and_then(Value::as_str)
}

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap()
}

#[test]
fn real_sshd_brute_force_in_a_netns_is_seen_alerted_on_and_the_login_after_it_is_critical() {
    if let Some(why) = missing_prerequisite() {
        skip_or_fail(&why);
        return;
    }
    let started = Instant::now();
    let lab = Lab::up();
    let attacker = lab.var("ATTACKER_IP").to_string();
    let mut agent = Agent::start(&lab, "monitor");

    // Five wrong passwords for root, one per connection, all at once (PAM's 2 s fail delay is then
    // paid once). Each attempt logs a pam_unix line, `Failed password` and a preauth disconnect.
    lab.script(&["attack", "5", "root"], &[("LAB_PARALLEL", "1")]);
    let alert_line = agent.wait_line(|l| l.contains("ALERT") && l.contains("ssh-brute-force"));
    assert!(alert_line.contains(&format!("block_ip {attacker} for 3600s")), "{alert_line}");
    agent
        .wait_journal("the ssh-brute-force alert", |e| str_of(e, &["rule", "id"]) == Some("ssh-brute-force"));

    // Then a login that works (a key the lab's sshd accepts for root), from the same address.
    lab.script(&["login"], &[]);
    agent.wait_journal("the login-after-failures alert", |e| {
        str_of(e, &["rule", "id"]) == Some("login-after-failures")
    });
    agent.stop();

    let events = agent.export();
    let from_attacker = |e: &&Value| str_of(e, &["source", "ip"]) == Some(attacker.as_str());
    let failures: Vec<&Value> =
        events.iter().filter(|e| e["kind"] == "auth.failure").filter(from_attacker).collect();
    let passwords: Vec<&Value> =
        failures.iter().copied().filter(|e| e["event"]["action"] == "password").collect();
    assert_eq!(passwords.len(), 5, "Failed password events from {attacker}: {passwords:#?}");
    for p in &passwords {
        assert_eq!(str_of(p, &["process", "name"]), Some("sshd"), "{p}");
        assert_eq!(str_of(p, &["user", "name"]), Some("root"), "{p}");
        assert!(p["process"]["pid"].as_u64().is_some() && p["source"]["port"].as_u64().is_some(), "{p}");
    }
    // The pam_unix and preauth-disconnect lines are auth.failure events too, and are not counted.
    for action in ["pam", "preauth_disconnect"] {
        let n = failures.iter().filter(|e| e["event"]["action"] == action).count();
        assert_eq!(n, 5, "{action} events from {attacker}: {failures:#?}");
    }
    // Event time is the syslog time of the line (microseconds, as rsyslog wrote it).
    let log = lab.auth_log();
    let stamps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("Failed password for root from {attacker} port ")))
        .map(|l| &l[..26])
        .collect();
    let mut seen: Vec<&str> = passwords.iter().map(|p| &p["@timestamp"].as_str().unwrap()[..26]).collect();
    seen.sort_unstable();
    assert_eq!(seen, stamps, "event times differ from auth.log:\n{log}");

    // One brute-force alert, right at the fifth attempt, naming the attacker.
    let brute: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && str_of(e, &["rule", "id"]) == Some("ssh-brute-force"))
        .collect();
    assert_eq!(brute.len(), 1, "{brute:#?}");
    let alert = brute[0];
    assert_eq!(alert["kind"], "alert");
    assert_eq!(str_of(alert, &["source", "ip"]), Some(attacker.as_str()), "{alert}");
    assert_eq!(alert["event"]["severity"], 73);
    assert!(str_of(alert, &["message"]).is_some_and(|m| m.contains(&attacker)), "{alert}");
    let before = passwords.iter().filter(|p| seq(p) < seq(alert)).count();
    assert_eq!(before, 5, "the alert came after {before} failed passwords, not 5");

    // The successful login is an auth.success, and with the failures before it a critical alert.
    let success = events
        .iter()
        .find(|e| e["kind"] == "auth.success")
        .unwrap_or_else(|| panic!("no auth.success in {events:#?}"));
    assert_eq!(str_of(success, &["source", "ip"]), Some(attacker.as_str()), "{success}");
    assert_eq!(str_of(success, &["user", "name"]), Some("root"), "{success}");
    assert_eq!(success["event"]["action"], "publickey", "{success}");
    let login = events.iter().find(|e| str_of(e, &["rule", "id"]) == Some("login-after-failures")).unwrap();
    assert_eq!(str_of(login, &["source", "ip"]), Some(attacker.as_str()), "{login}");
    assert_eq!(login["event"]["severity"], 99);
    assert!(seq(login) > seq(success));

    // Everything the agent wrote matches the published schema.
    let schema_file = repo().join("docs/schema/event.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(schema_file).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for e in &events {
        let errors: Vec<String> = validator.iter_errors(e).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{e} does not match the schema: {errors:?}");
    }
    println!("lab test took {:?}", started.elapsed());
}

fn host_tables() -> String {
    let out = Command::new("nft").args(["list", "tables"]).output().expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_sshd_brute_force_in_enforce_mode_blocks_the_attacker_in_the_lab_namespace_only() {
    if let Some(why) = missing_prerequisite().or_else(|| {
        let nft = Command::new("sh").args(["-c", "command -v nft"]).stdout(Stdio::null()).status();
        (!nft.is_ok_and(|s| s.success())).then(|| "missing nft (scripts/test-deps.sh installs it)".into())
    }) {
        skip_or_fail(&why);
        return;
    }
    let host_before = host_tables();
    let lab = Lab::up();
    let attacker = lab.var("ATTACKER_IP").to_string();
    let mut agent = Agent::start(&lab, "enforce");
    assert!(lab.command(&["probe"]).status().unwrap().success(), "the attacker cannot reach sshd at all");

    lab.script(&["attack", "5", "root"], &[("LAB_PARALLEL", "1")]);
    agent.wait_journal("the block_ip outcome", |e| {
        e["kind"] == "action"
            && e["action"]["outcome"] != "intent"
            && e["action"]["target"] == attacker.as_str()
    });
    // The attacker's next connection does not get through (the lab's sshd still listens).
    assert!(!lab.command(&["probe"]).status().unwrap().success(), "the attacker still reaches sshd");
    let set = lab.script(&["exec", "nft", "list", "set", "inet", "picket", "block4"], &[]);
    assert!(String::from_utf8_lossy(&set.stdout).contains(&attacker), "the attacker is not in the set");
    agent.stop();

    let events = agent.export();
    let actions: Vec<&Value> = events.iter().filter(|e| e["kind"] == "action").collect();
    let outcomes: Vec<&str> = actions.iter().filter_map(|a| a["action"]["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["intent", "succeeded"], "{actions:#?}");
    let alert = events.iter().find(|e| str_of(e, &["rule", "id"]) == Some("ssh-brute-force")).unwrap();
    // The decision is journaled before the action runs, the outcome after.
    assert!(seq(alert) < seq(actions[0]) && seq(actions[0]) < seq(actions[1]));
    assert_eq!(actions[1]["action"]["ttl_secs"], 3600, "{}", actions[1]);
    assert_eq!(host_tables(), host_before, "the host's nftables changed");
}
