//! Real traffic, real tools, an independent decoder: two network namespaces joined by a veth pair;
//! in one, a python http.server and dnsmasq; from the other, curl (IPv4 and IPv6), dig (A, AAAA,
//! NXDOMAIN, over UDP and TCP), ping and an nmap SYN scan. tcpdump records it three ways
//! (Ethernet on the veth, Linux cooked v1 and v2 on `any`), and picket's TCP flows and DNS
//! messages must match what tshark reports for the same files.
//!
//! NEEDS ROOT and ip, tcpdump, tshark, python3, dnsmasq, dig, curl, nmap, ping
//! (scripts/test-deps.sh installs them). Without them the test prints SKIPPED loudly and passes;
//! CI runs as root with everything installed. Network changes happen only inside the namespaces
//! the test creates; the namespaces and every daemon started are removed on any exit (Drop).
//!
//! `PICKET_SAVE_PCAPS=DIR` copies the captures out (that is how `tests/data/*.pcap` were made).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Lab {
    a: String,
    b: String,
    /// Processes this test started, by pid; each is killed on drop.
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    fn ns(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    fn in_a(&self, args: &[&str]) {
        let out = self.ns(&self.a, args).output().unwrap();
        assert!(out.status.success(), "{args:?} in {}: {}", self.a, String::from_utf8_lossy(&out.stderr));
    }

    fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> &mut Child {
        let child = self
            .ns(ns, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.children.push((name.to_string(), child));
        &mut self.children.last_mut().unwrap().1
    }

    /// Start tcpdump and wait until it says it is listening.
    fn tcpdump(&mut self, name: &str, args: &[&str]) -> PathBuf {
        let file = self.dir.path().join(format!("{name}.pcap"));
        let mut full =
            vec!["tcpdump", "-n", "-U", "--immediate-mode", "-B", "16384", "-w", file.to_str().unwrap()];
        full.extend(args);
        let a = self.a.clone();
        let child = self.spawn(name, &a, &full);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("tcpdump {name} ended: {seen}");
            }
            seen.push_str(&line);
            if line.contains("listening on") {
                break;
            }
        }
        // Keep reading its stderr: a closed pipe would kill tcpdump with SIGPIPE when it next writes.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut rest);
            if !rest.trim().is_empty() {
                eprintln!("tcpdump: {}", rest.trim());
            }
        });
        file
    }

    fn stop(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            // SIGINT makes tcpdump flush and close the file; kill only the process we started.
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let uid =
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.ok().as_deref() != Some("0") {
        missing.push("root");
    }
    for tool in ["ip", "tcpdump", "tshark", "python3", "dnsmasq", "dig", "curl", "nmap", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(tool);
        }
    }
    missing
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn compare(file: &Path) {
    let (events, report) = picket_events(file);
    assert!(!report.truncated, "{}: truncated", file.display());
    assert_eq!(report.stats.frames, tshark_frames(file), "{}: frame count", file.display());
    assert_eq!(report.stats.malformed, 0, "{}: {:?}", file.display(), report.stats);
    let ours = picket_tcp(&events);
    let theirs = tshark_tcp(file);
    assert!(
        theirs.len() > 150,
        "{}: expected the scan's many TCP streams, tshark saw {}",
        file.display(),
        theirs.len()
    );
    if ours != theirs {
        let only_ours: Vec<_> = ours.iter().filter(|c| !theirs.contains(c)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|c| !ours.contains(c)).collect();
        panic!(
            "{}: TCP flows differ ({} picket, {} tshark)\nonly picket: {only_ours:#?}\nonly tshark: {only_theirs:#?}",
            file.display(),
            ours.len(),
            theirs.len()
        );
    }
    let dns_ours = picket_dns(&events);
    let dns_theirs = tshark_dns(file);
    assert!(dns_theirs.len() >= 10, "{}: expected DNS traffic", file.display());
    assert_eq!(dns_ours, dns_theirs, "{}: DNS differs", file.display());
    println!("{}: {} TCP flows and {} DNS messages match tshark", file.display(), ours.len(), dns_ours.len());
}

