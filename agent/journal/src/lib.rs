//! picket's local journal: every event, decision and action, in one SQLite file, bounded in size.
//!
//! The journal is the agent's source of truth. The uplink reads only from it, and `picket journal
//! stats|export` inspect it while the agent runs. It is synchronous on purpose: one writer
//! calls [`Journal::append`] with a batch, and SQLite does the rest. The async runtime sits
//! around it, not inside it.
//!
//! ```
//! use picket_event::{Event, EventKind, Timestamp};
//! use picket_journal::{Journal, JournalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data/journal.db");
//!
//! let mut journal = Journal::open(&path, JournalOptions::new("dev-1"))?;
//! let mut batch = vec![
//!     Event::new(EventKind::ProcessStart, Timestamp::from_unix_nanos(1_700_000_000_000_000_000)),
//!     Event::new(EventKind::Alert, Timestamp::from_unix_nanos(1_700_000_000_000_000_001)),
//! ];
//! let written = journal.append(&mut batch)?; // one transaction, seq assigned
//! assert_eq!((written.first_seq, written.last_seq), (1, 2));
//! assert_eq!(batch[1].seq, 2);
//! drop(journal);
//!
//! // A second process (the CLI) reads without creating or changing anything.
//! let reader = Journal::open_read_only(&path)?;
//! let mut lines = Vec::new();
//! let n = reader.export(1, |line| {
//!     lines.push(line.to_owned());
//!     Ok(())
//! })?;
//! assert_eq!(n, 1);
//! assert!(lines[0].starts_with(r#"{"schema_version":1,"kind":"alert","seq":2,"#));
//! assert_eq!(reader.stats()?.events, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! - **One transaction per `append`.** Transactions cost, inserts do not: group commit is what
//!   makes ≥ 150,000 events/s possible on flash (research/transport.md §1.15).
//! - **WAL, `synchronous=NORMAL`, except for batches that carry an alert, an action or a gap**,
//!   which commit with `synchronous=FULL`. An application crash (kill -9, panic, OOM kill) never
//!   loses a committed transaction in WAL mode, whatever the sync setting. A power cut can roll back
//!   the last NORMAL commits; a FULL commit makes them durable too, because it syncs the whole WAL,
//!   which holds every earlier commit. [`Journal::durable_seq`] and [`Journal::sync`] expose this
//!   to the uplink, which should only send what is durable.
//! - **`seq` comes from the `meta` row, not from `max(seq)`**, and is written in the same
//!   transaction as the events, so it survives eviction of every row and restarts, and is never
//!   reused.
//! - **Size is accounted, not measured.** Each row counts its JSON length plus [`ROW_OVERHEAD`]
//!   bytes; the running total is kept in `meta`. When an append takes it over
//!   [`JournalOptions::max_bytes`], the same transaction evicts the oldest routine events (then,
//!   only if none is left, the oldest alerts, actions and gap records) down to 90 % of the cap, and
//!   records each eviction round as a `journal.gap` event. Nothing is lost silently.
//! - **The file follows the cap.** With [`ROW_OVERHEAD`] measured on real rows, the database
//!   file stays within ~10 % of the logical size (freed pages are reused, never VACUUMed: no
//!   rewrite of the whole file on flash). The WAL budget is a quarter of the cap (at most 4 MiB),
//!   enforced by `wal_autocheckpoint` and `journal_size_limit`; measured peak of file + WAL:
//!   1.48× the cap at 1 MiB, 1.34× at 8 MiB, less for larger caps (the WAL budget stops at 4 MiB).
//! - **Checkpoints run in the append that fills the WAL budget** (SQLite's auto-checkpoint): that
//!   append stalls for the copy and two fsyncs (~25 ms per 4 MiB on the benchmark VM), and they
//!   cost 15–35 % of batched throughput. Moving them to a thread was tried: a background
//!   `PASSIVE` copier keeps the checkpoint lock so often that the rewind of the WAL starves (it
//!   grew to 3.4× the cap), and copying in slices multiplies fsyncs, which flash pays for. Two
//!   fsyncs per 4 MiB is the frugal choice for the devices picket targets.
//! - **No secondary index.** Each one is another b-tree insert per event (13 % of append
//!   throughput). Eviction walks the table in seq order, and counters in `meta` (event count,
//!   routine count, backlog, bytes) answer `picket status` without scanning.
//! - **A damaged file is never touched.** Before the read-write open, the file is checked
//!   read-only (header, identity, schema version, `PRAGMA quick_check`); anything wrong is
//!   [`JournalError::Corrupt`] or [`JournalError::TooNew`] with the path, and the file is left
//!   byte for byte as it was, for the operator to look at.
//!
//! One process writes at a time. Readers (`open_read_only`) never block the writer: WAL lets
//! them read a snapshot while it appends, and `export` re-reads in short chunks so that a slow
//! consumer cannot pin the WAL and make it grow.

