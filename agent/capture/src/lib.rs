//! picket's event sources.
//!
//! A source observes the OS and sends [`Event`]s into the pipeline through an [`EventTx`]. It never
//! blocks the pipeline: the queue is bounded, and when it is full the event is dropped and the drop
//! counted with a reason ([`Drops`]), which `agent.health` and `picket status` report. A source that
//! lacks what it needs (privileges, a kernel feature, a path) reports that once through
//! [`SourceStatus`] and stops; it does not take the agent down.
//!
//! Sources leave `seq` (the journal assigns it) and `host.id` (the pipeline fills it) empty.
//!
//! # Load shedding
//!
//! The queue into the pipeline is shared by every source. When it backs up (the pipeline or the
//! journal cannot keep up), [`EventTx`] sheds by [`ShedClass`] before the queue is full, so that
//! the room left goes to what matters most:
//!
//! | queue fill | shed (counted as `shed.<kind>`) |
//! |---|---|
//! | below 1/2 ([`SHED_FIRST_AT_PERCENT`]) | nothing |
//! | from 1/2 | [`ShedClass::First`]: `file.attrib`, `process.exit`, `net.flow` |
//! | from 3/4 ([`SHED_LATER_AT_PERCENT`]) | also [`ShedClass::Later`]: `process.start`, `file.create/modify/delete/rename`, `net.dns` |
//! | full | anything, counted as `<source>.queue_full` |
//!
//! [`ShedClass::Never`] (auth events, `process.setid`; alerts, actions, health and gap records,
//! which no source sends today) is never shed: the last quarter of the queue is kept for it, so only a queue that
//! is completely full can drop it, and that is counted too.
//!
//! # Wake-ups
//!
//! Under load the pipeline lets routine events gather for a few milliseconds instead of waking
//! for each one (a wake-up across threads costs more than handling the event). It is woken at
//! once through the [`Nudge`] an [`EventTx`] carries ([`EventTx::with_nudge`]) for what must not
//! wait: every event never shed (an auth failure may complete a brute-force count: the auth line
//! to block bar is 2 ms), and a queue a quarter full ([`NUDGE_AT_PERCENT`], below the shedding
//! marks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use picket_event::{Event, EventKind};
use tokio::sync::{mpsc, watch};

pub mod auth;
pub mod file;
pub mod process;

