//! Sigma detection rules, evaluated on picket's events on the device.
//!
//! Rules are parsed and compiled by rsigma (`rsigma-parser`, `rsigma-eval`, pinned to 0.23.0, the
//! newest that builds with Rust 1.95). At load, one processing pipeline
//! (`pipeline/picket_linux.yml`, embedded) rewrites Sigma's field names (`Image`, `CommandLine`,
//! `TargetFilename`, ...) to picket's ECS paths, so events are evaluated as the agent emits them,
//! read straight from the struct ([`view::SigmaView`]).
//!
//! Each event is routed by kind to its Sigma logsource category ([`category`]): only rules of that
//! category, and rules with no category (product-only keyword rules), are evaluated. A match at or
//! above the configured level becomes an `alert` event ([`SigmaSet::detect`]) carrying the rule's
//! id, title, level, author (the Detection Rule License asks for it on every match) and tags, plus
//! the matched event's process, file, network and user fields, so picket policies can attach
//! containment to it (`on: alert`, `when: rule.ruleset == "sigma" and ...`). Matches below the
//! level are only counted.
//!
//! Loading never fails on a rule that cannot apply to picket's events (another product, a log
//! service picket does not read, a category no event kind routes to, a correlation): it is left
//! out and reported once, with the reason, in the [`Report`]. A file that is not valid Sigma is
//! an error naming the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use picket_event::{Event, EventKind, Rule, severity};
use rsigma_eval::{Engine, Pipeline, RuleFieldSet};
use rsigma_parser::{LogSource, SigmaCollection, SigmaRule};

pub mod view;

pub use view::SigmaView;

/// The pipeline that maps Sigma field names to picket's ECS fields.
pub const PIPELINE: &str = include_str!("../pipeline/picket_linux.yml");

/// Custom attribute that ties a compiled rule back to its [`RuleInfo`].
const INDEX_ATTR: &str = "picket.index";

/// Sigma's `level`, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] =
        [Level::Informational, Level::Low, Level::Medium, Level::High, Level::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// picket's `event.severity` for an alert of this level.
    pub fn severity(self) -> u8 {
        match self {
            Level::Informational => severity::INFO,
            Level::Low => severity::LOW,
            Level::Medium => severity::MEDIUM,
            Level::High => severity::HIGH,
            Level::Critical => severity::CRITICAL,
        }
    }

    fn from_sigma(l: Option<rsigma_parser::Level>) -> Level {
        use rsigma_parser::Level as L;
        match l {
            None | Some(L::Informational) => Level::Informational,
            Some(L::Low) => Level::Low,
            Some(L::Medium) => Level::Medium,
            Some(L::High) => Level::High,
            Some(L::Critical) => Level::Critical,
        }
    }
}

/// The Sigma logsource category of a picket event kind. `None`: the kind is not evaluated at all
/// (picket's own alerts, actions and health; `process.exit` and `process.setid`, which repeat
/// their start's command line: a process_creation rule or a keyword rule would fire again on the
/// same command line). `Some(None)`: evaluated against product-only rules (keywords) only.
pub fn category(kind: EventKind) -> Option<Option<&'static str>> {
    use EventKind as K;
    match kind {
        K::ProcessStart => Some(Some("process_creation")),
        K::FileCreate => Some(Some("file_event")),
        K::FileModify => Some(Some("file_change")),
        K::FileDelete => Some(Some("file_delete")),
        K::FileRename => Some(Some("file_rename")),
        K::NetFlow => Some(Some("network_connection")),
        K::NetDns => Some(Some("dns_query")),
        K::FileAttrib | K::AuthFailure | K::AuthSuccess => Some(None),
        K::ProcessExit | K::ProcessSetid | K::Alert | K::Action | K::AgentHealth | K::JournalGap => None,
    }
}

/// Every category some picket event kind routes to.
pub const CATEGORIES: &[&str] = &[
    "process_creation",
    "file_event",
    "file_change",
    "file_delete",
    "file_rename",
    "network_connection",
    "dns_query",
];

/// What picket keeps about a loaded rule, for alerts and reports.
#[derive(Clone, Debug)]
pub struct RuleInfo {
    /// The rule's `id`, or `sigma:<title>` when it has none.
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub level: Level,
    pub author: Option<String>,
    pub tags: Vec<String>,
    /// `process_creation`, ...; `None` for product-only keyword rules.
    pub category: Option<String>,
    pub file: PathBuf,
}

/// A rule left out at load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub rule: String,
    pub reason: String,
}

/// A loaded rule that names fields picket's events never carry: the parts testing them never match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    pub file: PathBuf,
    pub rule: String,
    pub fields: Vec<String>,
}

/// What a load did: rules loaded by category, and every rule left out or only partly usable.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: usize,
    pub loaded_by_category: BTreeMap<String, usize>,
    pub skipped: Vec<Skipped>,
    pub partial: Vec<Partial>,
}

impl Report {
    pub fn loaded(&self) -> usize {
        self.loaded_by_category.values().sum()
    }
}

