//! Field paths, compiled to accessors, and which event kinds carry which fields.
//!
//! A rule names fields by their ECS dotted path (`source.ip`). At load the path becomes a
//! [`Field`]: reading it from an event is a `match` on the enum, never a string lookup. Each field
//! belongs to a [`Group`] (the ECS object it lives in, or a part of one that only some kinds fill),
//! and [`carries`] says which kinds can have that group at all, so a rule that reads `file.path`
//! on `auth.failure` is refused at load instead of silently never matching.

use std::fmt::Write as _;

use picket_event::{Event, EventKind};

/// What a field holds, which decides the operators it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Text.
    Str,
    /// An integer (pid, port, severity, size, ...).
    Num,
    /// An IP address as text: string operators plus `cidr`.
    Ip,
    /// A list of text (`process.args`): an operator holds if it holds for any element.
    StrList,
    /// A list of IP addresses (`dns.resolved_ip`).
    IpList,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Str => "text",
            Type::Num => "a number",
            Type::Ip => "an IP address",
            Type::StrList => "a list of text",
            Type::IpList => "a list of IP addresses",
        }
    }

    pub fn is_textual(self) -> bool {
        !matches!(self, Type::Num)
    }

    pub fn is_ip(self) -> bool {
        matches!(self, Type::Ip | Type::IpList)
    }
}

/// The part of an event a field lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// On every event: `message`, `host.id`, `event.*` (`severity`, `dataset`, `module`, `action`,
    /// `duration`).
    Base,
    Process,
    /// `process.exit_code`: only `process.exit`.
    ProcessExit,
    /// `process.user.*`, `process.real_user.*`, `process.group.id`, `process.real_group.id`:
    /// the ids the process runs with, on `process.start` and `process.setid`.
    ProcessIds,
    /// `process.previous_user.id`, `process.previous_group.id`: only `process.setid`.
    ProcessSetid,
    File,
    /// `file.target_path`: only `file.rename`.
    FileRename,
    Source,
    Destination,
    Dns,
    /// `network.*`: net.flow, net.dns.
    Network,
    User,
    Rule,
}

/// Whether events of `kind` can ever carry fields of `group`.
pub fn carries(kind: EventKind, group: Group) -> bool {
    use EventKind as K;
    use Group as G;
    match group {
        G::Base => true,
        G::Process => matches!(
            kind,
            K::ProcessStart
                | K::ProcessExit
                | K::ProcessSetid
                | K::FileCreate
                | K::FileModify
                | K::FileDelete
                | K::FileRename
                | K::FileAttrib
                | K::NetFlow
                | K::NetDns
                | K::AuthFailure
                | K::AuthSuccess
                | K::Alert
                | K::Action
        ),
        G::ProcessExit => matches!(kind, K::ProcessExit | K::Alert | K::Action),
        G::ProcessIds => matches!(kind, K::ProcessStart | K::ProcessSetid | K::Alert | K::Action),
        G::ProcessSetid => matches!(kind, K::ProcessSetid | K::Alert | K::Action),
        G::File => matches!(
            kind,
            K::FileCreate
                | K::FileModify
                | K::FileDelete
                | K::FileRename
                | K::FileAttrib
                | K::Alert
                | K::Action
        ),
        G::FileRename => matches!(kind, K::FileRename | K::Alert | K::Action),
        G::Source => {
            matches!(kind, K::NetFlow | K::NetDns | K::AuthFailure | K::AuthSuccess | K::Alert | K::Action)
        }
        G::Destination => matches!(kind, K::NetFlow | K::NetDns | K::Alert | K::Action),
        G::Dns => matches!(kind, K::NetDns | K::Alert),
        G::Network => matches!(kind, K::NetFlow | K::NetDns | K::Alert | K::Action),
        G::User => matches!(
            kind,
            K::ProcessStart
                | K::ProcessExit
                | K::ProcessSetid
                | K::FileCreate
                | K::FileModify
                | K::FileDelete
                | K::FileRename
                | K::FileAttrib
                | K::NetFlow
                | K::AuthFailure
                | K::AuthSuccess
                | K::Alert
                | K::Action
        ),
        G::Rule => matches!(kind, K::Alert | K::Action),
    }
}

