//! picket's event vocabulary.
//!
//! Every stage of the pipeline speaks [`Event`]: a top-level `kind` plus ECS-named nested objects
//! (`process.pid`, `file.path`, `source.ip`, ...), a journal-assigned `seq`, `@timestamp`,
//! `host.id` and `event.severity`. This crate is pure: no I/O, no clock reads except in
//! [`Timestamp::now`], which only sources call.
//!
//! ```
//! use picket_event::{Event, EventKind, File, severity};
//! let mut ev = Event::new(EventKind::FileCreate, picket_event::Timestamp::from_unix_nanos(0));
//! ev.file = Some(File { path: "/etc/passwd".into(), ..Default::default() });
//! ev.event.severity = severity::LOW;
//! let json = serde_json::to_string(&ev).unwrap();
//! assert!(json.contains(r#""kind":"file.create""#));
//! assert!(json.contains(r#""@timestamp":"1970-01-01T00:00:00Z""#));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the event schema. Bump on any incompatible change; additions keep the version.
/// The schema itself is committed at `docs/schema/event.schema.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// `event.severity` values (ECS: a number; higher is worse). The steps follow the risk scores
/// Elastic's detection rules use, so SIEMs map them without a table.
pub mod severity {
    /// Routine telemetry.
    pub const INFO: u8 = 0;
    pub const LOW: u8 = 21;
    pub const MEDIUM: u8 = 47;
    pub const HIGH: u8 = 73;
    pub const CRITICAL: u8 = 99;

    /// A short name for a severity number, for humans (live view, `journal stats`).
    pub fn name(sev: u8) -> &'static str {
        match sev {
            0..LOW => "info",
            LOW..MEDIUM => "low",
            MEDIUM..HIGH => "medium",
            HIGH..CRITICAL => "high",
            _ => "critical",
        }
    }
}

