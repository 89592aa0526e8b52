//! picket's event sources.
//!
//! A source observes the OS and sends [`Event`]s into the pipeline through an [`EventTx`]. It never
//! blocks the pipeline: the queue is bounded, and when it is full the event is dropped and the drop
//! counted with a reason ([`Drops`]), which `agent.health` and `picket status` report. A source that
//! lacks what it needs (privileges, a kernel feature, a path) reports that once through
//! [`SourceStatus`] and stops; it does not take the agent down.
//!
//! Sources leave `seq` (the journal assigns it) and `host.id` (the pipeline fills it) empty.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use picket_event::Event;
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

/// Drop counters by `stage.reason`, shared by every stage. Cheap enough for the per-event path
/// (an uncontended mutex), and only touched when something is dropped.
#[derive(Clone, Debug, Default)]
pub struct Drops(Arc<Mutex<BTreeMap<String, u64>>>);

impl Drops {
    pub fn add(&self, stage: &str, reason: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(format!("{stage}.{reason}")).or_insert(0) += n;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).values().sum()
    }
}

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

/// The sending end of the bounded queue from a source into the pipeline.
#[derive(Clone, Debug)]
pub struct EventTx {
    stage: &'static str,
    tx: mpsc::Sender<Event>,
    drops: Drops,
}

/// Why [`EventTx::send`] did not deliver.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The queue was full; the event was dropped and counted.
    Full,
    /// The pipeline is gone (shutting down); stop producing.
    Closed,
}

impl EventTx {
    /// `stage` names the sender in drop counters (`file.queue_full`).
    pub fn new(stage: &'static str, tx: mpsc::Sender<Event>, drops: Drops) -> EventTx {
        EventTx { stage, tx, drops }
    }

    /// Send without waiting. A full queue drops the event and counts it as `<stage>.queue_full`.
    pub fn send(&self, ev: Event) -> Result<(), SendError> {
        match self.tx.try_send(ev) {
            Ok(()) => Ok(()),
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