macro_rules! fields {
    ($($variant:ident = $path:literal : $ty:ident in $group:ident;)*) => {
        /// A field a rule can read, by its ECS path.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Field { $($variant,)* }

        /// Every field: path, accessor, type, group.
        pub const FIELDS: &[(&str, Field, Type, Group)] = &[
            $(($path, Field::$variant, Type::$ty, Group::$group),)*
        ];
    };
}

fields! {
    Message = "message": Str in Base;
    HostId = "host.id": Str in Base;
    EventSeverity = "event.severity": Num in Base;
    EventDataset = "event.dataset": Str in Base;
    EventModule = "event.module": Str in Base;
    EventAction = "event.action": Str in Base;
    EventDuration = "event.duration": Num in Base;
    ProcessPid = "process.pid": Num in Process;
    ProcessName = "process.name": Str in Process;
    ProcessExecutable = "process.executable": Str in Process;
    ProcessResolvedExecutable = "process.resolved_executable": Str in Process;
    ProcessArgs = "process.args": StrList in Process;
    ProcessCommandLine = "process.command_line": Str in Process;
    ProcessWorkingDirectory = "process.working_directory": Str in Process;
    ProcessEntityId = "process.entity_id": Str in Process;
    ProcessExitCode = "process.exit_code": Num in ProcessExit;
    ProcessStartTicks = "process.start_ticks": Num in Process;
    ProcessHashSha256 = "process.hash.sha256": Str in Process;
    ProcessFilelessReason = "process.fileless_reason": Str in Process;
    ProcessCgroup = "process.cgroup": Str in Process;
    ContainerId = "container.id": Str in Process;
    ProcessUserId = "process.user.id": Str in ProcessIds;
    ProcessUserName = "process.user.name": Str in ProcessIds;
    ProcessRealUserId = "process.real_user.id": Str in ProcessIds;
    ProcessRealUserName = "process.real_user.name": Str in ProcessIds;
    ProcessGroupId = "process.group.id": Str in ProcessIds;
    ProcessRealGroupId = "process.real_group.id": Str in ProcessIds;
    ProcessPreviousUserId = "process.previous_user.id": Str in ProcessSetid;
    ProcessPreviousGroupId = "process.previous_group.id": Str in ProcessSetid;
    ProcessParentPid = "process.parent.pid": Num in Process;
    ProcessParentName = "process.parent.name": Str in Process;
    ProcessParentExecutable = "process.parent.executable": Str in Process;
    ProcessParentCommandLine = "process.parent.command_line": Str in Process;
    FilePath = "file.path": Str in File;
    FileTargetPath = "file.target_path": Str in FileRename;
    FileType = "file.type": Str in File;
    FileSize = "file.size": Num in File;
    FileInode = "file.inode": Num in File;
    FileMode = "file.mode": Str in File;
    FileUid = "file.uid": Num in File;
    FileGid = "file.gid": Num in File;
    FileHashSha256 = "file.hash.sha256": Str in File;
    SourceIp = "source.ip": Ip in Source;
    SourcePort = "source.port": Num in Source;
    SourceBytes = "source.bytes": Num in Source;
    SourcePackets = "source.packets": Num in Source;
    DestinationIp = "destination.ip": Ip in Destination;
    DestinationPort = "destination.port": Num in Destination;
    DestinationBytes = "destination.bytes": Num in Destination;
    DestinationPackets = "destination.packets": Num in Destination;
    DestinationDomain = "destination.domain": Str in Destination;
    NetworkTransport = "network.transport": Str in Network;
    NetworkType = "network.type": Str in Network;
    NetworkDirection = "network.direction": Str in Network;
    NetworkBytes = "network.bytes": Num in Network;
    NetworkPackets = "network.packets": Num in Network;
    NetworkTcpFlags = "network.tcp_flags": StrList in Network;
    DnsQuestionName = "dns.question.name": Str in Dns;
    DnsQuestionType = "dns.question.type": Str in Dns;
    DnsResponseCode = "dns.response_code": Str in Dns;
    DnsResolvedIp = "dns.resolved_ip": IpList in Dns;
    UserName = "user.name": Str in User;
    UserId = "user.id": Str in User;
    RuleId = "rule.id": Str in Rule;
    RuleName = "rule.name": Str in Rule;
    RuleDescription = "rule.description": Str in Rule;
    RuleRuleset = "rule.ruleset": Str in Rule;
    RuleLevel = "rule.level": Str in Rule;
    RuleAuthor = "rule.author": Str in Rule;
    RuleTags = "rule.tags": StrList in Rule;
}

