//! Windows, sequences, exceptions, state bounds, persistence, reload, determinism, actions.

use std::sync::Arc;
use std::time::Duration;

use picket_event::{Endpoint, Event, EventKind, Process, Timestamp, User};
use picket_policy::{
    ActionRequest, Decision, Engine, Mode, PolicySet, StateLimits, StateSnapshot, alert_event, load_str,
};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

const SSH: &str = "
id: ssh-brute-force
description: five failures in five minutes
mitre: T1110.001
on: auth.failure
when: process.name in [\"sshd\", \"dropbear\"]
except:
  - source.ip cidr \"10.0.0.0/8\"
threshold: {count: 5, within: 5m, by: [source.ip]}
severity: high
actions:
  - block_ip: {target: source.ip, ttl: 1h}
";

const SPRAY: &str = "
id: spray
description: ten user names from one address
mitre: T1110.003
on: auth.failure
threshold: {distinct: user.name, count: 10, within: 10m, by: [source.ip]}
severity: high
";

const SEQ: &str = "
id: login-after-failures
description: failures then a success
mitre: T1110
on: [auth.failure, auth.success]
sequence:
  by: [source.ip]
  within: 10m
  steps:
    - {on: auth.failure, count: 3}
    - {on: auth.success}
severity: critical
mode: enforce
actions:
  - block_ip: {ttl: 1h}
  - kill: {tree: true}
  - lock_account: {ttl: 15m}
";

fn set(text: &str) -> Arc<PolicySet> {
    Arc::new(load_str(text, "test.yaml").unwrap_or_else(|e| panic!("{e}")))
}

fn engine(text: &str) -> Engine {
    Engine::new(set(text), StateLimits::default())
}

fn auth(kind: EventKind, secs: i64, ip: &str, user: &str) -> Event {
    let mut ev = Event::new(kind, Timestamp::from_unix_nanos(T0 + secs * S));
    ev.process = Some(Process { name: Some("sshd".into()), pid: Some(4321), ..Default::default() });
    ev.source = Some(Endpoint { ip: Some(ip.into()), port: Some(50000), ..Default::default() });
    ev.user = Some(User { name: Some(user.into()), id: None });
    ev
}

fn fail(secs: i64, ip: &str) -> Event {
    auth(EventKind::AuthFailure, secs, ip, "root")
}

/// Feed events; return (index of event, decision) for each decision.
fn run(engine: &mut Engine, events: &[Event]) -> Vec<(usize, Decision)> {
    let mut all = Vec::new();
    let mut out = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        engine.evaluate(ev, &mut out);
        all.extend(out.drain(..).map(|d| (i, d)));
    }
    all
}

#[test]
fn threshold_fires_on_the_fifth_failure_within_five_minutes() {
    let mut e = engine(SSH);
    let events: Vec<Event> = (0..5).map(|i| fail(i * 60, "203.0.113.7")).collect();
    let got = run(&mut e, &events);
    assert_eq!(got.len(), 1);
    let (i, d) = &got[0];
    assert_eq!(*i, 4);
    assert_eq!(&*d.rule_id, "ssh-brute-force");
    assert_eq!(d.count, Some(5));
    assert_eq!(d.group.as_deref(), Some("203.0.113.7"));
    assert_eq!(d.first_seen, Some(events[0].timestamp));
    assert_eq!(d.severity, picket_event::severity::HIGH);
    assert_eq!(d.mode, None, "no mode in the rule: follow the agent");
    assert_eq!(d.effective_mode(Mode::Monitor), Mode::Monitor);
    assert_eq!(
        d.actions,
        [ActionRequest::BlockIp { ip: "203.0.113.7".parse().unwrap(), ttl: Duration::from_secs(3600) }]
    );
}

#[test]
fn threshold_does_not_fire_on_five_failures_spread_over_six_minutes() {
    let mut e = engine(SSH);
    let events: Vec<Event> = (0..5).map(|i| fail(i * 90, "203.0.113.7")).collect();
    assert!(run(&mut e, &events).is_empty());
    // ...but the window slides: a sixth at 6:01 makes five within five minutes.
    assert_eq!(run(&mut e, &[fail(361, "203.0.113.7")]).len(), 1);
}

