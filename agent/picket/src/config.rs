//! The agent's configuration: a TOML file read in two phases.
//!
//! **Phase 1, reading.** `ConfigFile` and its tables are plain serde structs with
//! `deny_unknown_fields`, close to the file: strings, booleans, wide integers. Every key is
//! optional: the user's document is laid over the embedded default ([`DEFAULT_CONFIG`]) before it is
//! deserialized, so a key left out takes the value written in `default.toml`, the one place a default
//! lives. (That is why these structs carry no `Default` impls or `#[serde(default)]`: a second copy of
//! the defaults could drift from the file that `picket config default` prints.)
//!
//! **Phase 2, validating.** `ConfigFile` becomes [`Settings`], the typed runtime value the agent
//! runs with: paths are `PathBuf`s, the mode an enum, CIDRs and the broker URL parsed, intervals
//! `Duration`s. Nothing downstream re-checks a value.
//!
//! **Every error at once.** `picket config check` must name all mistakes in a file, each with file,
//! line and key path, but serde stops at the first. So the user's text is parsed into a spanned
//! document (`toml::de::DeTable`; a syntax error is reported alone, as nothing after it can be
//! trusted), then deserialization is retried in a bounded loop: each serde error's span is mapped
//! back to the key it belongs to, that key is recorded and removed (so it falls back to its default),
//! and the next attempt finds the next mistake. The value that finally deserializes is validated as a
//! whole, and those errors are added too, each located by key path in the original text.
//!
//! ```toml
//! [agent]
//! mode = "enforce"      # every other key keeps its default
//! ```

// Parts of `Settings` are read by stages not in this build yet (the process and network sources);
// the struct is the config contract, so it is complete now rather than grown field by field.
#![allow(dead_code, reason = "the full config contract, read by stages still being built")]

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

/// The embedded default configuration, every key with a comment: printed by
/// `picket config default`, used by `picket run` without `--config`, and the source of every value
/// a config file leaves out. Works unprivileged, with data in `./picket-data`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// How errors in [`DEFAULT_CONFIG`] (and values taken from it) name their file.
pub const DEFAULT_ORIGIN: &str = "<embedded default>";

/// The journal's file name inside `agent.data_dir`; not configurable, so tools that take only
/// `--data-dir` find it.
pub const JOURNAL_FILE: &str = "journal.db";

/// The smallest `journal.max_bytes`: below this, a burst evicts events before they can be synced.
pub const MIN_JOURNAL_BYTES: u64 = 1 << 20;

/// Config files larger than this are refused unread: a real one is a few KiB, and reading
/// `/dev/zero` by mistake should fail, not fill memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Allowed range of `agent.health_interval_secs` and `agent.status_interval_secs`.
const INTERVAL_SECS: std::ops::RangeInclusive<i128> = 1..=3600;

/// Longest `agent.device_id`; it becomes a topic level and a journal field.
const MAX_DEVICE_ID: usize = 128;

/// Longest `uplink.topic_prefix`, well below MQTT's 65,535-byte topic limit.
const MAX_TOPIC_PREFIX: usize = 1024;

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_INTERFACE: usize = 15;

/// Largest `containment.budget_per_minute.*`.
const MAX_BUDGET: u64 = 100_000;

/// Longest user value echoed back in an error message.
const MAX_ECHO: usize = 60;

// ---------------------------------------------------------------------------------------------
// Phase 1: the file as serde reads it.

/// The whole file. Integers are `i128` so any TOML integer reads, and range errors come from
/// validation with a message that says the range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    agent: AgentConfig,
    policies: PoliciesConfig,
    sources: SourcesConfig,
    containment: ContainmentConfig,
    uplink: UplinkConfig,
    journal: JournalConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfig {
    data_dir: String,
    mode: String,
    device_id: String,
    health_interval_secs: i128,
    status_interval_secs: i128,
    queue_events: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesConfig {
    paths: Vec<String>,
    sigma_min_level: String,
    max_groups_per_rule: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesConfig {
    process: ProcessSourceConfig,
    file: FileSourceConfig,
    auth: AuthSourceConfig,
    network: NetworkSourceConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSourceConfig {
    enabled: bool,
    poll_interval_secs: i128,
    ebpf: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSourceConfig {
    enabled: bool,
    paths: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    hash_max_bytes: i128,
    scan_interval_secs: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSourceConfig {
    enabled: bool,
    files: Vec<String>,
    journald: String,
    journal_dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSourceConfig {
    enabled: bool,
    interface: String,
    filter: String,
    snaplen: i128,
    buffer_bytes: i128,
    max_flows: i128,
    attribute_processes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainmentConfig {
    protected_cidrs: Vec<String>,
    protected_process_names: Vec<String>,
    protected_paths: Vec<String>,
    allow_root: bool,
    quarantine_dir: String,
    kill_grace_secs: i128,
    management: Vec<ManagementConfig>,
    isolation_keep_dhcp: bool,
    budget_per_minute: BudgetConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManagementConfig {
    from: String,
    tcp_port: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetConfig {
    block_ip: i128,
    kill: i128,
    deny_exec: i128,
    quarantine: i128,
    isolate_host: i128,
    lock_account: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UplinkConfig {
    enabled: bool,
    broker: String,
    ca_file: String,
    cert_file: String,
    key_file: String,
    topic_prefix: String,
    ack: String,
    collector_key_file: String,
    batch_max_events: i128,
    batch_max_bytes: i128,
    max_bytes_per_sec: i128,
    backoff_max_secs: i128,
    ack_timeout_secs: i128,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalConfig {
    max_bytes: i128,
}

// ---------------------------------------------------------------------------------------------
// Phase 2: the validated runtime value.

/// The validated configuration the agent runs with. Fields are named after the TOML tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub agent: AgentSettings,
    pub policies: PoliciesSettings,
    pub sources: SourcesSettings,
    pub containment: ContainmentSettings,
    pub uplink: UplinkSettings,
    pub journal: JournalSettings,
}

impl Settings {
    /// The journal file: `agent.data_dir`/[`JOURNAL_FILE`].
    pub fn journal_path(&self) -> PathBuf {
        self.agent.data_dir.join(JOURNAL_FILE)
    }
}

impl Default for Settings {
    fn default() -> Self {
        default_settings()
    }
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// Journal, keys and state; never empty.
    pub data_dir: PathBuf,
    pub mode: Mode,
    /// Empty: derive from /etc/machine-id. Otherwise 1-128 of `A-Z a-z 0-9 . _ - :`.
    pub device_id: String,
    /// Period of `agent.health` events.
    pub health_interval: Duration,
    /// Period of the live view's status line and the status file.
    pub status_interval: Duration,
    /// Capacity of the queue from the sources into the pipeline, in events (load shedding starts
    /// at half of it).
    pub queue_events: usize,
}

/// Whether decided actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Decide and record, change nothing on the host.
    Monitor,
    /// Decide, record and act.
    Enforce,
}

impl Mode {
    /// The name used in the config file and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[policies]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoliciesSettings {
    /// Policy files or directories.
    pub paths: Vec<PathBuf>,
    /// Sigma rules at or above this level raise alerts; lower ones are only counted.
    pub sigma_min_level: SigmaLevel,
    /// Groups (distinct `by` keys) one windowed or sequence rule tracks at once.
    pub max_groups_per_rule: usize,
}

/// Sigma's rule levels, in order (`policies.sigma_min_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SigmaLevel {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl SigmaLevel {
    pub const NAMES: [&str; 5] = ["informational", "low", "medium", "high", "critical"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn parse(s: &str) -> Option<SigmaLevel> {
        use SigmaLevel as L;
        [L::Informational, L::Low, L::Medium, L::High, L::Critical].into_iter().find(|l| l.as_str() == s)
    }
}

/// `[sources.*]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesSettings {
    pub process: ProcessSourceSettings,
    pub file: FileSourceSettings,
    pub auth: AuthSourceSettings,
    pub network: NetworkSourceSettings,
}

/// `[sources.process]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSourceSettings {
    pub enabled: bool,
    /// Without the process connector, /proc is polled this often; `None`: no fallback.
    pub poll_interval: Option<Duration>,
    /// Try the eBPF exec tracer (`ebpf = "auto"`); false for `"off"`.
    pub ebpf: bool,
}

/// `[sources.file]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceSettings {
    pub enabled: bool,
    /// Watched trees.
    pub paths: Vec<PathBuf>,
    /// Globs over whole paths: only matching paths are reported (empty: all).
    pub include: Vec<String>,
    /// Globs over whole paths never reported; matching directories are not scanned.
    pub exclude: Vec<String>,
    /// Regular files up to this size are hashed (SHA-256); 0: none.
    pub hash_max_bytes: u64,
    /// Period of the scans of trees inotify cannot watch (watch limit reached).
    pub scan_interval: Duration,
}

/// `[sources.auth]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSourceSettings {
    pub enabled: bool,
    /// Auth logs to follow.
    pub files: Vec<PathBuf>,
    /// When the systemd journal is read instead of the files.
    pub journald: picket_capture::auth::Journald,
    /// `journalctl -D`; `None`: the system journal.
    pub journal_dir: Option<PathBuf>,
}

/// `[sources.network]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSourceSettings {
    pub enabled: bool,
    /// An interface name, or `any`.
    pub interface: String,
    /// BPF filter (tcpdump syntax); empty: everything. Checked by libpcap when the source opens.
    pub filter: String,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// The kernel capture buffer, bytes.
    pub buffer_bytes: u32,
    /// Flows tracked at once; past it the least recently seen are ended early (counted).
    pub max_flows: u32,
    /// Put the local process (socket inode → pid through /proc) on flows with a local end.
    pub attribute_processes: bool,
}

/// `[containment]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainmentSettings {
    /// Never blocked, never isolated from.
    pub protected_cidrs: Vec<Cidr>,
    /// Processes never killed, by `comm` or executable file name.
    pub protected_process_names: Vec<String>,
    /// Absolute paths (files or trees) never quarantined or denied exec.
    pub protected_paths: Vec<PathBuf>,
    /// Allow killing root's processes and locking root.
    pub allow_root: bool,
    /// Where quarantined files go; `None`: `<data_dir>/quarantine`.
    pub quarantine_dir: Option<PathBuf>,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// Kept reachable while isolated.
    pub management: Vec<Management>,
    /// Keep DHCP while isolated.
    pub isolation_keep_dhcp: bool,
    /// Most actions of each type per minute.
    pub budget_per_minute: BudgetSettings,
}

impl ContainmentSettings {
    /// `quarantine_dir`, or its default inside `data_dir`.
    pub fn quarantine_dir(&self, data_dir: &Path) -> PathBuf {
        self.quarantine_dir.clone().unwrap_or_else(|| data_dir.join("quarantine"))
    }
}

/// `containment.management`: inbound TCP to `tcp_port` from network `from`, kept while isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Management {
    pub from: Cidr,
    pub tcp_port: u16,
}

/// `[containment.budget_per_minute]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    pub block_ip: u32,
    pub kill: u32,
    pub deny_exec: u32,
    pub quarantine: u32,
    pub isolate_host: u32,
    pub lock_account: u32,
}

/// `[uplink]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSettings {
    pub enabled: bool,
    pub broker: Broker,
    /// `None` when the key is empty. Always `Some` when enabled with a TLS broker.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Non-empty topic levels, no wildcards, no leading or trailing `/`.
    pub topic_prefix: String,
    /// When a batch counts as delivered.
    pub ack: UplinkAck,
    /// At most this many events per batch (1-65536).
    pub batch_max_events: usize,
    /// At most about this many bytes of events per batch (4 KiB - 16 MiB).
    pub batch_max_bytes: usize,
    /// Publishing budget in bytes per second; 0 = no limit.
    pub max_bytes_per_sec: u64,
    /// Longest wait between reconnect attempts.
    pub backoff_max: Duration,
    /// With `ack = "collector"`: re-publish a batch not acknowledged within this time.
    pub ack_timeout: Duration,
}

