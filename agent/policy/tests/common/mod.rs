//! Shared by the no-allocation test and the benchmark: 100 realistic rules and event streams.
#![allow(dead_code)]

use picket_event::{Dns, DnsQuestion, Endpoint, Event, EventKind, File, Process, Timestamp, User};

/// 100 rules: a mix of equality, in-list, prefix, suffix, glob, regex, CIDR and numeric tests over
/// process, file, network, DNS and auth events, ten of them thresholds.
pub fn hundred_rules() -> String {
    let mut y = String::new();
    for i in 0..100 {
        let (on, when, extra) = match i % 10 {
            0 => ("process.start", format!(r#"process.name == "miner{i}""#), ""),
            1 => (
                "process.start",
                format!(r#"process.name in ["nc{i}", "ncat{i}", "socat{i}", "telnetd{i}"]"#),
                "",
            ),
            2 => (
                "process.start",
                format!(
                    r#"process.executable startswith ["/tmp/.x{i}/", "/dev/shm/.x{i}/"] and user.name != "builder""#
                ),
                "",
            ),
            3 => (
                "process.start",
                format!(r#"process.command_line matches "curl [^|]*\\| *(ba)?sh -s{i}""#),
                "",
            ),
            4 => (
                "net.flow",
                format!(
                    r#"destination.ip cidr ["198.18.{i}.0/24", "2001:db8:{i}::/48"] and destination.port == 4444"#
                ),
                "",
            ),
            5 => ("file.create", format!(r#"file.path glob "/etc/cron.d/zz{i}*""#), ""),
            6 => (
                "net.dns",
                format!(r#"dns.question.name endswith [".c2-{i}.example", ".pool-{i}.example"]"#),
                "",
            ),
            7 => (
                "auth.failure",
                format!(r#"process.name == "svc{i}" and source.ip exists"#),
                "  threshold: {count: 5, within: 5m, by: [source.ip]}\n",
            ),
            8 => (
                "file.modify",
                format!(
                    r#"file.path in ["/etc/shadow.{i}", "/etc/sudoers.{i}", "/root/.ssh/authorized_keys.{i}"]"#
                ),
                "",
            ),
            _ => (
                "process.start",
                format!(r#"process.parent.name == "httpd{i}" and process.name in ["sh", "bash", "dash"]"#),
                "",
            ),
        };
        y.push_str(&format!(
            "- id: bench-{i}\n  description: benchmark rule {i}\n  mitre: T1059\n  on: {on}\n  when: '{}'\n{extra}  severity: medium\n",
            when.replace('\'', "''")
        ));
    }
    y
}

fn proc_event(t: i64, name: &str, exe: &str, cmd: &str, parent: &str) -> Event {
    let mut ev = Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(t));
    ev.process = Some(Process {
        pid: Some(4000),
        name: Some(name.into()),
        executable: Some(exe.into()),
        command_line: Some(cmd.into()),
        args: Some(cmd.split(' ').map(String::from).collect()),
        parent: Some(picket_event::ParentProcess {
            pid: Some(1),
            name: Some(parent.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("www-data".into()), id: Some("33".into()) });
    ev
}

/// A mixed stream where no rule of [`hundred_rules`] matches.
pub fn non_matching_events(n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = i64::try_from(i).unwrap() * 1_000_000;
        let ev = match i % 10 {
            0..=3 => proc_event(t, "bash", "/usr/bin/bash", "bash -c ls -la /var/log", "sshd"),
            4 => proc_event(
                t,
                "curl",
                "/usr/bin/curl",
                "curl -s https://updates.example/manifest.json -o /tmp/m",
                "cron",
            ),
            5 => {
                let mut ev = Event::new(EventKind::FileCreate, Timestamp::from_unix_nanos(t));
                ev.file =
                    Some(File { path: "/var/lib/app/cache/item-1234.tmp".into(), ..Default::default() });
                ev
            }
            6 => {
                let mut ev = Event::new(EventKind::FileModify, Timestamp::from_unix_nanos(t));
                ev.file = Some(File { path: "/etc/hosts".into(), ..Default::default() });
                ev
            }
            7 => {
                let mut ev = Event::new(EventKind::NetFlow, Timestamp::from_unix_nanos(t));
                ev.source =
                    Some(Endpoint { ip: Some("10.0.0.5".into()), port: Some(51234), ..Default::default() });
                ev.destination = Some(Endpoint {
                    ip: Some("93.184.216.34".into()),
                    port: Some(443),
                    ..Default::default()
                });
                ev
            }
            8 => {
                let mut ev = Event::new(EventKind::NetDns, Timestamp::from_unix_nanos(t));
                ev.dns = Some(Dns {
                    question: DnsQuestion { name: "time.example.org".into(), r#type: Some("A".into()) },
                    ..Default::default()
                });
                ev
            }
            _ => {
                let mut ev = Event::new(EventKind::AuthFailure, Timestamp::from_unix_nanos(t));
                ev.process =
                    Some(Process { name: Some("sshd".into()), pid: Some(222), ..Default::default() });
                ev.source = Some(Endpoint {
                    ip: Some("203.0.113.9".into()),
                    port: Some(40000),
                    ..Default::default()
                });
                ev.user = Some(User { name: Some("root".into()), id: None });
                ev
            }
        };
        out.push(ev);
    }
    out
}

/// Mostly non-matching, with 1 % of events matching a threshold rule (`bench-7`, from a handful
/// of sources) and some matching a plain rule.
pub fn mixed_events(n: usize) -> Vec<Event> {
    let mut out = non_matching_events(n);
    for (i, ev) in out.iter_mut().enumerate() {
        if i % 100 == 99 {
            let mut m = Event::new(EventKind::AuthFailure, ev.timestamp);
            m.process = Some(Process { name: Some("svc7".into()), pid: Some(222), ..Default::default() });
            m.source = Some(Endpoint { ip: Some(format!("198.51.100.{}", i % 7)), ..Default::default() });
            *ev = m;
        } else if i % 1000 == 500 {
            *ev = proc_event(ev.timestamp.unix_nanos(), "miner0", "/tmp/miner0", "miner0 --pool x", "bash");
        }
    }
    out
}
