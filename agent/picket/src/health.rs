//! The agent's own health: resource sampling from /proc, and the status file through which
//! `picket status` reads the latest health of a running agent.
//!
//! Why a file and not a socket: it needs no listener in the agent, works across user ids with
//! plain file permissions, and still tells something after the agent died (when and how it was
//! last seen). It is replaced atomically (write + rename), so a reader never sees half of it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use picket_event::{Health, Timestamp};
use serde::{Deserialize, Serialize};

/// Clock ticks per second in /proc/<pid>/stat. USER_HZ is 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// Samples this process's resident memory and CPU use.
#[derive(Debug)]
pub struct ProcSampler {
    last_ticks: u64,
    last_at: Instant,
}

impl ProcSampler {
    pub fn new() -> ProcSampler {
        ProcSampler { last_ticks: cpu_ticks().unwrap_or(0), last_at: Instant::now() }
    }

    /// (resident bytes, CPU percent of one core since the previous call).
    pub fn sample(&mut self) -> (u64, f64) {
        let rss = rss_bytes().unwrap_or(0);
        let ticks = cpu_ticks().unwrap_or(self.last_ticks);
        let now = Instant::now();
        let secs = now.duration_since(self.last_at).as_secs_f64();
        let used = ticks.saturating_sub(self.last_ticks);
        let cpu = if secs > 0.0 {
            (u32::try_from(used).unwrap_or(u32::MAX) as f64 / USER_HZ) / secs * 100.0
        } else {
            0.0
        };
        self.last_ticks = ticks;
        self.last_at = now;
        (rss, (cpu * 10.0).round() / 10.0)
    }
}

/// Give memory that the allocator holds free back to the kernel. glibc returns only the top of
/// its heap on its own; the free pages in the middle (left by bursts: a batch sealed for the
/// uplink, the policy state written to disk) stay resident until reused. `malloc_trim` releases
/// them (`MADV_DONTNEED`), so steady RSS follows what is in use. Called on the status tick:
/// well under a millisecond for the agent's heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only hands free pages back to the kernel; safe to call from any thread
    // at any time (it takes the arena lock). Its result (whether anything was released) is not
    // needed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// musl gives free memory back on its own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cpu_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// What `picket status` reads: `<data_dir>/status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    pub version: String,
    /// `running` while the agent runs; `stopped` after a clean shutdown.
    pub state: String,
    pub started_at: Timestamp,
    pub written_at: Timestamp,
    pub device_id: String,
    pub mode: String,
    /// How often the agent rewrites this file.
    pub status_interval_secs: u64,
    pub health: Health,
    /// The uplink's state, when it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<picket_uplink::sender::UplinkStatus>,
    /// The agent's memory budgets and what is in use against them, by name: `<what>.cap` (a
    /// count or bytes, per the name) and `<what>.used`. Older status files have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, u64>,
}

pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join("status.json")
}

impl StatusFile {
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = status_path(data_dir);
        let tmp = data_dir.join(".status.json.tmp");
        // One write: serde_json on a bare File makes a syscall per token.
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    pub fn read(data_dir: &Path) -> anyhow::Result<StatusFile> {
        let path = status_path(data_dir);
        let text = fs::read_to_string(&path).with_context(|| {
            format!("no status at {} (has picket run with this data dir?)", path.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a picket status file", path.display()))
    }
}

/// Whether a process with this pid exists (status file liveness check).
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_reads_this_process() {
        let mut s = ProcSampler::new();
        let (rss, cpu) = s.sample();
        assert!(rss > 100 * 1024, "rss {rss}");
        assert!(cpu >= 0.0);
    }
}