use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picket_event::{Event, EventKind, Gap, Retention, Timestamp, severity};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, OpenFlags, Transaction, TransactionBehavior, params};

mod check;
mod error;
mod outbox;
mod schema;

pub use error::JournalError;
pub use outbox::{BatchDraft, OutboxBatch, OutboxState, SealLimits, Sealed};
pub use schema::SCHEMA_VERSION;

use check::Existing;

/// Bytes each stored event counts for on top of its JSON text, in the size cap.
///
/// What a row costs in the file beyond its JSON, measured on journals of 2,000 to 100,000 events
/// of 300 to 450 bytes: 48 to 79 bytes. That is the table cell (rowid, record header, kind,
/// retention, timestamp, length, cell pointer: about 37 bytes), the unused tail of each 4 KiB
/// page (which depends on how event sizes pack, hence the spread) and interior b-tree pages.
/// Taken at the high end because `max_bytes` is meant to bound the file: under steady eviction
/// the database file then stays within a few percent of the cap.
/// `row_overhead_estimate_keeps_the_database_file_near_the_logical_size` checks it.
pub const ROW_OVERHEAD: u64 = 80;

/// Smallest cap accepted; smaller values are raised to it. Below this the fixed cost of an SQLite
/// file (three 4 KiB pages for schema, events and meta) and of the WAL dominates, and a single
/// eviction round could not make room for its own gap record.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

/// The `reason` of gap events written when the cap forces eviction.
pub const GAP_REASON_FULL: &str = "journal_full";

/// SQLite page size for new journals. 4 KiB matches flash erase blocks' sub-pages and the kernel
/// page size; it is also SQLite's default.
const PAGE_SIZE: u64 = 4096;

/// Page cache of each journal connection (the agent's writer, the uplink's reader), in KiB
/// (negative `cache_size` means KiB). The agent's whole RSS budget is 16 MB, and a connection's
/// cache fills up to this under steady appends and stays full. Appends only touch the right edge
/// of two b-trees, eviction the left edge, and the uplink reads what was just written (still in
/// the OS page cache): 128 pages lose little; 2 MiB per connection was measured to cost ~3.5 MiB
/// of the agent's RSS under load for no throughput.
pub const CACHE_KIB: u64 = 512;

/// Ask SQLite to keep the memory it uses in this process (every connection: the journal's, the
/// file baseline's, containment's) under `bytes`, by recycling page-cache pages before it
/// allocates new ones. A soft limit: a statement that needs more still gets it. 0 removes the
/// limit. Returns the limit before.
#[allow(unsafe_code)]
pub fn limit_sqlite_memory(bytes: u64) -> u64 {
    // SAFETY: sqlite3_soft_heap_limit64 only sets a process-wide limit; it is thread-safe
    // (SQLITE_THREADSAFE=1 in the bundled build) and takes any value.
    let before =
        unsafe { rusqlite::ffi::sqlite3_soft_heap_limit64(i64::try_from(bytes).unwrap_or(i64::MAX)) };
    u64::try_from(before).unwrap_or(0)
}

/// Bytes SQLite has allocated in this process now (all connections), for `picket status`.
#[allow(unsafe_code)]
pub fn sqlite_memory_used() -> u64 {
    // SAFETY: a read of SQLite's memory statistics; thread-safe.
    u64::try_from(unsafe { rusqlite::ffi::sqlite3_memory_used() }).unwrap_or(0)
}

/// How long a connection waits on a lock before giving up (a reader rebuilding the WAL index, a
/// second writer).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows read per read transaction in `export`. Bounds memory (chunk × event size) and how long a
/// reader pins the WAL.
const EXPORT_CHUNK: i64 = 512;

/// Eviction target: after a round the logical size is at most this fraction of the cap, so the
/// next ~10 % of the cap of appends evict nothing (one gap record per round, not per append).
const LOW_WATERMARK_PERCENT: u64 = 90;

/// How a journal is opened for writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// Cap on the logical size (JSON bytes + [`ROW_OVERHEAD`] per event). At least
    /// [`MIN_MAX_BYTES`].
    pub max_bytes: u64,
    /// `host.id` written into the journal's own events (`journal.gap`).
    pub host_id: String,
}

impl JournalOptions {
    /// 64 MiB: the router/IoT profile in research/transport.md §3.6.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

    /// Options with the default cap.
    pub fn new(host_id: impl Into<String>) -> JournalOptions {
        JournalOptions { max_bytes: JournalOptions::DEFAULT_MAX_BYTES, host_id: host_id.into() }
    }

    /// The same options with another cap.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> JournalOptions {
        self.max_bytes = max_bytes;
        self
    }
}

impl Default for JournalOptions {
    fn default() -> JournalOptions {
        JournalOptions::new("")
    }
}