#[test]
fn threshold_resets_the_group_after_firing() {
    let mut e = engine(SSH);
    let events: Vec<Event> = (0..12).map(|i| fail(i, "203.0.113.7")).collect();
    let at: Vec<usize> = run(&mut e, &events).into_iter().map(|(i, _)| i).collect();
    assert_eq!(at, [4, 9]);
}

#[test]
fn distinct_count_fires_on_the_tenth_different_user_name() {
    let mut e = engine(SPRAY);
    let mut events = Vec::new();
    for i in 0..9 {
        events.push(auth(EventKind::AuthFailure, i * 10, "192.0.2.1", &format!("user{i}")));
        events.push(auth(EventKind::AuthFailure, i * 10 + 1, "192.0.2.1", &format!("user{i}"))); // repeats count once
    }
    events.push(auth(EventKind::AuthFailure, 200, "192.0.2.2", "user9")); // another address
    assert!(run(&mut e, &events).is_empty());
    let got = run(&mut e, &[auth(EventKind::AuthFailure, 210, "192.0.2.1", "user9")]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.count, Some(10));
}

#[test]
fn sequence_fires_only_when_the_steps_happen_in_order() {
    let mut e = engine(SEQ);
    let ip = "203.0.113.50";
    let success_first = [auth(EventKind::AuthSuccess, 0, ip, "pi"), fail(1, ip), fail(2, ip), fail(3, ip)];
    assert!(run(&mut e, &success_first).is_empty());
    let got = run(&mut e, &[auth(EventKind::AuthSuccess, 4, ip, "pi")]);
    assert_eq!(got.len(), 1, "three failures then a success");
    let d = &got[0].1;
    assert_eq!(d.mode, Some(Mode::Enforce));
    assert_eq!(d.count, Some(4));
    assert_eq!(
        d.actions,
        [
            ActionRequest::BlockIp { ip: ip.parse().unwrap(), ttl: Duration::from_secs(3600) },
            ActionRequest::Kill { pid: 4321, tree: true },
            ActionRequest::LockAccount { user: "pi".into(), ttl: Some(Duration::from_secs(900)) },
        ]
    );
    // Fired: state reset, a second success alone does nothing.
    assert!(run(&mut e, &[auth(EventKind::AuthSuccess, 5, ip, "pi")]).is_empty());
}

#[test]
fn sequence_fires_only_within_its_window() {
    let mut e = engine(SEQ);
    let ip = "203.0.113.50";
    let late = [fail(0, ip), fail(1, ip), fail(2, ip), auth(EventKind::AuthSuccess, 601, ip, "pi")];
    assert!(run(&mut e, &late).is_empty(), "the first failure is more than 10 minutes before the success");
    let mut e = engine(SEQ);
    let just = [fail(0, ip), fail(1, ip), fail(2, ip), auth(EventKind::AuthSuccess, 600, ip, "pi")];
    assert_eq!(run(&mut e, &just).len(), 1, "exactly 10 minutes is within");
}

#[test]
fn sequence_steps_are_grouped_by_key() {
    let mut e = engine(SEQ);
    let events = [
        fail(0, "198.51.100.1"),
        fail(1, "198.51.100.1"),
        fail(2, "198.51.100.1"),
        auth(EventKind::AuthSuccess, 3, "198.51.100.2", "pi"),
    ];
    assert!(run(&mut e, &events).is_empty());
}

#[test]
fn exceptions_suppress_and_excepted_events_do_not_count() {
    let mut e = engine(SSH);
    let internal: Vec<Event> = (0..10).map(|i| fail(i, "10.1.2.3")).collect();
    assert!(run(&mut e, &internal).is_empty());
    assert_eq!(e.stats().state_entries, 0, "excepted events leave no state");
}

#[test]
fn events_without_the_grouping_field_are_not_counted() {
    let mut e = engine(SSH);
    let mut events = Vec::new();
    for i in 0..10 {
        let mut ev = fail(i, "x");
        ev.source = None;
        events.push(ev);
    }
    assert!(run(&mut e, &events).is_empty());
}

