//! Sigma rules in the binary: found among `policies.paths` (a file with `logsource` and
//! `detection`), loaded by `picket-sigma` when the `sigma` feature is built in, reported by
//! `policy check`, and run by the agent and `replay` beside picket's own policies.
//!
//! Without the feature (the smallest builds), Sigma files are still recognised, so they are never
//! mistaken for broken picket policies: the agent says once that it ignores them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use picket_event::Event;

use crate::config::SigmaLevel;

/// The loaded Sigma rules, or none.
#[derive(Debug, Default)]
pub struct Sigma {
    #[cfg(feature = "sigma")]
    set: Option<picket_sigma::SigmaSet>,
}

/// What loading found, for `policy check` and the agent's start-up lines.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Sigma files found among the policy paths.
    pub files: usize,
    /// One line per notable thing: rules left out and why, fields never present.
    pub notes: Vec<String>,
    /// Rules loaded, by logsource category.
    pub by_category: BTreeMap<String, usize>,
}

impl Loaded {
    pub fn rules(&self) -> usize {
        self.by_category.values().sum()
    }

    /// One line: "N Sigma rule(s) (process_creation 90, ...) from M file(s), K left out".
    pub fn summary(&self) -> String {
        let cats: Vec<String> = self.by_category.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let mut s = format!("{} Sigma rule(s) from {} file(s)", self.rules(), self.files);
        if !cats.is_empty() {
            s.push_str(&format!(" ({})", cats.join(", ")));
        }
        s
    }
}

#[cfg(feature = "sigma")]
fn level(l: SigmaLevel) -> picket_sigma::Level {
    use picket_sigma::Level as L;
    match l {
        SigmaLevel::Informational => L::Informational,
        SigmaLevel::Low => L::Low,
        SigmaLevel::Medium => L::Medium,
        SigmaLevel::High => L::High,
        SigmaLevel::Critical => L::Critical,
    }
}

impl Sigma {
    /// Load the Sigma files among `paths` (paths that do not exist are skipped: picket's own
    /// loader reports them). Invalid Sigma files are an error listing each.
    pub fn load(paths: &[PathBuf], min_level: SigmaLevel) -> Result<(Sigma, Loaded), String> {
        let existing: Vec<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
        let files = picket_policy::sigma_files(&existing);
        let mut loaded = Loaded { files: files.len(), ..Loaded::default() };
        if files.is_empty() {
            return Ok((Sigma::default(), loaded));
        }
        #[cfg(feature = "sigma")]
        {
            let (set, report) = picket_sigma::load(&files, level(min_level)).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                lines.join("\n")
            })?;
            for s in &report.skipped {
                loaded.notes.push(format!("{}: {}: left out: {}", s.file.display(), s.rule, s.reason));
            }
            for p in &report.partial {
                loaded.notes.push(format!(
                    "{}: {}: tests {} which picket events do not carry; those parts never match",
                    p.file.display(),
                    p.rule,
                    p.fields.join(", ")
                ));
            }
            loaded.by_category = report.loaded_by_category;
            Ok((Sigma { set: Some(set) }, loaded))
        }
        #[cfg(not(feature = "sigma"))]
        {
            let _ = min_level;
            loaded.notes.push(format!(
                "{} Sigma rule file(s) ignored: this build of picket has no Sigma support (feature `sigma`)",
                files.len()
            ));
            Ok((Sigma::default(), loaded))
        }
    }

    /// Push an `alert` for each Sigma rule at or above the level that `ev` matches.
    pub fn detect(&mut self, ev: &Event, out: &mut Vec<Event>) {
        #[cfg(feature = "sigma")]
        if let Some(set) = &mut self.set {
            set.detect(ev, out);
        }
        #[cfg(not(feature = "sigma"))]
        let _ = (ev, out);
    }

    /// Counters for `agent.health`: `sigma.evaluated`, `sigma.alerts.<level>`,
    /// `sigma.below_level.<level>`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        #[cfg(feature = "sigma")]
        if let Some(set) = &self.set {
            let st = set.stats();
            let mut m = BTreeMap::new();
            m.insert("sigma.evaluated".to_string(), st.evaluated);
            for (l, n) in &st.alerts {
                m.insert(format!("sigma.alerts.{l}"), *n);
            }
            for (l, n) in &st.below_level {
                m.insert(format!("sigma.below_level.{l}"), *n);
            }
            return m;
        }
        BTreeMap::new()
    }
}