/// Errors a source can end with.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{source_name}: {message}")]
    Unavailable { source_name: &'static str, message: String },
    #[error("{source_name}: {message}")]
    Failed { source_name: &'static str, message: String },
}

/// Drop counters by `stage.reason`, shared by every stage. Cheap enough for the per-event path:
/// an uncontended mutex for ordinary drops, one atomic add for a shed event (shedding happens
/// when the agent is already overloaded, so it must not cost an allocation per event).
#[derive(Clone, Debug, Default)]
pub struct Drops(Arc<DropsInner>);

#[derive(Debug, Default)]
struct DropsInner {
    map: Mutex<BTreeMap<String, u64>>,
    /// Shed events by kind (index: declaration order of [`EventKind`]).
    shed: [AtomicU64; EventKind::ALL.len()],
}

impl Drops {
    pub fn add(&self, stage: &str, reason: &str, n: u64) {
        let mut m = self.0.map.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(format!("{stage}.{reason}")).or_insert(0) += n;
    }

    /// Count one event shed under overload; reported as `shed.<kind>`.
    pub fn add_shed(&self, kind: EventKind) {
        if let Some(c) = self.0.shed.get(kind as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events of `kind` shed so far.
    pub fn shed(&self, kind: EventKind) -> u64 {
        self.0.shed.get(kind as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every counter by `stage.reason`, shed events as `shed.<kind>`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut m = self.0.map.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for kind in EventKind::ALL {
            let n = self.shed(kind);
            if n > 0 {
                *m.entry(format!("shed.{kind}")).or_insert(0) += n;
            }
        }
        m
    }

    pub fn total(&self) -> u64 {
        let shed: u64 = self.0.shed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.0.map.lock().unwrap_or_else(PoisonError::into_inner).values().sum::<u64>() + shed
    }
}

/// How readily events of a kind are shed when the queue into the pipeline backs up (see the
/// crate docs for the marks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShedClass {
    /// Shed first: the least telling events, whose loss costs the least context. A process's
    /// exit (its start was journaled), an attribute change, a flow update.
    First,
    /// Shed when the queue is three quarters full: the rest of the routine telemetry.
    Later,
    /// Never shed: authentication events (what brute-force and login policies act on), uid/gid
    /// changes (`process.setid`: privilege changes, rare, what escalation policies act on), and
    /// alerts, actions, health and gap records.
    Never,
}

impl ShedClass {
    pub const fn of(kind: EventKind) -> ShedClass {
        match kind {
            EventKind::FileAttrib | EventKind::ProcessExit | EventKind::NetFlow => ShedClass::First,
            EventKind::ProcessStart
            | EventKind::FileCreate
            | EventKind::FileModify
            | EventKind::FileDelete
            | EventKind::FileRename
            | EventKind::NetDns => ShedClass::Later,
            EventKind::AuthFailure
            | EventKind::AuthSuccess
            | EventKind::ProcessSetid
            | EventKind::Alert
            | EventKind::Action
            | EventKind::AgentHealth
            | EventKind::JournalGap => ShedClass::Never,
        }
    }
}

/// Queue fill (percent of its capacity) from which [`ShedClass::First`] events are shed.
pub const SHED_FIRST_AT_PERCENT: usize = 50;
/// Queue fill (percent of its capacity) from which [`ShedClass::Later`] events are shed too.
pub const SHED_LATER_AT_PERCENT: usize = 75;

/// What each source is doing, by source name: `running`, `disabled`, `unavailable: ...`,
/// `failed: ...`. Shown in `agent.health` and `picket status`.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus(Arc<Mutex<BTreeMap<String, String>>>);

impl SourceStatus {
    pub fn set(&self, source: &str, state: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(source.to_string(), state.into());
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Queue fill (percent of its capacity) from which every event nudges the pipeline.
pub const NUDGE_AT_PERCENT: usize = 25;

/// Wakes the pipeline while it lets routine events gather (see "Wake-ups" above). A nudge costs
/// two atomic operations unless the pipeline is lingering; then it wakes it.
#[derive(Clone, Debug, Default)]
pub struct Nudge(Arc<NudgeInner>);

#[derive(Debug, Default)]
struct NudgeInner {
    notify: tokio::sync::Notify,
    /// The pipeline lingers: nudges wake it.
    lingering: AtomicBool,
    /// A nudge came since the pipeline last looked at its queue.
    pending: AtomicBool,
}

impl Nudge {
    pub fn nudge(&self) {
        // SeqCst on both sides (with `linger`): either the pipeline sees `pending` before it
        // lingers, or this sees `lingering` and wakes it.
        self.0.pending.store(true, Ordering::SeqCst);
        if self.0.lingering.load(Ordering::SeqCst) {
            self.0.notify.notify_one();
        }
    }

    /// The pipeline is about to look at its queue: nudges so far are answered by that look.
    pub fn looking(&self) {
        self.0.pending.store(false, Ordering::SeqCst);
    }

    /// The pipeline wants to linger: false if a nudge came since it last looked (look again
    /// instead). After true, [`Nudge::nudged`] resolves at the next nudge; call
    /// [`Nudge::done_lingering`] when the linger ends.
    pub fn linger(&self) -> bool {
        self.0.lingering.store(true, Ordering::SeqCst);
        if self.0.pending.load(Ordering::SeqCst) {
            self.0.lingering.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn done_lingering(&self) {
        self.0.lingering.store(false, Ordering::SeqCst);
    }

    /// Resolves at the next nudge while lingering (or at once, rarely, for a nudge that came
    /// as the last linger ended).
    pub async fn nudged(&self) {
        self.0.notify.notified().await;
    }
}

/// The sending end of the bounded queue from a source into the pipeline.
#[derive(Clone, Debug)]
pub struct EventTx {
    stage: &'static str,
    tx: mpsc::Sender<Box<Event>>,
    drops: Drops,
    nudge: Option<Nudge>,
}

/// Why [`EventTx::send`] did not deliver.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The queue was full; the event was dropped and counted.
    Full,
    /// The queue is backing up and this kind is shed at its fill (see [`ShedClass`]); counted as
    /// `shed.<kind>`.
    Shed,
    /// The pipeline is gone (shutting down); stop producing.
    Closed,
}

impl EventTx {
    /// `stage` names the sender in drop counters (`file.queue_full`).
    pub fn new(stage: &'static str, tx: mpsc::Sender<Box<Event>>, drops: Drops) -> EventTx {
        EventTx { stage, tx, drops, nudge: None }
    }

    /// Nudge the pipeline for events that must not wait (see "Wake-ups" above).
    pub fn with_nudge(mut self, nudge: Nudge) -> EventTx {
        self.nudge = Some(nudge);
        self
    }

    /// Send without waiting. Past the shedding marks, events of the classes shed at that fill
    /// are dropped and counted as `shed.<kind>` (see [`ShedClass`]); a full queue drops the event
    /// and counts it as `<stage>.queue_full`.
    pub fn send(&self, ev: Event) -> Result<(), SendError> {
        let class = ShedClass::of(ev.kind);
        let cap = self.tx.max_capacity();
        let fill = cap - self.tx.capacity();
        if class != ShedClass::Never {
            let mark = if class == ShedClass::First { SHED_FIRST_AT_PERCENT } else { SHED_LATER_AT_PERCENT };
            if fill * 100 >= cap * mark {
                if self.tx.is_closed() {
                    return Err(SendError::Closed);
                }
                self.drops.add_shed(ev.kind);
                return Err(SendError::Shed);
            }
        }
        // Boxed: the queue's slots are a pointer, not a 2 KB event (tokio keeps blocks of them).
        match self.tx.try_send(Box::new(ev)) {
            Ok(()) => {
                if let Some(n) = &self.nudge
                    && (class == ShedClass::Never || (fill + 1) * 100 >= cap * NUDGE_AT_PERCENT)
                {
                    n.nudge();
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drops.add(self.stage, "queue_full", 1);
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Send from a plain (non-async) thread without waiting; same accounting as [`EventTx::send`].
    pub fn blocking_send_nowait(&self, ev: Event) -> Result<(), SendError> {
        self.send(ev)
    }

    /// Record a drop that happened before an event was built (e.g. the OS queue overflowed).
    pub fn count_drop(&self, reason: &str, n: u64) {
        self.drops.add(self.stage, reason, n);
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Shutdown signal: cloned into every task; `wait()` resolves once shutdown was requested.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The trigger side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, which also means: stop.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use picket_event::{Event, EventKind, Timestamp};
    use tokio::sync::mpsc;

    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event::new(kind, Timestamp::from_unix_nanos(1_700_000_000_000_000_000))
    }

    /// A lingering pipeline is woken by events never shed and by a queue a quarter full, not by
    /// routine events; a nudge that comes before it lingers makes it look again instead.
    #[tokio::test(flavor = "current_thread")]
    async fn nudges_wake_a_lingering_pipeline_for_what_must_not_wait() {
        use std::time::Duration;
        const CAP: usize = 64;
        let (tx, mut rx) = mpsc::channel::<Box<Event>>(CAP);
        let nudge = Nudge::default();
        let out = EventTx::new("t", tx, Drops::default()).with_nudge(nudge.clone());
        let woken = |n: &Nudge| {
            let n = n.clone();
            async move { tokio::time::timeout(Duration::from_millis(5), n.nudged()).await.is_ok() }
        };

        nudge.looking();
        assert!(nudge.linger());
        out.send(ev(EventKind::FileModify)).unwrap();
        assert!(!woken(&nudge).await, "a routine event does not wake it");
        out.send(ev(EventKind::AuthFailure)).unwrap();
        assert!(woken(&nudge).await, "an auth event does");
        nudge.done_lingering();

        // Nudged between its look and its linger: it does not linger.
        nudge.looking();
        out.send(ev(EventKind::ProcessSetid)).unwrap();
        assert!(!nudge.linger());

        // Routine events up to a quarter of the queue: the one that reaches it wakes.
        nudge.looking();
        assert!(nudge.linger());
        // Three events are queued already; this fills it to one short of the mark.
        for _ in 3..CAP * NUDGE_AT_PERCENT / 100 - 1 {
            out.send(ev(EventKind::ProcessExit)).unwrap();
        }
        assert!(!woken(&nudge).await);
        out.send(ev(EventKind::ProcessExit)).unwrap();
        assert!(woken(&nudge).await);
        nudge.done_lingering();

        // Not lingering: a nudge stores nothing that would cut the next linger short.
        while rx.try_recv().is_ok() {}
        out.send(ev(EventKind::AuthSuccess)).unwrap();
        nudge.looking();
        out.send(ev(EventKind::FileCreate)).unwrap();
        assert!(nudge.linger());
        assert!(!woken(&nudge).await);
    }

    /// Sources flood a queue nobody reads: routine kinds are shed at their marks, auth events are
    /// never shed and take the last quarter, and every event is either queued or counted once.
    #[test]
    fn a_flooded_queue_sheds_routine_events_first_and_never_auth_and_counts_everything() {
        const CAP: usize = 64;
        let (tx, mut rx) = mpsc::channel::<Box<Event>>(CAP);
        let drops = Drops::default();
        let process = EventTx::new("process", tx.clone(), drops.clone());
        let file = EventTx::new("file", tx.clone(), drops.clone());
        let auth = EventTx::new("auth", tx, drops.clone());

        let mut sent: BTreeMap<EventKind, u64> = BTreeMap::new();
        let mut results: BTreeMap<(EventKind, String), u64> = BTreeMap::new();
        let mut send = |out: &EventTx, kind: EventKind| {
            *sent.entry(kind).or_default() += 1;
            let r = out.send(ev(kind));
            *results.entry((kind, format!("{r:?}"))).or_default() += 1;
            r
        };
        // 1. Routine only, far more than fits: the queue stops at the Later mark, 3/4.
        for i in 0..1000 {
            let (out, kind) = match i % 5 {
                0 => (&process, EventKind::ProcessExit),
                1 => (&file, EventKind::FileAttrib),
                2 => (&process, EventKind::ProcessStart),
                3 => (&file, EventKind::FileModify),
                _ => (&file, EventKind::FileCreate),
            };
            let _ = send(out, kind);
        }
        assert_eq!(CAP - auth.tx.capacity(), CAP * SHED_LATER_AT_PERCENT / 100);
        // 2. Auth events still get in: the last quarter is theirs.
        for _ in 0..CAP / 4 {
            assert_eq!(send(&auth, EventKind::AuthFailure), Ok(()));
        }
        // 3. Only a queue that is completely full drops one, and counts it as queue_full.
        assert_eq!(send(&auth, EventKind::AuthSuccess), Err(SendError::Full));

        let mut queued: BTreeMap<EventKind, u64> = BTreeMap::new();
        while let Ok(e) = rx.try_recv() {
            *queued.entry(e.kind).or_default() += 1;
        }
        let snap = drops.snapshot();
        eprintln!("queued {queued:?}\ndrops {snap:?}");
        assert_eq!(queued.values().sum::<u64>(), CAP as u64);
        assert_eq!(queued[&EventKind::AuthFailure], (CAP / 4) as u64);
        assert!(!snap.keys().any(|k| k.starts_with("shed.auth")), "auth never shed: {snap:?}");
        eprintln!("size_of::<Event>() = {}", std::mem::size_of::<Event>());
        assert_eq!(snap.get("auth.queue_full"), Some(&1));
        // Up to the First mark everything was taken; after it, no First-class event got in.
        let first = queued.get(&EventKind::ProcessExit).unwrap_or(&0)
            + queued.get(&EventKind::FileAttrib).unwrap_or(&0);
        assert!(first <= (CAP * SHED_FIRST_AT_PERCENT / 100) as u64, "first-class queued: {first}");
        assert!(drops.shed(EventKind::ProcessExit) > 0 && drops.shed(EventKind::FileAttrib) > 0);
        assert!(drops.shed(EventKind::ProcessStart) > 0 && drops.shed(EventKind::FileModify) > 0);
        // Every event is accounted for exactly once: queued, shed or dropped as queue_full.
        for (kind, n) in &sent {
            let full = if *kind == EventKind::AuthSuccess { 1 } else { 0 };
            assert_eq!(queued.get(kind).unwrap_or(&0) + drops.shed(*kind) + full, *n, "{kind}: {results:?}");
        }
        assert_eq!(drops.total(), sent.values().sum::<u64>() - CAP as u64);
    }

    #[test]
    fn auth_setid_alerts_actions_and_health_are_never_shed() {
        for kind in EventKind::ALL {
            let never = matches!(
                kind,
                EventKind::AuthFailure
                    | EventKind::AuthSuccess
                    | EventKind::ProcessSetid
                    | EventKind::Alert
                    | EventKind::Action
                    | EventKind::AgentHealth
                    | EventKind::JournalGap
            );
            assert_eq!(ShedClass::of(kind) == ShedClass::Never, never, "{kind}");
        }
        assert_eq!(ShedClass::of(EventKind::ProcessExit), ShedClass::First);
        assert_eq!(ShedClass::of(EventKind::ProcessStart), ShedClass::Later);
    }
}
