//! The engine: a compiled [`PolicySet`] plus the window and sequence state of its stateful rules.
//!
//! A plain struct with methods, no I/O and no clock: time is the events' `@timestamp`. Feeding
//! the same events to a fresh engine gives the same decisions, whatever the wall clock says.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashlink::LinkedHashMap;
use picket_event::{Event, Timestamp};
use serde::{Deserialize, Serialize};

use crate::compile::{
    ActionSpec, Logic, Mode, PolicySet, Rule, RuleMeta, Sequence, Threshold, kind_bit, kind_index,
};
use crate::field::{Field, Val};

/// Bounds on window state. Defaults keep one stateful rule under a few MB in the worst case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLimits {
    /// Groups (distinct `by` keys) one rule may track. When a new group arrives at the cap, the
    /// least recently seen group is dropped and counted in [`RuleStats::evicted_groups`].
    pub max_groups_per_rule: usize,
    /// Events (or distinct values, or sequence hits per step) one group remembers. A window needs
    /// at most its `count`; a lower cap drops the oldest, counted in [`RuleStats::evicted_events`].
    pub max_events_per_group: usize,
}

impl Default for StateLimits {
    fn default() -> StateLimits {
        StateLimits { max_groups_per_rule: 4096, max_events_per_group: 256 }
    }
}

/// A containment request, its parameters taken from the triggering event. The actions module
/// decides whether and how to carry it out (mode, protected CIDRs, dry run).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionRequest {
    BlockIp {
        ip: IpAddr,
        #[serde(rename = "ttl_secs", with = "secs")]
        ttl: Duration,
    },
    Kill {
        pid: u32,
        tree: bool,
    },
    DenyExec {
        path: String,
    },
    Quarantine {
        path: String,
    },
    IsolateHost {
        #[serde(rename = "ttl_secs", with = "opt_secs", default, skip_serializing_if = "Option::is_none")]
        ttl: Option<Duration>,
    },
    LockAccount {
        user: String,
        #[serde(rename = "ttl_secs", with = "opt_secs", default, skip_serializing_if = "Option::is_none")]
        ttl: Option<Duration>,
    },
}

impl ActionRequest {
    /// The action's name as written in policies (`block_ip`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ActionRequest::BlockIp { .. } => "block_ip",
            ActionRequest::Kill { .. } => "kill",
            ActionRequest::DenyExec { .. } => "deny_exec",
            ActionRequest::Quarantine { .. } => "quarantine",
            ActionRequest::IsolateHost { .. } => "isolate_host",
            ActionRequest::LockAccount { .. } => "lock_account",
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_secs))
    }
}

/// An action the rule asks for whose target the event does not give (missing field, or a value
/// that is not an IP address / pid). Reported, never a panic; the alert still stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unresolved {
    pub action: String,
    pub field: String,
    pub reason: String,
}

/// What a rule decided about an event: the alert and the actions it asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub rule_id: Arc<str>,
    /// Name, description, MITRE technique, origin of the rule.
    pub rule: Arc<RuleMeta>,
    pub severity: u8,
    /// The rule's own mode; `None` follows the agent's (`agent.mode`).
    pub mode: Option<Mode>,
    pub actions: Vec<ActionRequest>,
    /// Actions the rule asks for that this event gives no target for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<Unresolved>,
    /// For windows and sequences: the `by` values, joined with `,`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For windows: events (or distinct values) in the window; for sequences: events in the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For windows and sequences: the time of the first event counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    /// The triggering event's time.
    pub timestamp: Timestamp,
}

impl Decision {
    /// The mode that applies, given the agent's.
    pub fn effective_mode(&self, agent: Mode) -> Mode {
        self.mode.unwrap_or(agent)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hit {
    t: i64,
    /// When the chain this hit extends started (its first step-0 event).
    start: i64,
}

#[derive(Clone, Debug)]
enum GroupState {
    /// Event times in the window, ascending.
    Count(VecDeque<i64>),
    /// Distinct values with the last time each was seen.
    Distinct(Vec<(String, i64)>),
    /// Per step, the newest hits that may still be part of a chain.
    Sequence(Vec<VecDeque<Hit>>),
}

#[derive(Clone, Debug, Default)]
struct RuleState {
    /// Groups in least-recently-seen-first order.
    groups: LinkedHashMap<String, GroupState>,
    evicted_groups: u64,
    evicted_events: u64,
}

/// Counters for `picket status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub rules: usize,
    /// Groups held across all rules.
    pub state_entries: usize,
    /// Stateful rules only.
    pub per_rule: Vec<RuleStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    pub rule_id: Arc<str>,
    pub groups: usize,
    pub evicted_groups: u64,
    pub evicted_events: u64,
}

/// Window and sequence state as plain data, for the runtime to persist (JSON, SQLite, ...) and
/// hand back after a restart, so that an attacker's count survives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub version: u32,
    pub rules: Vec<RuleSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    pub rule_id: String,
    /// What kind of state this is; restored only into a rule of the same id and shape.
    pub shape: String,
    pub evicted_groups: u64,
    pub evicted_events: u64,
    /// Least recently seen first.
    pub groups: Vec<GroupSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The `by` values, separated by U+001F.
    pub key: String,
    pub state: GroupStateSnapshot,
}

