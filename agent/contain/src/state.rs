//! Containment state in SQLite (`<data_dir>/containment.db`): what is in force, since when, until
//! when, and what it takes to undo it.
//!
//! One row per action that leaves something in force (block_ip, isolate_host, lock_account,
//! quarantine, deny_exec; a kill leaves nothing to undo and is only journaled). A row goes
//!
//! ```text
//! pending ──> active ──> expiring ──> expired          (TTL ran out; the agent undid it)
//!    │          │  └───────────────> reverted          (picket actions revert ID)
//!    │          └──> revert_failed ──> (retried, or reverted by hand)
//!    └──> failed                                        (the action did not happen)
//! ```
//!
//! `pending` is written *before* the action runs, so a crash in between leaves a row that says
//! so: after a restart a pending block or isolation is applied again (both are idempotent); a
//! pending lock or quarantine is marked `failed` with a note to check by hand (without its
//! record the agent cannot undo it exactly).
//!
//! The agent and `picket actions` (a separate process) share the file: WAL mode, a busy timeout,
//! and short transactions. A change made by the command sets `unjournaled`, and the agent journals
//! it on its next tick (the journal has one writer, the agent). `synchronous=NORMAL`: a commit
//! does not wait for an fsync (the block path has a 2 ms budget); a power cut may lose the last
//! commits, and with them only state that the power cut also wiped from the kernel (blocks,
//! isolation) or that the restart check catches (pending rows are written before acting).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::host::LockRecord;
use crate::safety::ActionKind;

/// The state file's name inside the agent's data directory.
pub const STATE_FILE: &str = "containment.db";

const SCHEMA_VERSION: i64 = 1;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("containment state {}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("containment state {} has schema version {found}, newer than this picket ({SCHEMA_VERSION}): not touched", path.display())]
    Newer { path: PathBuf, found: i64 },
    #[error("no containment action {id} in {}", path.display())]
    Unknown { path: PathBuf, id: u64 },
    #[error("containment action {id} ended meanwhile (reverted or expired)")]
    Ended { path: PathBuf, id: u64 },
}

/// Where a row is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordState {
    Pending,
    Active,
    Failed,
    Expiring,
    Expired,
    Reverted,
    RevertFailed,
}

impl RecordState {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordState::Pending => "pending",
            RecordState::Active => "active",
            RecordState::Failed => "failed",
            RecordState::Expiring => "expiring",
            RecordState::Expired => "expired",
            RecordState::Reverted => "reverted",
            RecordState::RevertFailed => "revert_failed",
        }
    }

    fn parse(s: &str) -> RecordState {
        match s {
            "pending" => RecordState::Pending,
            "active" => RecordState::Active,
            "expiring" => RecordState::Expiring,
            "expired" => RecordState::Expired,
            "reverted" => RecordState::Reverted,
            "revert_failed" => RecordState::RevertFailed,
            _ => RecordState::Failed,
        }
    }

    /// Whether something may still be in force on the host.
    pub const fn in_force(self) -> bool {
        matches!(
            self,
            RecordState::Pending | RecordState::Active | RecordState::Expiring | RecordState::RevertFailed
        )
    }
}

/// What undoing an action needs beyond its kind and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevertData {
    /// lock_account: the facts unlock needs to restore the account exactly.
    Lock { record: LockRecord },
    /// quarantine: the quarantine id and directory.
    Quarantine { id: String, dir: PathBuf },
}

/// One row of `containment.db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub action: ActionKind,
    /// An address, a path, a user name, or `host`.
    pub target: String,
    pub rule_id: String,
    pub state: RecordState,
    pub since: SystemTime,
    /// When it ends by itself; `None`: until reverted.
    pub until: Option<SystemTime>,
    pub ttl: Option<Duration>,
    pub revert: Option<RevertData>,
    /// When it ended (or the last revert attempt).
    pub ended: Option<SystemTime>,
    /// Why it ended or failed.
    pub note: Option<String>,
}

/// A row to insert: [`StateDb::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord<'a> {
    pub id: u64,
    pub action: ActionKind,
    pub target: &'a str,
    pub rule_id: &'a str,
    pub state: RecordState,
    pub since: SystemTime,
    pub ttl: Option<Duration>,
    pub note: Option<&'a str>,
}