/// A file that is not a valid Sigma rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    pub file: String,
    pub message: String,
}

/// Counters since load: alerts raised and matches below the alert level, by level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub evaluated: u64,
    pub alerts: BTreeMap<&'static str, u64>,
    pub below_level: BTreeMap<&'static str, u64>,
}

/// The compiled rules of a load, ready to evaluate.
pub struct SigmaSet {
    engine: Engine,
    rules: Vec<RuleInfo>,
    min_level: Level,
    stats: Stats,
    /// One logsource per category (and one without), built once.
    logsources: HashMap<Option<&'static str>, LogSource>,
}

impl std::fmt::Debug for SigmaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaSet")
            .field("rules", &self.rules.len())
            .field("min_level", &self.min_level)
            .finish()
    }
}

/// A match of one rule on one event.
#[derive(Clone, Debug)]
pub struct Match<'a> {
    pub rule: &'a RuleInfo,
    /// ECS fields and the values that matched (empty for keyword matches).
    pub fields: Vec<(String, String)>,
}

fn pipeline() -> Pipeline {
    // The embedded pipeline is tested (`tests/sigma.rs`); it cannot fail to parse at run time.
    rsigma_eval::parse_pipeline(PIPELINE).expect("embedded Sigma pipeline parses")
}

/// Why a rule cannot apply to picket's events, if it cannot.
fn inapplicable(ls: &LogSource) -> Option<String> {
    if let Some(p) = &ls.product
        && p != "linux"
    {
        return Some(format!("logsource product `{p}`: picket runs on Linux"));
    }
    if let Some(s) = &ls.service {
        return Some(format!(
            "logsource service `{s}`: needs raw {s} log records, which picket does not evaluate Sigma on"
        ));
    }
    if let Some(c) = &ls.category
        && !CATEGORIES.contains(&c.as_str())
    {
        return Some(format!("logsource category `{c}`: no picket event kind routes to it"));
    }
    None
}

fn rule_name(r: &SigmaRule) -> String {
    match &r.id {
        Some(id) => format!("{id} ({})", r.title),
        None => r.title.clone(),
    }
}