#[test]
fn state_caps_evict_the_least_recently_seen_group_and_count_evictions() {
    let limits = StateLimits { max_groups_per_rule: 3, max_events_per_group: 256 };
    let mut e = Engine::new(set(SSH), limits);
    // Four failures from A, then one each from B, C, D: A is evicted when D arrives.
    let mut events: Vec<Event> = (0..4).map(|i| fail(i, "192.0.2.10")).collect();
    events.push(fail(10, "192.0.2.11"));
    events.push(fail(11, "192.0.2.12"));
    events.push(fail(12, "192.0.2.13"));
    assert!(run(&mut e, &events).is_empty());
    let stats = e.stats();
    assert_eq!(stats.state_entries, 3);
    assert_eq!(stats.per_rule[0].evicted_groups, 1);
    // A's fifth failure starts a new count.
    assert!(run(&mut e, &[fail(13, "192.0.2.10")]).is_empty());
    assert_eq!(e.stats().per_rule[0].evicted_groups, 2, "B was least recently seen");
    // C was touched more recently than B: it survived.
    let more: Vec<Event> = (14..18).map(|i| fail(i, "192.0.2.12")).collect();
    assert_eq!(run(&mut e, &more).len(), 1);
}

#[test]
fn a_flood_of_sources_stays_within_the_cap() {
    let limits = StateLimits { max_groups_per_rule: 100, max_events_per_group: 8 };
    let mut e = Engine::new(set(SSH), limits);
    let events: Vec<Event> =
        (0..10_000).map(|i| fail(i / 100, &format!("198.18.{}.{}", i / 250, i % 250))).collect();
    assert!(run(&mut e, &events).is_empty());
    let s = e.stats();
    assert_eq!(s.state_entries, 100);
    assert_eq!(s.per_rule[0].evicted_groups, 9_900);
}

#[test]
fn the_event_cap_per_group_drops_the_oldest_and_counts_them() {
    let limits = StateLimits { max_groups_per_rule: 10, max_events_per_group: 3 };
    let mut e = Engine::new(set(SSH), limits);
    let events: Vec<Event> = (0..6).map(|i| fail(i, "192.0.2.1")).collect();
    assert!(run(&mut e, &events).is_empty(), "a count above the cap cannot be reached");
    assert_eq!(e.stats().per_rule[0].evicted_events, 3);
}

#[test]
fn snapshot_and_restore_continue_an_attackers_count_after_a_restart() {
    let mut before = engine(&format!("{SSH}\n"));
    assert!(
        run(&mut before, &[fail(0, "203.0.113.7"), fail(1, "203.0.113.7"), fail(2, "203.0.113.7")])
            .is_empty()
    );
    // The runtime persists the snapshot as JSON (or anything serde speaks) and reads it back.
    let json = serde_json::to_string(&before.snapshot()).unwrap();
    drop(before);
    let restored: StateSnapshot = serde_json::from_str(&json).unwrap();
    let mut after = engine(SSH);
    after.restore(restored);
    let got = run(&mut after, &[fail(3, "203.0.113.7"), fail(4, "203.0.113.7")]);
    assert_eq!(got.len(), 1, "the restart did not reset the count");
    assert_eq!(got[0].0, 1);

    let mut fresh = engine(SSH);
    assert!(run(&mut fresh, &[fail(3, "203.0.113.7"), fail(4, "203.0.113.7")]).is_empty());
}

#[test]
fn snapshot_and_restore_keep_sequences_and_distinct_counts() {
    let text = format!("- {}\n- {}", SEQ.trim().replace('\n', "\n  "), SPRAY.trim().replace('\n', "\n  "));
    let mut a = engine(&text);
    let mut events = vec![fail(0, "192.0.2.9"), fail(1, "192.0.2.9"), fail(2, "192.0.2.9")];
    events.extend((0..9).map(|i| auth(EventKind::AuthFailure, 3 + i, "192.0.2.77", &format!("u{i}"))));
    assert!(run(&mut a, &events).is_empty());
    let snap = a.snapshot();
    let mut b = engine(&text);
    b.restore(snap.clone());
    assert_eq!(b.snapshot(), snap);
    let got = run(
        &mut b,
        &[
            auth(EventKind::AuthSuccess, 20, "192.0.2.9", "pi"),
            auth(EventKind::AuthFailure, 21, "192.0.2.77", "u9"),
        ],
    );
    let ids: Vec<&str> = got.iter().map(|(_, d)| &*d.rule_id).collect();
    assert_eq!(ids, ["login-after-failures", "spray"]);
}