/// What happened. Serialized as the dotted names in PRODUCT.md; extend, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    #[serde(rename = "process.start")]
    ProcessStart,
    #[serde(rename = "process.exit")]
    ProcessExit,
    /// A process's real or effective user or group id changed (set*id, or the exec of a
    /// setuid/setgid program).
    #[serde(rename = "process.setid")]
    ProcessSetid,
    #[serde(rename = "file.create")]
    FileCreate,
    #[serde(rename = "file.modify")]
    FileModify,
    #[serde(rename = "file.delete")]
    FileDelete,
    #[serde(rename = "file.rename")]
    FileRename,
    #[serde(rename = "file.attrib")]
    FileAttrib,
    #[serde(rename = "net.flow")]
    NetFlow,
    #[serde(rename = "net.dns")]
    NetDns,
    #[serde(rename = "auth.failure")]
    AuthFailure,
    #[serde(rename = "auth.success")]
    AuthSuccess,
    #[serde(rename = "alert")]
    Alert,
    #[serde(rename = "action")]
    Action,
    #[serde(rename = "agent.health")]
    AgentHealth,
    #[serde(rename = "journal.gap")]
    JournalGap,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 16] = [
        EventKind::ProcessStart,
        EventKind::ProcessExit,
        EventKind::ProcessSetid,
        EventKind::FileCreate,
        EventKind::FileModify,
        EventKind::FileDelete,
        EventKind::FileRename,
        EventKind::FileAttrib,
        EventKind::NetFlow,
        EventKind::NetDns,
        EventKind::AuthFailure,
        EventKind::AuthSuccess,
        EventKind::Alert,
        EventKind::Action,
        EventKind::AgentHealth,
        EventKind::JournalGap,
    ];

    /// The dotted name, as it appears in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::ProcessStart => "process.start",
            EventKind::ProcessExit => "process.exit",
            EventKind::ProcessSetid => "process.setid",
            EventKind::FileCreate => "file.create",
            EventKind::FileModify => "file.modify",
            EventKind::FileDelete => "file.delete",
            EventKind::FileRename => "file.rename",
            EventKind::FileAttrib => "file.attrib",
            EventKind::NetFlow => "net.flow",
            EventKind::NetDns => "net.dns",
            EventKind::AuthFailure => "auth.failure",
            EventKind::AuthSuccess => "auth.success",
            EventKind::Alert => "alert",
            EventKind::Action => "action",
            EventKind::AgentHealth => "agent.health",
            EventKind::JournalGap => "journal.gap",
        }
    }

    /// Parse a dotted name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// How long the journal keeps this kind when it must evict: alerts, actions and gap records
    /// outlive routine telemetry.
    pub const fn retention(self) -> Retention {
        match self {
            EventKind::Alert | EventKind::Action | EventKind::JournalGap => Retention::Keep,
            _ => Retention::Routine,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Eviction class in the journal. Lower classes are evicted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Retention {
    /// Telemetry: evicted first when the journal is full.
    Routine = 0,
    /// Alerts, actions and gap records: evicted only when nothing routine is left.
    Keep = 1,
}

/// Wall-clock time as nanoseconds since the Unix epoch; JSON form is RFC 3339 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_nanos(ns: i64) -> Timestamp {
        Timestamp(ns)
    }

    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// The current wall-clock time. Only sources call this; the policy engine takes time from
    /// events.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    pub fn to_system_time(self) -> SystemTime {
        let ns = self.0;
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
        }
    }

    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, humantime::TimestampError> {
        humantime::parse_rfc3339_weak(s).map(Timestamp::from)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        let ns = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        Timestamp(ns)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_system_time();
        // Whole seconds print without a fraction; otherwise nanosecond precision.
        if self.0 % 1_000_000_000 == 0 {
            write!(f, "{}", humantime::format_rfc3339_seconds(t))
        } else {
            write!(f, "{}", humantime::format_rfc3339_nanos(t))
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 UTC time"
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One event: what every stage passes on, what the journal stores and what `journal export`
/// prints. Optional ECS objects are omitted from JSON when absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "picket event", extend("$id" = "https://picket.invalid/schema/event.schema.json"))]
pub struct Event {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    pub kind: EventKind,
    /// Per-device sequence number, assigned by the journal, monotonically increasing across
    /// restarts. 0 (and omitted) before the event is journaled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    pub host: Host,
    pub event: EventMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// `net.flow` / `net.dns`: ECS `network.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// ECS `container.*`: the container the process runs in, when it runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// `agent.health` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// `journal.gap` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// `action` only: one step of a containment action (`event.action` names the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionDetail>,
}

impl Event {
    /// A bare event of `kind` at `timestamp`; `host.id` and `seq` are filled in by the pipeline.
    pub fn new(kind: EventKind, timestamp: Timestamp) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            kind,
            seq: 0,
            timestamp,
            host: Host::default(),
            event: EventMeta::default(),
            message: None,
            process: None,
            file: None,
            source: None,
            destination: None,
            dns: None,
            network: None,
            user: None,
            container: None,
            rule: None,
            health: None,
            gap: None,
            action: None,
        }
    }

    /// An `alert` at the trigger's time, on the trigger's host, about what the trigger is about:
    /// its `process`, `file`, `source`, `destination`, `network`, `user`, `dns` and `container`
    /// are copied, so the alert stands on its own and policies and actions can read their
    /// targets from it.
    pub fn alert_on(trigger: &Event) -> Event {
        let mut ev = Event::new(EventKind::Alert, trigger.timestamp);
        ev.host = trigger.host.clone();
        ev.process = trigger.process.clone();
        ev.file = trigger.file.clone();
        ev.source = trigger.source.clone();
        ev.destination = trigger.destination.clone();
        ev.network = trigger.network.clone();
        ev.user = trigger.user.clone();
        ev.dns = trigger.dns.clone();
        ev.container = trigger.container.clone();
        ev
    }

    /// JSON Schema for [`Event`], as committed at `docs/schema/event.schema.json`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Event)).expect("schema serializes")
    }
}

/// ECS `host.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    /// Stable device id (from `agent.device_id`, else derived from /etc/machine-id).
    pub id: String,
}

/// ECS `event.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventMeta {
    /// 0 info, 21 low, 47 medium, 73 high, 99 critical.
    pub severity: u8,
    /// Which part of picket produced it, e.g. `picket.file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// How the event was observed, e.g. `inotify`, `scan`, `netlink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// ECS `event.action`: the action captured by the event, a sub-kind finer than `kind`. For
    /// auth events the method or failure form, e.g. `password`, `publickey`, `invalid_user`,
    /// `max_attempts`, `pam`, `preauth_disconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For `alert` events: the seq of the event that triggered the alert (for a policy alert on a
    /// Sigma alert, the Sigma alert's seq). Filled in by the journal writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_seq: Option<u64>,
    /// ECS `event.duration`, in nanoseconds. For `process.exit`: how long the process lived (from
    /// its fork, or its exec when the fork was not seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

