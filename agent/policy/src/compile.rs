//! Policy files → a compiled [`PolicySet`]: parse YAML, check every key, field, operator, duration
//! and action against the rule's event kinds, collect every error with its place, index the rules
//! by event kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use picket_event::{EventKind, severity};
use serde::Serialize;

use crate::error::{PolicyError, PolicyErrors};
use crate::expr::{self, Cond};
use crate::field::{Field, Type};
use crate::index::KindIndex;
use crate::yaml::{self, Node, NodeKind, Pos};

/// Per-rule mode. A rule without one follows the agent's `mode` (`Decision::mode` is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Alert only; the actions are journaled as what would have been done.
    Monitor,
    /// Alert and act.
    Enforce,
}

/// What a rule is, for people: carried by every [`crate::Decision`] and copied into alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleMeta {
    pub id: Arc<str>,
    /// A short title; the id when the file gives none.
    pub name: String,
    pub description: String,
    /// MITRE ATT&CK technique ids, e.g. `T1110.001`.
    pub mitre: Vec<String>,
    /// ATT&CK tactic, e.g. `credential-access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tactic: Option<String>,
    /// `file:line` where the rule starts.
    pub origin: String,
}

/// An action as written in the rule: which event field gives its target.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ActionSpec {
    BlockIp { target: Field, ttl: Duration },
    Kill { target: Field, tree: bool },
    DenyExec { target: Field },
    Quarantine { target: Field },
    IsolateHost { ttl: Option<Duration> },
    LockAccount { target: Field, ttl: Option<Duration> },
}

#[derive(Clone, Debug)]
pub(crate) struct Threshold {
    pub count: u32,
    /// Nanoseconds.
    pub within: i64,
    pub by: Box<[Field]>,
    pub distinct: Option<Field>,
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kinds: u32,
    pub when: Cond,
    pub count: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Sequence {
    pub within: i64,
    pub by: Box<[Field]>,
    pub steps: Box<[Step]>,
}

#[derive(Clone, Debug)]
pub(crate) enum Logic {
    /// Every matching event is a decision.
    Each,
    Threshold(Threshold),
    Sequence(Sequence),
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub meta: Arc<RuleMeta>,
    /// Bit per [`EventKind`] (by its index in `EventKind::ALL`).
    pub kinds: u32,
    pub when: Cond,
    /// Any exception that holds suppresses the event (it does not count towards windows either).
    pub except: Option<Cond>,
    pub severity: u8,
    pub mode: Option<Mode>,
    pub actions: Box<[ActionSpec]>,
    pub logic: Logic,
}

impl Rule {
    /// A description of the rule's window state: state is kept across a reload (or restored from a
    /// snapshot) only into a rule with the same id and the same shape.
    pub fn state_shape(&self) -> Option<String> {
        let paths = |fs: &[Field]| fs.iter().map(|f| f.path()).collect::<Vec<_>>().join(",");
        match &self.logic {
            Logic::Each => None,
            Logic::Threshold(t) => Some(match t.distinct {
                Some(d) => format!("distinct({}) by [{}]", d.path(), paths(&t.by)),
                None => format!("count by [{}]", paths(&t.by)),
            }),
            Logic::Sequence(s) => Some(format!(
                "sequence of {} by [{}]",
                s.steps.iter().map(|s| s.count.to_string()).collect::<Vec<_>>().join(","),
                paths(&s.by)
            )),
        }
    }
}

pub(crate) fn kind_index(k: EventKind) -> usize {
    k as usize
}

pub(crate) fn kind_bit(k: EventKind) -> u32 {
    1u32 << kind_index(k)
}

fn kinds_of(mask: u32) -> Vec<EventKind> {
    EventKind::ALL.into_iter().filter(|k| mask & kind_bit(*k) != 0).collect()
}

/// Compiled, immutable rules, indexed by [`EventKind`]. Build one with [`load_paths`] or
/// [`load_str`]; share it as `Arc<PolicySet>`.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub(crate) rules: Vec<Rule>,
    /// Per kind (by index in `EventKind::ALL`).
    pub(crate) by_kind: Vec<KindIndex>,
    /// Words in a rule bitset.
    pub(crate) words: usize,
}

