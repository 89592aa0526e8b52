//! The process table: what picket knows about each live process, so an event can name its
//! parent (and an exit its program) after /proc has forgotten them. Plain state, no I/O.
//!
//! Bounded two ways, [`MAX_ENTRIES`] and [`MAX_BYTES`]; past either the least recently used
//! entries go (counted in [`ProcCache::evicted`]). An entry is made at fork (sharing the
//! parent's program, which the child runs until it execs), replaced at exec, removed at exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::procfs::Ids;

/// At most this many processes are remembered. A busy server runs a few hundred.
pub const MAX_ENTRIES: usize = 4096;
/// At most this many bytes of program names, paths and command lines are kept (about 2 MiB).
pub const MAX_BYTES: usize = 2 << 20;
/// A command line is kept up to this many bytes for `process.parent.command_line` (the child's
/// own `process.command_line` is not affected).
pub const MAX_CACHED_COMMAND_LINE: usize = 4096;

/// The program a process runs, as its children's events show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub executable: Option<String>,
    pub command_line: Option<String>,
    /// The file running (`/proc/PID/exe`, symlinks resolved), when it was read: a uid change
    /// while /proc shows another file belongs to an exec not yet handled.
    pub resolved: Option<String>,
}

impl Image {
    fn bytes(&self) -> usize {
        self.name.len()
            + self.executable.as_ref().map_or(0, String::len)
            + self.command_line.as_ref().map_or(0, String::len)
            + self.resolved.as_ref().map_or(0, String::len)
    }
}

/// One process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub ppid: Option<u32>,
    pub image: Option<Arc<Image>>,
    /// CLOCK_MONOTONIC nanoseconds of its fork (or of its exec, when the fork was not seen).
    pub start_ns: Option<u64>,
    /// Field 22 of /proc/PID/stat.
    pub start_ticks: Option<u64>,
    /// Real and effective user and group ids: from /proc at exec (or the scan), inherited at
    /// fork, changed by uid/gid change messages.
    pub ids: Option<Ids>,
    pub(crate) stamp: u64,
}

/// Fixed cost counted per entry on top of its strings: map slots, the order index, the Arc.
const ENTRY_OVERHEAD: usize = 96;

impl Entry {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD + self.image.as_ref().map_or(0, |i| i.bytes())
    }
}

/// pid → [`Entry`], least recently used evicted first.
#[derive(Debug)]
pub struct ProcCache {
    map: HashMap<u32, Entry>,
    /// use stamp → pid; the smallest stamp is the least recently used.
    order: BTreeMap<u64, u32>,
    clock: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    evicted: u64,
}

impl Default for ProcCache {
    fn default() -> Self {
        ProcCache::with_limits(MAX_ENTRIES, MAX_BYTES)
    }
}