/// ECS `process.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Process {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The path the program was started by (execve's filename), symlinks not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// The file actually running: `executable` with symlinks resolved (what /proc/PID/exe points
    /// to), e.g. `/bin/busybox` for the applet `/bin/ls`. Ends in ` (deleted)` when the file was
    /// removed after exec; `/memfd:NAME (deleted)` for a memfd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// argv joined by single spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat). With `pid` it names one
    /// process across PID reuse: containment checks it before a kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// ECS `process.hash.sha256`, of a program up to 64 MiB: the file execve opened (for a `#!`
    /// script, the script) when fanotify saw the exec, else the file running (/proc/PID/exe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<FileHash>,
    /// `true` when the program runs from no ordinary file: a memfd, a file deleted after (or
    /// while) it was started, or a file under /dev/shm; `fileless_reason` says which. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fileless: Option<bool>,
    /// `memfd`, `deleted` or `dev_shm`, with `fileless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fileless_reason: Option<String>,
    /// The process's cgroup (v2 path, e.g. `/system.slice/ssh.service`), when not the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// ECS `process.user.*`: the effective user (`process.start`, `process.setid`; after the
    /// change on `process.setid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// ECS `process.real_user.*`: the real user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_user: Option<User>,
    /// ECS `process.group.*`: the effective group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    /// ECS `process.real_group.*`: the real group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_group: Option<Group>,
    /// `process.setid` only (picket's own, not ECS): the effective user before the change, as
    /// the process table knew it; absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_user: Option<User>,
    /// `process.setid` only (picket's own, not ECS): the effective group before the change, as
    /// the process table knew it; absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_group: Option<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentProcess>,
}

/// ECS `process.parent.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParentProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
}

/// ECS `file.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct File {
    pub path: String,
    /// For `file.rename`: the new path (`path` is the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Octal permission bits, e.g. `0644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<FileHash>,
}

/// ECS `file.hash.*` and `process.hash.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileHash {
    pub sha256: String,
}

/// ECS `container.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Container {
    /// The 64-hex id docker, containerd, CRI-O and podman put in the cgroup path.
    pub id: String,
    /// Which runtime the cgroup path names: `docker`, `containerd`, `crio` or `podman`, when it
    /// says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// ECS `source.*` / `destination.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// ECS `destination.domain`: for a flow, the name a DNS answer seen earlier gave this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// ECS `network.*`, on `net.flow` and `net.dns`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the IP protocol number as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `ipv4` or `ipv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// ECS direction relative to this host: `inbound`, `outbound`, `internal`, `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// IP bytes, both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Packets, both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// TCP flags seen in the flow, either direction: `SYN`, `ACK`, `FIN`, `RST`, `PSH`, `URG`,
    /// `ECE`, `CWR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<Vec<String>>,
}

/// ECS `dns.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Dns {
    pub question: DnsQuestion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ip: Option<Vec<String>>,
}

/// ECS `dns.question.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DnsQuestion {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

/// ECS `user.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// ECS `group.*`, as `process.group` and `process.real_group`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Group {
    /// The numeric group id, as text (ECS: keyword).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// ECS `rule.*`: the policy rule behind an alert or action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the rule comes from: `sigma` for Sigma rules; absent for picket policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
    /// Sigma `level`: `informational`, `low`, `medium`, `high` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The rule's author, as the rule states it (the Detection Rule License requires it on
    /// every match of a SigmaHQ rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The rule's tags, e.g. `attack.execution`, `attack.t1059.004`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// The agent's own health, carried by `agent.health` and shown by `picket status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub pid: u32,
    pub uptime_secs: u64,
    pub rss_bytes: u64,
    /// CPU used since the previous health event, in percent of one core.
    pub cpu_percent: f64,
    /// Items waiting in each bounded queue, by queue name.
    pub queue_depths: BTreeMap<String, u64>,
    /// Events dropped since start, by `stage.reason`.
    pub drops: BTreeMap<String, u64>,
    /// State of each source: `running`, `disabled`, `unavailable: <why>`, `failed: <why>`.
    pub sources: BTreeMap<String, String>,
    /// Detection counters since start: `sigma.evaluated`, `sigma.alerts.<level>`, and
    /// `sigma.below_level.<level>` (matches under `policies.sigma_min_level`, counted only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detections: BTreeMap<String, u64>,
    pub journal_bytes: u64,
    pub journal_events: u64,
    pub journal_last_seq: u64,
    /// Journaled events not yet acknowledged upstream.
    pub backlog: u64,
    /// Events evicted from the journal since it was created.
    pub journal_evicted: u64,
    /// Time of the last acknowledged upstream sync, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Timestamp>,
}