/// What one [`Journal::append`] wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appended {
    /// seq of the first event of the batch; 0 when the batch was empty.
    pub first_seq: u64,
    /// seq of the last row written, the gap events included; 0 when the batch was empty.
    pub last_seq: u64,
    /// `journal.gap` events the size cap made this append write (with their seq), oldest first.
    pub gaps: Vec<Event>,
}

/// Numbers for `picket journal stats`, `picket status` and `agent.health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Events stored now.
    pub events: u64,
    /// What the cap counts: JSON bytes + [`ROW_OVERHEAD`] per event.
    pub logical_bytes: u64,
    /// The cap the writer last ran with.
    pub max_bytes: u64,
    /// Size on disk: the database file plus its `-wal`.
    pub file_bytes: u64,
    /// Oldest seq stored, `None` when empty.
    pub first_seq: Option<u64>,
    /// Newest seq ever assigned (stays even when that event was evicted).
    pub last_seq: u64,
    /// Events evicted since the journal was created.
    pub evicted_total: u64,
    /// Every event through this seq was delivered upstream (some later ones may be too: the
    /// keep-class lane goes first, see the outbox).
    pub acked_seq: u64,
    /// Events not yet delivered upstream (unsealed, or sealed and waiting in the outbox).
    pub backlog: u64,
    /// Events stored, by dotted kind name. Empty from [`Journal::summary`].
    pub by_kind: BTreeMap<String, u64>,
}

/// A picket journal file, open for appending ([`Journal::open`]) or for reading
/// ([`Journal::open_read_only`]).
pub struct Journal {
    path: PathBuf,
    mode: Mode,
}

enum Mode {
    Writer(Box<Writer>),
    /// Holds no connection: each call opens one (see [`check::open_reader`]), so a handle kept
    /// around never pins the WAL, and a reader started before the agent sees its WAL once it
    /// exists.
    ReadOnly {
        last_seq_at_open: u64,
    },
}

struct Writer {
    conn: Connection,
    host_id: String,
    max_bytes: u64,
    last_seq: u64,
    /// Highest seq known to survive a power cut.
    durable_seq: u64,
    /// Current `PRAGMA synchronous` of `conn`: true = FULL, false = NORMAL.
    sync_full: bool,
    /// Serialization buffer, reused across events to avoid an allocation per event.
    buf: Vec<u8>,
    /// Commits made with synchronous=FULL (observed by tests).
    full_commits: u64,
}

/// The counters of the `meta` row that an append reads or changes.
#[derive(Clone, Copy, Debug)]
struct Counters {
    last_seq: u64,
    acked_seq: u64,
    logical_bytes: u64,
    event_count: u64,
    routine_count: u64,
    backlog: u64,
    evicted_total: u64,
    /// The outbox lanes' sealed cursors (read only here): evicting an event after its lane's
    /// cursor takes it out of the backlog; one before it is still counted by its batch.
    sealed_keep: u64,
    sealed_routine: u64,
}

impl Counters {
    /// Account for one stored event.
    fn add(&mut self, ev: &Event, bytes: u64) {
        self.logical_bytes += bytes;
        self.event_count += 1;
        if ev.kind.retention() == Retention::Routine {
            self.routine_count += 1;
        }
        if ev.seq > self.acked_seq {
            self.backlog += 1;
        }
    }
}

/// One eviction round: the seq range it took rows from, how many, and their accounted bytes.
#[derive(Clone, Copy, Debug)]
struct Evicted {
    first_seq: u64,
    last_seq: u64,
    count: u64,
    bytes: u64,
    /// How many of them had seq > acked_seq (were in the backlog).
    unacked: u64,
}

