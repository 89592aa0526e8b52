//! picket's [`Event`] as rsigma sees it: fields by ECS dotted path, read straight from the struct
//! (no JSON is built per event).
//!
//! [`SigmaView::top_level_keys`] keeps rsigma's default (`None`, "shape unknown"), so its candidate
//! index probes every field a rule names; reporting keys would let it prune rules wrongly
//! (research/sigma.md §3.1, approach B).

use std::borrow::Cow;

use picket_event::Event;
use rsigma_eval::EventValue;
use serde_json::Value;

/// Every ECS path [`SigmaView`] answers. A rule naming a field outside this list can never match
/// through that field; `picket policy check` reports such rules.
pub const FIELDS: &[&str] = &[
    "kind",
    "message",
    "host.id",
    "event.severity",
    "event.dataset",
    "event.module",
    "event.action",
    "process.pid",
    "process.name",
    "process.executable",
    "process.resolved_executable",
    "process.args",
    "process.command_line",
    "process.working_directory",
    "process.entity_id",
    "process.exit_code",
    "process.hash.sha256",
    "container.id",
    "process.parent.pid",
    "process.parent.name",
    "process.parent.executable",
    "process.parent.command_line",
    "file.path",
    "file.target_path",
    "file.type",
    "file.size",
    "file.inode",
    "file.mode",
    "file.uid",
    "file.gid",
    "file.hash.sha256",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "destination.domain",
    "network.transport",
    "network.type",
    "network.direction",
    "dns.question.name",
    "dns.question.type",
    "dns.response_code",
    "dns.resolved_ip",
    "user.name",
    "user.id",
];

/// A borrowed picket event, readable by rsigma.
#[derive(Debug, Clone, Copy)]
pub struct SigmaView<'a>(pub &'a Event);

fn text(s: Option<&String>) -> Option<EventValue<'_>> {
    s.map(|s| EventValue::Str(Cow::Borrowed(s.as_str())))
}

fn int<T: TryInto<i64>>(n: Option<T>) -> Option<EventValue<'static>> {
    n.map(|n| EventValue::Int(n.try_into().unwrap_or(i64::MAX)))
}

fn list(items: Option<&Vec<String>>) -> Option<EventValue<'_>> {
    items.map(|v| EventValue::Array(v.iter().map(|s| EventValue::Str(Cow::Borrowed(s.as_str()))).collect()))
}

