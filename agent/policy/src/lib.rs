#![doc = include_str!("../README.md")]

mod compile;
mod engine;
mod error;
mod expr;
mod field;
mod index;
mod testing;
mod yaml;

use picket_event::{Event, EventKind};

pub use compile::{MAX_COUNT, Mode, PolicySet, RuleMeta, is_sigma_text, load_paths, load_str, sigma_files};
pub use engine::{
    ActionRequest, Decision, Engine, EngineStats, GroupSnapshot, GroupStateSnapshot, RuleSnapshot, RuleStats,
    StateLimits, StateSnapshot, Unresolved,
};
pub use error::{PolicyError, PolicyErrors};
pub use field::FIELDS;
pub use testing::{CaseResult, TestReport, run_tests};

/// The field paths a rule may use on events of `kind` (for `picket policy check` help and docs).
pub fn fields_of(kind: EventKind) -> Vec<&'static str> {
    field::fields_of(kind)
}

/// The `alert` event the runtime journals for a decision: kind `alert`, the rule's id, name and
/// description in `rule.*`, the decision's severity, the trigger's time, host and subject
/// ([`Event::alert_on`]), and a one-line message.
pub fn alert_event(d: &Decision, trigger: &Event) -> Event {
    let mut ev = Event::alert_on(trigger);
    ev.event.severity = d.severity;
    ev.event.dataset = Some("picket.policy".into());
    ev.rule = Some(picket_event::Rule {
        id: d.rule_id.to_string(),
        name: Some(d.rule.name.clone()),
        description: Some(d.rule.description.clone()),
        ..Default::default()
    });
    let mut msg = format!("{}: {}", d.rule.name, d.rule.description);
    match (d.count, &d.group) {
        (Some(c), Some(g)) => msg.push_str(&format!(" ({c} events, {g})")),
        (Some(c), None) => msg.push_str(&format!(" ({c} events)")),
        (None, Some(g)) => msg.push_str(&format!(" ({g})")),
        (None, None) => {}
    }
    if !d.unresolved.is_empty() {
        let names: Vec<String> =
            d.unresolved.iter().map(|u| format!("{} ({} {})", u.action, u.field, u.reason)).collect();
        msg.push_str(&format!("; not actionable: {}", names.join(", ")));
    }
    ev.message = Some(msg);
    ev
}