/// Times are unix nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupStateSnapshot {
    Count {
        times: Vec<i64>,
    },
    Distinct {
        values: Vec<(String, i64)>,
    },
    /// Per step, `(time, chain start)` pairs.
    Sequence {
        steps: Vec<Vec<(i64, i64)>>,
    },
}

const SNAPSHOT_VERSION: u32 = 1;
const KEY_SEP: char = '\u{1f}';

/// A [`PolicySet`] plus window and sequence state. See the crate docs.
#[derive(Debug)]
pub struct Engine {
    set: Arc<PolicySet>,
    limits: StateLimits,
    /// Parallel to `set.rules`: `Some` for rules with a window or a sequence.
    states: Vec<Option<RuleState>>,
    /// Reused for group keys and distinct values: no allocation per event once warm.
    key: String,
    value: String,
    /// Candidate rules for the current event (a bitset over `set.rules`).
    bits: Vec<u64>,
}

fn fresh_states(set: &PolicySet) -> Vec<Option<RuleState>> {
    set.rules.iter().map(|r| r.state_shape().map(|_| RuleState::default())).collect()
}

impl Engine {
    pub fn new(set: Arc<PolicySet>, limits: StateLimits) -> Engine {
        let states = fresh_states(&set);
        let limits = StateLimits {
            max_groups_per_rule: limits.max_groups_per_rule.max(1),
            max_events_per_group: limits.max_events_per_group.max(1),
        };
        let bits = vec![0; set.words];
        Engine {
            set,
            limits,
            states,
            key: String::with_capacity(256),
            value: String::with_capacity(256),
            bits,
        }
    }

    /// The rules in force.
    pub fn set(&self) -> &Arc<PolicySet> {
        &self.set
    }

    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// Swap in a new set (hot reload). A stateful rule whose id survives with the same window
    /// shape (same kind of window, `by` fields, distinct field, step counts) keeps its state; a
    /// changed `within` or `count` applies from the next event on. Other state is dropped.
    pub fn replace_set(&mut self, set: Arc<PolicySet>) {
        let mut old_states = std::mem::take(&mut self.states);
        let old_set = std::mem::replace(&mut self.set, set);
        let mut states = fresh_states(&self.set);
        for (new_rule, slot) in self.set.rules.iter().zip(states.iter_mut()) {
            let Some(shape) = new_rule.state_shape() else { continue };
            let old = old_set
                .rules
                .iter()
                .position(|r| r.meta.id == new_rule.meta.id && r.state_shape() == Some(shape.clone()));
            if let Some(i) = old
                && let Some(st) = old_states[i].take()
            {
                *slot = Some(st);
            }
        }
        self.states = states;
        self.bits = vec![0; self.set.words];
    }

    /// Evaluate one event against every rule for its kind, pushing one [`Decision`] per rule that
    /// fires. Pure: no clock, no I/O. When no rule's condition holds it pushes nothing and
    /// allocates nothing.
    pub fn evaluate(&mut self, ev: &Event, out: &mut Vec<Decision>) {
        let set = &*self.set;
        let ki = &set.by_kind[kind_index(ev.kind)];
        if ki.rules.is_empty() {
            return;
        }
        // Candidates: the rules always evaluated, plus those the index selects.
        ki.candidates(ev, &mut self.bits);
        // In rule order, so decisions come out in load order.
        for w in 0..self.bits.len() {
            let mut word = self.bits[w];
            while word != 0 {
                let ri = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                self.eval_rule(ri, ev, out);
            }
        }
    }

