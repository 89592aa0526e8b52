//! Policy test cases, shipped beside each policy as `<name>.test.yaml` and run by
//! `picket policy test` and `make test`.
//!
//! ```yaml
//! - name: five failures in five minutes block the source for an hour
//!   events:
//!     - kind: auth.failure
//!       source: {ip: 203.0.113.7}
//!       user: {name: root}
//!       process: {name: sshd}
//!       repeat: 5          # five copies...
//!       every: 30s         # ...30 s apart
//!   expect:
//!     - rule: ssh-brute-force
//!       event: 4           # index of the triggering event, counting repeats (optional)
//!       actions:           # optional; `[]` demands none
//!         - block_ip: {ip: 203.0.113.7, ttl: 1h}
//! - name: four failures do not
//!   events: [...]
//!   expect: []             # no alert
//! ```
//!
//! An event is a partial [`Event`]: `kind` plus any ECS fields; the rest get defaults. Its time is
//! `"@timestamp"` (RFC 3339), or `t` (an offset like `4m30s` from 2024-01-01T00:00:00Z), or else
//! one second after the previous event. `repeat: N` makes N copies `every` apart (default 1s), and
//! `{n}` in any text is replaced by the copy's index (0, 1, ...) — handy for many user names.
//! `event: {action: password}` needs no `severity` (it defaults to 0).
//! Each case runs on a fresh [`Engine`] holding only the rules of the policy file beside the test.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use picket_event::{Event, Timestamp};
use serde_json::{Map, Value};

use crate::compile::{Ctx, is_test_file, load_paths, read_policy_file};
use crate::engine::{ActionRequest, Decision, Engine, StateLimits};
use crate::error::PolicyError;
use crate::yaml::{self, Node, NodeKind};

/// The outcome of one test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub line: u32,
    pub name: String,
    /// `None` when the case passed.
    pub failure: Option<String>,
}