#[test]
fn restore_drops_state_of_rules_that_are_gone_or_changed_shape() {
    let mut a = engine(SSH);
    assert!(run(&mut a, &[fail(0, "203.0.113.7")]).is_empty());
    let snap = a.snapshot();
    let mut b = engine(&SSH.replace("by: [source.ip]", "by: [source.ip, user.name]"));
    b.restore(snap);
    assert_eq!(b.stats().state_entries, 0);
}

#[test]
fn replace_set_keeps_the_state_of_rules_whose_id_survives() {
    let mut e = engine(SSH);
    assert!(
        run(
            &mut e,
            &[fail(0, "203.0.113.7"), fail(1, "203.0.113.7"), fail(2, "203.0.113.7"), fail(3, "203.0.113.7")]
        )
        .is_empty()
    );
    // A reload that changes the severity and adds a rule keeps the count.
    let reloaded = format!(
        "- {}\n- {}",
        SSH.trim().replace("severity: high", "severity: critical").replace('\n', "\n  "),
        SPRAY.trim().replace('\n', "\n  ")
    );
    e.replace_set(set(&reloaded));
    let got = run(&mut e, &[fail(4, "203.0.113.7")]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.severity, picket_event::severity::CRITICAL);
}

#[test]
fn replace_set_drops_state_when_a_rule_is_removed_or_regrouped() {
    let mut e = engine(SSH);
    assert!(run(&mut e, &(0..4).map(|i| fail(i, "203.0.113.7")).collect::<Vec<_>>()).is_empty());
    e.replace_set(set(&SSH.replace("by: [source.ip]", "by: [user.name]")));
    assert!(run(&mut e, &[fail(4, "203.0.113.7")]).is_empty());
    e.replace_set(set(SPRAY));
    assert_eq!(e.stats().per_rule.len(), 1);
    assert_eq!(e.stats().state_entries, 0);
}

#[test]
fn the_same_events_give_the_same_decisions() {
    let text = format!(
        "- {}\n- {}\n- {}",
        SSH.trim().replace('\n', "\n  "),
        SPRAY.trim().replace('\n', "\n  "),
        SEQ.trim().replace('\n', "\n  ")
    );
    let mut events = Vec::new();
    for i in 0..2000i64 {
        let ip = format!("198.51.100.{}", (i * 7919) % 13);
        let kind = if i % 9 == 0 { EventKind::AuthSuccess } else { EventKind::AuthFailure };
        // Jittered, sometimes out-of-order timestamps.
        events.push(auth(kind, i * 3 - (i % 5) * 7, &ip, &format!("user{}", (i * 31) % 17)));
    }
    let a = run(&mut engine(&text), &events);
    let b = run(&mut engine(&text), &events);
    assert!(!a.is_empty());
    assert_eq!(a, b);
    let snap_a = {
        let mut e = engine(&text);
        run(&mut e, &events);
        serde_json::to_string(&e.snapshot()).unwrap()
    };
    let snap_b = {
        let mut e = engine(&text);
        run(&mut e, &events);
        serde_json::to_string(&e.snapshot()).unwrap()
    };
    assert_eq!(snap_a, snap_b);
}

#[test]
fn out_of_order_and_extreme_timestamps_do_not_panic() {
    let text = format!("- {}\n- {}", SSH.trim().replace('\n', "\n  "), SEQ.trim().replace('\n', "\n  "));
    let mut e = engine(&text);
    let mut events = Vec::new();
    for (n, t) in [i64::MAX, i64::MIN, 0, -1, i64::MAX - 1, 5, i64::MIN + 1, 3].into_iter().enumerate() {
        let mut ev = fail(0, "192.0.2.5");
        ev.timestamp = Timestamp::from_unix_nanos(t);
        events.push(ev);
        let mut ok = auth(EventKind::AuthSuccess, 0, "192.0.2.5", "pi");
        ok.timestamp = Timestamp::from_unix_nanos(t.wrapping_add(i64::try_from(n).unwrap()));
        events.push(ok);
    }
    run(&mut e, &events);
    // An event older than the window is ignored; one inside it counts where it belongs.
    let mut e = engine(SSH);
    let got = run(
        &mut e,
        &[
            fail(400, "192.0.2.6"),
            fail(10, "192.0.2.6"),
            fail(399, "192.0.2.6"),
            fail(398, "192.0.2.6"),
            fail(397, "192.0.2.6"),
            fail(396, "192.0.2.6"),
        ],
    );
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [5]);
}

