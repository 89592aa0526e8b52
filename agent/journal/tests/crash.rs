//! kill -9 never loses a committed transaction.
//!
//! The test re-runs its own binary as a child (selected by an environment variable) that
//! appends batches as fast as it can and prints the last seq of each committed append. The parent
//! SIGKILLs it mid-stream, then reopens the journal: every seq the child reported must be there.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use picket_event::Event;
use picket_journal::{Journal, JournalOptions};

const CHILD_ENV: &str = "PICKET_JOURNAL_CRASH_CHILD";

/// The child's body: runs only when re-executed by the parent.
#[test]
fn crash_child_appends_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    // A small cap, so the child is also evicting (and checkpointing) when it is killed.
    let mut j =
        Journal::open(&PathBuf::from(path), JournalOptions::new(HOST).with_max_bytes(512 * 1024)).unwrap();
    let mut i = 0u64;
    loop {
        let mut batch: Vec<Event> =
            (i..i + 16).map(|k| if k % 97 == 0 { alert(k) } else { process_start(k) }).collect();
        let a = j.append(&mut batch).unwrap();
        // Only printed after commit returned: a reported seq is a committed seq.
        println!("committed {} {}", a.first_seq, a.last_seq);
        i += 16;
    }
}

#[test]
fn kill_9_never_loses_a_committed_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_appends_until_killed", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut committed: Vec<(u64, u64)> = Vec::new();
        // Let it run a while (and a different while each round), then SIGKILL mid-stream.
        while committed.len() < 300 + round * 250 {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                let (a, b) = rest.split_once(' ').unwrap();
                committed.push((a.parse().unwrap(), b.parse().unwrap()));
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        // Whatever the child printed before it died was committed too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("committed ") {
                let (a, b) = rest.split_once(' ').unwrap();
                committed.push((a.parse().unwrap(), b.parse().unwrap()));
            }
        }
        child.wait().unwrap();

        let j = Journal::open(&path, JournalOptions::new(HOST).with_max_bytes(512 * 1024)).unwrap();
        let reported_last = committed.last().unwrap().1;
        assert!(
            j.last_seq() >= reported_last,
            "round {round}: last_seq {} < reported {reported_last}",
            j.last_seq()
        );
        // Every committed seq is either still stored or accounted for by a gap record.
        let stored = exported(&j, 0);
        let present: std::collections::BTreeSet<u64> = stored.iter().map(|e| e.seq).collect();
        let gaps: Vec<_> = stored.iter().filter_map(|e| e.gap.clone()).collect();
        let evicted_total = j.stats().unwrap().evicted_total;
        assert_eq!(
            gaps.iter().map(|g| g.count).sum::<u64>(),
            evicted_total,
            "no gap record was itself evicted"
        );
        for &(first, last) in &committed {
            for seq in first..=last {
                let explained = gaps.iter().any(|g| (g.first_seq..=g.last_seq).contains(&seq));
                assert!(present.contains(&seq) || explained, "round {round}: committed seq {seq} lost");
            }
        }
        // The newest committed batch is never an eviction victim: it must be there.
        assert!(present.contains(&reported_last));
    }
}
