//! `picket collect --config FILE`: the SOC side. The file has one `[collect]` table:
//!
//! ```toml
//! [collect]
//! broker = "mqtts://broker.example:8883"
//! ca_file = "/etc/picket-collect/ca.pem"
//! cert_file = "/etc/picket-collect/collector.pem"
//! key_file = "/etc/picket-collect/collector.key"
//! topic_prefix = "picket/v1/default"
//! device_keys_dir = "/etc/picket-collect/devices"   # one `picket identity --export` line per device
//! state_dir = "/var/lib/picket-collect"
//! output = "/var/lib/picket-collect/events.ndjson"  # or "-" for stdout
//! # optional:
//! client_id = "picket-collector-1"   # stable per collector (the broker keeps its session)
//! share_group = ""                   # e.g. "soc": subscribe as $share/soc/..., to split a fleet
//! send_acks = true
//! gap_timeout_secs = 30
//! max_message_bytes = 4194304
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use picket_uplink::Endpoint;
use picket_uplink::collector::{self, CollectorConfig, Output};
use serde::Deserialize;

use crate::config::Broker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectFile {
    collect: CollectTable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectTable {
    broker: String,
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    topic_prefix: String,
    device_keys_dir: String,
    state_dir: String,
    output: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    share_group: Option<String>,
    #[serde(default)]
    send_acks: Option<bool>,
    #[serde(default)]
    gap_timeout_secs: Option<u64>,
    #[serde(default)]
    max_message_bytes: Option<usize>,
}

/// Read and check a collector config; every problem is listed with the file and the key's line.
pub fn load(path: &Path) -> anyhow::Result<CollectorConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: CollectFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        anyhow::anyhow!(
            "{}{}: {}",
            path.display(),
            line.map(|l| format!(":{l}")).unwrap_or_default(),
            e.message()
        )
    })?;
    let c = raw.collect;
    let mut errors = Vec::new();
    let at = |key: &str| {
        let line = text
            .lines()
            .position(|l| {
                l.trim_start().starts_with(key)
                    && l[l.find(key).unwrap_or(0) + key.len()..].trim_start().starts_with('=')
            })
            .map_or(0, |i| i + 1);
        format!("{}:{line}: collect.{key}", path.display())
    };
    let broker = match c.broker.parse::<Broker>() {
        Ok(b) => Some(b),
        Err(why) => {
            errors.push(format!("{}: {why}", at("broker")));
            None
        }
    };
    let file = |key: &str, v: &str, errors: &mut Vec<String>| -> Option<PathBuf> {
        if v.is_empty() {
            if broker.as_ref().is_some_and(|b| b.tls) {
                errors.push(format!("{}: required with an mqtts:// broker", at(key)));
            }
            None
        } else {
            Some(PathBuf::from(v))
        }
    };
    let ca_file = file("ca_file", &c.ca_file, &mut errors);
    let cert_file = file("cert_file", &c.cert_file, &mut errors);
    let key_file = file("key_file", &c.key_file, &mut errors);
    if c.topic_prefix.is_empty() || c.topic_prefix.contains(['+', '#']) || c.topic_prefix.ends_with('/') {
        errors.push(format!(
            "{}: a non-empty topic prefix without wildcards or trailing '/'",
            at("topic_prefix")
        ));
    }
    for (key, v) in
        [("device_keys_dir", &c.device_keys_dir), ("state_dir", &c.state_dir), ("output", &c.output)]
    {
        if v.is_empty() {
            errors.push(format!("{}: must not be empty", at(key)));
        }
    }
    if let Some(g) = &c.share_group
        && (g.contains(['/', '+', '#']))
    {
        errors.push(format!("{}: a share group name must not contain '/', '+' or '#'", at("share_group")));
    }
    if !errors.is_empty() {
        anyhow::bail!("invalid collector config:\n  {}", errors.join("\n  "));
    }
    let broker = broker.context("broker")?;
    let output = if c.output == "-" { Output::Stdout } else { Output::File(PathBuf::from(&c.output)) };
    let mut cfg = CollectorConfig::new(
        Endpoint { tls: broker.tls, host: broker.host, port: broker.port, ca_file, cert_file, key_file },
        c.topic_prefix,
        PathBuf::from(c.device_keys_dir),
        PathBuf::from(c.state_dir),
        output,
    );
    if let Some(id) = c.client_id.filter(|s| !s.is_empty()) {
        cfg.client_id = id;
    }
    cfg.share_group = c.share_group.filter(|s| !s.is_empty());
    if let Some(a) = c.send_acks {
        cfg.send_acks = a;
    }
    if let Some(s) = c.gap_timeout_secs {
        cfg.gap_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(m) = c.max_message_bytes {
        cfg.max_message_bytes = m.clamp(4096, 256 << 20);
    }
    Ok(cfg)
}

/// `picket collect --config FILE [--export-key]`.
pub fn run(config: &Path, export_key: bool) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    if export_key {
        print!("{}", collector::public_key_line(&cfg.state_dir)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let stats = rt.block_on(async move {
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        collector::run(cfg, stop).await
    })?;
    eprintln!(
        "picket collect: stopped: {} batches, {} events written, {} duplicate batches, rejected {:?}, anomalies {:?}",
        stats.batches_accepted,
        stats.events_written,
        stats.duplicate_batches,
        stats.rejected,
        stats.anomalies
    );
    Ok(ExitCode::SUCCESS)
}
