//! picket-uplink: the device's MQTT sender and the SOC's collector.
//!
//! Both speak the envelope of `picket-wire` and nothing else; neither knows its byte layout.
//!
//! - [`sender`]: reads sealed batches from the journal's outbox and publishes them (QoS 1). The
//!   journal is the source of truth: rumqttc's in-memory queues are disposable, every connect
//!   re-sends the whole outbox, and a batch counts as delivered only on the broker's PUBACK for
//!   the very packet that carried it (or, in end-to-end mode, on the collector's signed
//!   acknowledgement).
//! - [`collector`]: subscribes, verifies signatures against enrolled keys, checks each device's
//!   chain, deduplicates, writes verified events as NDJSON exactly once, reports anomalies and
//!   acknowledges.
//!
//! Topics (`<prefix>/<device>/<leaf>`) are built by [`topic`]; docs/wire.md lists them.

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "collector")]
pub mod collector;
pub mod sender;
#[doc(hidden)]
pub mod testkit;
pub mod tls;

pub use tls::TlsError;

/// Where a broker is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// With `tls`: CA certificate (PEM) of the broker, and our client certificate and key.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Endpoint {
    /// `mqtts://host:port` or `mqtt://host:port`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// MQTT options with the transport set up (TLS from the files when `tls`).
    pub(crate) fn mqtt_options(&self, client_id: &str) -> Result<rumqttc::MqttOptions, TlsError> {
        let mut o = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        if self.tls {
            let missing = || TlsError::Setup("mqtts needs ca_file, cert_file and key_file".into());
            let config = tls::client_config(
                self.ca_file.as_deref().ok_or_else(missing)?,
                self.cert_file.as_deref().ok_or_else(missing)?,
                self.key_file.as_deref().ok_or_else(missing)?,
            )?;
            o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
        }
        Ok(o)
    }
}

/// `<prefix>/<device>/<leaf>`; leaf is `batch`, `status` or `ack`.
pub fn topic(prefix: &str, device: &str, leaf: &str) -> String {
    format!("{prefix}/{device}/{leaf}")
}

/// Exponential backoff with jitter: `min`, doubling to `max`, each delay drawn uniformly from
/// [d/2, d] so that a fleet that lost its broker at the same moment does not come back at the
/// same moment.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos()) ^ d.as_secs() ^ u64::from(std::process::id()))
            | 1;
        Backoff { min, max: max.max(min), next: min, seed }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        // xorshift: jitter needs to be different per device, not unpredictable.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        let frac = (self.seed % 1000) as u32;
        half + half * frac / 1000
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut cap = Duration::from_millis(100);
        for _ in 0..8 {
            let d = b.next_delay();
            assert!(d >= cap / 2 && d <= cap, "{d:?} for {cap:?}");
            cap = (cap * 2).min(Duration::from_millis(800));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