    #[inline]
    fn eval_rule(&mut self, ri: usize, ev: &Event, out: &mut Vec<Decision>) {
        let rule = &self.set.rules[ri];
        if !rule.when.eval(ev) {
            return;
        }
        if rule.except.as_ref().is_some_and(|x| x.eval(ev)) {
            return;
        }
        match &rule.logic {
            Logic::Each => out.push(decide(rule, ev, None, None, None)),
            Logic::Threshold(t) => {
                if let Some(st) = self.states[ri].as_mut()
                    && let Some((group, count, first)) =
                        threshold(t, st, ev, self.limits, &mut self.key, &mut self.value)
                {
                    out.push(decide(rule, ev, group, Some(count), Some(first)));
                }
            }
            Logic::Sequence(s) => {
                let bit = kind_bit(ev.kind);
                let mut mask = 0u32;
                for (i, step) in s.steps.iter().enumerate() {
                    if step.kinds & bit != 0 && step.when.eval(ev) {
                        mask |= 1 << i;
                    }
                }
                if mask == 0 {
                    return;
                }
                if let Some(st) = self.states[ri].as_mut()
                    && let Some((group, count, first)) = sequence(s, st, ev, mask, self.limits, &mut self.key)
                {
                    out.push(decide(rule, ev, group, Some(count), Some(first)));
                }
            }
        }
    }

    /// The window and sequence state, as data.
    pub fn snapshot(&self) -> StateSnapshot {
        let mut rules = Vec::new();
        for (rule, st) in self.set.rules.iter().zip(&self.states) {
            let (Some(st), Some(shape)) = (st, rule.state_shape()) else { continue };
            let groups = st
                .groups
                .iter()
                .map(|(key, g)| GroupSnapshot {
                    key: key.clone(),
                    state: match g {
                        GroupState::Count(times) => {
                            GroupStateSnapshot::Count { times: times.iter().copied().collect() }
                        }
                        GroupState::Distinct(values) => {
                            GroupStateSnapshot::Distinct { values: values.clone() }
                        }
                        GroupState::Sequence(steps) => GroupStateSnapshot::Sequence {
                            steps: steps.iter().map(|d| d.iter().map(|h| (h.t, h.start)).collect()).collect(),
                        },
                    },
                })
                .collect();
            rules.push(RuleSnapshot {
                rule_id: rule.meta.id.to_string(),
                shape,
                evicted_groups: st.evicted_groups,
                evicted_events: st.evicted_events,
                groups,
            });
        }
        StateSnapshot { version: SNAPSHOT_VERSION, rules }
    }

    /// Replace all window state with a snapshot's. State for rules that no longer exist, or whose
    /// shape changed, is dropped; state beyond the current limits keeps the most recent part.
    pub fn restore(&mut self, s: StateSnapshot) {
        self.states = fresh_states(&self.set);
        if s.version != SNAPSHOT_VERSION {
            return;
        }
        let limits = self.limits;
        for rs in s.rules {
            let Some(i) = self.set.rules.iter().position(|r| {
                *r.meta.id == *rs.rule_id && r.state_shape().as_deref() == Some(rs.shape.as_str())
            }) else {
                continue;
            };
            let rule = &self.set.rules[i];
            let Some(st) = self.states[i].as_mut() else { continue };
            st.evicted_groups = rs.evicted_groups;
            st.evicted_events = rs.evicted_events;
            let skip = rs.groups.len().saturating_sub(limits.max_groups_per_rule);
            for g in rs.groups.into_iter().skip(skip) {
                if let Some(state) = restore_group(&rule.logic, g.state, limits.max_events_per_group) {
                    st.groups.insert(g.key, state);
                }
            }
        }
    }

    pub fn stats(&self) -> EngineStats {
        let per_rule: Vec<RuleStats> = self
            .set
            .rules
            .iter()
            .zip(&self.states)
            .filter_map(|(r, st)| {
                st.as_ref().map(|st| RuleStats {
                    rule_id: r.meta.id.clone(),
                    groups: st.groups.len(),
                    evicted_groups: st.evicted_groups,
                    evicted_events: st.evicted_events,
                })
            })
            .collect();
        EngineStats {
            rules: self.set.rules.len(),
            state_entries: per_rule.iter().map(|r| r.groups).sum(),
            per_rule,
        }
    }
}