impl PolicySet {
    fn build(rules: Vec<Rule>) -> PolicySet {
        let words = rules.len().div_ceil(64);
        let by_kind = EventKind::ALL.into_iter().map(|k| KindIndex::build(&rules, k, words)).collect();
        PolicySet { rules, by_kind, words }
    }

    /// A set with no rules.
    pub fn empty() -> PolicySet {
        PolicySet::build(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in load order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &*r.meta)
    }

    /// Does any rule look at events of this kind? (Lets a runtime skip work.)
    pub fn wants(&self, kind: EventKind) -> bool {
        !self.by_kind[kind_index(kind)].rules.is_empty()
    }
}

/// Load every policy file in `paths` (files, or directories searched recursively for `*.yaml` and
/// `*.yml`, skipping `*.test.yaml`). All or nothing: any error anywhere and the result is every
/// error, in file and line order.
pub fn load_paths(paths: &[PathBuf]) -> Result<PolicySet, PolicyErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        collect_files(p, true, &mut files, &mut errors);
    }
    let mut rules = Vec::new();
    for f in &files {
        let origin = f.display().to_string();
        match read_policy_file(f) {
            Ok(text) if is_sigma_text(&text) => {} // a Sigma rule: see [`sigma_files`]
            Ok(text) => compile_text(&text, &origin, &mut rules, &mut errors),
            Err(message) => errors.push(file_error(&origin, message)),
        }
    }
    finish(rules, errors)
}

/// Whether a YAML text is a Sigma rule rather than a picket policy: it has the top-level keys
/// `logsource` and `detection` (a picket policy can have neither: unknown keys are errors).
pub fn is_sigma_text(text: &str) -> bool {
    let top = |key: &str| text.lines().any(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')));
    top("logsource") && top("detection")
}

/// The Sigma rule files among `paths` (files and directories, walked as [`load_paths`] walks
/// them), which [`load_paths`] skips. Unreadable files are left to [`load_paths`] to report.
pub fn sigma_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        collect_files(p, true, &mut files, &mut errors);
    }
    files.retain(|f| std::fs::read_to_string(f).is_ok_and(|t| is_sigma_text(&t)));
    files
}

/// Compile one file's text. `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<PolicySet, PolicyErrors> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    compile_text(text, origin, &mut rules, &mut errors);
    finish(rules, errors)
}

fn file_error(file: &str, message: String) -> PolicyError {
    PolicyError { file: file.to_string(), line: 1, col: 1, rule: None, message }
}

pub(crate) fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Policy files under `p`, sorted, so that load order (and so decision order) is stable.
pub(crate) fn collect_files(p: &Path, top: bool, files: &mut Vec<PathBuf>, errors: &mut Vec<PolicyError>) {
    match std::fs::metadata(p) {
        Err(e) => errors.push(file_error(&p.display().to_string(), format!("cannot read: {e}"))),
        Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
            Err(e) => {
                errors.push(file_error(&p.display().to_string(), format!("cannot read directory: {e}")))
            }
            Ok(entries) => {
                let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                for c in children {
                    let hidden = c.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                    if !hidden && (c.is_dir() || (is_yaml(&c) && !is_test_file(&c))) {
                        collect_files(&c, false, files, errors);
                    }
                }
            }
        },
        Ok(_) if top && is_test_file(p) => {}
        Ok(_) => files.push(p.to_path_buf()),
    }
}

/// Read a policy file, refusing one that anyone may write (a rule can kill processes).
pub(crate) fn read_policy_file(p: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err("refusing a world-writable policy file (chmod o-w)".into());
    }
    std::fs::read_to_string(p).map_err(|e| format!("cannot read: {e}"))
}

