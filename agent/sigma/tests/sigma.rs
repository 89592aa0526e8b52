//! Sigma rules on picket events: the whole SigmaHQ Linux set loads (what cannot apply is reported
//! with its reason), the shipped set loads whole, events route to their logsource category, and
//! known attack events fire the rules they should, with the author on the alert.

use std::path::{Path, PathBuf};

use picket_event::{Event, EventKind, File, ParentProcess, Process, Timestamp, User};
use picket_sigma::{Level, SigmaSet, load};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigmahq-linux")
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/sigma")
}

fn yml_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn load_dir(dir: &Path, level: Level) -> (SigmaSet, picket_sigma::Report) {
    let files = yml_files(dir);
    assert!(!files.is_empty(), "no rules under {}", dir.display());
    load(&files, level).unwrap_or_else(|e| panic!("load failed: {e:?}"))
}

fn proc_start(exe: &str, argv: &[&str]) -> Event {
    let mut ev = Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
    ev.process = Some(Process {
        pid: Some(4243),
        executable: Some(exe.into()),
        args: Some(argv.iter().map(|s| s.to_string()).collect()),
        command_line: Some(argv.join(" ")),
        working_directory: Some("/tmp".into()),
        parent: Some(ParentProcess {
            pid: Some(4242),
            executable: Some("/usr/bin/bash".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("root".into()), id: Some("0".into()) });
    ev
}

fn ids(set: &SigmaSet, ev: &Event) -> Vec<String> {
    let mut v: Vec<String> = set.matches(ev).iter().map(|m| m.rule.id.clone()).collect();
    v.sort();
    v
}

#[test]
fn embedded_pipeline_parses() {
    rsigma_eval::parse_pipeline(picket_sigma::PIPELINE).expect("pipeline parses");
}

#[test]
fn the_whole_sigmahq_linux_set_loads_and_what_cannot_apply_says_why() {
    let (set, report) = load_dir(&corpus(), Level::Medium);
    assert_eq!(report.files, 210, "the snapshot has 210 Linux rules");
    // 122 process_creation + 8 file_event + 5 network_connection + 15 keyword rules apply.
    assert_eq!(report.loaded_by_category.get("process_creation"), Some(&122));
    assert_eq!(report.loaded_by_category.get("file_event"), Some(&8));
    assert_eq!(report.loaded_by_category.get("network_connection"), Some(&5));
    assert_eq!(report.loaded(), 150, "{:?}", report.loaded_by_category);
    assert_eq!(set.len(), 150);
    // auditd (53) and the service-log rules (7) cannot apply; each is reported once with why.
    assert_eq!(report.skipped.len(), 60, "{:#?}", report.skipped);
    let auditd = report.skipped.iter().filter(|s| s.reason.contains("service `auditd`")).count();
    assert_eq!(auditd, 53);
    for s in &report.skipped {
        assert!(s.reason.starts_with("logsource service"), "{s:?}");
        assert!(s.file.exists());
    }
    let mut names: Vec<&str> = report.skipped.iter().map(|s| s.rule.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), 60, "each skipped rule reported once");
    // The OMIGOD rules test LogonId (audit login uid), which picket does not capture yet.
    assert!(
        report.partial.iter().any(|p| p.fields.iter().any(|f| f == "user.audit.id")),
        "{:#?}",
        report.partial
    );
}

#[test]
fn the_shipped_set_loads_whole() {
    let (set, report) = load_dir(&shipped(), Level::Medium);
    assert!(report.skipped.is_empty(), "{:#?}", report.skipped);
    assert_eq!(set.len(), report.files, "one rule per shipped file");
    assert!(set.rules().iter().all(|r| r.level >= Level::Medium), "only medium and above are shipped");
    assert!(set.rules().iter().all(|r| r.author.is_some()), "every shipped rule names its author");
}

#[test]
fn a_file_that_is_not_sigma_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "title: x\nlogsource: {product: linux}\ndetection: {sel: {a: 1}, condition: sel and\n",
    )
    .unwrap();
    let errors = load(std::slice::from_ref(&bad), Level::Medium).unwrap_err();
    assert!(!errors.is_empty());
    assert!(errors[0].to_string().starts_with(&bad.display().to_string()), "{}", errors[0]);
}