#[test]
fn flows_and_dns_from_real_tools_in_namespaces_match_tshark() {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!(
            "\n*** SKIPPED flows_and_dns_from_real_tools_in_namespaces_match_tshark: needs {missing:?} ***\n"
        );
        return;
    }
    let id = std::process::id();
    let mut lab = Lab {
        a: format!("pkt-neta-{id}"),
        b: format!("pkt-netb-{id}"),
        children: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let (a, b) = (lab.a.clone(), lab.b.clone());
    run(&["ip", "netns", "add", &a]);
    run(&["ip", "netns", "add", &b]);
    // The veth is created inside namespace a with its peer in b: no host interface is touched.
    run(&["ip", "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b]);
    for (ns, dev, v4, v6) in
        [(&a, "va", "10.77.0.1/24", "fd77::1/64"), (&b, "vb", "10.77.0.2/24", "fd77::2/64")]
    {
        run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
        run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let eth = lab.tcpdump("eth", &["-i", "va"]);
    let sll = lab.tcpdump("sll", &["-i", "any", "-y", "LINUX_SLL"]);
    let sll2 = lab.tcpdump("sll2", &["-i", "any", "-y", "LINUX_SLL2"]);

    let www = lab.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from picket's lab\n".repeat(200)).unwrap();
    let www_s = www.to_str().unwrap().to_string();
    lab.spawn("http", &b, &["python3", "-m", "http.server", "8080", "--bind", "::", "--directory", &www_s]);
    let pidfile = lab.dir.path().join("dnsmasq.pid");
    let pidfile_arg = format!("--pid-file={}", pidfile.display());
    lab.spawn(
        "dnsmasq",
        &b,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=10.77.0.2",
            "--user=root",
            &pidfile_arg,
            "--address=/web.picket.test/10.77.0.2",
            "--host-record=v6.picket.test,fd77::2",
            "--host-record=both.picket.test,10.77.0.7,fd77::7",
            "--address=/blocked.picket.test/",
        ],
    );
    let dig = |lab: &Lab, extra: &[&str]| {
        let mut args = vec!["dig", "+tries=1", "+time=2", "@10.77.0.2"];
        args.extend(extra);
        lab.ns(&lab.a, &args).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    wait_until("dnsmasq", || dig(&lab, &["web.picket.test", "A"]));
    wait_until("http.server", || {
        lab.ns(&a, &["curl", "-sf", "-o", "/dev/null", "http://10.77.0.2:8080/"])
            .status()
            .is_ok_and(|s| s.success())
    });

    for _ in 0..3 {
        lab.in_a(&["curl", "-sf", "-o", "/dev/null", "http://10.77.0.2:8080/index.html"]);
    }
    lab.in_a(&["curl", "-sf", "-o", "/dev/null", "-g", "http://[fd77::2]:8080/index.html"]);
    lab.in_a(&["curl", "-s", "-o", "/dev/null", "http://10.77.0.2:8080/missing"]);
    for q in [
        &["web.picket.test", "A"][..],
        &["v6.picket.test", "AAAA"],
        &["both.picket.test", "A"],
        &["both.picket.test", "AAAA"],
        &["nope.picket.test", "A"],
        &["blocked.picket.test", "A"],
        &["web.picket.test", "MX"],
        &["+tcp", "web.picket.test", "A"],
    ] {
        assert!(dig(&lab, q), "dig {q:?}");
    }
    lab.in_a(&["ping", "-c", "2", "-i", "0.2", "10.77.0.2"]);
    lab.in_a(&[
        "nmap",
        "-sS",
        "-Pn",
        "-n",
        "--max-rate",
        "300",
        "--max-retries",
        "0",
        "-p",
        "1-200,8080",
        "10.77.0.2",
    ]);
    // Let the last packets reach the captures, then stop them cleanly.
    std::thread::sleep(Duration::from_millis(1500));
    for n in ["eth", "sll", "sll2"] {
        lab.stop(n);
    }
    if let Ok(dir) = std::env::var("PICKET_SAVE_PCAPS") {
        for f in [&eth, &sll, &sll2] {
            std::fs::copy(f, Path::new(&dir).join(f.file_name().unwrap())).unwrap();
        }
    }
    for f in [&eth, &sll, &sll2] {
        compare(f);
    }
    // The three link types carry the same traffic: the same flows and DNS messages in all three.
    let (e1, _) = picket_events(&eth);
    let (e2, _) = picket_events(&sll2);
    assert_eq!(picket_tcp(&e1), picket_tcp(&e2));
    assert_eq!(picket_dns(&e1), picket_dns(&e2));
}