/// A hole in the sequence: events that were evicted or lost, and why. Carried by `journal.gap`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Gap {
    /// First and last seq of the range the evicted events came from.
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many events of that range are gone (alerts and actions in it may remain).
    pub count: u64,
    /// Why: `journal_full`, ...
    pub reason: String,
}

/// One step of a containment action, carried by `action` events. The action's name is in
/// `event.action` (`block_ip`, `kill`, `deny_exec`, `quarantine`, `isolate_host`, `lock_account`);
/// its target also fills the ECS field it belongs to (`source.ip`, `process.pid`, `file.path`,
/// `user.name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionDetail {
    /// `intent` (journaled before the action runs), then the outcome: `succeeded`, `failed`,
    /// `refused` (a protected target), `skipped` (budget, queue), `dry_run` (monitor mode). Later
    /// changes to what is in force: `reapplied`, `expired`, `reverted`, `revert_failed`; and
    /// `enforced` when a deny_exec rule stopped an exec.
    pub outcome: String,
    /// What the action is aimed at: an address, a pid, a path, a user name, or `host`.
    pub target: String,
    /// `monitor` or `enforce`: the mode the action was decided in.
    pub mode: String,
    /// The containment record (`picket actions list`, `picket actions revert ID`), when one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// How long it stays in force; absent: until reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// When it ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Why it was refused or skipped, or why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What failed, for `failed` and `revert_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_dotted_names() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("file.created"), None);
    }

    #[test]
    fn timestamp_is_rfc3339_and_round_trips() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2023-11-14T22:13:20.123456789Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&s).unwrap(), t);
        let whole = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
        assert_eq!(whole.to_string(), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn absent_objects_are_omitted_and_event_round_trips() {
        let mut ev = Event::new(EventKind::FileModify, Timestamp::from_unix_nanos(5));
        ev.host.id = "dev1".into();
        ev.file = Some(File { path: "/x".into(), ..Default::default() });
        let v = serde_json::to_value(&ev).unwrap();
        assert!(v.get("process").is_none());
        assert!(v.get("seq").is_none(), "seq 0 means not journaled and is omitted");
        assert_eq!(v["file"]["path"], "/x");
        assert_eq!(v["host"]["id"], "dev1");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn event_action_is_omitted_when_absent_and_round_trips() {
        let mut ev = Event::new(EventKind::AuthFailure, Timestamp::from_unix_nanos(5));
        let v = serde_json::to_value(&ev).unwrap();
        assert!(v["event"].get("action").is_none());
        ev.event.action = Some("password".into());
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["event"]["action"], "password");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
    }

    #[test]
    fn setid_ids_use_ecs_names_and_round_trip() {
        let mut ev = Event::new(EventKind::ProcessSetid, Timestamp::from_unix_nanos(5));
        let uid = |id: &str| Some(User { id: Some(id.into()), name: None });
        let gid = |id: &str| Some(Group { id: Some(id.into()), name: None });
        ev.process = Some(Process {
            pid: Some(7),
            user: uid("0"),
            real_user: uid("1000"),
            group: gid("0"),
            real_group: gid("1000"),
            previous_user: uid("1000"),
            previous_group: gid("1000"),
            ..Process::default()
        });
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], "process.setid");
        assert_eq!(v["process"]["user"]["id"], "0");
        assert_eq!(v["process"]["real_user"]["id"], "1000");
        assert_eq!(v["process"]["group"]["id"], "0");
        assert_eq!(v["process"]["real_group"]["id"], "1000");
        assert_eq!(v["process"]["previous_user"]["id"], "1000");
        assert_eq!(v["process"]["previous_group"]["id"], "1000");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
    }

    #[test]
    fn severity_names_cover_the_range() {
        assert_eq!(severity::name(severity::INFO), "info");
        assert_eq!(severity::name(severity::LOW), "low");
        assert_eq!(severity::name(severity::MEDIUM), "medium");
        assert_eq!(severity::name(severity::HIGH), "high");
        assert_eq!(severity::name(severity::CRITICAL), "critical");
        assert_eq!(severity::name(255), "critical");
    }
}