/// `uplink.ack`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkAck {
    /// The broker's PUBACK.
    Broker,
    /// The collector's signed acknowledgement, checked with the public key in this file.
    Collector(PathBuf),
}

/// `[journal]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// Size cap, at least [`MIN_JOURNAL_BYTES`].
    pub max_bytes: u64,
}

/// An IP network: `addr` with its host bits zero, and a prefix length (0-32 for IPv4, 0-128 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
    /// treated as the IPv4 address it carries, so a protected IPv4 network stays protected when a
    /// dual-stack socket reports its peers that way.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address meaning that one host. Host bits must be zero, so a typo
    /// like `192.168.1.0/16` is caught rather than silently widened.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr =
            addr_text.parse().map_err(|_| format!("{} is not an IP address", quote(addr_text)))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("prefix length {} must be 0-{max} for {family}", quote(p))),
            },
        };
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!("host bits are set; did you mean \"{network}/{prefix}\"?"));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// `addr` with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An MQTT broker address: `mqtts://host[:port]` (TLS, default port 8883) or `mqtt://host[:port]`
/// (plain TCP, default 1883). An IPv6 host is written in brackets in the URL and stored without.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Broker {
    const HINT: &str = "expected mqtts://host[:port] or mqtt://host[:port]";
}

impl FromStr for Broker {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("{} is not a broker URL: {}", quote(s), Broker::HINT));
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtts" => true,
            "mqtt" => false,
            _ => {
                return Err(format!(
                    "unsupported scheme {}: use mqtts:// (TLS) or mqtt:// (plain TCP)",
                    quote(scheme)
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err("the broker URL must not carry credentials (user@): picket authenticates \
                        with its client certificate"
                .into());
        }
        if rest.contains(['/', '?', '#']) {
            return Err(format!("the broker URL must not have a path, query or fragment: {}", Broker::HINT));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err("unclosed '[' around an IPv6 address".into());
            };
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{} in brackets is not an IPv6 address", quote(host)));
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(format!("unexpected {} after the address", quote(after))),
                },
            };
            (host, port)
        } else {
            match rest.split_once(':') {
                Some((_, p)) if p.contains(':') => {
                    return Err("an IPv6 address must be in brackets, e.g. mqtts://[2001:db8::1]:8883".into());
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("the broker URL has no host: {}", Broker::HINT));
        }
        let is_ip = host.parse::<IpAddr>().is_ok();
        if !is_ip
            && (host.len() > 253
                || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        {
            return Err(format!("{} is not a valid host name", quote(host)));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("port {} must be a number 1-65535", quote(p))),
            },
        };
        Ok(Broker { tls, host: host.to_string(), port })
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or the origin given to [`load_str`].
    pub file: String,
    /// 1-based line, when the mistake has one.
    pub line: Option<usize>,
    /// Dotted key path (`agent.mode`), empty for file-level errors (unreadable, syntax).
    pub key: String,
    /// What is wrong and, where it helps, what is allowed. One line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE: key.path: message`, leaving out the parts that are absent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every mistake found in one config file, in line order. Displays one line per error, nothing
/// else (no trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(file: &str, line: Option<usize>, message: String) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            key: String::new(),
            message: one_line(&message),
        }])
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads and validates a config file. Refuses a world-writable file (anyone could change what the
/// agent does) and one larger than 1 MiB.
pub fn load_file(path: &Path) -> Result<Settings, ConfigErrors> {
    let origin = path.display().to_string();
    let fail = |message: String| ConfigErrors::one(&origin, None, message);
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    // Checked on the open file, not the path, so the file read is the file checked.
    let meta = file.metadata().map_err(|e| fail(format!("cannot stat: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(fail(format!(
            "refusing a world-writable config file (mode {:o}): anyone could change what the agent \
             does; fix with `chmod o-w {origin}`",
            mode & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read: {e}")))?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_FILE_BYTES) {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes; is this a config file?")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = line_of(e.as_bytes(), at);
        ConfigErrors::one(&origin, Some(line), "not valid UTF-8 (TOML files are UTF-8)".into())
    })?;
    load_str(&text, &origin)
}

/// Parses and validates config text; `origin` names it in errors (a path, or [`DEFAULT_ORIGIN`]).
pub fn load_str(text: &str, origin: &str) -> Result<Settings, ConfigErrors> {
    let (user, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax_errors(text, origin, &syntax));
    }
    let user = user.into_inner();
    let defaults = match DeTable::parse(DEFAULT_CONFIG) {
        Ok(d) => d.into_inner(),
        Err(e) => {
            let line = e.span().map(|s| line_of(DEFAULT_CONFIG.as_bytes(), s.start));
            return Err(ConfigErrors::one(DEFAULT_ORIGIN, line, e.message().to_string()));
        }
    };
    let mut check = Check { origin, text, user: &user, defaults: &defaults, errors: Vec::new() };
    let settings = check.deserialize().and_then(|raw| check.validate(raw));
    let mut errors = check.errors;
    if settings.is_none() && errors.is_empty() {
        // Every path that yields no settings records why; this keeps a slip from printing nothing.
        errors.push(ConfigError {
            file: origin.to_string(),
            line: None,
            key: String::new(),
            message: "invalid config (no details; this is a bug in picket)".into(),
        });
    }
    match settings {
        Some(s) if errors.is_empty() => Ok(s),
        _ => {
            // Stable: errors on one line keep the order they were found in.
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            errors.dedup();
            Err(ConfigErrors(errors))
        }
    }
}

/// The embedded default, validated.
pub fn default_settings() -> Settings {
    load_str(DEFAULT_CONFIG, DEFAULT_ORIGIN).expect("the embedded default config is valid (tested)")
}