#[test]
fn attack_events_fire_their_rules() {
    let (set, _) = load_dir(&corpus(), Level::Medium);
    let nc = proc_start("/usr/bin/nc", &["nc", "-e", "/bin/sh", "127.0.0.1", "9"]);
    assert!(
        ids(&set, &nc).contains(&"7f734ed0-4f47-46c0-837f-6ee62505abd9".to_string()),
        "{:?}",
        ids(&set, &nc)
    );

    let tmp = proc_start("/tmp/.x/kworker", &["/tmp/.x/kworker"]);
    assert!(ids(&set, &tmp).contains(&"312b42b1-bded-4441-8b58-163a3af58775".to_string()));

    let b64 = proc_start("/usr/bin/sh", &["sh", "-c", "echo ZWNobyBoaQ== | base64 -d | sh"]);
    assert!(
        ids(&set, &b64).contains(&"ba592c6d-6888-43c3-b8c6-689b8fe47337".to_string()),
        "{:?}",
        ids(&set, &b64)
    );

    let hist = proc_start("/usr/bin/rm", &["rm", "-f", "/home/x/.bash_history"]);
    assert!(ids(&set, &hist).contains(&"1182f3b3-e716-4efa-99ab-d2685d04360f".to_string()));

    // A file event routes to file_event.
    let mut sudoers = Event::new(EventKind::FileCreate, Timestamp::from_unix_nanos(1));
    sudoers.file = Some(File { path: "/etc/sudoers.d/99-backdoor".into(), ..Default::default() });
    sudoers.process = Some(Process { executable: Some("/usr/bin/tee".into()), ..Default::default() });
    let m = set.matches(&sudoers);
    let hit = m.iter().find(|m| m.rule.id == "ddb26b76-4447-4807-871f-1b035b2bfa5d").expect("sudoers.d rule");
    assert_eq!(hit.rule.author.as_deref(), Some("Nasreddine Bencherchali (Nextron Systems)"));

    // Benign commands fire nothing at medium or above.
    for argv in
        [&["ls", "-l", "/var/log"][..], &["systemctl", "status", "ssh"][..], &["grep", "-r", "x", "/etc"][..]]
    {
        let ev = proc_start(&format!("/usr/bin/{}", argv[0]), argv);
        let high: Vec<_> = set.matches(&ev).into_iter().filter(|m| m.rule.level >= Level::Medium).collect();
        assert!(
            high.is_empty(),
            "{argv:?} fired {:?}",
            high.iter().map(|m| &m.rule.title).collect::<Vec<_>>()
        );
    }
}

#[test]
fn events_route_by_kind_to_their_category() {
    let (set, _) = load_dir(&corpus(), Level::Informational);
    // The same process fields on a file event do not fire process_creation rules.
    let mut ev = proc_start("/tmp/.x/kworker", &["/tmp/.x/kworker"]);
    ev.kind = EventKind::FileModify;
    ev.file = Some(File { path: "/var/tmp/x".into(), ..Default::default() });
    assert!(set.matches(&ev).iter().all(|m| m.rule.category.as_deref() != Some("process_creation")));
    // Kinds Sigma does not look at match nothing, even with an attack command line.
    for kind in [EventKind::ProcessExit, EventKind::ProcessSetid, EventKind::Alert, EventKind::Action] {
        let mut ev = proc_start("/usr/bin/nc", &["nc", "-e", "/bin/sh", "127.0.0.1", "9"]);
        ev.kind = kind;
        assert!(set.matches(&ev).is_empty(), "{kind:?}");
    }
}

#[test]
fn alerts_carry_the_rule_and_the_matched_event_and_low_levels_are_only_counted() {
    let (mut set, _) = load_dir(&corpus(), Level::High);
    let mut ev = proc_start("/usr/bin/nc", &["nc", "-e", "/bin/sh", "127.0.0.1", "9"]);
    ev.seq = 41;
    let mut out = Vec::new();
    set.detect(&ev, &mut out);
    let a = out
        .iter()
        .find(|a| a.rule.as_ref().is_some_and(|r| r.id == "7f734ed0-4f47-46c0-837f-6ee62505abd9"))
        .expect("netcat alert");
    let r = a.rule.as_ref().unwrap();
    assert_eq!(a.kind, EventKind::Alert);
    assert_eq!(r.ruleset.as_deref(), Some("sigma"));
    assert_eq!(r.level.as_deref(), Some("high"));
    assert_eq!(r.name.as_deref(), Some("Potential Netcat Reverse Shell Execution"));
    assert!(r.author.as_deref().is_some_and(|s| !s.is_empty()));
    assert!(r.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == "attack.execution")), "{:?}", r.tags);
    assert_eq!(a.event.trigger_seq, Some(41));
    assert_eq!(a.event.severity, picket_event::severity::HIGH);
    assert_eq!(a.process, ev.process, "the alert carries the matched process");
    assert!(out.iter().all(|a| a.rule.as_ref().unwrap().level.as_deref() != Some("low")));
    // "Linux Network Service Scanning Tools Execution" is low: counted, not raised.
    assert!(set.stats().below_level.get("low").copied().unwrap_or(0) >= 1, "{:?}", set.stats());
    assert_eq!(set.stats().alerts.values().sum::<u64>(), out.len() as u64);
    assert_eq!(set.stats().evaluated, 1);
}

#[test]
fn flows_route_to_network_connection_with_initiated_mapped_to_direction() {
    use picket_event::{Endpoint, Network};
    let (set, _) = load_dir(&corpus(), Level::Medium);
    let flow = |direction: &str, ip: &str| {
        let mut ev = Event::new(EventKind::NetFlow, Timestamp::from_unix_nanos(1));
        ev.network = Some(Network {
            direction: Some(direction.into()),
            transport: Some("tcp".into()),
            ..Default::default()
        });
        ev.destination = Some(Endpoint { ip: Some(ip.into()), port: Some(4444), ..Default::default() });
        ev
    };
    let callback = "dbfc7c98-04ab-4ab7-aa94-c74d22aa7376".to_string();
    assert!(ids(&set, &flow("outbound", "203.0.113.7")).contains(&callback));
    assert!(
        !ids(&set, &flow("inbound", "203.0.113.7")).contains(&callback),
        "Initiated: 'true' is outbound only"
    );
    assert!(!ids(&set, &flow("outbound", "10.1.2.3")).contains(&callback), "private ranges are filtered");
}
