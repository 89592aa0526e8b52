//! picket-contain: the only module that changes the host.
//!
//! - [`actuator`]: the actions stage. [`actuator::Containment`] takes a policy's action request
//!   and runs it through the safety layer: mode (monitor journals a dry run), protected targets
//!   (refused, with the reason), budgets per action type (excess skipped), state in
//!   `containment.db` with TTLs undone on time and re-applied after a restart, and events for the
//!   journal (the intent before the action, the outcome after). Also `picket actions list|revert`.
//! - [`safety`]: what is never acted on, and the budgets. Pure checks.
//! - [`state`]: the SQLite state file: what is in force, until when, and how to undo it.
//! - [`net`]: block_ip and isolate_host through nftables, in picket's own table `inet picket` only.
//! - [`host`]: kill, quarantine, lock_account, deny_exec.
//!
//! Dependencies point one way: `actuator` uses `safety` and `state` for its decisions and `net`
//! and `host` (through the [`actuator::Backend`] trait) for its changes; nothing below `actuator`
//! knows about policies or events.

pub mod actuator;
pub mod host;
pub mod net;
pub mod safety;
pub mod state;