impl Journal {
    /// Create (with parent directories) or open a journal for appending.
    ///
    /// An existing file is checked read-only first (see [`JournalError::Corrupt`] and
    /// [`JournalError::TooNew`]); only a healthy journal, an empty file or a missing one is opened
    /// read-write. The check reads every page once (`PRAGMA quick_check`: about 70 ms for a
    /// 64 MiB journal in the page cache, 2 s from a cold disk on the benchmark VM). Then: WAL mode, `synchronous=NORMAL`, migrations to [`SCHEMA_VERSION`], and one
    /// `synchronous=FULL` commit so that whatever an earlier crash left in the WAL is durable
    /// before new events are added after it.
    pub fn open(path: &Path, opts: JournalOptions) -> Result<Journal, JournalError> {
        let existing = check::inspect(path)?;
        if existing == Existing::Absent
            && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| JournalError::io(path, "create parent directory", e))?;
        }
        let sql = |op| move |e| JournalError::sqlite(path, op, e);
        // No SQLITE_OPEN_URI: the path is a path, even if it starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql("set busy timeout"))?;

        let max_bytes = opts.max_bytes.max(MIN_MAX_BYTES);
        // page_size only takes effect on a file without tables; harmless otherwise.
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}")).map_err(sql("set page size"))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // E.g. a filesystem without shared-memory support. Without WAL, readers block the
            // writer and a crash mid-append needs a rollback journal: refuse rather than limp.
            return Err(JournalError::io(
                path,
                "enable WAL",
                io::Error::other(format!("SQLite kept journal_mode={mode}")),
            ));
        }
        // WAL budget: a quarter of the cap, at most SQLite's default 1000 pages (4 MiB). The
        // commit that fills it runs a PASSIVE checkpoint (SQLite's auto-checkpoint: copy into
        // the database file, two fsyncs), after which the next transaction rewinds the WAL and
        // journal_size_limit truncates the file back to the budget. The WAL thus adds about a
        // quarter of the cap (plus one batch) to the file size. That commit stalls for the copy
        // (~25 ms per 4 MiB here); a background checkpointer was tried and dropped, see the
        // crate docs.
        let wal_pages = (max_bytes / 4 / PAGE_SIZE).clamp(16, 1000);
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{CACHE_KIB};
             PRAGMA wal_autocheckpoint = {wal_pages};
             PRAGMA journal_size_limit = {};",
            wal_pages * PAGE_SIZE
        ))
        .map_err(sql("configure"))?;
        schema::migrate(&mut conn, path)?;
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("begin stream id"))?;
            outbox::ensure_stream_id(&tx, path)?;
            tx.commit().map_err(sql("commit stream id"))?;
        }

        let mut w = Writer {
            conn,
            host_id: opts.host_id,
            max_bytes,
            last_seq: 0,
            durable_seq: 0,
            sync_full: false,
            buf: Vec::with_capacity(1024),
            full_commits: 0,
        };
        // Record the cap for read-only stats, and sync whatever a crashed predecessor left in
        // the WAL (an application crash leaves committed frames in the page cache, not on disk).
        w.set_sync(path, true)?;
        let last_seq: u64 = w
            .conn
            .query_row(
                "UPDATE meta SET max_bytes = ?1, synced_seq = last_seq WHERE id = 1 RETURNING last_seq",
                [int(max_bytes).map_err(sql("record cap"))?],
                |r| get_u64(r, 0),
            )
            .map_err(sql("record cap"))?;
        w.full_commits += 1;
        w.set_sync(path, false)?;
        w.last_seq = last_seq;
        w.durable_seq = last_seq;
        Ok(Journal { path: path.to_owned(), mode: Mode::Writer(Box::new(w)) })
    }

    /// Open an existing journal for reading only (`picket journal stats|export` next to a running
    /// agent). Never creates, modifies or locks out anything: a missing file is
    /// [`JournalError::Missing`], and no `-wal`/`-shm` files are created (see
    /// `check::open_reader`).
    ///
    /// Runs the same checks as [`Journal::open`] (header, identity, schema version,
    /// `quick_check`), so `picket journal stats` is also how an operator learns the file is
    /// damaged.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        match check::inspect(path)? {
            Existing::Absent => return Err(JournalError::Missing { path: path.to_owned() }),
            Existing::Fresh => {
                return Err(JournalError::corrupt(path, "empty database: not a picket journal (yet)"));
            }
            Existing::Journal { version } if version < SCHEMA_VERSION => {
                // An older file is migrated by the writer on its next start; reading it with
                // today's queries could fail in confusing ways.
                return Err(JournalError::corrupt(
                    path,
                    format!(
                        "schema version {version}: start the agent once to migrate it to {SCHEMA_VERSION}"
                    ),
                ));
            }
            Existing::Journal { .. } => {}
        }
        let mut journal = Journal { path: path.to_owned(), mode: Mode::ReadOnly { last_seq_at_open: 0 } };
        let last =
            journal.read("read meta", |c| c.query_row("SELECT last_seq FROM meta", [], |r| get_u64(r, 0)))?;
        journal.mode = Mode::ReadOnly { last_seq_at_open: last };
        Ok(journal)
    }

    /// Store `events` in one transaction: assign consecutive seq numbers (setting `ev.seq`), write
    /// their JSON, then enforce the size cap, writing one `journal.gap` event per eviction round.
    ///
    /// A batch with an alert, an action or a gap in it is committed with `synchronous=FULL`.
    /// On error nothing was written and every `ev.seq` is reset to 0, so the batch can be retried.
    pub fn append(&mut self, events: &mut [Event]) -> Result<Appended, JournalError> {
        self.append_any(events)
    }

    /// [`Journal::append`] for boxed events (the agent's journal thread keeps its batch as
    /// pointers: an [`Event`] is ~1.8 KB inline, so a retained `Vec<Event>` of a full batch would
    /// hold megabytes).
    pub fn append_boxed(&mut self, events: &mut [Box<Event>]) -> Result<Appended, JournalError> {
        self.append_any(events)
    }

    fn append_any<E: BorrowMut<Event>>(&mut self, events: &mut [E]) -> Result<Appended, JournalError> {
        let path = &self.path;
        let Mode::Writer(w) = &mut self.mode else {
            return Err(JournalError::ReadOnly { path: path.clone(), op: "append" });
        };
        if events.is_empty() {
            return Ok(Appended::default());
        }
        let keep = events.iter().any(|e| e.borrow().kind.retention() == Retention::Keep);
        let result = w.set_sync(path, keep).and_then(|()| w.append(path, events));
        match result {
            Ok(appended) => {
                w.last_seq = appended.last_seq;
                if keep {
                    w.full_commits += 1;
                    w.durable_seq = appended.last_seq;
                }
                Ok(appended)
            }
            Err(e) => {
                for ev in events.iter_mut() {
                    ev.borrow_mut().seq = 0;
                }
                Err(e)
            }
        }
    }

    /// The newest seq assigned (0 for a new journal). For a read-only handle it is read from the
    /// file, falling back to the value seen at open if that read fails.
    pub fn last_seq(&self) -> u64 {
        match &self.mode {
            Mode::Writer(w) => w.last_seq,
            Mode::ReadOnly { last_seq_at_open } => self
                .read("read meta", |c| c.query_row("SELECT last_seq FROM meta", [], |r| get_u64(r, 0)))
                .unwrap_or(*last_seq_at_open),
        }
    }

    /// Every event through this seq survives a power cut (it was committed with
    /// `synchronous=FULL`, or before one). Everything through [`Journal::last_seq`] survives an
    /// application crash regardless. The uplink should send only through `durable_seq`, calling
    /// [`Journal::sync`] when it wants more; otherwise a power cut could roll back events that
    /// were already sent, and their seq would be reused for different events. Read-only handles
    /// return their `last_seq`.
    pub fn durable_seq(&self) -> u64 {
        match &self.mode {
            Mode::Writer(w) => w.durable_seq,
            Mode::ReadOnly { .. } => self.last_seq(),
        }
    }

    /// Make every committed event durable against power loss (one small `synchronous=FULL`
    /// commit, i.e. one fsync of the WAL). Returns the new [`Journal::durable_seq`]. Cheap when
    /// nothing is pending. Call it before the uplink reads, or on a timer (research §3.6: at least
    /// every second while data flows).
    pub fn sync(&mut self) -> Result<u64, JournalError> {
        let path = &self.path;
        let Mode::Writer(w) = &mut self.mode else {
            return Err(JournalError::ReadOnly { path: path.clone(), op: "sync" });
        };
        if w.durable_seq == w.last_seq {
            return Ok(w.durable_seq);
        }
        w.set_sync(path, true)?;
        let seq = int(w.last_seq).map_err(|e| JournalError::sqlite(path, "sync", e))?;
        w.conn
            .execute("UPDATE meta SET synced_seq = ?1 WHERE id = 1", [seq])
            .map_err(|e| JournalError::sqlite(path, "sync", e))?;
        w.full_commits += 1;
        w.durable_seq = w.last_seq;
        Ok(w.durable_seq)
    }

    /// Everything, including a count by kind, which reads the whole table: meant for `picket
    /// journal stats`. Use [`Journal::summary`] on a timer.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        self.stats_inner(true)
    }

    /// [`Journal::stats`] without `by_kind` (left empty): reads only the `meta` row, so it is
    /// cheap enough for `agent.health` and `picket status`.
    pub fn summary(&self) -> Result<JournalStats, JournalError> {
        self.stats_inner(false)
    }

    fn stats_inner(&self, by_kind: bool) -> Result<JournalStats, JournalError> {
        let mut stats = self.read("read stats", |c| read_stats(c, by_kind))?;
        stats.file_bytes =
            std::fs::metadata(&self.path).map_err(|e| JournalError::io(&self.path, "stat", e))?.len()
                + check::wal_len(&self.path);
        Ok(stats)
    }

    /// Pass every event with seq > `since_seq` to `f`, in seq order, as the JSON text it was
    /// stored as (one line, no trailing newline). Returns how many were passed.
    ///
    /// Reads in chunks of a few hundred rows, each in its own short read transaction, and calls
    /// `f` between them: memory stays bounded and a slow consumer (a pipe to `less`) does not pin
    /// the WAL. Events evicted while the export runs are skipped; the `journal.gap` recording
    /// their eviction comes later in seq order. Stored text that is not valid JSON (or not even
    /// UTF-8) is passed on as stored (lossily decoded), not dropped: it is evidence.
    pub fn export(
        &self,
        since_seq: u64,
        mut f: impl FnMut(&str) -> io::Result<()>,
    ) -> Result<u64, JournalError> {
        let mut after = i64::try_from(since_seq).unwrap_or(i64::MAX);
        let mut exported = 0u64;
        let mut chunk: Vec<(i64, String)> = Vec::new();
        loop {
            chunk.clear();
            self.read("export", |c| {
                let mut stmt =
                    c.prepare_cached("SELECT seq, json FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
                let mut rows = stmt.query(params![after, EXPORT_CHUNK])?;
                while let Some(row) = rows.next()? {
                    let line = match row.get_ref(1)? {
                        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                        ValueRef::Integer(i) => i.to_string(),
                        ValueRef::Real(x) => x.to_string(),
                        ValueRef::Null => "null".to_owned(),
                    };
                    chunk.push((row.get(0)?, line));
                }
                Ok(())
            })?;
            let full = chunk.len() == usize::try_from(EXPORT_CHUNK).unwrap_or(usize::MAX);
            for (seq, line) in chunk.drain(..) {
                f(&line).map_err(|e| JournalError::Output { path: self.path.clone(), source: e })?;
                exported += 1;
                after = seq;
            }
            if !full {
                return Ok(exported);
            }
        }
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle came from [`Journal::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        matches!(self.mode, Mode::ReadOnly { .. })
    }

    /// Run `f` on a connection that reads: the writer's own, or a fresh read-only one.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        match &self.mode {
            Mode::Writer(w) => f(&w.conn),
            Mode::ReadOnly { .. } => f(&check::open_reader(&self.path)?),
        }
        .map_err(|e| JournalError::sqlite(&self.path, op, e))
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Journal");
        d.field("path", &self.path);
        match &self.mode {
            Mode::Writer(w) => d
                .field("mode", &"read-write")
                .field("max_bytes", &w.max_bytes)
                .field("last_seq", &w.last_seq)
                .field("durable_seq", &w.durable_seq),
            Mode::ReadOnly { .. } => d.field("mode", &"read-only"),
        };
        d.finish()
    }
}

impl Writer {
    /// Switch `PRAGMA synchronous` between FULL and NORMAL (only when it changes: the pragma is
    /// cheap but not free, and most batches are routine).
    fn set_sync(&mut self, path: &Path, full: bool) -> Result<(), JournalError> {
        if self.sync_full != full {
            let sql = if full { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
            self.conn.execute_batch(sql).map_err(|e| JournalError::sqlite(path, "set synchronous", e))?;
            self.sync_full = full;
        }
        Ok(())
    }

    fn append<E: BorrowMut<Event>>(
        &mut self,
        path: &Path,
        events: &mut [E],
    ) -> Result<Appended, JournalError> {
        let sql = |op| move |e| JournalError::sqlite(path, op, e);
        let Writer { conn, host_id, max_bytes, buf, .. } = self;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("begin append"))?;
        // Counters are read under the write lock rather than cached: cheap (one row), and right
        // even if something else wrote the file since we last looked.
        let mut c = read_counters(&tx).map_err(sql("read meta"))?;
        let first_seq = c.last_seq + 1;
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(sql("prepare insert"))?;
            for ev in events.iter_mut() {
                let ev = ev.borrow_mut();
                c.last_seq += 1;
                ev.seq = c.last_seq;
                let bytes = insert_event(&mut insert, buf, ev, path)?;
                c.add(ev, bytes);
            }
        }
        let mut gaps = Vec::new();
        if c.logical_bytes > *max_bytes {
            // Gap records take the batch's time, never the clock: the journal stays as pure as
            // its inputs, and replaying the same batches gives the same journal.
            let ts = events.last().map_or(Timestamp::default(), |e| e.borrow().timestamp);
            gaps = evict(&tx, &mut c, *max_bytes, host_id, ts, buf, path)?;
        }
        write_counters(&tx, &c).map_err(sql("update meta"))?;
        tx.commit().map_err(sql("commit append"))?;
        Ok(Appended { first_seq, last_seq: c.last_seq, gaps })
    }
}

const INSERT_EVENT: &str =
    "INSERT INTO events (seq, kind, retention, ts_ns, bytes, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Serialize `ev` into `buf` and insert it. Returns the bytes it counts for in the cap.
fn insert_event(
    stmt: &mut CachedStatement<'_>,
    buf: &mut Vec<u8>,
    ev: &Event,
    path: &Path,
) -> Result<u64, JournalError> {
    buf.clear();
    serde_json::to_writer(&mut *buf, ev)
        .map_err(|e| JournalError::Serialize { path: path.to_owned(), source: e })?;
    let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    let mut bind = || -> rusqlite::Result<usize> {
        stmt.execute(params![
            int(ev.seq)?,
            ev.kind.as_str(),
            retention_code(ev.kind.retention()),
            ev.timestamp.unix_nanos(),
            int(len)?,
            // serde_json writes UTF-8; bind the buffer as TEXT without copying or re-validating.
            ToSqlOutput::Borrowed(ValueRef::Text(buf)),
        ])
    };
    bind().map_err(|e| JournalError::sqlite(path, "insert event", e))?;
    Ok(len + ROW_OVERHEAD)
}

/// Evict until the logical size is at most the low watermark, one round at a time: a round
/// takes the oldest events of one class, routine first, and is recorded by one gap event.
/// Keep-class rows (alerts, actions, gaps) go only in a round that finds no routine row left.
fn evict(
    tx: &Transaction<'_>,
    c: &mut Counters,
    max_bytes: u64,
    host_id: &str,
    ts: Timestamp,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<Vec<Event>, JournalError> {
    let sql = |op| move |e| JournalError::sqlite(path, op, e);
    let low = max_bytes / 100 * LOW_WATERMARK_PERCENT;
    // Room for the gap event itself, sized with the largest numbers it could hold, so that
    // after a round the total (gap included) is at or under the watermark.
    let gap_reserve = {
        let mut worst = gap_event(
            host_id,
            ts,
            Evicted { first_seq: u64::MAX, last_seq: u64::MAX, count: u64::MAX, bytes: 0, unacked: 0 },
        );
        worst.seq = u64::MAX;
        u64::try_from(serde_json::to_vec(&worst).map_or(1024, |v| v.len())).unwrap_or(u64::MAX) + ROW_OVERHEAD
    };
    let mut gaps = Vec::new();
    let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(sql("prepare insert"))?;
    while c.logical_bytes > low {
        let need = c.logical_bytes - low + gap_reserve;
        // Routine first; keep-class only when no routine row is left. Known from the counter,
        // so a journal of only alerts is not scanned end to end looking for routine rows.
        let class = if c.routine_count > 0 { Retention::Routine } else { Retention::Keep };
        let sealed = if class == Retention::Routine { c.sealed_routine } else { c.sealed_keep };
        let Some(round) = evict_oldest(tx, class, need, sealed).map_err(sql("evict"))? else {
            break; // nothing left at all
        };
        c.logical_bytes = c.logical_bytes.saturating_sub(round.bytes);
        c.event_count = c.event_count.saturating_sub(round.count);
        c.backlog = c.backlog.saturating_sub(round.unacked);
        if class == Retention::Routine {
            c.routine_count = c.routine_count.saturating_sub(round.count);
        }
        c.evicted_total += round.count;

        let mut gap = gap_event(host_id, ts, round);
        c.last_seq += 1;
        gap.seq = c.last_seq;
        let emptied = c.event_count == 0;
        let bytes = insert_event(&mut insert, buf, &gap, path)?;
        c.add(&gap, bytes);
        gaps.push(gap);
        if emptied {
            // Everything went; only this gap is left. Should it alone exceed the watermark (a
            // host_id of tens of KiB), another round would only replace it with another gap.
            break;
        }
    }
    Ok(gaps)
}

/// Delete the oldest rows of `class` until at least `need` accounted bytes are freed (or the
/// class is empty). `None` when there was no row of that class.
fn evict_oldest(
    tx: &Transaction<'_>,
    class: Retention,
    need: u64,
    sealed_seq: u64,
) -> rusqlite::Result<Option<Evicted>> {
    let code = retention_code(class);
    let mut round: Option<Evicted> = None;
    {
        // Walks the table from its oldest end and stops as soon as enough is freed: the cost is
        // what is evicted plus the (few) keep-class rows stepped over.
        let mut stmt =
            tx.prepare_cached("SELECT seq, bytes FROM events WHERE retention = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([code])?;
        while let Some(row) = rows.next()? {
            let seq = get_u64(row, 0)?;
            let bytes = get_u64(row, 1)? + ROW_OVERHEAD;
            let r = round.get_or_insert(Evicted {
                first_seq: seq,
                last_seq: seq,
                count: 0,
                bytes: 0,
                unacked: 0,
            });
            r.last_seq = seq;
            r.count += 1;
            r.bytes += bytes;
            if seq > sealed_seq {
                r.unacked += 1;
            }
            if r.bytes >= need {
                break;
            }
        }
    }
    if let Some(r) = &round {
        let deleted = tx
            .prepare_cached("DELETE FROM events WHERE retention = ?1 AND seq BETWEEN ?2 AND ?3")?
            .execute(params![code, int(r.first_seq)?, int(r.last_seq)?])?;
        debug_assert_eq!(u64::try_from(deleted).ok(), Some(r.count));
    }
    Ok(round)
}

/// The `journal.gap` event recording one eviction round.
fn gap_event(host_id: &str, ts: Timestamp, r: Evicted) -> Event {
    let mut ev = Event::new(EventKind::JournalGap, ts);
    ev.host.id = host_id.to_owned();
    ev.event.severity = severity::MEDIUM;
    ev.event.dataset = Some("picket.journal".to_owned());
    ev.message = Some(format!(
        "journal full: evicted {} events between seq {} and {}",
        r.count, r.first_seq, r.last_seq
    ));
    ev.gap = Some(Gap {
        first_seq: r.first_seq,
        last_seq: r.last_seq,
        count: r.count,
        reason: GAP_REASON_FULL.to_owned(),
    });
    ev
}

fn read_counters(tx: &Transaction<'_>) -> rusqlite::Result<Counters> {
    tx.prepare_cached(
        "SELECT last_seq, acked_seq, logical_bytes, event_count, routine_count, backlog, evicted_total,
                sealed_keep_seq, sealed_routine_seq
         FROM meta WHERE id = 1",
    )?
    .query_row([], |r| {
        Ok(Counters {
            last_seq: get_u64(r, 0)?,
            acked_seq: get_u64(r, 1)?,
            logical_bytes: get_u64(r, 2)?,
            event_count: get_u64(r, 3)?,
            routine_count: get_u64(r, 4)?,
            backlog: get_u64(r, 5)?,
            evicted_total: get_u64(r, 6)?,
            sealed_keep: get_u64(r, 7)?,
            sealed_routine: get_u64(r, 8)?,
        })
    })
}

fn write_counters(tx: &Transaction<'_>, c: &Counters) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE meta SET last_seq = ?1, logical_bytes = ?2, event_count = ?3, routine_count = ?4,
                         backlog = ?5, evicted_total = ?6
         WHERE id = 1",
    )?
    .execute(params![
        int(c.last_seq)?,
        int(c.logical_bytes)?,
        int(c.event_count)?,
        int(c.routine_count)?,
        int(c.backlog)?,
        int(c.evicted_total)?
    ])?;
    Ok(())
}

fn read_stats(conn: &Connection, by_kind: bool) -> rusqlite::Result<JournalStats> {
    // One read transaction: the numbers describe one snapshot even while the agent appends.
    let tx = conn.unchecked_transaction()?;
    let mut s = tx.query_row(
        "SELECT event_count, logical_bytes, max_bytes, last_seq, evicted_total, acked_seq, backlog
         FROM meta WHERE id = 1",
        [],
        |r| {
            Ok(JournalStats {
                events: get_u64(r, 0)?,
                logical_bytes: get_u64(r, 1)?,
                max_bytes: get_u64(r, 2)?,
                last_seq: get_u64(r, 3)?,
                evicted_total: get_u64(r, 4)?,
                acked_seq: get_u64(r, 5)?,
                backlog: get_u64(r, 6)?,
                ..JournalStats::default()
            })
        },
    )?;
    s.first_seq = tx.query_row("SELECT min(seq) FROM events", [], |r| {
        r.get::<_, Option<i64>>(0)?.map(|_| get_u64(r, 0)).transpose()
    })?;
    if by_kind {
        let mut stmt = tx.prepare("SELECT kind, count(*) FROM events GROUP BY kind")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            s.by_kind.insert(row.get(0)?, get_u64(row, 1)?);
        }
    }
    Ok(s)
}

fn retention_code(r: Retention) -> i64 {
    match r {
        Retention::Routine => 0,
        Retention::Keep => 1,
    }
}

/// Read a column we only ever write non-negative integers to. A negative one means the file
/// was edited or damaged: an error, not a wrapped value.
fn get_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Integer, Box::new(e))
    })
}

/// SQLite integers are i64. Our counters never come near 2^63, but a silent wrap would corrupt the
/// journal, so fail instead.
fn int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        let mut ev = Event::new(kind, Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
        ev.host.id = "dev1".into();
        ev
    }

    fn full_commits(j: &Journal) -> u64 {
        match &j.mode {
            Mode::Writer(w) => w.full_commits,
            Mode::ReadOnly { .. } => 0,
        }
    }

    #[test]
    fn a_journal_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Journal>(); // e.g. into tokio's spawn_blocking
    }

    #[test]
    fn batches_with_alerts_actions_or_gaps_commit_with_synchronous_full_and_routine_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.db"), JournalOptions::new("dev1")).unwrap();
        let base = full_commits(&j);
        let sync_mode = |j: &Journal| match &j.mode {
            Mode::Writer(w) => {
                w.conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0)).unwrap()
            }
            Mode::ReadOnly { .. } => unreachable!(),
        };
        j.append(&mut [event(EventKind::ProcessStart), event(EventKind::NetFlow)]).unwrap();
        assert_eq!(full_commits(&j), base);
        assert_eq!(sync_mode(&j), 1, "NORMAL");
        assert!(j.durable_seq() < j.last_seq());

        for kind in [EventKind::Alert, EventKind::Action, EventKind::JournalGap] {
            let before = full_commits(&j);
            j.append(&mut [event(EventKind::FileModify), event(kind)]).unwrap();
            assert_eq!(full_commits(&j), before + 1, "{kind}");
            assert_eq!(sync_mode(&j), 2, "FULL for {kind}");
            assert_eq!(j.durable_seq(), j.last_seq());
        }

        j.append(&mut [event(EventKind::AuthFailure)]).unwrap();
        assert_eq!(sync_mode(&j), 1, "back to NORMAL");
        assert_eq!(j.sync().unwrap(), j.last_seq());
        assert_eq!(j.durable_seq(), j.last_seq());
    }
}