impl ProcCache {
    pub fn with_limits(max_entries: usize, max_bytes: usize) -> ProcCache {
        ProcCache {
            map: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes accounted (shared images are counted once per entry: an upper bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries pushed out by the bounds since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Look `pid` up, marking it used.
    pub fn get(&mut self, pid: u32) -> Option<&Entry> {
        self.clock += 1;
        let e = self.map.get_mut(&pid)?;
        self.order.remove(&e.stamp);
        e.stamp = self.clock;
        self.order.insert(self.clock, pid);
        Some(e)
    }

    /// Look without marking it used.
    pub fn peek(&self, pid: u32) -> Option<&Entry> {
        self.map.get(&pid)
    }

    /// Put (or replace) `pid`, then evict down to the bounds.
    pub fn insert(&mut self, pid: u32, mut entry: Entry) {
        self.remove(pid);
        self.clock += 1;
        entry.stamp = self.clock;
        self.bytes += entry.bytes();
        self.order.insert(self.clock, pid);
        self.map.insert(pid, entry);
        while self.map.len() > self.max_entries || (self.bytes > self.max_bytes && self.map.len() > 1) {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some(e) = self.map.remove(&old) {
                self.bytes -= e.bytes();
                self.evicted += 1;
            }
        }
    }

    pub fn remove(&mut self, pid: u32) -> Option<Entry> {
        let e = self.map.remove(&pid)?;
        self.order.remove(&e.stamp);
        self.bytes -= e.bytes();
        Some(e)
    }

    /// A fork: the child runs its parent's program until it execs.
    pub fn fork(&mut self, parent: u32, child: u32, ts_ns: u64) {
        let (image, ids) = self.get(parent).map_or((None, None), |p| (p.image.clone(), p.ids));
        self.insert(
            child,
            Entry { ppid: Some(parent), image, start_ns: Some(ts_ns), start_ticks: None, ids, stamp: 0 },
        );
    }

    /// An exec: a new program in `pid`; what the fork recorded (parent, start, ids) is kept
    /// unless newer facts are given ([`ProcCache::set_ids`] for the ids).
    pub fn exec(
        &mut self,
        pid: u32,
        ppid: Option<u32>,
        image: Option<Image>,
        start_ticks: Option<u64>,
        ts_ns: u64,
    ) {
        let old = self.remove(pid);
        let old = old.as_ref();
        self.insert(
            pid,
            Entry {
                ppid: ppid.or(old.and_then(|o| o.ppid)),
                image: image.map(Arc::new),
                start_ns: old.and_then(|o| o.start_ns).or(Some(ts_ns)),
                start_ticks: start_ticks.or(old.and_then(|o| o.start_ticks)),
                ids: old.and_then(|o| o.ids),
                stamp: 0,
            },
        );
    }

    /// `pid`'s ids are now `ids` (an entry is made when `pid` is not in the table, so its later
    /// events know them).
    pub fn set_ids(&mut self, pid: u32, ids: Ids) {
        match self.map.get_mut(&pid) {
            Some(e) => e.ids = Some(ids),
            None => self.insert(pid, Entry { ids: Some(ids), ..Entry::default() }),
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            executable: Some(format!("/bin/{name}")),
            command_line: Some(name.into()),
            resolved: None,
        }
    }

    #[test]
    fn fork_shares_the_parents_program_and_exec_replaces_it() {
        let mut c = ProcCache::default();
        c.exec(10, Some(1), Some(image("sh")), Some(5), 100);
        c.fork(10, 11, 200);
        assert_eq!(c.peek(11).unwrap().image.as_ref().unwrap().name, "sh");
        assert_eq!(c.peek(11).unwrap().ppid, Some(10));
        c.exec(11, None, Some(image("true")), Some(7), 300);
        let e = c.peek(11).unwrap();
        assert_eq!(e.image.as_ref().unwrap().name, "true");
        assert_eq!(e.ppid, Some(10), "the fork's parent is kept");
        assert_eq!(e.start_ns, Some(200), "the process started at its fork");
        assert_eq!(e.start_ticks, Some(7));
        assert!(c.remove(11).is_some());
        assert!(c.peek(11).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn ids_are_inherited_at_fork_kept_at_exec_and_changed_in_place() {
        let mut c = ProcCache::default();
        let root = Ids { uid: 0, euid: 0, gid: 0, egid: 0 };
        c.exec(10, Some(1), Some(image("sh")), None, 0);
        c.set_ids(10, root);
        c.fork(10, 11, 1);
        assert_eq!(c.peek(11).unwrap().ids, Some(root));
        c.set_ids(11, Ids { uid: 65534, euid: 65534, ..root });
        assert_eq!(c.peek(10).unwrap().ids, Some(root), "the parent keeps its own");
        c.exec(11, None, Some(image("id")), None, 2);
        assert_eq!(c.peek(11).unwrap().ids.unwrap().euid, 65534);
        c.set_ids(12, root);
        assert_eq!(c.peek(12).unwrap().ids, Some(root), "an unknown pid gets an entry");
    }

    #[test]
    fn least_recently_used_goes_first_at_the_entry_bound() {
        let mut c = ProcCache::with_limits(3, usize::MAX);
        for pid in 1..=3 {
            c.exec(pid, None, Some(image("x")), None, 0);
        }
        assert!(c.get(1).is_some());
        c.exec(4, None, None, None, 0);
        assert!(c.peek(2).is_none(), "2 was the least recently used");
        assert!(c.peek(1).is_some() && c.peek(3).is_some() && c.peek(4).is_some());
        assert_eq!(c.evicted(), 1);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn byte_bound_holds_and_accounting_returns_to_zero() {
        let mut c = ProcCache::with_limits(usize::MAX, 10_000);
        let big = Image {
            name: "x".into(),
            executable: None,
            command_line: Some("a".repeat(1000)),
            resolved: None,
        };
        for pid in 0..100 {
            c.exec(pid, None, Some(big.clone()), None, 0);
            assert!(c.bytes() <= 10_000);
        }
        assert!(c.len() < 100 && c.len() >= 5, "{}", c.len());
        for pid in 0..100 {
            c.remove(pid);
        }
        assert_eq!((c.len(), c.bytes()), (0, 0));
        assert!(c.order.is_empty());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