/// A connection to `containment.db`. Each thread that writes holds its own.
#[derive(Debug)]
pub struct StateDb {
    path: PathBuf,
    conn: Connection,
    data_version: i64,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

const COLUMNS: &str =
    "id, action, target, rule_id, state, since_ms, until_ms, ttl_secs, revert, ended_ms, note";

impl StateDb {
    /// Opens (creating if missing) the state file at `path`.
    pub fn open(path: &Path) -> Result<StateDb, StateError> {
        let err = |source| StateError::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer { path: path.to_path_buf(), found: version });
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS actions (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     action TEXT NOT NULL,
                     target TEXT NOT NULL,
                     rule_id TEXT NOT NULL,
                     state TEXT NOT NULL,
                     since_ms INTEGER NOT NULL,
                     until_ms INTEGER,
                     ttl_secs INTEGER,
                     revert TEXT,
                     ended_ms INTEGER,
                     note TEXT,
                     unjournaled INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE INDEX IF NOT EXISTS actions_by_state ON actions(state, until_ms);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        let mut db = StateDb { path: path.to_path_buf(), conn, data_version: 0 };
        db.data_version = db.data_version()?;
        Ok(db)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite { path: self.path.clone(), source }
    }

    fn data_version(&self) -> Result<i64, StateError> {
        self.conn.pragma_query_value(None, "data_version", |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Whether another connection committed since the last [`StateDb::changed_elsewhere`], without
    /// resetting that.
    pub fn peek_changed(&self) -> Result<bool, StateError> {
        Ok(self.data_version()? != self.data_version)
    }

    /// Whether another connection (the worker, `picket actions revert`) committed since the last
    /// call.
    pub fn changed_elsewhere(&mut self) -> Result<bool, StateError> {
        let now = self.data_version()?;
        let changed = now != self.data_version;
        self.data_version = now;
        Ok(changed)
    }

    /// The highest id used so far (0 for none). Ids are handed out by the agent (one process
    /// writes new rows), so the block path needs no database round trip before it acts.
    pub fn max_id(&self) -> Result<u64, StateError> {
        let max: i64 = self
            .conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM actions), 0),
                            COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'actions'), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(max).unwrap_or(0))
    }

    /// A new row.
    pub fn insert(&self, r: &NewRecord<'_>) -> Result<(), StateError> {
        let until = r.ttl.and_then(|t| r.since.checked_add(t));
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO actions (id, action, target, rule_id, state, since_ms, until_ms, ttl_secs, note, ended_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(|e| self.err(e))?;
        let ended = (!r.state.in_force()).then_some(ms(r.since));
        stmt.execute(params![
            id_param(r.id),
            r.action.as_str(),
            r.target,
            r.rule_id,
            r.state.as_str(),
            ms(r.since),
            until.map(ms),
            r.ttl.map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
            r.note,
            ended
        ])
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The action is in force: `active`, with its (new) time window and what undoing it needs.
    /// Only a `pending` or `active` row changes; one that ended meanwhile (a revert) stays ended.
    pub fn activate(
        &self,
        id: u64,
        since: SystemTime,
        ttl: Option<Duration>,
        revert: Option<&RevertData>,
    ) -> Result<(), StateError> {
        let until = ttl.and_then(|t| since.checked_add(t));
        let revert = revert.map(|r| serde_json::to_string(r).unwrap_or_default());
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET state = 'active', until_ms = ?2, ttl_secs = ?3,
                     revert = COALESCE(?4, revert), note = NULL
                 WHERE id = ?1 AND state IN ('pending', 'active')",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id_param(id),
                    until.map(ms),
                    ttl.map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
                    revert
                ])
            })
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(StateError::Ended { path: self.path.clone(), id });
        }
        Ok(())
    }

    /// Moves row `id` to `state`, with a note; `ended` stamps when. `unjournaled` marks a change
    /// the agent has not journaled yet (made by `picket actions revert`).
    pub fn set_state(
        &self,
        id: u64,
        state: RecordState,
        note: Option<&str>,
        ended: Option<SystemTime>,
        unjournaled: bool,
    ) -> Result<(), StateError> {
        self.conn
            .prepare_cached(
                "UPDATE actions SET state = ?2, note = COALESCE(?3, note), ended_ms = COALESCE(?4, ended_ms),
                     unjournaled = ?5
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id_param(id),
                    state.as_str(),
                    note,
                    ended.map(ms),
                    i64::from(unjournaled)
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks `id` as journaled.
    pub fn mark_journaled(&self, id: u64) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE actions SET unjournaled = 0 WHERE id = ?1", params![id_param(id)])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Row `id`.
    pub fn get(&self, id: u64) -> Result<Record, StateError> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM actions WHERE id = ?1"), params![id_param(id)], row)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(StateError::Unknown { path: self.path.clone(), id })
    }

    /// The row in force for this action and target, if any (the newest).
    pub fn find_in_force(&self, action: ActionKind, target: &str) -> Result<Option<Record>, StateError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM actions WHERE action = ?1 AND target = ?2
                     AND state IN ('pending', 'active') ORDER BY id DESC LIMIT 1"
                ),
                params![action.as_str(), target],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Rows that may still be in force, oldest first.
    pub fn in_force(&self) -> Result<Vec<Record>, StateError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM actions
                 WHERE state IN ('pending', 'active', 'expiring', 'revert_failed') ORDER BY id"
            ),
            [],
        )
    }

    /// The newest `limit` rows of any state, oldest first.
    pub fn history(&self, limit: u32) -> Result<Vec<Record>, StateError> {
        let mut rows =
            self.query(&format!("SELECT {COLUMNS} FROM actions ORDER BY id DESC LIMIT ?1"), params![limit])?;
        rows.reverse();
        Ok(rows)
    }

    /// Active rows whose time ran out by `now`, and `revert_failed` ones whose last attempt was at
    /// least `retry` ago.
    pub fn due(&self, now: SystemTime, retry: Duration) -> Result<Vec<Record>, StateError> {
        let retry_before = now.checked_sub(retry).unwrap_or(UNIX_EPOCH);
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM actions WHERE until_ms IS NOT NULL AND until_ms <= ?1 AND
                 (state = 'active' OR (state = 'revert_failed' AND COALESCE(ended_ms, 0) <= ?2))
                 ORDER BY id"
            ),
            params![ms(now), ms(retry_before)],
        )
    }

    /// Rows changed by `picket actions revert` that the journal has not seen.
    pub fn unjournaled(&self) -> Result<Vec<Record>, StateError> {
        self.query(&format!("SELECT {COLUMNS} FROM actions WHERE unjournaled = 1 ORDER BY id"), [])
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Record>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(p, row).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

fn id_param(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let action: String = r.get(1)?;
    let state: String = r.get(4)?;
    let revert: Option<String> = r.get(8)?;
    Ok(Record {
        id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        action: ActionKind::parse(&action).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown action {action:?}").into(),
            )
        })?,
        target: r.get(2)?,
        rule_id: r.get(3)?,
        state: RecordState::parse(&state),
        since: from_ms(r.get(5)?),
        until: r.get::<_, Option<i64>>(6)?.map(from_ms),
        ttl: r.get::<_, Option<i64>>(7)?.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        revert: revert.and_then(|t| serde_json::from_str(&t).ok()),
        ended: r.get::<_, Option<i64>>(9)?.map(from_ms),
        note: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn new(id: u64, action: ActionKind, target: &str, ttl: Option<u64>) -> NewRecord<'_> {
        NewRecord {
            id,
            action,
            target,
            rule_id: "r1",
            state: RecordState::Pending,
            since: t(0),
            ttl: ttl.map(Duration::from_secs),
            note: None,
        }
    }

    #[test]
    fn a_row_goes_from_pending_to_active_to_expired_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let db = StateDb::open(&path).unwrap();
        let id = db.max_id().unwrap() + 1;
        db.insert(&new(id, ActionKind::BlockIp, "203.0.113.7", Some(60))).unwrap();
        assert_eq!(db.get(id).unwrap().state, RecordState::Pending);
        assert_eq!(db.find_in_force(ActionKind::BlockIp, "203.0.113.7").unwrap().unwrap().id, id);
        db.activate(id, t(0), Some(Duration::from_secs(60)), None).unwrap();
        assert!(db.due(t(59), Duration::from_secs(60)).unwrap().is_empty());
        assert_eq!(db.due(t(60), Duration::from_secs(60)).unwrap()[0].id, id);
        drop(db);

        let db = StateDb::open(&path).unwrap();
        let r = db.get(id).unwrap();
        assert_eq!(
            (r.state, r.until, r.ttl),
            (RecordState::Active, Some(t(60)), Some(Duration::from_secs(60)))
        );
        db.set_state(id, RecordState::Expired, Some("ttl"), Some(t(60)), false).unwrap();
        assert!(db.in_force().unwrap().is_empty());
        assert_eq!(db.history(10).unwrap()[0].note.as_deref(), Some("ttl"));
        assert!(matches!(db.get(99), Err(StateError::Unknown { id: 99, .. })));
    }

    #[test]
    fn revert_data_round_trips_and_another_connection_s_change_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut a = StateDb::open(&path).unwrap();
        let b = StateDb::open(&path).unwrap();
        let id = a.max_id().unwrap() + 1;
        a.insert(&new(id, ActionKind::Quarantine, "/tmp/x", None)).unwrap();
        assert!(!a.changed_elsewhere().unwrap(), "own writes do not count");
        let data = RevertData::Quarantine { id: "abc".into(), dir: "/var/q".into() };
        b.activate(id, t(0), None, Some(&data)).unwrap();
        assert!(a.changed_elsewhere().unwrap());
        assert_eq!(a.get(id).unwrap().revert, Some(data));
        b.set_state(id, RecordState::Reverted, Some("by hand"), Some(t(5)), true).unwrap();
        assert_eq!(a.unjournaled().unwrap().len(), 1);
        a.mark_journaled(id).unwrap();
        assert!(a.unjournaled().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 7).unwrap();
        assert!(matches!(StateDb::open(&path), Err(StateError::Newer { found: 7, .. })));
    }
}
