//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::Path;

use picket_event::{Event, EventKind, File, FileHash, Process, Rule, Timestamp, User, severity};

pub const HOST: &str = "dev-test";
pub const T0: i64 = 1_700_000_000_000_000_000;

/// A routine event of about 300 bytes of JSON, like the process source emits.
pub fn process_start(i: u64) -> Event {
    let mut ev =
        Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(T0 + i64::try_from(i).unwrap()));
    ev.host.id = HOST.into();
    ev.event.dataset = Some("picket.process".into());
    let args = vec!["/usr/bin/curl".to_owned(), "-fsSL".to_owned(), format!("https://example.invalid/{i}")];
    ev.process = Some(Process {
        pid: Some(4242),
        name: Some("curl".into()),
        executable: Some("/usr/bin/curl".into()),
        command_line: Some(args.join(" ")),
        args: Some(args),
        ..Default::default()
    });
    ev.user = Some(User { name: Some("www-data".into()), id: Some("33".into()) });
    ev
}

pub fn file_modify(i: u64) -> Event {
    let mut ev =
        Event::new(EventKind::FileModify, Timestamp::from_unix_nanos(T0 + i64::try_from(i).unwrap()));
    ev.host.id = HOST.into();
    ev.file = Some(File {
        path: format!("/etc/cron.d/job{i}"),
        hash: Some(FileHash { sha256: "ab".repeat(32) }),
        ..Default::default()
    });
    ev
}

pub fn alert(i: u64) -> Event {
    let mut ev = Event::new(EventKind::Alert, Timestamp::from_unix_nanos(T0 + i64::try_from(i).unwrap()));
    ev.host.id = HOST.into();
    ev.event.severity = severity::HIGH;
    ev.rule = Some(Rule { id: format!("rule-{i}"), ..Default::default() });
    ev
}

/// The whole file, for byte-for-byte comparisons.
pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

pub fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

pub fn has_sidecars(path: &Path) -> bool {
    sidecar(path, "-wal").exists() || sidecar(path, "-shm").exists()
}

/// Everything `export` yields, parsed.
pub fn exported(j: &picket_journal::Journal, since: u64) -> Vec<Event> {
    let mut out = Vec::new();
    j.export(since, |line| {
        out.push(serde_json::from_str(line).unwrap());
        Ok(())
    })
    .unwrap();
    out
}