fn syntax_errors(text: &str, origin: &str, errors: &[toml::de::Error]) -> ConfigErrors {
    let mut out: Vec<(usize, ConfigError)> = errors
        .iter()
        .map(|e| {
            let span = e.span().unwrap_or(0..0);
            // Quote what the parser tripped over when it is short: `duplicate key` alone does not
            // say which.
            let snippet =
                text.get(span.clone()).filter(|s| !s.is_empty() && s.len() <= MAX_ECHO && !s.contains('\n'));
            let message = match snippet {
                Some(s) => format!("TOML syntax: {} (at {})", e.message(), quote(s)),
                None => format!("TOML syntax: {}", e.message()),
            };
            let line = e.span().map(|s| line_of(text.as_bytes(), s.start));
            (
                span.start,
                ConfigError {
                    file: origin.to_string(),
                    line,
                    key: String::new(),
                    message: one_line(&message),
                },
            )
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    // One error per line: the parser's recovery can trip again on the rest of a broken line, and
    // that second message only distracts from the first.
    let mut errors: Vec<ConfigError> = out.into_iter().map(|(_, e)| e).collect();
    errors.dedup_by(|later, earlier| later.line == earlier.line);
    ConfigErrors(errors)
}

/// One run of checking: the user's document (as parsed, never modified), the default document,
/// and the errors found so far.
struct Check<'a, 'i> {
    origin: &'a str,
    text: &'a str,
    user: &'a DeTable<'i>,
    defaults: &'a DeTable<'static>,
    errors: Vec<ConfigError>,
}

/// Where a serde error points: the key path of a table entry, and the array element when inside one.
#[derive(Debug)]
struct Location {
    path: Vec<String>,
    element: Option<usize>,
    line: usize,
}

impl Check<'_, '_> {
    /// Phase 1: deserialize the user's document over the defaults; on each error, record it at its
    /// key, drop that key (it falls back to its default) and try again. Each round removes one
    /// entry, so there are at most as many rounds as entries.
    fn deserialize(&mut self) -> Option<ConfigFile> {
        let mut pruned = self.user.clone();
        let rounds = count_entries(&pruned) + 1;
        for _ in 0..rounds {
            let mut merged = self.defaults.clone();
            overlay(&mut merged, pruned.clone());
            let de = Deserializer::from(Spanned::new(0..0, merged));
            let err = match ConfigFile::deserialize(de) {
                Ok(raw) => return Some(raw),
                Err(e) => e,
            };
            let location = err.span().and_then(|s| locate(&pruned, self.text.as_bytes(), s.start));
            let Some(location) = location else {
                // Not in the user's text (cannot happen with a valid default): report and stop.
                let line = err.span().map(|s| line_of(self.text.as_bytes(), s.start));
                self.errors.push(ConfigError {
                    file: self.origin.to_string(),
                    line,
                    key: String::new(),
                    message: one_line(err.message()),
                });
                return None;
            };
            let remove = self.describe(&location, &err);
            if !remove_path(&mut pruned, &remove) {
                return None;
            }
        }
        None
    }

    /// Records the error for a serde failure at `loc`; returns the key path to drop.
    fn describe(&mut self, loc: &Location, err: &toml::de::Error) -> Vec<String> {
        // The longest prefix of the path that the default document knows.
        let mut known = 0;
        let mut default = None;
        let mut table = Some(self.defaults);
        for segment in &loc.path {
            let Some(value) = table.and_then(|t| t.get(segment.as_str())) else { break };
            known += 1;
            default = Some(value.get_ref());
            table = value.get_ref().as_table();
        }
        let user_value = lookup(self.user, &loc.path[..known.max(1).min(loc.path.len())]);
        // `table` is the default's table at that prefix, `None` when the prefix ends at a scalar.
        let (path, message) = if known < loc.path.len() && table.is_some() {
            // An unknown key inside a known table.
            let path = loc.path[..=known].to_vec();
            let parent = table.unwrap_or(self.defaults);
            (path.clone(), unknown_key_message(&path, parent, self.defaults))
        } else {
            // A known key (or a table where the default has a scalar) with a value of the wrong
            // type: say what the default is.
            let path = loc.path[..known.max(1)].to_vec();
            let message = match (default, user_value, loc.element) {
                (Some(d), Some(u), _) if !d.same_type(u) => {
                    format!("expected {}, found {}", a_type(d), a_type(u))
                }
                (Some(DeValue::Array(d)), Some(DeValue::Array(u)), Some(i)) => {
                    match (d.first().map(Spanned::get_ref), u.get(i).map(Spanned::get_ref)) {
                        (Some(d), Some(u)) if !d.same_type(u) => {
                            format!("element {}: expected {}, found {}", i + 1, a_type(d), a_type(u))
                        }
                        _ => format!("element {}: {}", i + 1, err.message()),
                    }
                }
                (_, _, Some(i)) => format!("element {}: {}", i + 1, err.message()),
                _ => err.message().to_string(),
            };
            (path, message)
        };
        self.errors.push(ConfigError {
            file: self.origin.to_string(),
            line: Some(loc.line),
            key: key_path(&path),
            message: one_line(&message),
        });
        path
    }

    /// Records an error at `path`, on the line of that key (or of element `element` of its array)
    /// in the user's text; a key the file leaves out is reported on its nearest table's line.
    fn error(&mut self, path: &str, element: Option<usize>, message: String) {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        let line = self.line_of_path(&segments, element);
        self.errors.push(ConfigError {
            file: self.origin.to_string(),
            line,
            key: path.to_string(),
            message: one_line(&message),
        });
    }

    fn line_of_path(&self, path: &[String], element: Option<usize>) -> Option<usize> {
        let text = self.text.as_bytes();
        let mut table = self.user;
        let mut line = None;
        for segment in path {
            let Some((key, value)) = table.get_key_value(segment.as_str()) else { return line };
            line = Some(line_of(text, key.span().start));
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                DeValue::Array(a) => {
                    if let Some(el) = element.and_then(|i| a.get(i)) {
                        return Some(line_of(text, el.span().start));
                    }
                    return line;
                }
                _ => return line,
            }
        }
        line
    }

    /// Phase 2: every semantic check on the deserialized file; errors are recorded, the value is
    /// returned only if there were none.
    fn validate(&mut self, raw: ConfigFile) -> Option<Settings> {
        let ConfigFile { agent, policies, sources, containment, uplink, journal } = raw;

        let data_dir = self.path("agent.data_dir", None, &agent.data_dir);
        let mode = match agent.mode.as_str() {
            "monitor" => Some(Mode::Monitor),
            "enforce" => Some(Mode::Enforce),
            other => {
                self.error(
                    "agent.mode",
                    None,
                    format!("invalid value {}; allowed values: \"monitor\", \"enforce\"", quote(other)),
                );
                None
            }
        };
        let id_ok = agent.device_id.len() <= MAX_DEVICE_ID
            && agent
                .device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !id_ok {
            self.error(
                "agent.device_id",
                None,
                format!(
                    "invalid device id {}: use 1-{MAX_DEVICE_ID} of A-Z a-z 0-9 . _ - : (or \"\" to derive \
                     it from /etc/machine-id)",
                    quote(&agent.device_id)
                ),
            );
        }
        let health_interval = self.interval("agent.health_interval_secs", agent.health_interval_secs);
        let status_interval = self.interval("agent.status_interval_secs", agent.status_interval_secs);
        let queue_events = self.int_in("agent.queue_events", agent.queue_events, 64, 65536);

        let policy_paths = self.paths("policies.paths", &policies.paths);
        let max_groups_per_rule =
            self.int_in("policies.max_groups_per_rule", policies.max_groups_per_rule, 16, 1 << 20);
        let sigma_min_level = SigmaLevel::parse(&policies.sigma_min_level).or_else(|| {
            let allowed: Vec<String> = SigmaLevel::NAMES.iter().map(|n| format!("\"{n}\"")).collect();
            self.error(
                "policies.sigma_min_level",
                None,
                format!(
                    "invalid value {}; allowed values: {}",
                    quote(&policies.sigma_min_level),
                    allowed.join(", ")
                ),
            );
            None
        });
        let file_paths = self.paths("sources.file.paths", &sources.file.paths);
        let file_include = self.globs("sources.file.include", &sources.file.include);
        let file_exclude = self.globs("sources.file.exclude", &sources.file.exclude);
        let hash_max_bytes =
            self.int_in("sources.file.hash_max_bytes", sources.file.hash_max_bytes, 0, 1 << 32);
        let scan_interval_secs =
            self.int_in("sources.file.scan_interval_secs", sources.file.scan_interval_secs, 1, 86_400);
        let poll_interval_secs =
            self.int_in("sources.process.poll_interval_secs", sources.process.poll_interval_secs, 0, 3600);
        let process_ebpf = match sources.process.ebpf.as_str() {
            "auto" => Some(true),
            "off" => Some(false),
            other => {
                self.error(
                    "sources.process.ebpf",
                    None,
                    format!("invalid value {}; allowed values: \"auto\", \"off\"", quote(other)),
                );
                None
            }
        };
        let auth_files = self.paths("sources.auth.files", &sources.auth.files);
        let journald = picket_capture::auth::Journald::parse(&sources.auth.journald).or_else(|| {
            let allowed: Vec<String> =
                picket_capture::auth::Journald::NAMES.iter().map(|n| format!("\"{n}\"")).collect();
            self.error(
                "sources.auth.journald",
                None,
                format!(
                    "invalid value {}; allowed values: {}",
                    quote(&sources.auth.journald),
                    allowed.join(", ")
                ),
            );
            None
        });
        let journal_dir = if sources.auth.journal_dir.is_empty() {
            Some(None)
        } else {
            self.path("sources.auth.journal_dir", None, &sources.auth.journal_dir).map(Some)
        };
        let interface = &sources.network.interface;
        if interface.is_empty()
            || interface.len() > MAX_INTERFACE
            || interface.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            self.error(
                "sources.network.interface",
                None,
                format!(
                    "invalid interface name {}: at most {MAX_INTERFACE} characters, no '/' or spaces; \
                     \"any\" for all interfaces",
                    quote(interface)
                ),
            );
        }

        let snaplen = self.int_in("sources.network.snaplen", sources.network.snaplen, 68, 65_535);
        let buffer_bytes =
            self.int_in("sources.network.buffer_bytes", sources.network.buffer_bytes, 65_536, 1 << 30);
        let max_flows = self.int_in("sources.network.max_flows", sources.network.max_flows, 64, 1 << 22);
        if sources.network.filter.chars().any(char::is_control) {
            self.error(
                "sources.network.filter",
                None,
                "control characters are not allowed in a BPF filter".into(),
            );
        }

        let mut cidrs = Vec::with_capacity(containment.protected_cidrs.len());
        for (i, text) in containment.protected_cidrs.iter().enumerate() {
            match text.parse::<Cidr>() {
                Ok(c) => cidrs.push(c),
                Err(why) => self.error(
                    "containment.protected_cidrs",
                    Some(i),
                    format!("invalid CIDR {}: {why}", quote(text)),
                ),
            }
        }

        let process_names = self.process_names(&containment.protected_process_names);
        let protected_paths =
            self.absolute_paths("containment.protected_paths", &containment.protected_paths);
        let quarantine_dir = if containment.quarantine_dir.is_empty() {
            Some(None)
        } else {
            self.path("containment.quarantine_dir", None, &containment.quarantine_dir).map(Some)
        };
        let kill_grace_secs = self.int_in("containment.kill_grace_secs", containment.kill_grace_secs, 0, 60);
        let management = self.management(&containment.management);
        let b = &containment.budget_per_minute;
        let mut budget = |key: &str, got: i128| {
            self.int_in(&format!("containment.budget_per_minute.{key}"), got, 0, MAX_BUDGET)
                .and_then(|n| u32::try_from(n).ok())
        };
        let budgets = (
            budget("block_ip", b.block_ip),
            budget("kill", b.kill),
            budget("deny_exec", b.deny_exec),
            budget("quarantine", b.quarantine),
            budget("isolate_host", b.isolate_host),
            budget("lock_account", b.lock_account),
        );

        let broker = match uplink.broker.parse::<Broker>() {
            Ok(b) => Some(b),
            Err(why) => {
                self.error("uplink.broker", None, why);
                None
            }
        };
        if let Some(why) = topic_prefix_problem(&uplink.topic_prefix) {
            self.error("uplink.topic_prefix", None, why);
        }
        let needs_tls_files = uplink.enabled && broker.as_ref().is_some_and(|b| b.tls);
        let ca_file = self.tls_file("uplink.ca_file", &uplink.ca_file, needs_tls_files);
        let cert_file = self.tls_file("uplink.cert_file", &uplink.cert_file, needs_tls_files);
        let key_file = self.tls_file("uplink.key_file", &uplink.key_file, needs_tls_files);
        let ack = match uplink.ack.as_str() {
            "broker" => Some(UplinkAck::Broker),
            "collector" => {
                if uplink.collector_key_file.is_empty() {
                    self.error(
                        "uplink.collector_key_file",
                        None,
                        "required with ack = \"collector\": the collector's public key \
                         (`picket collect --config FILE --export-key`)"
                            .into(),
                    );
                    None
                } else {
                    self.path("uplink.collector_key_file", None, &uplink.collector_key_file)
                        .map(UplinkAck::Collector)
                }
            }
            other => {
                self.error(
                    "uplink.ack",
                    None,
                    format!("invalid value {}; allowed values: \"broker\", \"collector\"", quote(other)),
                );
                None
            }
        };
        let batch_max_events = self.int_in("uplink.batch_max_events", uplink.batch_max_events, 1, 65_536);
        let batch_max_bytes = self.int_in("uplink.batch_max_bytes", uplink.batch_max_bytes, 4096, 16 << 20);
        let max_bytes_per_sec = self.int_in("uplink.max_bytes_per_sec", uplink.max_bytes_per_sec, 0, 1 << 40);
        let backoff_max_secs = self.int_in("uplink.backoff_max_secs", uplink.backoff_max_secs, 1, 86_400);
        let ack_timeout_secs = self.int_in("uplink.ack_timeout_secs", uplink.ack_timeout_secs, 1, 3600);

        let got = journal.max_bytes;
        let max_bytes = if got < i128::from(MIN_JOURNAL_BYTES) {
            self.error(
                "journal.max_bytes",
                None,
                format!("must be at least {MIN_JOURNAL_BYTES} (1 MiB), got {got}"),
            );
            None
        } else if let Ok(n) = u64::try_from(got) {
            Some(n)
        } else {
            self.error("journal.max_bytes", None, format!("must be at most {}, got {got}", u64::MAX));
            None
        };

        if !self.errors.is_empty() {
            return None;
        }
        Some(Settings {
            agent: AgentSettings {
                data_dir: data_dir?,
                mode: mode?,
                device_id: agent.device_id,
                health_interval: health_interval?,
                status_interval: status_interval?,
                queue_events: usize::try_from(queue_events?).unwrap_or(usize::MAX),
            },
            policies: PoliciesSettings {
                paths: policy_paths?,
                sigma_min_level: sigma_min_level?,
                max_groups_per_rule: usize::try_from(max_groups_per_rule?).unwrap_or(usize::MAX),
            },
            sources: SourcesSettings {
                process: ProcessSourceSettings {
                    enabled: sources.process.enabled,
                    poll_interval: Some(Duration::from_secs(poll_interval_secs?)).filter(|d| !d.is_zero()),
                    ebpf: process_ebpf?,
                },
                file: FileSourceSettings {
                    enabled: sources.file.enabled,
                    paths: file_paths?,
                    include: file_include?,
                    exclude: file_exclude?,
                    hash_max_bytes: hash_max_bytes?,
                    scan_interval: Duration::from_secs(scan_interval_secs?),
                },
                auth: AuthSourceSettings {
                    enabled: sources.auth.enabled,
                    files: auth_files?,
                    journald: journald?,
                    journal_dir: journal_dir?,
                },
                network: NetworkSourceSettings {
                    enabled: sources.network.enabled,
                    interface: interface.clone(),
                    filter: sources.network.filter.clone(),
                    snaplen: u32::try_from(snaplen?).unwrap_or(u32::MAX),
                    buffer_bytes: u32::try_from(buffer_bytes?).unwrap_or(u32::MAX),
                    max_flows: u32::try_from(max_flows?).unwrap_or(u32::MAX),
                    attribute_processes: sources.network.attribute_processes,
                },
            },
            containment: ContainmentSettings {
                protected_cidrs: cidrs,
                protected_process_names: process_names?,
                protected_paths: protected_paths?,
                allow_root: containment.allow_root,
                quarantine_dir: quarantine_dir?,
                kill_grace: Duration::from_secs(kill_grace_secs?),
                management: management?,
                isolation_keep_dhcp: containment.isolation_keep_dhcp,
                budget_per_minute: BudgetSettings {
                    block_ip: budgets.0?,
                    kill: budgets.1?,
                    deny_exec: budgets.2?,
                    quarantine: budgets.3?,
                    isolate_host: budgets.4?,
                    lock_account: budgets.5?,
                },
            },
            uplink: UplinkSettings {
                enabled: uplink.enabled,
                broker: broker?,
                ca_file: ca_file?,
                cert_file: cert_file?,
                key_file: key_file?,
                topic_prefix: uplink.topic_prefix,
                ack: ack?,
                batch_max_events: usize::try_from(batch_max_events?).ok()?,
                batch_max_bytes: usize::try_from(batch_max_bytes?).ok()?,
                max_bytes_per_sec: max_bytes_per_sec?,
                backoff_max: Duration::from_secs(backoff_max_secs?),
                ack_timeout: Duration::from_secs(ack_timeout_secs?),
            },
            journal: JournalSettings { max_bytes: max_bytes? },
        })
    }

    /// A path that must not be empty.
    fn path(&mut self, key: &str, element: Option<usize>, text: &str) -> Option<PathBuf> {
        let at = element.map_or_else(String::new, |i| format!("element {}: ", i + 1));
        if text.is_empty() {
            self.error(key, element, format!("{at}must not be empty"));
            None
        } else if text.contains('\0') {
            self.error(key, element, format!("{at}must not contain a NUL character"));
            None
        } else {
            Some(PathBuf::from(text))
        }
    }

    /// A list of non-empty paths (the list itself may be empty).
    fn paths(&mut self, key: &str, texts: &[String]) -> Option<Vec<PathBuf>> {
        let mut ok = true;
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            match self.path(key, Some(i), text) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A list of path globs (`sources.file.include` / `exclude`), each checked.
    fn globs(&mut self, key: &str, texts: &[String]) -> Option<Vec<String>> {
        let mut ok = true;
        for (i, text) in texts.iter().enumerate() {
            let problem = if text.is_empty() {
                Some("must not be empty".to_string())
            } else {
                picket_capture::file::check_glob(text).err()
            };
            if let Some(why) = problem {
                self.error(key, Some(i), format!("element {}: invalid glob {}: {why}", i + 1, quote(text)));
                ok = false;
            }
        }
        ok.then(|| texts.to_vec())
    }

    /// A list of absolute paths (the list itself may be empty).
    fn absolute_paths(&mut self, key: &str, texts: &[String]) -> Option<Vec<PathBuf>> {
        let mut ok = true;
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            match self.path(key, Some(i), text) {
                Some(p) if p.is_absolute() => out.push(p),
                Some(_) => {
                    self.error(
                        key,
                        Some(i),
                        format!("element {}: {} is not an absolute path", i + 1, quote(text)),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `containment.protected_process_names`: non-empty names without `/`.
    fn process_names(&mut self, names: &[String]) -> Option<Vec<String>> {
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > 255 || name.contains('/') || name.chars().any(char::is_control)
            {
                self.error(
                    "containment.protected_process_names",
                    Some(i),
                    format!(
                        "element {}: invalid process name {}: 1-255 characters, no '/' (a name, not a path)",
                        i + 1,
                        quote(name)
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| names.to_vec())
    }

    /// `containment.management`: `{ from = CIDR, tcp_port = 1-65535 }` each.
    fn management(&mut self, entries: &[ManagementConfig]) -> Option<Vec<Management>> {
        const KEY: &str = "containment.management";
        let mut ok = true;
        let mut out = Vec::with_capacity(entries.len());
        for (i, m) in entries.iter().enumerate() {
            let from = match m.from.parse::<Cidr>() {
                Ok(c) if c.prefix == 0 => {
                    self.error(
                        KEY,
                        Some(i),
                        format!("element {}: a /0 network would keep everything open", i + 1),
                    );
                    None
                }
                Ok(c) => Some(c),
                Err(why) => {
                    self.error(
                        KEY,
                        Some(i),
                        format!("element {}: invalid CIDR {}: {why}", i + 1, quote(&m.from)),
                    );
                    None
                }
            };
            let port = match u16::try_from(m.tcp_port) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.error(
                        KEY,
                        Some(i),
                        format!(
                            "element {}: tcp_port must be between 1 and 65535, got {}",
                            i + 1,
                            m.tcp_port
                        ),
                    );
                    None
                }
            };
            match (from, port) {
                (Some(from), Some(tcp_port)) => out.push(Management { from, tcp_port }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A certificate or key file: empty means none, which is an error when TLS needs it.
    fn tls_file(&mut self, key: &str, text: &str, required: bool) -> Option<Option<PathBuf>> {
        if text.is_empty() {
            if required {
                self.error(key, None, "required when the uplink is enabled with an mqtts:// broker".into());
                return None;
            }
            return Some(None);
        }
        self.path(key, None, text).map(Some)
    }

    /// An integer in `lo..=hi`.
    fn int_in(&mut self, key: &str, got: i128, lo: u64, hi: u64) -> Option<u64> {
        match u64::try_from(got) {
            Ok(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                self.error(key, None, format!("must be between {lo} and {hi}, got {got}"));
                None
            }
        }
    }

    fn interval(&mut self, key: &str, secs: i128) -> Option<Duration> {
        match u64::try_from(secs) {
            Ok(s) if INTERVAL_SECS.contains(&secs) => Some(Duration::from_secs(s)),
            _ => {
                let (lo, hi) = (INTERVAL_SECS.start(), INTERVAL_SECS.end());
                self.error(key, None, format!("must be between {lo} and {hi} seconds, got {secs}"));
                None
            }
        }
    }
}

fn topic_prefix_problem(prefix: &str) -> Option<String> {
    let problem = if prefix.is_empty() {
        "must not be empty"
    } else if prefix.contains(['+', '#']) {
        "must not contain the MQTT wildcards '+' or '#'"
    } else if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        "topic levels must not be empty (no leading, trailing or double '/')"
    } else if prefix.starts_with('$') {
        "must not start with '$' (reserved for broker topics)"
    } else if prefix.chars().any(char::is_control) {
        "must not contain control characters"
    } else if prefix.len() > MAX_TOPIC_PREFIX {
        "is too long (at most 1024 bytes)"
    } else {
        return None;
    };
    Some(format!("{} {problem}", quote(prefix)))
}

// ---------------------------------------------------------------------------------------------
// Document helpers.

/// Lays `top` over `base`: tables merge key by key, anything else in `top` replaces. Entries from
/// `top` keep their spans (into the user's text), so serde errors point there.
fn overlay<'i>(base: &mut DeTable<'i>, top: DeTable<'i>) {
    for (key, value) in top {
        let old = base.remove(key.get_ref().as_ref());
        let value = match (old.map(Spanned::into_inner), value) {
            (Some(DeValue::Table(mut merged)), new) if new.get_ref().is_table() => {
                let span = new.span();
                if let DeValue::Table(t) = new.into_inner() {
                    overlay(&mut merged, t);
                }
                Spanned::new(span, DeValue::Table(merged))
            }
            (_, new) => new,
        };
        base.insert(key, value);
    }
}

/// The deepest table entry whose key, value or array element contains byte `pos`.
fn locate(table: &DeTable<'_>, text: &[u8], pos: usize) -> Option<Location> {
    fn walk(
        table: &DeTable<'_>,
        pos: usize,
        prefix: &mut Vec<String>,
        best: &mut Option<(Vec<String>, Option<usize>)>,
    ) {
        for (key, value) in table {
            prefix.push(key.get_ref().to_string());
            let mut element = None;
            if let DeValue::Array(items) = value.get_ref() {
                element = items.iter().position(|item| covers(item.span(), pos));
            }
            let hit = covers(key.span(), pos) || covers(value.span(), pos) || element.is_some();
            if hit && best.as_ref().is_none_or(|(path, _)| prefix.len() > path.len()) {
                *best = Some((prefix.clone(), element));
            }
            if let DeValue::Table(inner) = value.get_ref() {
                walk(inner, pos, prefix, best);
            }
            prefix.pop();
        }
    }
    let mut best = None;
    walk(table, pos, &mut Vec::new(), &mut best);
    best.map(|(path, element)| Location { path, element, line: line_of(text, pos) })
}

fn covers(span: std::ops::Range<usize>, pos: usize) -> bool {
    span.start <= pos && (pos < span.end || span.start == span.end && pos == span.start)
}

fn lookup<'t, 'i>(table: &'t DeTable<'i>, path: &[String]) -> Option<&'t DeValue<'i>> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first.as_str())?.get_ref();
    if rest.is_empty() { Some(value) } else { lookup(value.as_table()?, rest) }
}

fn remove_path(table: &mut DeTable<'_>, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last.as_str()).is_some(),
        [first, rest @ ..] => match table.get_mut(first.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

fn count_entries(table: &DeTable<'_>) -> usize {
    table
        .iter()
        .map(|(_, v)| 1 + v.get_ref().as_table().map_or(0, count_entries))
        .fold(0, usize::saturating_add)
}

/// "unknown key", with the closest valid key, or the key's right table, or the valid keys.
fn unknown_key_message(path: &[String], parent: &DeTable<'_>, root: &DeTable<'_>) -> String {
    let Some(name) = path.last() else { return "unknown key".into() };
    let valid: Vec<&str> = parent.iter().map(|(k, _)| k.get_ref().as_ref()).collect();
    let closest = valid
        .iter()
        .map(|v| (edit_distance(&name.to_ascii_lowercase(), v), *v))
        .filter(|(d, v)| *d <= (v.len() / 3).max(1))
        .min();
    if let Some((_, suggestion)) = closest {
        let mut full = path[..path.len() - 1].to_vec();
        full.push(suggestion.to_string());
        return format!("unknown key; did you mean `{}`?", key_path(&full));
    }
    let mut elsewhere = Vec::new();
    find_key(root, name, &mut Vec::new(), &mut elsewhere);
    if let Some(found) = elsewhere.first() {
        return format!("unknown key here; did you mean `{}`?", key_path(found));
    }
    let list: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
    format!("unknown key; valid keys here: {}", list.join(", "))
}

fn find_key(table: &DeTable<'_>, name: &str, prefix: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    for (key, value) in table {
        prefix.push(key.get_ref().to_string());
        if key.get_ref() == name {
            found.push(prefix.clone());
        }
        if let DeValue::Table(inner) = value.get_ref() {
            find_key(inner, name, prefix, found);
        }
        prefix.pop();
    }
}

/// Optimal string alignment distance: edits, with a swap of neighbours counting as one (`fiel` is
/// one from `file`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 3 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 {
                j
            } else if j == 0 {
                i
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A dotted key path; segments that are not bare TOML keys are quoted.
fn key_path(path: &[String]) -> String {
    path.iter()
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) {
                s.clone()
            } else {
                quote(s)
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A user value for a message: quoted, escaped, and cut short.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Keeps a message on one line whatever it quotes.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

/// 1-based line of byte offset `at`; an offset at the very end of a text ending in a newline
/// belongs to the last line, as an editor shows it.
fn line_of(text: &[u8], at: usize) -> usize {
    let at = at.min(text.len());
    let mut line = text[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    if at == text.len() && at > 0 && text.ends_with(b"\n") {
        line -= 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn errors(text: &str) -> Vec<ConfigError> {
        match load_str(text, "test.toml") {
            Ok(s) => panic!("expected errors, got {s:?}"),
            Err(e) => e.0,
        }
    }

    /// The errors as `LINE key: message`-style tuples, for compact assertions.
    fn lines_and_keys(text: &str) -> Vec<(Option<usize>, String)> {
        errors(text).into_iter().map(|e| (e.line, e.key)).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn embedded_default_parses_and_equals_default_settings() {
        let parsed = load_str(DEFAULT_CONFIG, DEFAULT_ORIGIN).unwrap();
        assert_eq!(parsed, default_settings());
        assert_eq!(parsed, Settings::default());
        let s = parsed;
        assert_eq!(s.agent.data_dir, PathBuf::from("./picket-data"));
        assert_eq!(s.agent.mode, Mode::Monitor);
        assert_eq!(s.agent.device_id, "");
        assert_eq!(s.agent.health_interval, Duration::from_secs(30));
        assert_eq!(s.agent.status_interval, Duration::from_secs(5));
        assert_eq!(s.policies.paths, vec![PathBuf::from("policies")]);
        assert!(s.sources.process.enabled);
        assert_eq!(s.sources.process.poll_interval, Some(Duration::from_secs(2)));
        assert!(s.sources.process.ebpf);
        assert!(s.sources.file.enabled);
        assert_eq!(s.sources.file.paths, vec![PathBuf::from("./picket-data/watch")]);
        assert!(s.sources.file.include.is_empty() && s.sources.file.exclude.is_empty());
        assert_eq!(s.sources.file.hash_max_bytes, 32 << 20);
        assert_eq!(s.sources.file.scan_interval, Duration::from_secs(60));
        assert!(s.sources.auth.enabled);
        assert_eq!(
            s.sources.auth.files,
            vec![PathBuf::from("/var/log/auth.log"), PathBuf::from("/var/log/secure")]
        );
        assert!(!s.sources.network.enabled);
        assert_eq!(s.sources.network.interface, "any");
        assert!(s.sources.network.attribute_processes);
        assert!(s.containment.protected_cidrs.is_empty());
        assert_eq!(s.containment.protected_process_names, ["init", "systemd", "sshd", "dropbear", "picket"]);
        assert!(s.containment.protected_paths.contains(&PathBuf::from("/usr/bin")));
        assert!(!s.containment.allow_root);
        assert_eq!(s.containment.quarantine_dir(Path::new("/d")), PathBuf::from("/d/quarantine"));
        assert_eq!(s.containment.kill_grace, Duration::from_secs(5));
        assert!(s.containment.management.is_empty());
        assert!(s.containment.isolation_keep_dhcp);
        assert_eq!(
            s.containment.budget_per_minute,
            BudgetSettings {
                block_ip: 60,
                kill: 10,
                deny_exec: 10,
                quarantine: 10,
                isolate_host: 1,
                lock_account: 5
            }
        );
        assert!(!s.uplink.enabled);
        assert_eq!(s.uplink.broker, Broker { tls: true, host: "broker.example".into(), port: 8883 });
        assert_eq!(
            (s.uplink.ca_file.clone(), s.uplink.cert_file.clone(), s.uplink.key_file.clone()),
            (None, None, None)
        );
        assert_eq!(s.uplink.topic_prefix, "picket/v1/default");
        assert_eq!(s.journal.max_bytes, 64 << 20);
        assert_eq!(s.journal_path(), PathBuf::from("./picket-data/journal.db"));
    }

    #[test]
    fn file_source_keys_are_validated_with_their_lines() {
        let text = "[sources.file]\ninclude = [\"*.conf\", \"a[\"]\nexclude = [\"\"]\nhash_max_bytes = -1\nscan_interval_secs = 0\n";
        let errors: Vec<String> =
            load_str(text, "t.toml").unwrap_err().0.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("t.toml:2: sources.file.include: element 2: invalid glob \"a[\""),
            "{errors:#?}"
        );
        assert_eq!(
            errors[1],
            "t.toml:3: sources.file.exclude: element 1: invalid glob \"\": must not be empty"
        );
        assert_eq!(
            errors[2],
            "t.toml:4: sources.file.hash_max_bytes: must be between 0 and 4294967296, got -1"
        );
        assert_eq!(
            errors[3],
            "t.toml:5: sources.file.scan_interval_secs: must be between 1 and 86400, got 0"
        );
        let ok = load_str("[sources.file]\ninclude = [\"/etc/**\"]\nscan_interval_secs = 300\n", "t.toml")
            .unwrap();
        assert_eq!(ok.sources.file.include, vec!["/etc/**".to_string()]);
        assert_eq!(ok.sources.file.scan_interval, Duration::from_secs(300));
    }

    #[test]
    fn default_toml_has_exactly_the_keys_the_config_structs_read() {
        // No serde defaults and deny_unknown_fields: a key missing from default.toml fails as a
        // missing field, an extra one as an unknown field. So default.toml is the complete spec.
        let de = Deserializer::parse(DEFAULT_CONFIG).unwrap();
        if let Err(e) = ConfigFile::deserialize(de) {
            panic!("default.toml and ConfigFile disagree: {e}");
        }
    }

    #[test]
    fn every_key_in_default_toml_has_a_comment_line_above_it() {
        let lines: Vec<&str> = DEFAULT_CONFIG.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            assert!(line.contains(" = "), "line {}: not a key: {line}", i + 1);
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "line {}: key without a comment: {line}",
                i + 1
            );
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(load_str("", "empty.toml").unwrap(), default_settings());
        assert_eq!(load_str("# only a comment\n\n", "empty.toml").unwrap(), default_settings());
    }

    #[test]
    fn a_partial_file_changes_only_its_own_keys() {
        let s =
            load_str("[agent]\nmode = \"enforce\"\n[sources]\nfile.paths = [\"/etc\", \"/usr/bin\"]\n", "t")
                .unwrap();
        let mut expected = default_settings();
        expected.agent.mode = Mode::Enforce;
        expected.sources.file.paths = vec![PathBuf::from("/etc"), PathBuf::from("/usr/bin")];
        assert_eq!(s, expected);
    }

    #[test]
    fn a_file_with_five_mistakes_reports_all_five_with_line_and_key() {
        let text = "\
[agent]
mode = \"enforcing\"
colour = \"blue\"

[sources.fiel]
enabled = true

[containment]
protected_cidrs = [\"10.0.0.0/8\", \"10.0.0.0/33\"]

[journal]
max_bytes = \"big\"
";
        let errors = errors(text);
        let got: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(2), "agent.mode"),
                (Some(3), "agent.colour"),
                (Some(5), "sources.fiel"),
                (Some(9), "containment.protected_cidrs"),
                (Some(12), "journal.max_bytes"),
            ]
        );
        assert!(errors[0].message.contains("\"monitor\", \"enforce\""), "{}", errors[0]);
        assert!(errors[1].message.contains("unknown key; valid keys here: `data_dir`"), "{}", errors[1]);
        assert!(errors[2].message.contains("did you mean `sources.file`?"), "{}", errors[2]);
        assert!(errors[3].message.contains("\"10.0.0.0/33\""), "{}", errors[3]);
        assert_eq!(errors[4].message, "expected an integer, found a string");
        assert_eq!(
            errors[4].to_string(),
            "test.toml:12: journal.max_bytes: expected an integer, found a string"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_alone_with_its_line() {
        // Line 2 would be a semantic error, but nothing is trusted once the syntax is broken.
        let errors = errors("[agent]\nmode = \"enforcing\"\ndata_dir = ./data\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, Some(3));
        assert_eq!(errors[0].key, "");
        assert!(errors[0].message.starts_with("TOML syntax:"), "{}", errors[0]);
        assert_eq!(lines_and_keys("[agent\n"), vec![(Some(1), String::new())]);
        assert_eq!(lines_and_keys("a = \"\"\"\nunterminated\n"), vec![(Some(2), String::new())]);
    }

    #[test]
    fn duplicate_keys_are_syntax_errors_naming_the_key() {
        let errors = errors("[agent]\nmode = \"monitor\"\nmode = \"enforce\"\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "test.toml:3: TOML syntax: duplicate key (at \"mode\")");
    }

    #[test]
    fn unknown_keys_suggest_the_closest_key_or_its_table_or_list_the_valid_ones() {
        let e = errors("[agent]\ndatadir = \"x\"\nmax_bytes = 5\n[agnet]\n[policies]\nfoo = 1\n");
        let messages: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                "test.toml:2: agent.datadir: unknown key; did you mean `agent.data_dir`?",
                "test.toml:3: agent.max_bytes: unknown key here; did you mean `journal.max_bytes`?",
                "test.toml:4: agnet: unknown key; did you mean `agent`?",
                "test.toml:6: policies.foo: unknown key; valid keys here: `max_groups_per_rule`, `paths`, `sigma_min_level`",
            ]
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected_and_found() {
        let e = errors(
            "agent = 5\n[sources.file]\nenabled = \"yes\"\npaths = [\"/a\", 3]\n[[uplink]]\n[journal]\nmax_bytes = 1.5\n",
        );
        let messages: Vec<String> =
            e.iter().map(|e| format!("{:?} {}: {}", e.line, e.key, e.message)).collect();
        assert_eq!(
            messages,
            vec![
                "Some(1) agent: expected a table, found an integer",
                "Some(3) sources.file.enabled: expected a boolean, found a string",
                "Some(4) sources.file.paths: element 2: expected a string, found an integer",
                "Some(5) uplink: expected a table, found an array",
                "Some(7) journal.max_bytes: expected an integer, found a float",
            ]
        );
    }

    #[test]
    fn out_of_range_numbers_say_the_allowed_range() {
        let e = errors(
            "[agent]\nhealth_interval_secs = 0\nstatus_interval_secs = 3601\n[journal]\nmax_bytes = -1\n",
        );
        let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "must be between 1 and 3600 seconds, got 0",
                "must be between 1 and 3600 seconds, got 3601",
                "must be at least 1048576 (1 MiB), got -1",
            ]
        );
        assert_eq!(
            errors("[journal]\nmax_bytes = 1048575\n")[0].message,
            "must be at least 1048576 (1 MiB), got 1048575"
        );
        assert_eq!(load_str("[journal]\nmax_bytes = 1048576\n", "t").unwrap().journal.max_bytes, 1 << 20);
        let huge = errors("[journal]\nmax_bytes = 99999999999999999999999999999999999999999999\n");
        assert_eq!((huge[0].line, huge[0].key.as_str()), (Some(2), "journal.max_bytes"));
        let big = errors("[journal]\nmax_bytes = 18446744073709551616\n");
        assert!(big[0].message.starts_with("must be at most 18446744073709551615"), "{}", big[0]);
    }

    #[test]
    fn auth_journald_takes_auto_on_off_and_a_journal_dir() {
        let s =
            load_str("[sources.auth]\njournald = \"on\"\njournal_dir = \"/var/log/j\"\n", "t.toml").unwrap();
        assert_eq!(s.sources.auth.journald, picket_capture::auth::Journald::On);
        assert_eq!(s.sources.auth.journal_dir, Some(PathBuf::from("/var/log/j")));
        let d = load_str("", "t.toml").unwrap();
        assert_eq!(d.sources.auth.journald, picket_capture::auth::Journald::Auto);
        assert_eq!(d.sources.auth.journal_dir, None);
        let e: Vec<String> =
            errors("[sources.auth]\njournald = \"yes\"\n").iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            vec![
                "test.toml:2: sources.auth.journald: invalid value \"yes\"; allowed values: \"auto\", \"on\", \"off\""
            ]
        );
    }

    #[test]
    fn empty_paths_and_bad_names_are_refused() {
        let e = lines_and_keys(
            "[agent]\ndata_dir = \"\"\ndevice_id = \"gw/1\"\n[policies]\npaths = [\"ok\", \"\"]\n\
             [sources.network]\ninterface = \"eth0 eth1\"\n",
        );
        assert_eq!(
            e,
            vec![
                (Some(2), "agent.data_dir".to_string()),
                (Some(3), "agent.device_id".to_string()),
                (Some(5), "policies.paths".to_string()),
                (Some(7), "sources.network.interface".to_string()),
            ]
        );
        let s = load_str("[agent]\ndevice_id = \"gw-berlin-01\"\n[policies]\npaths = []\n", "t").unwrap();
        assert_eq!(s.agent.device_id, "gw-berlin-01");
        assert!(s.policies.paths.is_empty());
    }

    #[test]
    fn uplink_enabled_with_mqtts_requires_the_certificate_files() {
        let e = errors("[uplink]\nenabled = true\nca_file = \"/etc/picket/ca.pem\"\n");
        let got: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "test.toml:1: uplink.cert_file: required when the uplink is enabled with an mqtts:// broker",
                "test.toml:1: uplink.key_file: required when the uplink is enabled with an mqtts:// broker",
            ]
        );
        // Plain MQTT needs no files; disabled needs nothing.
        let s = load_str("[uplink]\nenabled = true\nbroker = \"mqtt://10.0.0.5\"\n", "t").unwrap();
        assert_eq!(s.uplink.broker, Broker { tls: false, host: "10.0.0.5".into(), port: 1883 });
        let s = load_str(
            "[uplink]\nenabled = true\nca_file = \"ca.pem\"\ncert_file = \"dev.pem\"\nkey_file = \"dev.key\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.uplink.key_file, Some(PathBuf::from("dev.key")));
    }

    #[test]
    fn topic_prefix_must_be_non_empty_levels_without_wildcards() {
        for bad in ["", "a/+/b", "picket/#", "/picket", "picket/", "a//b", "$SYS/x"] {
            let e = errors(&format!("[uplink]\ntopic_prefix = {bad:?}\n"));
            assert_eq!((e.len(), e[0].key.as_str(), e[0].line), (1, "uplink.topic_prefix", Some(2)), "{bad}");
        }
        assert_eq!(
            load_str("[uplink]\ntopic_prefix = \"acme/v1/plant-3\"\n", "t").unwrap().uplink.topic_prefix,
            "acme/v1/plant-3"
        );
    }

    #[test]
    fn containment_keys_are_validated_each_with_its_line_and_key() {
        let text = "[containment]\n\
                    protected_process_names = [\"sshd\", \"/usr/sbin/cron\"]\n\
                    protected_paths = [\"/etc\", \"usr/bin\"]\n\
                    kill_grace_secs = 61\n\
                    management = [{ from = \"192.0.2.0/24\", tcp_port = 22 }, { from = \"10.0.0.1/8\", tcp_port = 0 }]\n\
                    [containment.budget_per_minute]\n\
                    kill = -1\n\
                    isolate_host = 100001\n";
        let got = lines_and_keys(text);
        assert_eq!(
            got,
            vec![
                (Some(2), "containment.protected_process_names".into()),
                (Some(3), "containment.protected_paths".into()),
                (Some(4), "containment.kill_grace_secs".into()),
                (Some(5), "containment.management".into()),
                (Some(5), "containment.management".into()),
                (Some(7), "containment.budget_per_minute.kill".into()),
                (Some(8), "containment.budget_per_minute.isolate_host".into()),
            ],
            "{:#?}",
            errors(text)
        );
        let s = load_str(
            "[containment]\nmanagement = [{ from = \"fd00::/64\", tcp_port = 2222 }]\nquarantine_dir = \"/q\"\n\
             allow_root = true\n[containment.budget_per_minute]\nblock_ip = 0\n",
            "t",
        )
        .unwrap();
        let c = s.containment;
        assert_eq!(c.management, [Management { from: "fd00::/64".parse().unwrap(), tcp_port: 2222 }]);
        assert_eq!(c.quarantine_dir(Path::new("/d")), PathBuf::from("/q"));
        assert!(c.allow_root);
        assert_eq!(c.budget_per_minute.block_ip, 0);
        let e = errors("[containment]\nmanagement = [{ from = \"10.0.0.0/8\" }]\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (Some(2), "containment.management"), "{e:?}");
    }

    #[test]
    fn cidr_contains_works_for_v4_and_v6() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(&ip("10.1.0.0")));
        assert!(net.contains(&ip("10.1.255.255")));
        assert!(!net.contains(&ip("10.2.0.1")));
        assert!(!net.contains(&ip("::1")));
        assert!(net.contains(&ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 counts as IPv4");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&ip("255.255.255.255")));
        let host: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(host, Cidr { addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7)), prefix: 32 });
        assert!(host.contains(&ip("192.168.1.7")));
        assert!(!host.contains(&ip("192.168.1.8")));

        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(&ip("fdab:1::1")));
        assert!(!v6.contains(&ip("fe80::1")));
        assert!(!v6.contains(&ip("10.0.0.1")));
        let v6_all: Cidr = "::/0".parse().unwrap();
        assert!(v6_all.contains(&ip("2001:db8::1")));
        let v6_host: Cidr = "2001:db8::1/128".parse().unwrap();
        assert_eq!(v6_host.addr, IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        assert!(v6_host.contains(&ip("2001:db8::1")) && !v6_host.contains(&ip("2001:db8::2")));
        assert_eq!(v6.to_string(), "fd00::/8");
    }

    #[test]
    fn cidr_parsing_rejects_bad_addresses_prefixes_and_host_bits() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "x",
            "",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "192.168.1.1/24".parse::<Cidr>().unwrap_err(),
            "host bits are set; did you mean \"192.168.1.0/24\"?"
        );
        let e = errors(
            "[containment]\nprotected_cidrs = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"fd00::/8\",\n  \"::1/200\",\n]\n",
        );
        let got: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![(Some(4), "containment.protected_cidrs"), (Some(6), "containment.protected_cidrs")]
        );
    }

    #[test]
    fn broker_parsing_takes_scheme_host_and_port_with_default_ports() {
        let b = |s: &str| s.parse::<Broker>().unwrap();
        assert_eq!(
            b("mqtts://broker.example:8884"),
            Broker { tls: true, host: "broker.example".into(), port: 8884 }
        );
        assert_eq!(
            b("mqtts://broker.example"),
            Broker { tls: true, host: "broker.example".into(), port: 8883 }
        );
        assert_eq!(b("mqtt://10.0.0.1"), Broker { tls: false, host: "10.0.0.1".into(), port: 1883 });
        assert_eq!(b("MQTTS://h/"), Broker { tls: true, host: "h".into(), port: 8883 });
        assert_eq!(
            b("mqtts://[2001:db8::1]:9000"),
            Broker { tls: true, host: "2001:db8::1".into(), port: 9000 }
        );
        assert_eq!(b("mqtt://[::1]"), Broker { tls: false, host: "::1".into(), port: 1883 });
        assert_eq!(b("mqtts://[2001:db8::1]:9000").to_string(), "mqtts://[2001:db8::1]:9000");
        assert_eq!(b("mqtt://h").to_string(), "mqtt://h:1883");
    }

    #[test]
    fn broker_parsing_rejects_other_schemes_and_malformed_urls() {
        for bad in [
            "broker.example:8883",
            "tcp://broker.example",
            "ssl://broker.example",
            "mqtts://",
            "mqtts://:8883",
            "mqtts://h:0",
            "mqtts://h:65536",
            "mqtts://h:",
            "mqtts://h:x",
            "mqtts://h:+1",
            "mqtts://user:pw@h",
            "mqtts://h/path",
            "mqtts://h?x=1",
            "mqtts://2001:db8::1",
            "mqtts://[2001:db8::1",
            "mqtts://[nothost]:1",
            "mqtts://[::1]x",
            "mqtts://bad host",
        ] {
            assert!(bad.parse::<Broker>().is_err(), "{bad:?} parsed");
        }
        let e = errors("[uplink]\nbroker = \"tcp://x\"\n");
        assert_eq!(
            e[0].to_string(),
            "test.toml:2: uplink.broker: unsupported scheme \"tcp\": use mqtts:// (TLS) or mqtt:// (plain TCP)"
        );
    }

    #[test]
    fn errors_display_one_line_each_as_file_line_key_message() {
        let errors = ConfigErrors(vec![
            ConfigError {
                file: "a.toml".into(),
                line: Some(3),
                key: "agent.mode".into(),
                message: "bad".into(),
            },
            ConfigError {
                file: "a.toml".into(),
                line: None,
                key: String::new(),
                message: "cannot open".into(),
            },
        ]);
        assert_eq!(errors.to_string(), "a.toml:3: agent.mode: bad\na.toml: cannot open");
        // User text with newlines cannot break the one-line-per-error shape.
        let e = load_str("\"a\\nb\" = 1\n[agent]\nmode = \"x\\ny\"\n", "t").unwrap_err();
        assert_eq!(e.to_string().lines().count(), 2, "{e}");
        assert!(e.to_string().starts_with("t:1: \"a\\nb\": unknown key"), "{e}");
    }

    #[test]
    fn a_world_writable_file_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picket.toml");
        std::fs::write(&path, "[agent]\nmode = \"enforce\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load_file(&path).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].file, path.display().to_string());
        assert!(e.0[0].message.contains("world-writable"), "{e}");
        assert!(e.to_string().starts_with(&path.display().to_string()), "{e}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(load_file(&path).unwrap().agent.mode, Mode::Enforce);
    }

    #[test]
    fn load_file_names_the_file_in_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = load_file(&missing).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: cannot open", missing.display())), "{e}");

        let path = dir.path().join("bad.toml");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"[agent]\nmode = \"x\"\n").unwrap();
        let e = load_file(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: agent.mode: invalid value \"x\"; allowed values: \"monitor\", \"enforce\"",
                path.display()
            )
        );

        std::fs::write(&path, b"# ok\n\xff\xfe\n").unwrap();
        let e = load_file(&path).unwrap_err();
        assert_eq!(
            (e.0[0].line, e.0[0].message.as_str()),
            (Some(2), "not valid UTF-8 (TOML files are UTF-8)")
        );

        std::fs::write(&path, vec![b'#'; 2 << 20]).unwrap();
        assert!(load_file(&path).unwrap_err().to_string().contains("larger than"));
    }

    #[test]
    fn broken_sample_reports_exactly_the_expected_lines() {
        // The lead's CLI test runs `picket config check` on the same file and expects these lines.
        let text = include_str!("../tests/data/config/broken.toml");
        let expected = include_str!("../tests/data/config/broken.expected");
        let got = load_str(text, "broken.toml").unwrap_err().to_string();
        assert_eq!(got, expected.trim_end());
    }

    #[test]
    fn no_input_makes_it_panic() {
        let mut inputs: Vec<String> = [
            "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
            "[agent]\nhealth_interval_secs = -9223372036854775808\nstatus_interval_secs = 9223372036854775807\n",
            "[journal]\nmax_bytes = 0xffffffffffffffff\n",
            "[journal]\nmax_bytes = -0\n",
            "[[agent]]\n[[agent]]\n",
            "agent.mode.x.y.z = 1\n",
            "[agent]\nmode = { x = [1, { y = 2 }] }\n",
            "sources = { file = { paths = [[[\"a\"]]] } }\n",
            "[containment]\nprotected_cidrs = [\"\", \"/\", \"::/\", \"1.2.3.4/255\", \"1.2.3.4/99999999999999\"]\n",
            "[uplink]\nbroker = \"mqtts://[::1]:99999999999999999999\"\n",
            "\u{feff}\r\n[agent]\r\nmode = \"enforce\"\r\n",
            "\0\0\0",
            "=\n[\n]\n\"\n",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        inputs.push(format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)));
        inputs.push(format!("a = {}1{}", "{b=".repeat(10_000), "}".repeat(10_000)));
        inputs.push(format!("a{} = 1", ".a".repeat(10_000)));
        // Bytes from a fixed LCG, kept to valid UTF-8, and mutations of the default.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let alphabet: Vec<char> = "[]{}=\"'#.,\n abc0123456789-+:/_\\x".chars().collect();
        for _ in 0..300 {
            let len = usize::try_from(next() % 200).unwrap();
            let s: String =
                (0..len).map(|_| alphabet[usize::try_from(next()).unwrap() % alphabet.len()]).collect();
            inputs.push(s);
            let mut mutated: Vec<char> = DEFAULT_CONFIG.chars().collect();
            for _ in 0..3 {
                let at = usize::try_from(next()).unwrap() % mutated.len();
                mutated[at] = alphabet[usize::try_from(next()).unwrap() % alphabet.len()];
            }
            inputs.push(mutated.into_iter().collect());
        }
        for input in &inputs {
            if let Err(e) = load_str(input, "fuzz.toml") {
                assert!(!e.0.is_empty());
                assert_eq!(e.to_string().lines().count(), e.0.len(), "{e}");
            }
        }
    }
}