impl<'a> SigmaView<'a> {
    fn field(&self, path: &str) -> Option<EventValue<'a>> {
        let ev = self.0;
        let p = ev.process.as_ref();
        let pp = p.and_then(|p| p.parent.as_ref());
        let f = ev.file.as_ref();
        let s = ev.source.as_ref();
        let d = ev.destination.as_ref();
        let dns = ev.dns.as_ref();
        let u = ev.user.as_ref();
        match path {
            "kind" => Some(EventValue::Str(Cow::Borrowed(ev.kind.as_str()))),
            "message" => text(ev.message.as_ref()),
            "host.id" => Some(EventValue::Str(Cow::Borrowed(ev.host.id.as_str()))),
            "event.severity" => int(Some(ev.event.severity)),
            "event.dataset" => text(ev.event.dataset.as_ref()),
            "event.module" => text(ev.event.module.as_ref()),
            "event.action" => text(ev.event.action.as_ref()),
            "process.pid" => int(p.and_then(|p| p.pid)),
            "process.name" => text(p.and_then(|p| p.name.as_ref())),
            "process.executable" => text(p.and_then(|p| p.executable.as_ref())),
            "process.resolved_executable" => text(p.and_then(|p| p.resolved_executable.as_ref())),
            "process.args" => list(p.and_then(|p| p.args.as_ref())),
            "process.command_line" => text(p.and_then(|p| p.command_line.as_ref())),
            "process.working_directory" => text(p.and_then(|p| p.working_directory.as_ref())),
            "process.entity_id" => text(p.and_then(|p| p.entity_id.as_ref())),
            "process.exit_code" => int(p.and_then(|p| p.exit_code)),
            "process.hash.sha256" => {
                p.and_then(|p| p.hash.as_ref()).map(|h| EventValue::Str(Cow::Borrowed(h.sha256.as_str())))
            }
            "container.id" => ev.container.as_ref().map(|c| EventValue::Str(Cow::Borrowed(c.id.as_str()))),
            "process.parent.pid" => int(pp.and_then(|p| p.pid)),
            "process.parent.name" => text(pp.and_then(|p| p.name.as_ref())),
            "process.parent.executable" => text(pp.and_then(|p| p.executable.as_ref())),
            "process.parent.command_line" => text(pp.and_then(|p| p.command_line.as_ref())),
            "file.path" => f.map(|f| EventValue::Str(Cow::Borrowed(f.path.as_str()))),
            "file.target_path" => text(f.and_then(|f| f.target_path.as_ref())),
            "file.type" => text(f.and_then(|f| f.r#type.as_ref())),
            "file.size" => int(f.and_then(|f| f.size)),
            "file.inode" => int(f.and_then(|f| f.inode)),
            "file.mode" => text(f.and_then(|f| f.mode.as_ref())),
            "file.uid" => int(f.and_then(|f| f.uid)),
            "file.gid" => int(f.and_then(|f| f.gid)),
            "file.hash.sha256" => {
                f.and_then(|f| f.hash.as_ref()).map(|h| EventValue::Str(Cow::Borrowed(h.sha256.as_str())))
            }
            "source.ip" => text(s.and_then(|s| s.ip.as_ref())),
            "source.port" => int(s.and_then(|s| s.port)),
            "destination.ip" => text(d.and_then(|d| d.ip.as_ref())),
            "destination.port" => int(d.and_then(|d| d.port)),
            "destination.domain" => text(d.and_then(|d| d.domain.as_ref())),
            "network.transport" => text(ev.network.as_ref().and_then(|n| n.transport.as_ref())),
            "network.type" => text(ev.network.as_ref().and_then(|n| n.r#type.as_ref())),
            "network.direction" => text(ev.network.as_ref().and_then(|n| n.direction.as_ref())),
            "dns.question.name" => dns.map(|d| EventValue::Str(Cow::Borrowed(d.question.name.as_str()))),
            "dns.question.type" => text(dns.and_then(|d| d.question.r#type.as_ref())),
            "dns.response_code" => text(dns.and_then(|d| d.response_code.as_ref())),
            "dns.resolved_ip" => list(dns.and_then(|d| d.resolved_ip.as_ref())),
            "user.name" => text(u.and_then(|u| u.name.as_ref())),
            "user.id" => text(u.and_then(|u| u.id.as_ref())),
            _ => None,
        }
    }

    /// Every text value a keyword rule looks at: what a person would read in the event (its
    /// message, command lines, paths, names, addresses), not ids or hashes.
    fn visit_text(&self, visit: &mut dyn FnMut(&str)) {
        let ev = self.0;
        let mut opt = |s: Option<&String>| {
            if let Some(s) = s {
                visit(s);
            }
        };
        opt(ev.message.as_ref());
        if let Some(p) = &ev.process {
            opt(p.name.as_ref());
            opt(p.executable.as_ref());
            opt(p.command_line.as_ref());
            opt(p.working_directory.as_ref());
            if let Some(pp) = &p.parent {
                opt(pp.executable.as_ref());
                opt(pp.command_line.as_ref());
            }
        }
        if let Some(f) = &ev.file {
            opt(Some(&f.path));
            opt(f.target_path.as_ref());
        }
        if let Some(d) = &ev.dns {
            opt(Some(&d.question.name));
        }
        if let Some(u) = &ev.user {
            opt(u.name.as_ref());
        }
        opt(ev.source.as_ref().and_then(|s| s.ip.as_ref()));
        opt(ev.destination.as_ref().and_then(|d| d.ip.as_ref()));
        opt(ev.destination.as_ref().and_then(|d| d.domain.as_ref()));
    }
}

impl rsigma_eval::Event for SigmaView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.field(path)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let mut hit = false;
        self.visit_text(&mut |s| hit = hit || pred(s));
        hit
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.visit_text(&mut |s| out.push(Cow::Owned(s.to_string())));
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.visit_text(visit);
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(self.0).unwrap_or(Value::Null)
    }
}