/// A field's value in one event, borrowed: reading allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val<'a> {
    Missing,
    Str(&'a str),
    Num(i64),
    List(&'a [String]),
}

fn num<T: TryInto<i64>>(v: Option<T>) -> Val<'static> {
    match v {
        Some(n) => Val::Num(n.try_into().unwrap_or(i64::MAX)),
        None => Val::Missing,
    }
}

fn text(v: Option<&String>) -> Val<'_> {
    v.map_or(Val::Missing, |s| Val::Str(s))
}

impl Field {
    /// Look a path up. `None` if no such field exists.
    pub fn parse(path: &str) -> Option<(Field, Type, Group)> {
        FIELDS.iter().find(|(p, ..)| *p == path).map(|&(_, f, t, g)| (f, t, g))
    }

    pub fn path(self) -> &'static str {
        FIELDS.iter().find(|(_, f, ..)| *f == self).map_or("?", |(p, ..)| p)
    }

    pub fn ty(self) -> Type {
        FIELDS.iter().find(|(_, f, ..)| *f == self).map_or(Type::Str, |&(_, _, t, _)| t)
    }

    pub fn group(self) -> Group {
        FIELDS.iter().find(|(_, f, ..)| *f == self).map_or(Group::Base, |&(_, _, _, g)| g)
    }

    /// Read this field from an event.
    #[inline]
    pub fn get(self, ev: &Event) -> Val<'_> {
        use Field as F;
        // Each arm reads only the object it needs: this is the hottest code in evaluation.
        let p = || ev.process.as_ref();
        let pp = || ev.process.as_ref().and_then(|p| p.parent.as_ref());
        let f = || ev.file.as_ref();
        let s = || ev.source.as_ref();
        let d = || ev.destination.as_ref();
        let dns = || ev.dns.as_ref();
        let n = || ev.network.as_ref();
        let u = || ev.user.as_ref();
        let r = || ev.rule.as_ref();
        match self {
            F::Message => text(ev.message.as_ref()),
            F::HostId => Val::Str(&ev.host.id),
            F::EventSeverity => Val::Num(i64::from(ev.event.severity)),
            F::EventDataset => text(ev.event.dataset.as_ref()),
            F::EventModule => text(ev.event.module.as_ref()),
            F::EventAction => text(ev.event.action.as_ref()),
            F::EventDuration => num(ev.event.duration),
            F::ProcessPid => num(p().and_then(|p| p.pid)),
            F::ProcessName => text(p().and_then(|p| p.name.as_ref())),
            F::ProcessExecutable => text(p().and_then(|p| p.executable.as_ref())),
            F::ProcessResolvedExecutable => text(p().and_then(|p| p.resolved_executable.as_ref())),
            F::ProcessArgs => p().and_then(|p| p.args.as_deref()).map_or(Val::Missing, Val::List),
            F::ProcessCommandLine => text(p().and_then(|p| p.command_line.as_ref())),
            F::ProcessWorkingDirectory => text(p().and_then(|p| p.working_directory.as_ref())),
            F::ProcessEntityId => text(p().and_then(|p| p.entity_id.as_ref())),
            F::ProcessExitCode => num(p().and_then(|p| p.exit_code)),
            F::ProcessStartTicks => num(p().and_then(|p| p.start_ticks)),
            F::ProcessHashSha256 => {
                p().and_then(|p| p.hash.as_ref()).map_or(Val::Missing, |h| Val::Str(&h.sha256))
            }
            F::ProcessFilelessReason => text(p().and_then(|p| p.fileless_reason.as_ref())),
            F::ProcessCgroup => text(p().and_then(|p| p.cgroup.as_ref())),
            F::ContainerId => ev.container.as_ref().map_or(Val::Missing, |c| Val::Str(&c.id)),
            F::ProcessUserId => text(p().and_then(|p| p.user.as_ref()).and_then(|u| u.id.as_ref())),
            F::ProcessUserName => text(p().and_then(|p| p.user.as_ref()).and_then(|u| u.name.as_ref())),
            F::ProcessRealUserId => text(p().and_then(|p| p.real_user.as_ref()).and_then(|u| u.id.as_ref())),
            F::ProcessRealUserName => {
                text(p().and_then(|p| p.real_user.as_ref()).and_then(|u| u.name.as_ref()))
            }
            F::ProcessGroupId => text(p().and_then(|p| p.group.as_ref()).and_then(|g| g.id.as_ref())),
            F::ProcessRealGroupId => {
                text(p().and_then(|p| p.real_group.as_ref()).and_then(|g| g.id.as_ref()))
            }
            F::ProcessPreviousUserId => {
                text(p().and_then(|p| p.previous_user.as_ref()).and_then(|u| u.id.as_ref()))
            }
            F::ProcessPreviousGroupId => {
                text(p().and_then(|p| p.previous_group.as_ref()).and_then(|g| g.id.as_ref()))
            }
            F::ProcessParentPid => num(pp().and_then(|p| p.pid)),
            F::ProcessParentName => text(pp().and_then(|p| p.name.as_ref())),
            F::ProcessParentExecutable => text(pp().and_then(|p| p.executable.as_ref())),
            F::ProcessParentCommandLine => text(pp().and_then(|p| p.command_line.as_ref())),
            F::FilePath => f().map_or(Val::Missing, |f| Val::Str(&f.path)),
            F::FileTargetPath => text(f().and_then(|f| f.target_path.as_ref())),
            F::FileType => text(f().and_then(|f| f.r#type.as_ref())),
            F::FileSize => num(f().and_then(|f| f.size)),
            F::FileInode => num(f().and_then(|f| f.inode)),
            F::FileMode => text(f().and_then(|f| f.mode.as_ref())),
            F::FileUid => num(f().and_then(|f| f.uid)),
            F::FileGid => num(f().and_then(|f| f.gid)),
            F::FileHashSha256 => {
                f().and_then(|f| f.hash.as_ref()).map_or(Val::Missing, |h| Val::Str(&h.sha256))
            }
            F::SourceIp => text(s().and_then(|s| s.ip.as_ref())),
            F::SourcePort => num(s().and_then(|s| s.port)),
            F::SourceBytes => num(s().and_then(|s| s.bytes)),
            F::SourcePackets => num(s().and_then(|s| s.packets)),
            F::DestinationIp => text(d().and_then(|d| d.ip.as_ref())),
            F::DestinationPort => num(d().and_then(|d| d.port)),
            F::DestinationBytes => num(d().and_then(|d| d.bytes)),
            F::DestinationPackets => num(d().and_then(|d| d.packets)),
            F::DestinationDomain => text(d().and_then(|d| d.domain.as_ref())),
            F::NetworkTransport => text(n().and_then(|n| n.transport.as_ref())),
            F::NetworkType => text(n().and_then(|n| n.r#type.as_ref())),
            F::NetworkDirection => text(n().and_then(|n| n.direction.as_ref())),
            F::NetworkBytes => num(n().and_then(|n| n.bytes)),
            F::NetworkPackets => num(n().and_then(|n| n.packets)),
            F::NetworkTcpFlags => n().and_then(|n| n.tcp_flags.as_deref()).map_or(Val::Missing, Val::List),
            F::DnsQuestionName => dns().map_or(Val::Missing, |d| Val::Str(&d.question.name)),
            F::DnsQuestionType => text(dns().and_then(|d| d.question.r#type.as_ref())),
            F::DnsResponseCode => text(dns().and_then(|d| d.response_code.as_ref())),
            F::DnsResolvedIp => dns().and_then(|d| d.resolved_ip.as_deref()).map_or(Val::Missing, Val::List),
            F::UserName => text(u().and_then(|u| u.name.as_ref())),
            F::UserId => text(u().and_then(|u| u.id.as_ref())),
            F::RuleId => r().map_or(Val::Missing, |r| Val::Str(&r.id)),
            F::RuleName => text(r().and_then(|r| r.name.as_ref())),
            F::RuleDescription => text(r().and_then(|r| r.description.as_ref())),
            F::RuleRuleset => text(r().and_then(|r| r.ruleset.as_ref())),
            F::RuleLevel => text(r().and_then(|r| r.level.as_ref())),
            F::RuleAuthor => text(r().and_then(|r| r.author.as_ref())),
            F::RuleTags => r().and_then(|r| r.tags.as_deref()).map_or(Val::Missing, Val::List),
        }
    }
}

impl Val<'_> {
    /// Append this value to a group key. Returns false when missing.
    pub fn write_key(self, out: &mut String) -> bool {
        match self {
            Val::Missing => false,
            Val::Str(s) => {
                out.push_str(s);
                true
            }
            Val::Num(n) => {
                let _ = write!(out, "{n}");
                true
            }
            Val::List(items) => {
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(s);
                }
                true
            }
        }
    }

    /// The value as text, for action targets and alerts (allocates: only on the match path).
    pub fn to_text(self) -> Option<String> {
        let mut s = String::new();
        self.write_key(&mut s).then_some(s)
    }
}

/// Names of the fields a kind can carry, for error messages.
pub fn fields_of(kind: EventKind) -> Vec<&'static str> {
    FIELDS.iter().filter(|(_, _, _, g)| carries(kind, *g)).map(|(p, ..)| *p).collect()
}

/// The closest known path to a misspelt one, for "did you mean".
pub fn suggest(path: &str) -> Option<&'static str> {
    closest(path, FIELDS.iter().map(|(p, ..)| *p))
}

