//! The on-disk schema and its migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version` (a header field, written in the
//! same transaction as the tables it describes). `MIGRATIONS[i]` upgrades a file from version
//! `i` to `i + 1`; adding v2 means writing one function and appending it to the list.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::JournalError;

/// `PRAGMA application_id`: "pick" in ASCII. Lets us tell our file from some other SQLite
/// database somebody pointed `data_dir` at, and refuse to touch theirs.
pub(crate) const APPLICATION_ID: i64 = 0x7069_636b;

/// The newest schema version this build reads and writes (= `MIGRATIONS.len()`).
pub const SCHEMA_VERSION: u32 = 2;

type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// `MIGRATIONS[i]` takes a file from user_version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[v1_initial, v2_outbox];

/// v1: events keyed by seq, with the columns eviction and stats need beside the stored JSON, and
/// one `meta` row with the counters (some must survive eviction of every event, the others save
/// a scan of the table).
fn v1_initial(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "PRAGMA application_id = 1885954923; -- 0x7069636b, 'pick'

        -- seq is the rowid: appends go to the right edge of the b-tree, eviction cuts the left.
        -- The JSON is the last column so reading the small columns never touches overflow pages.
        CREATE TABLE events (
            seq       INTEGER PRIMARY KEY,
            kind      TEXT    NOT NULL,   -- dotted name, e.g. 'process.start'
            retention INTEGER NOT NULL,   -- 0 routine, 1 keep (alert, action, journal.gap)
            ts_ns     INTEGER NOT NULL,   -- @timestamp, ns since the Unix epoch
            bytes     INTEGER NOT NULL,   -- length of json in bytes
            json      TEXT    NOT NULL    -- the event as serialized, seq included
        );

        -- No secondary index: every index is one more b-tree insert per event (it cost 13 % of
        -- append throughput). Eviction walks the table in seq order, which finds routine rows
        -- at once because alerts are rare among them; when no routine row is left (meta knows,
        -- routine_count) every row is keep-class and the oldest is the first.

        -- One row. Counters are kept up to date in every append transaction so nothing ever has
        -- to SUM or COUNT the table on the write path or for `picket status`; last_seq survives
        -- eviction of every row.
        CREATE TABLE meta (
            id            INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq      INTEGER NOT NULL,
            acked_seq     INTEGER NOT NULL,
            evicted_total INTEGER NOT NULL,
            logical_bytes INTEGER NOT NULL,  -- sum of (bytes + ROW_OVERHEAD) over events
            event_count   INTEGER NOT NULL,
            routine_count INTEGER NOT NULL,  -- events with retention 0
            backlog       INTEGER NOT NULL,  -- events with seq > acked_seq
            synced_seq    INTEGER NOT NULL,  -- last seq made durable with a synchronous=FULL commit
            max_bytes     INTEGER NOT NULL   -- cap the last writer ran with (for stats)
        );
        INSERT INTO meta VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0, 0);",
    )
}

/// v2: the uplink's outbox. Events are sealed into signed batches in two lanes (keep-class first,
/// then routine), each lane with a cursor ("every event of this class through seq N is sealed");
/// sealed batches wait in `outbox` with their exact wire bytes until delivered, so a resend is
/// byte-identical and a crash between sealing and sending changes nothing.
fn v2_outbox(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE meta ADD COLUMN sealed_keep_seq INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE meta ADD COLUMN sealed_routine_seq INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE meta ADD COLUMN next_batch_seq INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE meta ADD COLUMN delivered_batch_seq INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE meta ADD COLUMN head_hash BLOB;          -- hash of the last sealed batch
        ALTER TABLE meta ADD COLUMN stream_id BLOB;          -- 16 random bytes, new with each journal
        -- What a v1 agent acknowledged counts as sealed and delivered.
        UPDATE meta SET sealed_keep_seq = acked_seq, sealed_routine_seq = acked_seq;

        -- Sealed, not yet delivered. A handful of rows (the uplink's window), each holding the
        -- exact signed bytes that were (or will be) published.
        CREATE TABLE outbox (
            batch_seq     INTEGER PRIMARY KEY,
            priority      INTEGER NOT NULL,   -- 1: keep-class lane (alerts, actions, gaps)
            first_seq     INTEGER NOT NULL,
            last_seq      INTEGER NOT NULL,
            count         INTEGER NOT NULL,
            cursor_before INTEGER NOT NULL,   -- the lane's sealed cursor before / after this batch
            cursor_after  INTEGER NOT NULL,
            hash          BLOB    NOT NULL,
            wire          BLOB    NOT NULL
        );",
    )
}

/// Read `user_version`, refusing negative values (not something we ever write).
pub(crate) fn user_version(conn: &Connection, path: &Path) -> Result<u32, JournalError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| JournalError::sqlite(path, "read schema version", e))?;
    u32::try_from(v)
        .map_err(|_| JournalError::corrupt(path, format!("schema version {v} is not one picket writes")))
}

/// Bring the file up to [`SCHEMA_VERSION`] in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let sql = |op| move |e| JournalError::sqlite(path, op, e);
    let tx =
        conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("begin migration"))?;
    // Checked again under the write lock: the pre-open check ran without it.
    let found = user_version(&tx, path)?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::TooNew { path: path.to_owned(), found, supported: SCHEMA_VERSION });
    }
    if found == SCHEMA_VERSION {
        return Ok(()); // dropping tx rolls back a transaction that wrote nothing
    }
    for step in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(usize::MAX)) {
        step(&tx).map_err(sql("migrate schema"))?;
    }
    tx.pragma_update(None, "user_version", i64::from(SCHEMA_VERSION)).map_err(sql("set schema version"))?;
    tx.commit().map_err(sql("commit migration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_is_the_number_of_migrations() {
        assert_eq!(MIGRATIONS.len(), usize::try_from(SCHEMA_VERSION).unwrap());
    }
}