fn finish(rules: Vec<Rule>, mut errors: Vec<PolicyError>) -> Result<PolicySet, PolicyErrors> {
    let mut seen: BTreeMap<Arc<str>, String> = BTreeMap::new();
    for r in &rules {
        if let Some(first) = seen.get(&r.meta.id) {
            let (file, line) = split_origin(&r.meta.origin);
            errors.push(PolicyError {
                file,
                line,
                col: 1,
                rule: Some(r.meta.id.to_string()),
                message: format!("duplicate rule id (first defined at {first})"),
            });
        } else {
            seen.insert(r.meta.id.clone(), r.meta.origin.clone());
        }
    }
    if errors.is_empty() { Ok(PolicySet::build(rules)) } else { Err(PolicyErrors(errors)) }
}

fn split_origin(origin: &str) -> (String, u32) {
    match origin.rsplit_once(':') {
        Some((f, l)) => (f.to_string(), l.parse().unwrap_or(1)),
        None => (origin.to_string(), 1),
    }
}

pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub src: &'a str,
    pub rule: Option<String>,
    pub errors: &'a mut Vec<PolicyError>,
}

impl Ctx<'_> {
    pub fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            rule: self.rule.clone(),
            message: message.into(),
        });
    }

    /// The entries of a mapping, checking for unknown and repeated keys.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(node.pos, format!("{what} must be a mapping (key: value), found {}", node.what()));
            return None;
        };
        let mut out: Vec<(&str, &Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(k.pos, "keys must be plain names");
                continue;
            };
            if !allowed.contains(&key) {
                let hint = crate::field::closest(key, allowed.iter().copied())
                    .map(|a| format!(" (did you mean `{a}`?)"))
                    .unwrap_or_default();
                self.err(
                    k.pos,
                    format!("unknown key `{key}` in {what}{hint}; expected one of: {}", allowed.join(", ")),
                );
                continue;
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                self.err(k.pos, format!("`{key}` is given twice"));
                continue;
            }
            out.push((key, v));
        }
        Some(out)
    }

    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node.as_str() {
            Some(s) if !node.is_null() => Some(s),
            _ => {
                self.err(
                    node.pos,
                    format!(
                        "{what} must be text, found {}",
                        if node.is_null() { "nothing" } else { node.what() }
                    ),
                );
                None
            }
        }
    }

    /// One scalar or a list of scalars.
    pub fn strings<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<(&'n str, &'n Node)>> {
        match &node.kind {
            NodeKind::Seq(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for i in items {
                    match self.string(i, what) {
                        Some(s) => out.push((s, i)),
                        None => ok = false,
                    }
                }
                if out.is_empty() && ok {
                    self.err(node.pos, format!("{what} must not be empty"));
                    return None;
                }
                ok.then_some(out)
            }
            _ => self.string(node, what).map(|s| vec![(s, node)]),
        }
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let s = self.string(node, what)?;
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.err(node.pos, format!("{what} must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(node.pos, format!("{what}: `{s}` is not a duration like 30s, 5m, 1h, 7d ({e})"));
                None
            }
        }
    }

    pub fn window(&mut self, node: &Node) -> Option<i64> {
        let d = self.duration(node, "`within`")?;
        if d > Duration::from_secs(31 * 86_400) {
            self.err(node.pos, "`within` is at most 31 days");
            return None;
        }
        i64::try_from(d.as_nanos()).ok()
    }

    pub fn integer(&mut self, node: &Node, what: &str, min: u64, max: u64) -> Option<u64> {
        let parsed = node.as_str().filter(|_| node.is_plain()).and_then(|s| s.parse::<u64>().ok());
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(node.pos, format!("{what} must be a whole number from {min} to {max}"));
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_str().filter(|_| node.is_plain()) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.err(node.pos, format!("{what} must be true or false"));
                None
            }
        }
    }

    /// Compile a condition, mapping expression errors back to the file.
    pub fn cond(&mut self, node: &Node, kinds: u32) -> Option<Cond> {
        let text = self.string(node, "a condition")?;
        match expr::compile(text, &kinds_of(kinds)) {
            Ok(c) => Some(c),
            Err(errs) => {
                for e in errs {
                    let pos = node.locate(self.src, e.offset);
                    self.err(pos, e.message);
                }
                None
            }
        }
    }

    /// `except:` one condition or a list; any of them suppresses.
    pub fn except(&mut self, node: &Node, kinds: u32) -> Option<Cond> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut conds = Vec::new();
        let mut ok = true;
        for i in items {
            match self.cond(i, kinds) {
                Some(c) => conds.push(c),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if conds.len() == 1 {
            conds.pop().unwrap_or(Cond::True)
        } else {
            Cond::Or(conds.into_boxed_slice())
        })
    }

    pub fn kinds(&mut self, node: &Node) -> Option<u32> {
        let names = self.strings(node, "`on`")?;
        let mut mask = 0;
        let mut ok = true;
        for (name, n) in names {
            match EventKind::parse(name) {
                Some(k) => mask |= kind_bit(k),
                None => {
                    let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    self.err(
                        n.pos,
                        format!("unknown event kind `{name}`; expected one of: {}", all.join(", ")),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(mask)
    }

    /// `by:` fields: each must exist and be on every kind.
    pub fn fields(&mut self, node: &Node, kinds: u32, what: &str) -> Option<Vec<Field>> {
        let names = self.strings(node, what)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (name, n) in names {
            match expr::check_field(name, &kinds_of(kinds)) {
                Ok((f, _)) => out.push(f),
                Err(m) => {
                    self.err(n.pos, m);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

const RULE_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "mitre",
    "tactic",
    "on",
    "when",
    "except",
    "threshold",
    "sequence",
    "severity",
    "mode",
    "actions",
];

const TACTICS: &[&str] = &[
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
];

/// Most events a window may need to remember per group.
pub const MAX_COUNT: u64 = 10_000;

pub(crate) fn compile_text(text: &str, origin: &str, rules: &mut Vec<Rule>, errors: &mut Vec<PolicyError>) {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return, // an empty file is no rules
        Err((pos, message)) => {
            errors.push(PolicyError {
                file: origin.to_string(),
                line: pos.line,
                col: pos.col,
                rule: None,
                message: format!("YAML syntax error: {message}"),
            });
            return;
        }
    };
    let mut ctx = Ctx { file: origin, src: text, rule: None, errors };
    match &root.kind {
        NodeKind::Seq(items) => {
            for item in items {
                ctx.rule = None;
                if let Some(r) = compile_rule(&mut ctx, item) {
                    rules.push(r);
                }
            }
        }
        NodeKind::Map(_) => {
            if let Some(r) = compile_rule(&mut ctx, &root) {
                rules.push(r);
            }
        }
        NodeKind::Scalar { .. } => {
            ctx.err(root.pos, "a policy file holds one rule (a mapping) or a list of rules");
        }
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && id.len() <= 64
}

fn valid_technique(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..5]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..9]),
        _ => false,
    }
}

fn compile_rule(ctx: &mut Ctx<'_>, node: &Node) -> Option<Rule> {
    let before = ctx.errors.len();
    // Name the rule in errors as early as possible, even if other keys are wrong.
    if let NodeKind::Map(entries) = &node.kind
        && let Some((_, v)) = entries.iter().find(|(k, _)| k.as_str() == Some("id"))
    {
        ctx.rule = v.as_str().map(str::to_string);
    }
    let entries = ctx.map(node, "a rule", RULE_KEYS)?;
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);

    let id = match get("id") {
        Some(n) => ctx.string(n, "`id`").and_then(|id| {
            if valid_id(id) {
                Some(id)
            } else {
                ctx.err(
                    n.pos,
                    format!("`id` `{id}` must be lowercase letters, digits, `-`, `_`, `.` (at most 64)"),
                );
                None
            }
        }),
        None => {
            ctx.err(node.pos, "a rule needs an `id`");
            None
        }
    };
    let description = match get("description") {
        Some(n) => ctx.string(n, "`description`"),
        None => {
            ctx.err(node.pos, "a rule needs a `description`");
            None
        }
    };
    let name = get("name").and_then(|n| ctx.string(n, "`name`"));
    let mitre = match get("mitre") {
        Some(n) => {
            let list = ctx.strings(n, "`mitre`").unwrap_or_default();
            for (t, tn) in &list {
                if !valid_technique(t) {
                    ctx.err(
                        tn.pos,
                        format!("`{t}` is not a MITRE ATT&CK technique id like T1110 or T1110.001"),
                    );
                }
            }
            list.into_iter().map(|(t, _)| t.to_string()).collect()
        }
        None => {
            ctx.err(node.pos, "a rule needs `mitre` (an ATT&CK technique id like T1110.001)");
            Vec::new()
        }
    };
    let tactic = get("tactic").and_then(|n| {
        let t = ctx.string(n, "`tactic`")?;
        if TACTICS.contains(&t) {
            Some(t.to_string())
        } else {
            ctx.err(n.pos, format!("unknown tactic `{t}`; expected one of: {}", TACTICS.join(", ")));
            None
        }
    });
    let severity = match get("severity") {
        Some(n) => match n.as_str() {
            Some("info") => Some(severity::INFO),
            Some("low") => Some(severity::LOW),
            Some("medium") => Some(severity::MEDIUM),
            Some("high") => Some(severity::HIGH),
            Some("critical") => Some(severity::CRITICAL),
            Some(s) if s.parse::<u8>().is_ok() => ctx
                .integer(n, "`severity`", 0, u64::from(severity::CRITICAL))
                .and_then(|v| u8::try_from(v).ok()),
            _ => {
                ctx.err(n.pos, "`severity` must be info, low, medium, high, critical or a number 0-99");
                None
            }
        },
        None => {
            ctx.err(node.pos, "a rule needs a `severity` (info, low, medium, high, critical)");
            None
        }
    };
    let mode = match get("mode") {
        None => Some(None),
        Some(n) => match n.as_str() {
            Some("monitor") => Some(Some(Mode::Monitor)),
            Some("enforce") => Some(Some(Mode::Enforce)),
            _ => {
                ctx.err(n.pos, "`mode` must be monitor or enforce (leave it out to follow the agent's mode)");
                None
            }
        },
    };

    // Event kinds: the rule's own, and for a sequence each step's (defaulting to the rule's).
    let rule_kinds = get("on").and_then(|n| ctx.kinds(n));
    let sequence_node = get("sequence");
    let threshold_node = get("threshold");
    if let (Some(_), Some(t)) = (sequence_node, threshold_node) {
        ctx.err(
            t.pos,
            "a rule has either `threshold` or `sequence`, not both (a sequence step can have a `count`)",
        );
    }
    if get("on").is_none() && sequence_node.is_none() {
        ctx.err(node.pos, "a rule needs `on` (the event kinds it looks at)");
    }

    let mut logic = Some(Logic::Each);
    let mut all_kinds = rule_kinds.unwrap_or(0);
    let mut trigger_kinds = all_kinds;
    if let Some(sn) = sequence_node {
        match compile_sequence(ctx, sn, rule_kinds) {
            Some((seq, union, last)) => {
                all_kinds = union;
                trigger_kinds = last;
                logic = Some(Logic::Sequence(seq));
            }
            None => logic = None,
        }
    }
    // Without known kinds, fields cannot be checked: skip the conditions rather than cascade.
    let kinds_known = all_kinds != 0;
    let when = match get("when") {
        Some(n) if kinds_known => ctx.cond(n, all_kinds),
        _ => Some(Cond::True),
    };
    let except = match get("except") {
        Some(n) if kinds_known => ctx.except(n, all_kinds).map(Some),
        _ => Some(None),
    };
    if let (Some(tn), Some(Logic::Each)) = (threshold_node, &logic) {
        logic = compile_threshold(ctx, tn, all_kinds).map(Logic::Threshold);
    }
    let actions = match get("actions") {
        Some(n) if trigger_kinds != 0 => compile_actions(ctx, n, trigger_kinds),
        Some(_) => None,
        None => Some(Vec::new()),
    };

    if ctx.errors.len() != before {
        return None;
    }
    let id: Arc<str> = Arc::from(id?);
    let meta = RuleMeta {
        id: id.clone(),
        name: name.map_or_else(|| id.to_string(), str::to_string),
        description: description?.to_string(),
        mitre,
        tactic,
        origin: format!("{}:{}", ctx.file, node.pos.line),
    };
    Some(Rule {
        meta: Arc::new(meta),
        kinds: all_kinds,
        when: when?,
        except: except?,
        severity: severity?,
        mode: mode?,
        actions: actions?.into_boxed_slice(),
        logic: logic?,
    })
}

fn compile_threshold(ctx: &mut Ctx<'_>, node: &Node, kinds: u32) -> Option<Threshold> {
    let entries = ctx.map(node, "`threshold`", &["count", "within", "by", "distinct"])?;
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let count = match get("count") {
        Some(n) => ctx.integer(n, "`count`", 1, MAX_COUNT).and_then(|c| u32::try_from(c).ok()),
        None => {
            ctx.err(node.pos, "`threshold` needs a `count`");
            None
        }
    };
    let within = match get("within") {
        Some(n) => ctx.window(n),
        None => {
            ctx.err(node.pos, "`threshold` needs `within` (a duration like 5m)");
            None
        }
    };
    let by = match get("by") {
        Some(n) => ctx.fields(n, kinds, "`by`"),
        None => Some(Vec::new()),
    };
    let distinct = match get("distinct") {
        Some(n) => ctx.fields(n, kinds, "`distinct`").and_then(|f| {
            if f.len() == 1 {
                Some(Some(f[0]))
            } else {
                ctx.err(n.pos, "`distinct` names one field");
                None
            }
        }),
        None => Some(None),
    };
    Some(Threshold { count: count?, within: within?, by: by?.into_boxed_slice(), distinct: distinct? })
}

/// Returns the sequence, the union of its steps' kinds and the last step's kinds.
fn compile_sequence(ctx: &mut Ctx<'_>, node: &Node, rule_kinds: Option<u32>) -> Option<(Sequence, u32, u32)> {
    let entries = ctx.map(node, "`sequence`", &["by", "within", "steps"])?;
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let within = match get("within") {
        Some(n) => ctx.window(n),
        None => {
            ctx.err(node.pos, "`sequence` needs `within` (a duration like 10m)");
            None
        }
    };
    let Some(steps_node) = get("steps") else {
        ctx.err(node.pos, "`sequence` needs `steps` (a list of at least two)");
        return None;
    };
    let NodeKind::Seq(items) = &steps_node.kind else {
        ctx.err(steps_node.pos, "`steps` must be a list");
        return None;
    };
    if !(2..=16).contains(&items.len()) {
        ctx.err(steps_node.pos, "`steps` must have from 2 to 16 steps");
        return None;
    }
    let mut steps = Vec::new();
    let mut union = 0;
    let mut ok = true;
    for item in items {
        let Some(e) = ctx.map(item, "a step", &["name", "on", "when", "count"]) else {
            ok = false;
            continue;
        };
        let get = |k: &str| e.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let kinds = match get("on") {
            Some(n) => ctx.kinds(n),
            None => match rule_kinds {
                Some(k) => Some(k),
                None => {
                    ctx.err(item.pos, "a step needs `on` (or give `on` to the whole rule)");
                    None
                }
            },
        };
        let Some(kinds) = kinds else {
            ok = false;
            continue;
        };
        union |= kinds;
        let when = match get("when") {
            Some(n) => ctx.cond(n, kinds),
            None => Some(Cond::True),
        };
        let count = match get("count") {
            Some(n) => ctx.integer(n, "`count`", 1, MAX_COUNT).and_then(|c| u32::try_from(c).ok()),
            None => Some(1),
        };
        if let Some(n) = get("name") {
            ctx.string(n, "`name`");
        }
        match (when, count) {
            (Some(when), Some(count)) => steps.push(Step { kinds, when, count }),
            _ => ok = false,
        }
    }
    let by = match get("by") {
        Some(n) if union != 0 => ctx.fields(n, union, "`by`"),
        Some(_) => None,
        None => Some(Vec::new()),
    };
    if !ok {
        return None;
    }
    let last = steps.last().map_or(0, |s| s.kinds);
    Some((
        Sequence { within: within?, by: by?.into_boxed_slice(), steps: steps.into_boxed_slice() },
        union,
        last,
    ))
}

const ACTIONS: &[&str] = &["block_ip", "kill", "deny_exec", "quarantine", "isolate_host", "lock_account"];

fn compile_actions(ctx: &mut Ctx<'_>, node: &Node, kinds: u32) -> Option<Vec<ActionSpec>> {
    let NodeKind::Seq(items) = &node.kind else {
        ctx.err(node.pos, "`actions` must be a list, like `- block_ip: {target: source.ip, ttl: 1h}`");
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match compile_action(ctx, item, kinds) {
            Some(a) => out.push(a),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn compile_action(ctx: &mut Ctx<'_>, item: &Node, kinds: u32) -> Option<ActionSpec> {
    // `- kill` or `- kill: {tree: true}`.
    let (name, name_pos, params) = match &item.kind {
        NodeKind::Scalar { text, .. } => (text.as_str(), item.pos, None),
        NodeKind::Map(entries) if entries.len() == 1 => {
            let (k, v) = &entries[0];
            (k.as_str().unwrap_or(""), k.pos, if v.is_null() { None } else { Some(v) })
        }
        _ => {
            ctx.err(item.pos, format!("an action is one of {} with its parameters", ACTIONS.join(", ")));
            return None;
        }
    };
    let allowed: &[&str] = match name {
        "block_ip" | "lock_account" => &["target", "ttl"],
        "kill" => &["target", "tree"],
        "deny_exec" | "quarantine" => &["target"],
        "isolate_host" => &["ttl"],
        _ => {
            ctx.err(name_pos, format!("unknown action `{name}`; expected one of: {}", ACTIONS.join(", ")));
            return None;
        }
    };
    let entries = match params {
        Some(p) => ctx.map(p, &format!("`{name}`"), allowed)?,
        None => Vec::new(),
    };
    let get = |k: &str| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let (default_target, accepts): (&str, &[&str]) = match name {
        "block_ip" => ("source.ip", &["source.ip", "destination.ip"]),
        "kill" => ("process.pid", &["process.pid", "process.parent.pid"]),
        "deny_exec" => {
            ("process.executable", &["process.executable", "process.parent.executable", "file.path"])
        }
        "quarantine" => ("file.path", &["file.path", "file.target_path", "process.executable"]),
        "lock_account" => ("user.name", &["user.name"]),
        _ => ("", &[]),
    };
    let target = if accepts.is_empty() {
        None
    } else {
        let (path, pos) = match get("target") {
            Some(n) => (ctx.string(n, "`target`")?, n.pos),
            None => (default_target, name_pos),
        };
        if !accepts.contains(&path) {
            ctx.err(pos, format!("`{name}` takes its target from {}, not `{path}`", accepts.join(" or ")));
            return None;
        }
        match expr::check_field(path, &kinds_of(kinds)) {
            Ok((f, ty)) => {
                debug_assert!(ty != Type::StrList);
                Some(f)
            }
            Err(m) => {
                let how = if get("target").is_some() { "" } else { " (the default target; set `target:`)" };
                ctx.err(pos, format!("`{name}`: {m}{how}"));
                return None;
            }
        }
    };
    let ttl = match get("ttl") {
        Some(n) => Some(ctx.duration(n, "`ttl`")?),
        None => None,
    };
    let target_or_fail = target.unwrap_or(Field::Message);
    Some(match name {
        "block_ip" => {
            let Some(ttl) = ttl else {
                ctx.err(name_pos, "`block_ip` needs a `ttl` (how long the block lasts, like 1h)");
                return None;
            };
            ActionSpec::BlockIp { target: target_or_fail, ttl }
        }
        "kill" => {
            let tree = match get("tree") {
                Some(n) => ctx.boolean(n, "`tree`")?,
                None => false,
            };
            ActionSpec::Kill { target: target_or_fail, tree }
        }
        "deny_exec" => ActionSpec::DenyExec { target: target_or_fail },
        "quarantine" => ActionSpec::Quarantine { target: target_or_fail },
        "isolate_host" => ActionSpec::IsolateHost { ttl },
        _ => ActionSpec::LockAccount { target: target_or_fail, ttl },
    })
}
