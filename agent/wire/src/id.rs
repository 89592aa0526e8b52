//! Device ids and the boot id.

use std::fs;

use crate::WireError;

const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// An id is 1..=128 characters of `[A-Za-z0-9._:-]` (the agent's `agent.device_id` rule), not
/// starting with `.`. It is an MQTT topic segment and may become a file name at the collector,
/// hence no `/`, `+`, `#` and no `..`. How the agent derives its id when none is configured is
/// the agent's business (agent/picket/src/device.rs), not the wire's.
pub fn validate_id(id: &str) -> Result<(), WireError> {
    let bad = |reason| Err(WireError::BadId { id: id.to_string(), reason });
    if id.is_empty() || id.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')) {
        return bad("allowed characters are A-Z a-z 0-9 . _ - :");
    }
    if id.starts_with('.') {
        return bad("must not start with '.'");
    }
    Ok(())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), all zeros if unreadable. It lets the
/// collector tell a reboot from a gap.
pub fn boot_id() -> [u8; 16] {
    fs::read_to_string(BOOT_ID_PATH).ok().and_then(|s| parse_uuid(&s)).unwrap_or([0; 16])
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hyphens optional) to 16 bytes.
pub(crate) fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    // from_str_radix alone would accept a leading '+'.
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::hex;

    #[test]
    fn boot_id_parses_the_proc_format() {
        let id = parse_uuid("0f9b6e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b\n").unwrap();
        assert_eq!(hex(&id), "0f9b6e2a3c4d4e5f8a9b0c1d2e3f4a5b");
        assert_eq!(parse_uuid("not a uuid"), None);
        assert_eq!(parse_uuid("+f9b6e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"), None);
    }
}
