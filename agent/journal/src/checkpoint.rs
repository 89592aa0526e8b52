//! WAL checkpoints off the append path.
//!
//! A checkpoint copies committed pages from the WAL into the database file and fsyncs both.
//! Run on the commit that crosses `wal_autocheckpoint` (SQLite's default), it stalls that
//! append for the whole copy and two fsyncs: 25 ms here every 4 MiB, and measured 35 % of append
//! throughput. So a thread with its own connection runs `PASSIVE` checkpoints, which never wait
//! for the writer or for readers, each time the writer has appended another slice of the WAL
//! budget. The writer keeps `wal_autocheckpoint` as a backstop at the full budget: it still
//! bounds the WAL if this thread falls behind or is gone, and it is the checkpoint that lets
//! SQLite restart the WAL from its beginning (which needs every frame copied when a write
//! transaction starts, something an asynchronous copier never quite achieves alone). By then
//! only the frames since the last background run are left to copy.

use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

/// A background checkpointer for one journal file. Stops (and joins) when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    /// Capacity 1: wake-ups that arrive while a checkpoint runs coalesce into one more run.
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread. `None` if the connection or the thread cannot be had; the writer's
    /// own auto-checkpoint then does the work, slower but correct.
    pub(crate) fn spawn(path: &Path) -> Option<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).ok()?;
        // NORMAL: checkpoints fsync the WAL before copying and the database after, which is what
        // makes the copied pages safe to overwrite in the WAL. The cache is not used for copying.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -64; PRAGMA wal_autocheckpoint = 0;",
        )
        .ok()?;
        let (wake, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Errors (SQLITE_BUSY when the writer's backstop checkpoint holds the lock,
                    // I/O errors) are not fatal: the next wake-up or the backstop retries, and a
                    // persistent I/O problem surfaces in the writer's own commits.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer { wake: Some(wake), thread: Some(thread) })
    }

    /// Ask for a checkpoint; never blocks.
    pub(crate) fn wake(&self) {
        if let Some(w) = &self.wake {
            match w.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the loop; joining closes the thread's connection before the
        // journal is reported closed, so the last close can remove the WAL.
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
