//! Damaged files: a clear error that names the file, and the file left exactly as it was.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use picket_event::Event;
use picket_journal::{Journal, JournalError, JournalOptions};

/// Deterministic noise (xorshift), so a failure reproduces.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A closed, healthy journal of a few hundred KiB.
fn healthy_journal(dir: &Path) -> PathBuf {
    let path = dir.join("journal.db");
    let mut j = Journal::open(&path, JournalOptions::new(HOST)).unwrap();
    for round in 0..8u64 {
        let mut b: Vec<Event> = (round * 128..(round + 1) * 128).map(process_start).collect();
        j.append(&mut b).unwrap();
    }
    drop(j);
    assert!(!has_sidecars(&path), "a clean close removes the WAL");
    path
}

/// Both ways of opening fail with `Corrupt` naming the file, and leave it byte for byte, with no
/// `-wal`/`-shm` created next to it.
fn assert_refused_untouched(path: &Path) -> String {
    let before = bytes(path);
    let mut details = String::new();
    for result in [Journal::open(path, JournalOptions::new(HOST)), Journal::open_read_only(path)] {
        let err = result.unwrap_err();
        match &err {
            JournalError::Corrupt { path: p, detail } => {
                assert_eq!(p, path);
                details.push_str(detail);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(bytes(path), before, "modified: {err}");
        assert!(!has_sidecars(path), "sidecar files created: {err}");
    }
    details
}

#[test]
fn random_garbage_is_reported_corrupt_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    std::fs::write(&path, noise(64 * 1024, 0x9e37_79b9_7f4a_7c15)).unwrap();
    let detail = assert_refused_untouched(&path);
    assert!(detail.contains("not an SQLite database"), "{detail}");
}

#[test]
fn a_file_shorter_than_the_sqlite_header_is_reported_corrupt_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    std::fs::write(&path, b"SQLite format 3\0\x10\x00").unwrap();
    assert_refused_untouched(&path);
}

#[test]
fn a_journal_with_pages_overwritten_in_the_middle_is_reported_corrupt_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_journal(dir.path());
    let mut data = bytes(&path);
    let pages = data.len() / 4096;
    for (n, page) in [pages / 3, pages / 2, pages / 2 + 1].into_iter().enumerate() {
        let at = page * 4096;
        data[at..at + 4096].copy_from_slice(&noise(4096, 17 + u64::try_from(n).unwrap()));
    }
    std::fs::write(&path, &data).unwrap();
    let detail = assert_refused_untouched(&path);
    assert!(!detail.is_empty());
}

#[test]
fn a_journal_with_one_page_header_overwritten_is_reported_corrupt_and_left_byte_for_byte() {
    // Overwrite only the b-tree page header of one page (its first 12 bytes) with nonsense.
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_journal(dir.path());
    let mut data = bytes(&path);
    let at = (data.len() / 4096 / 2) * 4096;
    data[at..at + 12].copy_from_slice(&[0xEE; 12]);
    std::fs::write(&path, &data).unwrap();
    assert_refused_untouched(&path);
}

#[test]
fn a_truncated_journal_is_reported_corrupt_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_journal(dir.path());
    let data = bytes(&path);
    // At a page boundary (only the header's page count gives it away) and mid-page.
    for cut in [(data.len() / 4096 / 2) * 4096, data.len() / 2 + 100] {
        std::fs::write(&path, &data[..cut]).unwrap();
        let detail = assert_refused_untouched(&path);
        assert!(detail.contains("truncated"), "{detail}");
    }
}