fn restore_group(logic: &Logic, s: GroupStateSnapshot, cap: usize) -> Option<GroupState> {
    let keep_last = |n: usize| n.saturating_sub(cap);
    match (logic, s) {
        (Logic::Threshold(t), GroupStateSnapshot::Count { mut times }) if t.distinct.is_none() => {
            times.sort_unstable();
            let skip = keep_last(times.len());
            Some(GroupState::Count(times.into_iter().skip(skip).collect()))
        }
        (Logic::Threshold(t), GroupStateSnapshot::Distinct { mut values }) if t.distinct.is_some() => {
            values.sort_by_key(|v| v.1);
            let skip = keep_last(values.len());
            Some(GroupState::Distinct(values.into_iter().skip(skip).collect()))
        }
        (Logic::Sequence(seq), GroupStateSnapshot::Sequence { steps }) if steps.len() == seq.steps.len() => {
            Some(GroupState::Sequence(
                steps
                    .into_iter()
                    .map(|hits| {
                        let skip = keep_last(hits.len());
                        hits.into_iter().skip(skip).map(|(t, start)| Hit { t, start }).collect()
                    })
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// Build the group key from the `by` fields into `key`. False if one is missing: an event without
/// the grouping field cannot be attributed, so it does not count.
fn group_key(by: &[Field], ev: &Event, key: &mut String) -> bool {
    key.clear();
    for (i, f) in by.iter().enumerate() {
        if i > 0 {
            key.push(KEY_SEP);
        }
        if !f.get(ev).write_key(key) {
            return false;
        }
    }
    true
}

fn display_key(by: &[Field], key: &str) -> Option<String> {
    (!by.is_empty()).then(|| key.replace(KEY_SEP, ","))
}

/// The group's state, created (evicting the least recently seen group at the cap) if new, and
/// marked most recently seen.
fn group_mut<'a>(
    st: &'a mut RuleState,
    key: &str,
    limits: StateLimits,
    make: impl FnOnce() -> GroupState,
) -> &'a mut GroupState {
    if st.groups.contains_key(key) {
        return st.groups.to_back(key).expect("present");
    }
    while st.groups.len() >= limits.max_groups_per_rule {
        st.groups.pop_front();
        st.evicted_groups += 1;
    }
    st.groups.insert(key.to_owned(), make());
    st.groups.get_mut(key).expect("just inserted")
}

fn threshold(
    t: &Threshold,
    st: &mut RuleState,
    ev: &Event,
    limits: StateLimits,
    key: &mut String,
    value: &mut String,
) -> Option<(Option<String>, u64, Timestamp)> {
    if !group_key(&t.by, ev, key) {
        return None;
    }
    if let Some(d) = t.distinct {
        value.clear();
        if !d.get(ev).write_key(value) {
            return None;
        }
    }
    let now = ev.timestamp.unix_nanos();
    let cap = limits.max_events_per_group;
    let count = usize::try_from(t.count).unwrap_or(usize::MAX);
    let mut evicted = 0u64;
    let group = group_mut(st, key, limits, || match t.distinct {
        Some(_) => GroupState::Distinct(Vec::new()),
        None => GroupState::Count(VecDeque::new()),
    });
    let fired = match group {
        GroupState::Count(times) => {
            // The window ends at the newest event seen; an event older than the window (out of
            // order) is ignored, one inside it is counted in its place.
            let newest = times.back().map_or(now, |&b| b.max(now));
            let lo = newest.saturating_sub(t.within);
            if now < lo {
                return None;
            }
            let at = times.partition_point(|&x| x <= now);
            times.insert(at, now);
            while times.front().is_some_and(|&x| x < lo) {
                times.pop_front();
            }
            while times.len() > cap {
                times.pop_front();
                evicted += 1;
            }
            (times.len() >= count).then(|| (times.len(), times.front().copied().unwrap_or(now)))
        }
        GroupState::Distinct(values) => {
            let newest = values.iter().map(|v| v.1).max().map_or(now, |m| m.max(now));
            let lo = newest.saturating_sub(t.within);
            if now < lo {
                return None;
            }
            values.retain(|v| v.1 >= lo);
            if let Some(v) = values.iter_mut().find(|v| v.0 == *value) {
                v.1 = v.1.max(now);
            } else {
                if values.len() >= cap
                    && let Some(oldest) = values.iter().enumerate().min_by_key(|(_, v)| v.1).map(|(i, _)| i)
                {
                    values.swap_remove(oldest);
                    evicted += 1;
                }
                values.push((value.clone(), now));
            }
            (values.len() >= count).then(|| (values.len(), values.iter().map(|v| v.1).min().unwrap_or(now)))
        }
        GroupState::Sequence(_) => None,
    };
    st.evicted_events += evicted;
    let (n, first) = fired?;
    // Fired: forget the group, so the same attacker needs a whole new window to fire again
    // (one alert per window, not one per further event).
    st.groups.remove(key.as_str());
    Some((display_key(&t.by, key), u64::try_from(n).unwrap_or(u64::MAX), Timestamp::from_unix_nanos(first)))
}

fn sequence(
    s: &Sequence,
    st: &mut RuleState,
    ev: &Event,
    mask: u32,
    limits: StateLimits,
    key: &mut String,
) -> Option<(Option<String>, u64, Timestamp)> {
    if !group_key(&s.by, ev, key) {
        return None;
    }
    // Only a first step starts state: later steps alone need none.
    if mask & 1 == 0 && !st.groups.contains_key(key.as_str()) {
        return None;
    }
    let now = ev.timestamp.unix_nanos();
    let lo = now.saturating_sub(s.within);
    let cap = limits.max_events_per_group;
    let n = s.steps.len();
    let mut evicted = 0u64;
    let group = group_mut(st, key, limits, || GroupState::Sequence(vec![VecDeque::new(); n]));
    let GroupState::Sequence(steps) = group else { return None };
    for d in steps.iter_mut() {
        d.retain(|h| h.start >= lo);
    }
    let mut fired = None;
    // Last step first, so one event never serves as two steps of the same chain.
    for k in (0..n).rev() {
        if mask & (1 << k) == 0 {
            continue;
        }
        let start = if k == 0 {
            now
        } else {
            let prev = &steps[k - 1];
            let need = usize::try_from(s.steps[k - 1].count).unwrap_or(usize::MAX);
            if prev.len() < need {
                continue;
            }
            // The previous step completed with its newest `need` hits: the chain starts where the
            // oldest of them started, and must have completed before this event.
            let first = prev[prev.len() - need];
            if prev.back().is_some_and(|h| h.t > now) {
                continue;
            }
            first.start
        };
        if start < lo {
            continue;
        }
        let need = usize::try_from(s.steps[k].count).unwrap_or(usize::MAX);
        let d = &mut steps[k];
        d.push_back(Hit { t: now, start });
        while d.len() > need {
            d.pop_front();
        }
        while d.len() > cap {
            d.pop_front();
            evicted += 1;
        }
        if k == n - 1 && d.len() >= need {
            let chain_start = d[d.len() - need].start;
            if now.saturating_sub(chain_start) <= s.within {
                let total: u64 = s.steps.iter().map(|s| u64::from(s.count)).sum();
                fired = Some((total, chain_start));
                break;
            }
        }
    }
    let empty = steps.iter().all(VecDeque::is_empty);
    st.evicted_events += evicted;
    if fired.is_some() || empty {
        st.groups.remove(key.as_str());
    }
    let (total, start) = fired?;
    Some((display_key(&s.by, key), total, Timestamp::from_unix_nanos(start)))
}

fn decide(
    rule: &Rule,
    ev: &Event,
    group: Option<String>,
    count: Option<u64>,
    first_seen: Option<Timestamp>,
) -> Decision {
    let mut actions = Vec::with_capacity(rule.actions.len());
    let mut unresolved = Vec::new();
    for a in &rule.actions {
        match resolve(a, ev) {
            Ok(r) => actions.push(r),
            Err(u) => unresolved.push(u),
        }
    }
    Decision {
        rule_id: rule.meta.id.clone(),
        rule: rule.meta.clone(),
        severity: rule.severity,
        mode: rule.mode,
        actions,
        unresolved,
        group,
        count,
        first_seen,
        timestamp: ev.timestamp,
    }
}

fn resolve(a: &ActionSpec, ev: &Event) -> Result<ActionRequest, Unresolved> {
    let fail = |action: &str, field: Field, reason: String| Unresolved {
        action: action.to_string(),
        field: field.path().to_string(),
        reason,
    };
    let text = |action: &str, field: Field| match field.get(ev) {
        Val::Str(s) if !s.is_empty() => Ok(s.to_string()),
        Val::Missing | Val::Str(_) => Err(fail(action, field, "missing in the event".into())),
        other => other.to_text().ok_or_else(|| fail(action, field, "missing in the event".into())),
    };
    match *a {
        ActionSpec::BlockIp { target, ttl } => {
            let s = text("block_ip", target)?;
            match s.parse::<IpAddr>() {
                Ok(ip) => Ok(ActionRequest::BlockIp { ip, ttl }),
                Err(_) => Err(fail("block_ip", target, format!("`{s}` is not an IP address"))),
            }
        }
        ActionSpec::Kill { target, tree } => match target.get(ev) {
            Val::Num(n) => match u32::try_from(n) {
                Ok(pid) if pid > 1 => Ok(ActionRequest::Kill { pid, tree }),
                _ => Err(fail("kill", target, format!("{n} is not a pid that can be killed"))),
            },
            _ => Err(fail("kill", target, "missing in the event".into())),
        },
        ActionSpec::DenyExec { target } => Ok(ActionRequest::DenyExec { path: text("deny_exec", target)? }),
        ActionSpec::Quarantine { target } => {
            Ok(ActionRequest::Quarantine { path: text("quarantine", target)? })
        }
        ActionSpec::IsolateHost { ttl } => Ok(ActionRequest::IsolateHost { ttl }),
        ActionSpec::LockAccount { target, ttl } => {
            Ok(ActionRequest::LockAccount { user: text("lock_account", target)?, ttl })
        }
    }
}

#[cfg(test)]
mod tests {
    use picket_event::{EventKind, File, Process};

    use super::*;

    impl Engine {
        /// Evaluate every rule of the event's kind, bypassing the index.
        fn evaluate_unindexed(&mut self, ev: &Event, out: &mut Vec<Decision>) {
            let rules = self.set.by_kind[kind_index(ev.kind)].rules.clone();
            for ri in rules.iter().copied() {
                self.eval_rule(ri, ev, out);
            }
        }
    }

    #[test]
    fn the_index_only_prunes_and_never_changes_a_decision() {
        let rules = r#"
- {id: eq, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.name == "nc"'}
- {id: in, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.name in ["sh", "nc", "x"] and user.name != "root"'}
- {id: pre, description: d, mitre: T1059, on: [process.start, file.create], severity: low, when: 'process.executable startswith ["/tmp/", "/t"]'}
- {id: pre2, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.executable startswith "/tmp/a/" or process.name == "x"'}
- {id: re, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.executable matches "^/t.*p/" and process.name exists'}
- {id: re2, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.executable matches "(?i)/TMP/b"'}
- {id: glob, description: d, mitre: T1059, on: file.create, severity: low, when: 'file.path glob "/tmp/?/*x"'}
- {id: neg, description: d, mitre: T1059, on: process.start, severity: low, when: 'not process.name == "nc"'}
- {id: thr, description: d, mitre: T1059, on: process.start, severity: low, when: 'process.name in ["nc", "sh"]', threshold: {count: 3, within: 10s, by: user.name}}
"#;
        let set = Arc::new(crate::load_str(rules, "idx.yaml").unwrap_or_else(|e| panic!("{e}")));
        let mut indexed = Engine::new(set.clone(), StateLimits::default());
        let mut plain = Engine::new(set, StateLimits::default());
        let names = ["nc", "sh", "x", "bash", ""];
        let exes = ["/tmp/a/nc", "/tmp/b/x", "/TMP/B/y", "/t", "/usr/bin/nc", "/tmp/", "/tmp/c/xx", "é/tmp/"];
        let users = ["root", "pi", "www"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % u64::try_from(n).unwrap()).unwrap()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..5000i64 {
            let kind = if next(4) == 0 { EventKind::FileCreate } else { EventKind::ProcessStart };
            let mut ev = Event::new(kind, Timestamp::from_unix_nanos(i * 1_000_000_000));
            if next(10) > 0 {
                ev.process = Some(Process {
                    name: (next(6) > 0).then(|| names[next(names.len())].to_string()),
                    executable: Some(exes[next(exes.len())].to_string()),
                    ..Default::default()
                });
            }
            ev.user = Some(picket_event::User { name: Some(users[next(users.len())].into()), id: None });
            if kind == EventKind::FileCreate {
                ev.file = Some(File { path: exes[next(exes.len())].into(), ..Default::default() });
            }
            indexed.evaluate(&ev, &mut a);
            plain.evaluate_unindexed(&ev, &mut b);
        }
        assert!(a.len() > 1000, "the rules should fire often here: {}", a.len());
        assert_eq!(a, b);
    }
}