/// Every case run, plus problems that kept cases from running (bad policy or test files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestReport {
    pub cases: Vec<CaseResult>,
    pub errors: Vec<String>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_none()).count()
    }

    /// Failed cases plus load errors.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() + self.errors.len()
    }

    pub fn ok(&self) -> bool {
        self.failed() == 0
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error {e}")?;
        }
        for c in &self.cases {
            match &c.failure {
                None => writeln!(f, "ok    {}:{}: {}", c.file.display(), c.line, c.name)?,
                Some(why) => writeln!(
                    f,
                    "FAIL  {}:{}: {}\n      {}",
                    c.file.display(),
                    c.line,
                    c.name,
                    why.replace('\n', "\n      ")
                )?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Run the test cases of the policies in `paths` (files or directories). A directory runs every
/// `*.test.yaml` under it; a policy file runs the test file beside it; a test file runs itself.
pub fn run_tests(paths: &[PathBuf]) -> TestReport {
    let mut report = TestReport::default();
    // Load everything together first: catches errors in policies without tests, duplicate ids.
    if let Err(errs) = load_paths(paths) {
        report.errors.extend(errs.iter().map(ToString::to_string));
    }
    let mut tests = Vec::new();
    for p in paths {
        find_tests(p, &mut tests);
    }
    tests.sort();
    tests.dedup();
    for t in tests {
        run_file(&t, &mut report);
    }
    report
}

fn find_tests(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(entries) = std::fs::read_dir(p) else { return };
        for e in entries.flatten() {
            let c = e.path();
            if c.is_dir() || is_test_file(&c) {
                find_tests(&c, out);
            }
        }
    } else if is_test_file(p) {
        out.push(p.to_path_buf());
    } else if let Some(t) = test_beside(p) {
        out.push(t);
    }
}

fn test_beside(policy: &Path) -> Option<PathBuf> {
    let stem = policy.file_stem()?.to_str()?;
    ["yaml", "yml"]
        .iter()
        .map(|ext| policy.with_file_name(format!("{stem}.test.{ext}")))
        .find(|p| p.is_file())
}

fn policy_beside(test: &Path) -> Option<PathBuf> {
    let name = test.file_name()?.to_str()?;
    let stem = name.strip_suffix(".test.yaml").or_else(|| name.strip_suffix(".test.yml"))?;
    ["yaml", "yml"].iter().map(|ext| test.with_file_name(format!("{stem}.{ext}"))).find(|p| p.is_file())
}

fn run_file(test: &Path, report: &mut TestReport) {
    let origin = test.display().to_string();
    let Some(policy) = policy_beside(test) else {
        report.errors.push(format!(
            "{origin}:1:1: no policy file beside this test (expected {})",
            origin.replace(".test.", ".")
        ));
        return;
    };
    let set = match load_paths(std::slice::from_ref(&policy)) {
        Ok(s) => Arc::new(s),
        Err(_) => return, // already reported by the load of all paths
    };
    let text = match read_policy_file(test) {
        Ok(t) => t,
        Err(m) => {
            report.errors.push(format!("{origin}:1:1: {m}"));
            return;
        }
    };
    let mut errors: Vec<PolicyError> = Vec::new();
    let cases = parse_cases(&text, &origin, &mut errors);
    report.errors.extend(errors.iter().map(ToString::to_string));
    for case in cases {
        let mut engine = Engine::new(set.clone(), StateLimits::default());
        let mut got: Vec<(usize, Decision)> = Vec::new();
        let mut out = Vec::new();
        for (i, ev) in case.events.iter().enumerate() {
            engine.evaluate(ev, &mut out);
            got.extend(out.drain(..).map(|d| (i, d)));
        }
        report.cases.push(CaseResult {
            file: test.to_path_buf(),
            line: case.line,
            name: case.name,
            failure: compare(&case.expect, &got),
        });
    }
}

struct Case {
    name: String,
    line: u32,
    events: Vec<Event>,
    expect: Vec<Expect>,
}

struct Expect {
    rule: String,
    event: Option<usize>,
    count: Option<u64>,
    group: Option<String>,
    actions: Option<Vec<ActionRequest>>,
    /// Names of actions the event gave no target for.
    unresolved: Option<Vec<String>>,
}

fn describe(i: usize, d: &Decision) -> String {
    let mut s = format!("{} at event {i}", d.rule_id);
    if let Some(g) = &d.group {
        s.push_str(&format!(" group {g}"));
    }
    if let Some(c) = d.count {
        s.push_str(&format!(" count {c}"));
    }
    let acts: Vec<String> = d.actions.iter().map(|a| serde_json::to_string(a).unwrap_or_default()).collect();
    if !acts.is_empty() {
        s.push_str(&format!(" actions [{}]", acts.join(", ")));
    }
    for u in &d.unresolved {
        s.push_str(&format!(" unresolved {} ({}: {})", u.action, u.field, u.reason));
    }
    s
}

fn compare(expect: &[Expect], got: &[(usize, Decision)]) -> Option<String> {
    let list = || got.iter().map(|(i, d)| format!("  {}", describe(*i, d))).collect::<Vec<_>>().join("\n");
    if expect.len() != got.len() {
        let plural = |n: usize| if n == 1 { "alert" } else { "alerts" };
        return Some(format!(
            "expected {} {}, got {}{}{}",
            expect.len(),
            plural(expect.len()),
            got.len(),
            if got.is_empty() { "" } else { ":\n" },
            list()
        ));
    }
    for (n, (e, (i, d))) in expect.iter().zip(got).enumerate() {
        let mut why = Vec::new();
        if *d.rule_id != *e.rule {
            why.push(format!("rule {} instead of {}", d.rule_id, e.rule));
        }
        if let Some(ei) = e.event
            && ei != *i
        {
            why.push(format!("at event {i} instead of {ei}"));
        }
        if let Some(c) = e.count
            && Some(c) != d.count
        {
            why.push(format!("count {:?} instead of {c}", d.count));
        }
        if let Some(g) = &e.group
            && Some(g) != d.group.as_ref()
        {
            why.push(format!("group {:?} instead of {g}", d.group));
        }
        if let Some(a) = &e.actions
            && *a != d.actions
        {
            why.push(format!(
                "actions {} instead of {}",
                serde_json::to_string(&d.actions).unwrap_or_default(),
                serde_json::to_string(a).unwrap_or_default()
            ));
        }
        if let Some(u) = &e.unresolved {
            let got_u: Vec<&str> = d.unresolved.iter().map(|u| u.action.as_str()).collect();
            if *u != got_u {
                why.push(format!("unresolved {got_u:?} instead of {u:?}"));
            }
        }
        if !why.is_empty() {
            return Some(format!("alert #{n}: {}; got:\n{}", why.join(", "), list()));
        }
    }
    None
}

const BASE: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z

fn parse_cases(text: &str, origin: &str, errors: &mut Vec<PolicyError>) -> Vec<Case> {
    let root = match yaml::parse(text) {
        Ok(Some(r)) => r,
        Ok(None) => return Vec::new(),
        Err((pos, m)) => {
            errors.push(PolicyError {
                file: origin.into(),
                line: pos.line,
                col: pos.col,
                rule: None,
                message: format!("YAML syntax error: {m}"),
            });
            return Vec::new();
        }
    };
    let mut ctx = Ctx { file: origin, src: text, rule: None, errors };
    let NodeKind::Seq(items) = &root.kind else {
        ctx.err(root.pos, "a test file is a list of cases (name, events, expect)");
        return Vec::new();
    };
    items.iter().filter_map(|item| parse_case(&mut ctx, item)).collect()
}

fn parse_case(ctx: &mut Ctx<'_>, node: &Node) -> Option<Case> {
    let before = ctx.errors.len();
    let entries = ctx.map(node, "a test case", &["name", "events", "expect"])?;
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let name = get("name").and_then(|n| ctx.string(n, "`name`")).unwrap_or("(unnamed)").to_string();
    ctx.rule = Some(name.clone());
    let mut events = Vec::new();
    match get("events") {
        Some(Node { kind: NodeKind::Seq(items), .. }) => {
            let mut t = BASE - 1_000_000_000;
            for item in items {
                parse_event(ctx, item, &mut t, &mut events);
            }
        }
        Some(n) => ctx.err(n.pos, "`events` must be a list"),
        None => ctx.err(node.pos, "a test case needs `events`"),
    }
    let mut expect = Vec::new();
    match get("expect") {
        Some(Node { kind: NodeKind::Seq(items), .. }) => {
            for item in items {
                if let Some(e) = parse_expect(ctx, item) {
                    expect.push(e);
                }
            }
        }
        Some(n) if n.is_null() => {}
        Some(n) => ctx.err(n.pos, "`expect` must be a list of alerts (`[]` for none)"),
        None => ctx.err(node.pos, "a test case needs `expect` (`[]` for no alert)"),
    }
    ctx.rule = None;
    (ctx.errors.len() == before).then_some(Case { name, line: node.pos.line, events, expect })
}

fn to_json(node: &Node, n: Option<u64>) -> Value {
    match &node.kind {
        NodeKind::Scalar { text, .. } => {
            let text = match n {
                Some(n) => text.replace("{n}", &n.to_string()),
                None => text.clone(),
            };
            if node.is_plain() {
                if node.is_null() {
                    return Value::Null;
                }
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if text == "true" || text == "false" {
                    return Value::Bool(text == "true");
                }
            }
            Value::String(text)
        }
        NodeKind::Seq(items) => Value::Array(items.iter().map(|i| to_json(i, n)).collect()),
        NodeKind::Map(entries) => Value::Object(
            entries.iter().map(|(k, v)| (k.as_str().unwrap_or("").to_string(), to_json(v, n))).collect(),
        ),
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn parse_event(ctx: &mut Ctx<'_>, node: &Node, t: &mut i64, out: &mut Vec<Event>) {
    let NodeKind::Map(entries) = &node.kind else {
        ctx.err(node.pos, "an event is a mapping with `kind` and fields");
        return;
    };
    let mut repeat = 1u64;
    let mut every = 1_000_000_000i64;
    let mut at: Option<i64> = None;
    let mut fields: Vec<(&str, &Node)> = Vec::new();
    for (k, v) in entries {
        match k.as_str().unwrap_or("") {
            "repeat" => match ctx.integer(v, "`repeat`", 1, 100_000) {
                Some(r) => repeat = r,
                None => return,
            },
            "every" => match ctx.duration(v, "`every`") {
                Some(d) => every = nanos(d),
                None => return,
            },
            "t" => match v
                .as_str()
                .map(|s| if s == "0" { Ok(Duration::ZERO) } else { humantime::parse_duration(s) })
            {
                Some(Ok(d)) => at = Some(BASE + nanos(d)),
                _ => {
                    ctx.err(v.pos, "`t` is an offset from the case start, like 0s, 90s or 4m30s");
                    return;
                }
            },
            "@timestamp" => match v.as_str().map(Timestamp::parse_rfc3339) {
                Some(Ok(ts)) => at = Some(ts.unix_nanos()),
                _ => {
                    ctx.err(v.pos, "`@timestamp` must be RFC 3339, like 2024-01-01T00:00:00Z");
                    return;
                }
            },
            key => fields.push((key, v)),
        }
    }
    let start = at.unwrap_or(*t + 1_000_000_000);
    for i in 0..repeat {
        let mut obj = Map::new();
        obj.insert("schema_version".into(), Value::from(picket_event::SCHEMA_VERSION));
        obj.insert("host".into(), serde_json::json!({"id": "test-device"}));
        obj.insert("event".into(), serde_json::json!({"severity": 0}));
        for (k, v) in &fields {
            obj.insert((*k).to_string(), to_json(v, (repeat > 1).then_some(i)));
        }
        let ts = start + every.saturating_mul(i64::try_from(i).unwrap_or(0));
        obj.insert("@timestamp".into(), Value::String(Timestamp::from_unix_nanos(ts).to_string()));
        // Friendly fill-ins: `event.severity` 0 when `event` is given without it (`event: {action:
        // password}`), an empty `file.path` / `dns.question.name` where the object is given
        // without them.
        if let Some(Value::Object(o)) = obj.get_mut("event")
            && !o.contains_key("severity")
        {
            o.insert("severity".into(), Value::from(0));
        }
        for (obj_key, inner) in [("file", "path"), ("dns", "question")] {
            if let Some(Value::Object(o)) = obj.get_mut(obj_key)
                && !o.contains_key(inner)
            {
                let v = if inner == "path" {
                    Value::String(String::new())
                } else {
                    serde_json::json!({"name": ""})
                };
                o.insert(inner.into(), v);
            }
        }
        match serde_json::from_value::<Event>(Value::Object(obj)) {
            Ok(ev) => out.push(ev),
            Err(e) => {
                ctx.err(node.pos, format!("not a valid event: {e}"));
                return;
            }
        }
        *t = ts;
    }
}

fn parse_expect(ctx: &mut Ctx<'_>, node: &Node) -> Option<Expect> {
    let entries =
        ctx.map(node, "an expected alert", &["rule", "event", "count", "group", "actions", "unresolved"])?;
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let rule = match get("rule") {
        Some(n) => ctx.string(n, "`rule`")?.to_string(),
        None => {
            ctx.err(node.pos, "an expected alert needs `rule` (the rule id)");
            return None;
        }
    };
    let event = match get("event") {
        Some(n) => Some(usize::try_from(ctx.integer(n, "`event`", 0, 10_000_000)?).ok()?),
        None => None,
    };
    let count = match get("count") {
        Some(n) => Some(ctx.integer(n, "`count`", 0, u64::MAX)?),
        None => None,
    };
    let group = match get("group") {
        Some(n) => Some(ctx.string(n, "`group`")?.to_string()),
        None => None,
    };
    let actions = match get("actions") {
        Some(Node { kind: NodeKind::Seq(items), .. }) => {
            let mut acts = Vec::new();
            for i in items {
                acts.push(parse_action(ctx, i)?);
            }
            Some(acts)
        }
        Some(n) => {
            ctx.err(n.pos, "`actions` must be a list (`[]` for none)");
            return None;
        }
        None => None,
    };
    let unresolved = match get("unresolved") {
        Some(n) if matches!(n.kind, NodeKind::Seq(ref items) if items.is_empty()) => Some(Vec::new()),
        Some(n) => Some(ctx.strings(n, "`unresolved`")?.into_iter().map(|(s, _)| s.to_string()).collect()),
        None => None,
    };
    Some(Expect { rule, event, count, group, actions, unresolved })
}

/// `- block_ip: {ip: 1.2.3.4, ttl: 1h}` → the request the engine should make.
fn parse_action(ctx: &mut Ctx<'_>, node: &Node) -> Option<ActionRequest> {
    let (name, params) = match &node.kind {
        NodeKind::Map(e) if e.len() == 1 => (e[0].0.as_str().unwrap_or(""), Some(&e[0].1)),
        NodeKind::Scalar { text, .. } => (text.as_str(), None),
        _ => {
            ctx.err(node.pos, "an expected action is `- name: {params}`");
            return None;
        }
    };
    let allowed: &[&str] = match name {
        "block_ip" => &["ip", "ttl"],
        "kill" => &["pid", "tree"],
        "deny_exec" | "quarantine" => &["path"],
        "isolate_host" => &["ttl"],
        "lock_account" => &["user", "ttl"],
        _ => {
            ctx.err(node.pos, format!("unknown action `{name}`"));
            return None;
        }
    };
    let entries = match params {
        Some(p) if !p.is_null() => ctx.map(p, &format!("`{name}`"), allowed)?,
        _ => Vec::new(),
    };
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    fn need<'n>(
        ctx: &mut Ctx<'_>,
        entries: &[(&str, &'n Node)],
        at: &Node,
        name: &str,
        k: &str,
    ) -> Option<&'n Node> {
        let n = entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        if n.is_none() {
            ctx.err(at.pos, format!("`{name}` needs `{k}`"));
        }
        n
    }
    let ttl = |ctx: &mut Ctx<'_>| -> Option<Option<Duration>> {
        match get("ttl") {
            Some(n) => ctx.duration(n, "`ttl`").map(Some),
            None => Some(None),
        }
    };
    Some(match name {
        "block_ip" => {
            let ipn = need(ctx, &entries, node, name, "ip")?;
            let ttl_n = need(ctx, &entries, node, name, "ttl")?;
            let ip = match ipn.as_str().and_then(|s| s.parse().ok()) {
                Some(ip) => ip,
                None => {
                    ctx.err(ipn.pos, "`ip` must be an IP address");
                    return None;
                }
            };
            ActionRequest::BlockIp { ip, ttl: ctx.duration(ttl_n, "`ttl`")? }
        }
        "kill" => {
            let pidn = need(ctx, &entries, node, name, "pid")?;
            let pid = u32::try_from(ctx.integer(pidn, "`pid`", 0, u64::from(u32::MAX))?).ok()?;
            let tree = match get("tree") {
                Some(n) => ctx.boolean(n, "`tree`")?,
                None => false,
            };
            ActionRequest::Kill { pid, tree }
        }
        "deny_exec" | "quarantine" => {
            let n = need(ctx, &entries, node, name, "path")?;
            let path = ctx.string(n, "`path`")?.to_string();
            if name == "deny_exec" {
                ActionRequest::DenyExec { path }
            } else {
                ActionRequest::Quarantine { path }
            }
        }
        "isolate_host" => ActionRequest::IsolateHost { ttl: ttl(ctx)? },
        _ => {
            let n = need(ctx, &entries, node, name, "user")?;
            let user = ctx.string(n, "`user`")?.to_string();
            ActionRequest::LockAccount { user, ttl: ttl(ctx)? }
        }
    })
}
