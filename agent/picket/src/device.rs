//! The device id: `agent.device_id` when set; otherwise derived from the machine id, so it is
//! stable across reinstalls and restarts but does not reveal the machine id itself (systemd's
//! advice for application-specific ids: hash it with an application key).

use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// Resolve the device id. `data_dir` keeps a generated id for machines without a machine id
/// (some IoT images), so it survives restarts.
pub fn resolve(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    for f in MACHINE_ID_FILES {
        if let Ok(id) = fs::read_to_string(f) {
            let id = id.trim();
            // systemd writes "uninitialized" until the first boot completes: not an id.
            if !id.is_empty() && id != "uninitialized" {
                return Ok(derive(id));
            }
        }
    }
    let kept = data_dir.join("device_id");
    if let Ok(id) = fs::read_to_string(&kept) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let mut raw = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("no machine id and /dev/urandom unreadable: set agent.device_id")?;
    let id = derive(&hex(&raw));
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    fs::write(&kept, format!("{id}\n")).with_context(|| format!("writing {}", kept.display()))?;
    Ok(id)
}

fn derive(machine_id: &str) -> String {
    let digest = Sha256::digest(format!("picket-device-id\0{machine_id}").as_bytes());
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_id_wins_and_derived_id_is_stable_and_hides_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve("router-7", dir.path()).unwrap(), "router-7");
        let a = derive("0123456789abcdef0123456789abcdef");
        assert_eq!(a, derive("0123456789abcdef0123456789abcdef"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, "0123456789abcdef0123456789abcdef");
        let auto = resolve("", dir.path()).unwrap();
        assert_eq!(auto, resolve("", dir.path()).unwrap());
    }
}
