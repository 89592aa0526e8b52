//! picket-wire: device identity, the signed batch envelope and acknowledgements.
//!
//! This is the only code that knows the envelope and signature format; the agent's uplink seals
//! with it and the collector opens with it (ARCHITECTURE.md, invariant 6). Every byte is described
//! in docs/wire.md. In short: a batch is `PKB1 | header_len | header | Ed25519 signature | body`,
//! the body is the events' JSON lines exactly as journaled, the header carries the body's SHA-256
//! and the previous batch's hash, and the signature covers the header, so one verification
//! authenticates the whole chain link. Keys are Ed25519 (ring); a device's public key is enrolled
//! at the collector as one `picket-ed25519 <base64> <id>` line.
//!
//! ```
//! use picket_wire::{BatchInput, DEVICE_KEY_FILE, Identity, Keyring, open, seal};
//!
//! let dir = tempfile::tempdir()?;
//! let device = Identity::load_or_create(dir.path(), DEVICE_KEY_FILE, "router-7")?;
//!
//! // The collector enrolls the device's public key line...
//! let (id, key) = Keyring::parse_line(&device.public_key_line())?;
//! let mut keyring = Keyring::new();
//! keyring.insert(&id, key);
//!
//! // ...the device seals journaled events...
//! let stream_id = [5; 16]; // random, new with each journal
//! let (boot_id, prev_hash) = ([0; 16], [0; 32]); // boot_id(); batch 1 has no predecessor
//! let input = BatchInput { stream_id, boot_id, batch_seq: 1, prev_hash, created_ns: 0, flags: 0 };
//! let lines = [r#"{"seq":41,"kind":"auth.failure"}"#, r#"{"seq":42,"kind":"alert"}"#];
//! let sealed = seal(&device, input, &lines)?;
//!
//! // ...and the collector verifies them.
//! let batch = open(&sealed.bytes, &keyring, 1 << 20).expect("valid batch");
//! assert_eq!(batch.seqs, [41, 42]);
//! assert_eq!(batch.hash, sealed.hash); // the next batch's prev_hash
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ack;
mod batch;
mod error;
mod fsutil;
mod id;
mod key;

pub use ack::{Ack, open_ack, seal_ack};
pub use batch::{
    BatchHeader, BatchInput, ENVELOPE_VERSION, FLAG_PRIORITY, SealedBatch, VerifiedBatch, open, peek_header,
    seal,
};
pub use error::{Reject, WireError};
pub use id::{boot_id, validate_id};
pub use key::{COLLECTOR_KEY_FILE, DEVICE_KEY_FILE, Identity, KeyId, Keyring, PUBLIC_KEY_TAG, PublicKey};

/// SHA-256, the one hash of the format.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}