/// The candidate within three edits of `word`, if any (closest first).
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (c, edit_distance(word, c)))
        .filter(|(_, d)| *d <= 3)
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_parses_back_to_its_field() {
        for &(path, f, t, g) in FIELDS {
            assert_eq!(Field::parse(path), Some((f, t, g)));
            assert_eq!(f.path(), path);
        }
        assert_eq!(Field::parse("process.nam"), None);
        assert_eq!(suggest("process.nam"), Some("process.name"));
    }

    #[test]
    fn auth_events_carry_user_source_process_but_not_file() {
        assert!(carries(EventKind::AuthFailure, Group::Source));
        assert!(carries(EventKind::AuthFailure, Group::User));
        assert!(carries(EventKind::AuthFailure, Group::Process));
        assert!(!carries(EventKind::AuthFailure, Group::File));
        assert!(fields_of(EventKind::AuthSuccess).contains(&"source.ip"));
    }

    #[test]
    fn event_action_is_on_every_kind_and_reads_as_text() {
        for k in EventKind::ALL {
            assert!(fields_of(k).contains(&"event.action"), "{k}");
        }
        assert_eq!(Field::parse("event.action"), Some((Field::EventAction, Type::Str, Group::Base)));
        let mut ev = Event::new(EventKind::AuthFailure, picket_event::Timestamp::from_unix_nanos(0));
        assert_eq!(Field::EventAction.get(&ev), Val::Missing);
        ev.event.action = Some("password".into());
        assert_eq!(Field::EventAction.get(&ev), Val::Str("password"));
    }

    #[test]
    fn process_capture_fields_read_from_the_event() {
        use picket_event::{Container, FileHash, Process};
        let mut ev = Event::new(EventKind::ProcessExit, picket_event::Timestamp::from_unix_nanos(0));
        for f in
            [Field::EventDuration, Field::ProcessHashSha256, Field::ContainerId, Field::ProcessStartTicks]
        {
            assert_eq!(f.get(&ev), Val::Missing, "{f:?}");
        }
        ev.event.duration = Some(1_500);
        ev.container = Some(Container { id: "ab".into(), runtime: None });
        ev.process = Some(Process {
            start_ticks: Some(42),
            hash: Some(FileHash { sha256: "00ff".into() }),
            fileless_reason: Some("memfd".into()),
            cgroup: Some("/system.slice/x.service".into()),
            resolved_executable: Some("/usr/bin/x".into()),
            ..Process::default()
        });
        assert_eq!(Field::parse("event.duration").map(|p| p.0).unwrap().get(&ev), Val::Num(1_500));
        assert_eq!(Field::ContainerId.get(&ev), Val::Str("ab"));
        assert_eq!(Field::ProcessStartTicks.get(&ev), Val::Num(42));
        assert_eq!(Field::ProcessHashSha256.get(&ev), Val::Str("00ff"));
        assert_eq!(Field::ProcessFilelessReason.get(&ev), Val::Str("memfd"));
        assert_eq!(Field::ProcessCgroup.get(&ev), Val::Str("/system.slice/x.service"));
        assert_eq!(Field::ProcessResolvedExecutable.get(&ev), Val::Str("/usr/bin/x"));
        assert!(fields_of(EventKind::ProcessStart).contains(&"container.id"));
        assert!(!fields_of(EventKind::FileCreate).contains(&"process.exit_code"));
    }

    #[test]
    fn setid_fields_read_from_the_event_and_exist_where_they_apply() {
        use picket_event::{Group as G, Process, User};
        let mut ev = Event::new(EventKind::ProcessSetid, picket_event::Timestamp::from_unix_nanos(0));
        assert_eq!(Field::ProcessPreviousUserId.get(&ev), Val::Missing);
        let u = |id: &str, name: Option<&str>| Some(User { id: Some(id.into()), name: name.map(Into::into) });
        let g = |id: &str| Some(G { id: Some(id.into()), name: None });
        ev.process = Some(Process {
            user: u("0", Some("root")),
            real_user: u("1000", Some("alice")),
            group: g("27"),
            real_group: g("1000"),
            previous_user: u("1000", None),
            previous_group: g("1000"),
            ..Process::default()
        });
        let read = |path: &str| Field::parse(path).unwrap().0.get(&ev);
        assert_eq!(read("process.user.id"), Val::Str("0"));
        assert_eq!(read("process.user.name"), Val::Str("root"));
        assert_eq!(read("process.real_user.id"), Val::Str("1000"));
        assert_eq!(read("process.real_user.name"), Val::Str("alice"));
        assert_eq!(read("process.group.id"), Val::Str("27"));
        assert_eq!(read("process.real_group.id"), Val::Str("1000"));
        assert_eq!(read("process.previous_user.id"), Val::Str("1000"));
        assert_eq!(read("process.previous_group.id"), Val::Str("1000"));
        let setid = fields_of(EventKind::ProcessSetid);
        for f in
            ["process.previous_user.id", "process.user.id", "process.executable", "user.id", "container.id"]
        {
            assert!(setid.contains(&f), "{f}");
        }
        let start = fields_of(EventKind::ProcessStart);
        assert!(start.contains(&"process.real_user.id") && !start.contains(&"process.previous_user.id"));
        assert!(!fields_of(EventKind::ProcessExit).contains(&"process.user.id"));
        assert!(!fields_of(EventKind::ProcessSetid).contains(&"process.exit_code"));
    }
}
