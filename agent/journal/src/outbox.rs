//! The uplink's outbox: sealing journaled events into batches, and what was delivered.
//!
//! The journal stays ignorant of the envelope: [`Journal::seal_next`] picks the events and hands
//! their stored JSON to a closure (the uplink's call into picket-wire) that returns the signed
//! bytes and their hash. The rest is bookkeeping, all in the journal file:
//!
//! - **Two lanes, keep-class first.** Alerts, actions and gap records (retention `Keep`) are
//!   sealed before routine events, so a device coming back after days offline reports what it did
//!   before it reports what it saw. Each lane has a cursor: every event of that class with
//!   `seq <= cursor` is sealed. Within a lane, batches are in seq order; seqs inside a batch are
//!   increasing but not contiguous (the other lane's events sit between them).
//! - **One chain across both lanes.** Every batch gets the next `batch_seq` and carries the hash
//!   of the batch before it, whatever its lane, so the collector can tell a missing batch from a
//!   missing event.
//! - **Sealed bytes are stored until delivered.** A resend after a reconnect or a restart sends
//!   exactly the same bytes (the collector deduplicates them), and a crash between sealing and
//!   publishing loses nothing. The seal commits with `synchronous=FULL`, which also makes every
//!   event before it durable: a batch is never published that a power cut could take back.
//! - **Delivery is by `batch_seq`, in order.** [`Journal::mark_delivered`] drops every outbox row
//!   through a batch and moves the lanes' delivered cursors. Whether "delivered" means the broker's
//!   PUBACK or the collector's signed acknowledgement is the uplink's choice.
//! - **Delivered events stay** as the device's local record until the size cap evicts them,
//!   oldest routine first, like any other event. Sealed batches do not count towards the cap; the
//!   uplink keeps only a small window of them.

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use crate::{Journal, JournalError, Mode, get_u64, int};

/// How big one sealed batch may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealLimits {
    /// At most this many events.
    pub max_events: usize,
    /// At most about this many bytes of event JSON (one event more than fits is never added,
    /// unless it is the first: a single oversized event still goes, alone).
    pub max_bytes: usize,
}

impl Default for SealLimits {
    fn default() -> SealLimits {
        SealLimits { max_events: 1024, max_bytes: 512 * 1024 }
    }
}

/// What the seal closure gets: the batch's place in the chain and its events.
#[derive(Debug)]
pub struct BatchDraft<'a> {
    /// The stream this journal writes (random, made with the journal): a new journal is a new
    /// stream, so a collector can tell a reset device from a replay.
    pub stream_id: [u8; 16],
    /// 1, 2, 3, ... across both lanes.
    pub batch_seq: u64,
    /// Hash of the batch before (zeros for the first).
    pub prev_hash: [u8; 32],
    /// True for the keep-class lane.
    pub priority: bool,
    /// The events' JSON as stored, in seq order.
    pub lines: &'a [&'a str],
}

/// What the seal closure returns.
#[derive(Debug)]
pub struct Sealed {
    /// Hash that the next batch's `prev_hash` carries.
    pub hash: [u8; 32],
    /// The exact bytes to publish.
    pub wire: Vec<u8>,
}

/// A sealed batch waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxBatch {
    pub batch_seq: u64,
    pub priority: bool,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub hash: [u8; 32],
    pub wire: Vec<u8>,
}

/// The outbox's counters, for `picket status` and the uplink's start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// The journal's stream id.
    pub stream_id: [u8; 16],
    /// The `batch_seq` the next sealed batch gets.
    pub next_batch_seq: u64,
    /// Every batch through this one was delivered.
    pub delivered_batch_seq: u64,
    /// Sealed and waiting.
    pub pending_batches: u64,
    /// Hash of the last sealed batch (zeros before the first).
    pub head_hash: [u8; 32],
}