/// Parse and compile the Sigma files `files`. Rules that cannot apply are skipped and reported;
/// a file that does not parse is an error (all such errors are returned together).
pub fn load(files: &[PathBuf], min_level: Level) -> Result<(SigmaSet, Report), Vec<LoadError>> {
    let pipeline = pipeline();
    let mut engine = Engine::new_with_pipeline(pipeline.clone());
    let mut pending = Vec::new();
    let mut report = Report { files: files.len(), ..Report::default() };
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(LoadError {
                    file: file.display().to_string(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let collection = match rsigma_parser::parse_sigma_yaml(&text) {
            Ok(c) => c,
            Err(e) => {
                errors.push(LoadError { file: file.display().to_string(), message: e.to_string() });
                continue;
            }
        };
        for e in &collection.errors {
            errors.push(LoadError { file: file.display().to_string(), message: e.clone() });
        }
        select(file, collection, &pipeline, &mut pending, &mut report);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // One batch: the engine builds its candidate index once (rules added one by one stay
    // "pending" and are evaluated against every event).
    let failed = engine.add_rules(pending.iter().map(|p: &Pending| &p.rule));
    let mut failed: HashMap<usize, String> = failed.into_iter().map(|(i, e)| (i, e.to_string())).collect();
    let mut rules = Vec::with_capacity(pending.len());
    for (i, p) in pending.into_iter().enumerate() {
        let name = rule_name(&p.rule);
        if let Some(e) = failed.remove(&i) {
            report.skipped.push(Skipped {
                file: p.info.file.clone(),
                rule: name,
                reason: format!("does not compile: {e}"),
            });
            // Kept so the indices in the compiled rules stay right; it never matches.
            rules.push(p.info);
            continue;
        }
        if !p.missing.is_empty() {
            report.partial.push(Partial { file: p.info.file.clone(), rule: name, fields: p.missing });
        }
        let cat = p.info.category.clone().unwrap_or_else(|| "(keywords, every kind)".into());
        *report.loaded_by_category.entry(cat).or_insert(0) += 1;
        rules.push(p.info);
    }
    let mut logsources = HashMap::new();
    for c in CATEGORIES.iter().copied().map(Some).chain([None]) {
        let ls = LogSource {
            product: Some("linux".into()),
            category: c.map(str::to_string),
            ..LogSource::default()
        };
        logsources.insert(c, ls);
    }
    Ok((SigmaSet { engine, rules, min_level, stats: Stats::default(), logsources }, report))
}

/// A rule that applies, waiting to be compiled with the others.
struct Pending {
    rule: SigmaRule,
    info: RuleInfo,
    /// Fields it tests (after mapping) that no picket event carries.
    missing: Vec<String>,
}

/// The rules of one file that can apply to picket's events go to `pending`; the others are
/// reported with the reason.
fn select(
    file: &Path,
    collection: SigmaCollection,
    pipeline: &Pipeline,
    pending: &mut Vec<Pending>,
    report: &mut Report,
) {
    let skip = |report: &mut Report, rule: String, reason: String| {
        report.skipped.push(Skipped { file: file.to_path_buf(), rule, reason });
    };
    for c in &collection.correlations {
        skip(report, c.title.clone(), "correlation rules are not evaluated on the device yet".into());
    }
    for f in &collection.filters {
        skip(report, f.title.clone(), "filter rules are not applied on the device yet".into());
    }
    for mut rule in collection.rules {
        if let Some(why) = inapplicable(&rule.logsource) {
            skip(report, rule_name(&rule), why);
            continue;
        }
        let info = RuleInfo {
            id: rule.id.clone().unwrap_or_else(|| format!("sigma:{}", rule.title)),
            title: rule.title.clone(),
            description: rule.description.clone(),
            level: Level::from_sigma(rule.level),
            author: rule.author.clone(),
            tags: rule.tags.clone(),
            category: rule.logsource.category.clone(),
            file: file.to_path_buf(),
        };
        rule.custom_attributes.insert(INDEX_ATTR.into(), pending.len().to_string().into());
        let one = SigmaCollection { rules: vec![rule.clone()], ..SigmaCollection::new() };
        let fields = RuleFieldSet::collect(&one, std::slice::from_ref(pipeline), false);
        let mut missing: Vec<String> =
            fields.names().filter(|f| !view::FIELDS.contains(f)).map(str::to_string).collect();
        missing.sort();
        pending.push(Pending { rule, info, missing });
    }
}

impl SigmaSet {
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    pub fn min_level(&self) -> Level {
        self.min_level
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every rule that matches `ev`, whatever its level. Events of kinds Sigma is not run on
    /// (see [`category`]) match nothing.
    pub fn matches(&self, ev: &Event) -> Vec<Match<'_>> {
        let Some(cat) = category(ev.kind) else { return Vec::new() };
        let Some(ls) = self.logsources.get(&cat) else { return Vec::new() };
        let results = self.engine.evaluate_with_logsource(&SigmaView(ev), ls);
        results
            .into_iter()
            .filter_map(|r| {
                let idx: usize = r.header.custom_attributes.get(INDEX_ATTR)?.as_str()?.parse().ok()?;
                let rule = self.rules.get(idx)?;
                let fields = r
                    .as_detection()
                    .map(|d| {
                        d.matched_fields
                            .iter()
                            .map(|m| {
                                let v = match &m.value {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                (m.field.clone(), v)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(Match { rule, fields })
            })
            .collect()
    }

    /// Evaluate `ev`; push one `alert` event per match at or above the configured level onto
    /// `out`, and count the matches below it.
    pub fn detect(&mut self, ev: &Event, out: &mut Vec<Event>) {
        if category(ev.kind).is_none() {
            return;
        }
        self.stats.evaluated += 1;
        let mut raised = Vec::new();
        let mut below = Vec::new();
        for m in self.matches(ev) {
            let level = m.rule.level;
            if level >= self.min_level {
                out.push(alert_event(&m, ev));
                raised.push(level);
            } else {
                below.push(level);
            }
        }
        for level in raised {
            *self.stats.alerts.entry(level.as_str()).or_insert(0) += 1;
        }
        for level in below {
            *self.stats.below_level.entry(level.as_str()).or_insert(0) += 1;
        }
    }
}

/// The `alert` event for a Sigma match: the rule (`rule.ruleset = "sigma"`, id, title, level,
/// author, tags) and the matched event's process, file, network and user fields.
/// `event.trigger_seq` is the trigger's seq when it has one (replay of journaled events); the
/// agent's journal writer fills it in otherwise.
pub fn alert_event(m: &Match<'_>, trigger: &Event) -> Event {
    let r = m.rule;
    let mut ev = Event::alert_on(trigger);
    ev.event.severity = r.level.severity();
    ev.event.dataset = Some("picket.sigma".into());
    ev.event.module = Some("sigma".into());
    ev.event.trigger_seq = (trigger.seq != 0).then_some(trigger.seq);
    ev.rule = Some(Rule {
        id: r.id.clone(),
        name: Some(r.title.clone()),
        description: r.description.clone(),
        ruleset: Some("sigma".into()),
        level: Some(r.level.as_str().into()),
        author: r.author.clone(),
        tags: (!r.tags.is_empty()).then(|| r.tags.clone()),
    });
    let mut msg = format!("Sigma {}: {} ({}", r.level.as_str(), r.title, trigger.kind.as_str());
    if let Some(a) = &r.author {
        msg.push_str(&format!("; rule by {a}"));
    }
    msg.push(')');
    if !m.fields.is_empty() {
        let mut shown: Vec<String> = m.fields.iter().map(|(f, v)| format!("{f}={v:?}")).collect();
        shown.dedup();
        shown.truncate(4);
        msg.push_str(&format!("; matched {}", shown.join(", ")));
    }
    ev.message = Some(msg);
    ev
}