#[test]
fn an_action_whose_target_is_missing_or_invalid_is_reported_not_a_panic() {
    let mut e = engine(SEQ);
    let ip = "203.0.113.50";
    let mut success = auth(EventKind::AuthSuccess, 3, ip, "pi");
    success.process.as_mut().unwrap().pid = None;
    success.user = None;
    let got = run(&mut e, &[fail(0, ip), fail(1, ip), fail(2, ip), success]);
    assert_eq!(got.len(), 1);
    let d = &got[0].1;
    assert_eq!(d.actions.len(), 1, "block_ip still resolved");
    let unresolved: Vec<(&str, &str)> =
        d.unresolved.iter().map(|u| (u.action.as_str(), u.field.as_str())).collect();
    assert_eq!(unresolved, [("kill", "process.pid"), ("lock_account", "user.name")]);

    let mut e = engine(&SSH.replace("threshold: {count: 5, within: 5m, by: [source.ip]}", ""));
    let got = run(&mut e, &[fail(0, "not-an-address")]);
    assert!(got[0].1.actions.is_empty());
    assert!(got[0].1.unresolved[0].reason.contains("not an IP address"));
}

#[test]
fn alert_event_carries_the_rule_and_the_triggers_key_fields() {
    let mut e = engine(SSH);
    let events: Vec<Event> = (0..5).map(|i| fail(i, "203.0.113.7")).collect();
    let got = run(&mut e, &events);
    let (i, d) = &got[0];
    let alert = alert_event(d, &events[*i]);
    assert_eq!(alert.kind, EventKind::Alert);
    assert_eq!(alert.timestamp, events[4].timestamp);
    assert_eq!(alert.event.severity, picket_event::severity::HIGH);
    let rule = alert.rule.as_ref().unwrap();
    assert_eq!(rule.id, "ssh-brute-force");
    assert_eq!(rule.description.as_deref(), Some("five failures in five minutes"));
    assert_eq!(alert.source, events[4].source);
    assert_eq!(alert.user, events[4].user);
    assert_eq!(alert.process, events[4].process);
    let msg = alert.message.unwrap();
    assert!(msg.contains("5 events") && msg.contains("203.0.113.7"), "{msg}");
}

#[test]
fn decisions_serialize_to_json_for_replay_and_the_journal() {
    let mut e = engine(SSH);
    let got = run(&mut e, &(0..5).map(|i| fail(i, "203.0.113.7")).collect::<Vec<_>>());
    let v = serde_json::to_value(&got[0].1).unwrap();
    assert_eq!(v["rule_id"], "ssh-brute-force");
    assert_eq!(v["actions"][0]["action"], "block_ip");
    assert_eq!(v["actions"][0]["ip"], "203.0.113.7");
    assert_eq!(v["actions"][0]["ttl_secs"], 3600);
    assert_eq!(v["rule"]["mitre"][0], "T1110.001");
    assert!(v["mode"].is_null());
}

#[test]
fn plain_rules_decide_on_every_matching_event_in_rule_order() {
    let text = "
- id: b-second
  description: any failure
  mitre: T1110
  on: auth.failure
  severity: low
- id: a-first
  description: root failure
  mitre: T1110
  on: [auth.failure, auth.success]
  when: user.name == \"root\"
  severity: medium
  mode: monitor
";
    let mut e = engine(text);
    let got = run(&mut e, &[fail(0, "192.0.2.1"), auth(EventKind::AuthSuccess, 1, "192.0.2.1", "root")]);
    let ids: Vec<(usize, &str)> = got.iter().map(|(i, d)| (*i, &*d.rule_id)).collect();
    assert_eq!(ids, [(0, "b-second"), (0, "a-first"), (1, "a-first")]);
    assert_eq!(got[1].1.mode, Some(Mode::Monitor));
}