impl Journal {
    /// Seal the next batch: the oldest unsealed keep-class events if there are any, otherwise the
    /// oldest unsealed routine ones, at most `limits`. `seal` turns them into signed bytes; the
    /// batch is stored in the outbox in the same transaction that moves the lane's cursor, with
    /// `synchronous=FULL`. `Ok(None)` when nothing is left to seal.
    ///
    /// An error from `seal` is [`JournalError::Seal`]; nothing changed.
    pub fn seal_next(
        &mut self,
        limits: SealLimits,
        seal: impl FnOnce(BatchDraft<'_>) -> Result<Sealed, String>,
    ) -> Result<Option<OutboxBatch>, JournalError> {
        let path = self.path.clone();
        let Mode::Writer(w) = &mut self.mode else {
            return Err(JournalError::ReadOnly { path, op: "seal a batch" });
        };
        let sql = |op| {
            let path = path.clone();
            move |e| JournalError::sqlite(&path, op, e)
        };
        w.set_sync(&path, true)?;
        let tx =
            w.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("begin seal"))?;
        let m = read_outbox_meta(&tx).map_err(sql("read meta"))?;

        let mut picked = pick(&tx, 1, m.sealed_keep, m.last_seq, limits).map_err(sql("read events"))?;
        let priority = !picked.rows.is_empty();
        let keep_cursor = picked.cursor;
        let mut routine_cursor = m.sealed_routine;
        if !priority {
            picked = pick(&tx, 0, m.sealed_routine, m.last_seq, limits).map_err(sql("read events"))?;
            routine_cursor = picked.cursor;
        }
        // A lane found empty still moves its cursor (to last_seq), so the next look starts there.
        tx.execute(
            "UPDATE meta SET sealed_keep_seq = ?1, sealed_routine_seq = ?2 WHERE id = 1",
            [int(keep_cursor).map_err(sql("seal"))?, int(routine_cursor).map_err(sql("seal"))?],
        )
        .map_err(sql("seal"))?;
        if picked.rows.is_empty() {
            update_acked(&tx).map_err(sql("seal"))?;
            tx.commit().map_err(sql("commit seal"))?;
            return Ok(None);
        }

        let lines: Vec<&str> = picked.rows.iter().map(|(_, l)| l.as_str()).collect();
        let draft = BatchDraft {
            stream_id: m.stream_id,
            batch_seq: m.next_batch_seq,
            prev_hash: m.head_hash,
            priority,
            lines: &lines,
        };
        let sealed = seal(draft).map_err(|reason| JournalError::Seal { path: path.clone(), reason })?;
        let batch = OutboxBatch {
            batch_seq: m.next_batch_seq,
            priority,
            first_seq: picked.rows.first().map_or(0, |r| r.0),
            last_seq: picked.rows.last().map_or(0, |r| r.0),
            count: u64::try_from(picked.rows.len()).unwrap_or(u64::MAX),
            hash: sealed.hash,
            wire: sealed.wire,
        };
        let before = if priority { m.sealed_keep } else { m.sealed_routine };
        let after = if priority { keep_cursor } else { routine_cursor };
        let insert = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT INTO outbox (batch_seq, priority, first_seq, last_seq, count, cursor_before,
                                     cursor_after, hash, wire)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    int(batch.batch_seq)?,
                    i64::from(priority),
                    int(batch.first_seq)?,
                    int(batch.last_seq)?,
                    int(batch.count)?,
                    int(before)?,
                    int(after)?,
                    &batch.hash[..],
                    &batch.wire
                ],
            )?;
            tx.execute(
                "UPDATE meta SET next_batch_seq = ?1, head_hash = ?2, synced_seq = last_seq WHERE id = 1",
                params![int(batch.batch_seq + 1)?, &batch.hash[..]],
            )?;
            update_acked(&tx)
        };
        insert().map_err(sql("seal"))?;
        tx.commit().map_err(sql("commit seal"))?;
        w.full_commits += 1;
        w.durable_seq = w.last_seq;
        w.set_sync(&path, false)?;
        Ok(Some(batch))
    }

    /// Sealed batches not yet delivered, in `batch_seq` order: what the uplink (re)sends.
    pub fn outbox(&self) -> Result<Vec<OutboxBatch>, JournalError> {
        self.read("read outbox", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT batch_seq, priority, first_seq, last_seq, count, hash, wire FROM outbox
                 ORDER BY batch_seq",
            )?;
            let rows = stmt.query_map([], |r| {
                let hash: Vec<u8> = r.get(5)?;
                Ok(OutboxBatch {
                    batch_seq: get_u64(r, 0)?,
                    priority: r.get::<_, i64>(1)? != 0,
                    first_seq: get_u64(r, 2)?,
                    last_seq: get_u64(r, 3)?,
                    count: get_u64(r, 4)?,
                    hash: hash32(&hash),
                    wire: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Record that every batch through `batch_seq` was delivered: their outbox rows go, the
    /// backlog shrinks by their events. Monotonic; a `batch_seq` never sealed is clamped to the
    /// last sealed one. Returns how many events this delivered.
    pub fn mark_delivered(&mut self, batch_seq: u64) -> Result<u64, JournalError> {
        let path = self.path.clone();
        let Mode::Writer(w) = &mut self.mode else {
            return Err(JournalError::ReadOnly { path, op: "mark batches delivered" });
        };
        let run = |tx: &Transaction<'_>| -> rusqlite::Result<u64> {
            let (next, delivered, backlog): (u64, u64, u64) = tx.query_row(
                "SELECT next_batch_seq, delivered_batch_seq, backlog FROM meta WHERE id = 1",
                [],
                |r| Ok((get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?)),
            )?;
            let through = batch_seq.min(next.saturating_sub(1));
            if through <= delivered {
                return Ok(0);
            }
            let events: i64 = tx.query_row(
                "SELECT coalesce(sum(count), 0) FROM outbox WHERE batch_seq <= ?1",
                [int(through)?],
                |r| r.get(0),
            )?;
            let events = u64::try_from(events).unwrap_or(0);
            tx.execute("DELETE FROM outbox WHERE batch_seq <= ?1", [int(through)?])?;
            tx.execute(
                "UPDATE meta SET delivered_batch_seq = ?1, backlog = ?2 WHERE id = 1",
                [int(through)?, int(backlog.saturating_sub(events))?],
            )?;
            update_acked(tx)?;
            Ok(events)
        };
        // Normal durability: a delivery lost to a power cut means a resend, which the collector
        // deduplicates.
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| JournalError::sqlite(&path, "mark delivered", e))?;
        let n = run(&tx).map_err(|e| JournalError::sqlite(&path, "mark delivered", e))?;
        tx.commit().map_err(|e| JournalError::sqlite(&path, "mark delivered", e))?;
        Ok(n)
    }

    /// The outbox's counters.
    pub fn outbox_state(&self) -> Result<OutboxState, JournalError> {
        self.read("read outbox state", |c| {
            let (stream_id, next, delivered, head): (Option<Vec<u8>>, u64, u64, Option<Vec<u8>>) = c
                .query_row(
                    "SELECT stream_id, next_batch_seq, delivered_batch_seq, head_hash FROM meta WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, get_u64(r, 1)?, get_u64(r, 2)?, r.get(3)?)),
                )?;
            let pending: i64 = c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
            let mut id = [0u8; 16];
            if let Some(s) = stream_id.filter(|s| s.len() == 16) {
                id.copy_from_slice(&s);
            }
            Ok(OutboxState {
                stream_id: id,
                next_batch_seq: next,
                delivered_batch_seq: delivered,
                pending_batches: u64::try_from(pending).unwrap_or(0),
                head_hash: head.as_deref().map_or([0; 32], hash32),
            })
        })
    }
}

/// Give a journal without one its stream id (16 bytes from the kernel's CSPRNG).
pub(crate) fn ensure_stream_id(tx: &Transaction<'_>, path: &Path) -> Result<(), JournalError> {
    let sql = |op| move |e| JournalError::sqlite(path, op, e);
    let have: Option<Vec<u8>> = tx
        .query_row("SELECT stream_id FROM meta WHERE id = 1", [], |r| r.get(0))
        .map_err(sql("read meta"))?;
    if have.is_some_and(|s| s.len() == 16) {
        return Ok(());
    }
    let mut id = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .map_err(|e| JournalError::io(path, "read /dev/urandom", e))?,
        &mut id,
    )
    .map_err(|e| JournalError::io(path, "read /dev/urandom", e))?;
    tx.execute("UPDATE meta SET stream_id = ?1 WHERE id = 1", [&id[..]]).map_err(sql("write stream id"))?;
    Ok(())
}

struct OutboxMeta {
    last_seq: u64,
    sealed_keep: u64,
    sealed_routine: u64,
    next_batch_seq: u64,
    head_hash: [u8; 32],
    stream_id: [u8; 16],
}

fn read_outbox_meta(tx: &Transaction<'_>) -> rusqlite::Result<OutboxMeta> {
    tx.query_row(
        "SELECT last_seq, sealed_keep_seq, sealed_routine_seq, next_batch_seq, head_hash, stream_id
         FROM meta WHERE id = 1",
        [],
        |r| {
            let head: Option<Vec<u8>> = r.get(4)?;
            let stream: Option<Vec<u8>> = r.get(5)?;
            let mut stream_id = [0u8; 16];
            if let Some(s) = stream.filter(|s| s.len() == 16) {
                stream_id.copy_from_slice(&s);
            }
            Ok(OutboxMeta {
                last_seq: get_u64(r, 0)?,
                sealed_keep: get_u64(r, 1)?,
                sealed_routine: get_u64(r, 2)?,
                next_batch_seq: get_u64(r, 3)?,
                head_hash: head.as_deref().map_or([0; 32], hash32),
                stream_id,
            })
        },
    )
}

/// `acked_seq` in `meta` (what `picket journal stats` shows as delivered-through): the lower of
/// the two lanes' delivered cursors. A lane's delivered cursor is where its oldest undelivered
/// batch started, or its sealed cursor when it has none.
fn update_acked(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let lane = |priority: i64, sealed_col: &str| -> rusqlite::Result<u64> {
        let pending: Option<i64> = tx
            .query_row(
                "SELECT cursor_before FROM outbox WHERE priority = ?1 ORDER BY batch_seq LIMIT 1",
                [priority],
                |r| r.get(0),
            )
            .optional()?;
        match pending {
            Some(v) => Ok(u64::try_from(v).unwrap_or(0)),
            None => {
                tx.query_row(&format!("SELECT {sealed_col} FROM meta WHERE id = 1"), [], |r| get_u64(r, 0))
            }
        }
    };
    let acked = lane(1, "sealed_keep_seq")?.min(lane(0, "sealed_routine_seq")?);
    tx.execute("UPDATE meta SET acked_seq = max(acked_seq, ?1) WHERE id = 1", [int(acked)?])?;
    Ok(())
}

struct Picked {
    rows: Vec<(u64, String)>,
    /// The lane's sealed cursor if these rows are sealed.
    cursor: u64,
}

/// The oldest events of one retention class after `cursor`, within `limits`.
fn pick(
    tx: &Transaction<'_>,
    retention: i64,
    cursor: u64,
    last_seq: u64,
    limits: SealLimits,
) -> rusqlite::Result<Picked> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, bytes, json FROM events WHERE seq > ?1 AND retention = ?2 ORDER BY seq LIMIT ?3",
    )?;
    let max = i64::try_from(limits.max_events.max(1)).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![int(cursor)?, retention, max])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut full = false;
    while let Some(row) = rows.next()? {
        let seq = get_u64(row, 0)?;
        let len = usize::try_from(get_u64(row, 1)?).unwrap_or(usize::MAX);
        if !out.is_empty() && bytes.saturating_add(len) > limits.max_bytes {
            full = true;
            break;
        }
        bytes = bytes.saturating_add(len);
        out.push((seq, row.get(2)?));
        if out.len() >= limits.max_events.max(1) {
            full = true;
            break;
        }
    }
    // Not full: every row of this class through last_seq was read, so the whole range is sealed.
    let cursor = if full { out.last().map_or(cursor, |r| r.0) } else { last_seq.max(cursor) };
    Ok(Picked { rows: out, cursor })
}

fn hash32(b: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    if b.len() == 32 {
        h.copy_from_slice(b);
    }
    h
}
