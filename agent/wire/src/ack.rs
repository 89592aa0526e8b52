//! The collector's signed acknowledgement. Byte layout in docs/wire.md, "Ack".

use crate::batch::{ALG_ED25519_SHA256, ENVELOPE_VERSION, Reader, read_id};
use crate::{Identity, PublicKey, Reject};

const MAGIC: &[u8; 4] = b"PKA1";
const DOMAIN: &[u8] = b"picket-ack-v1\0";
const SIG_LEN: usize = 64;
/// Magic, version, alg, id length + 64-byte id, batch_seq, hash, created_ns, signature.
const MAX_ACK_LEN: usize = 4 + 3 + 64 + 8 + 32 + 8 + SIG_LEN;

/// "Stored durably through `batch_seq`, whose hash is `hash`". The device checks `device_id` is
/// its own and `hash` is the hash of its own batch `batch_seq` before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub device_id: String,
    pub batch_seq: u64,
    pub hash: [u8; 32],
    /// Collector's unix time in ns.
    pub created_ns: i64,
}

/// Encode and sign an ack. An invalid `device_id` (which the collector never has: ids come from
/// verified headers) yields bytes that [`open_ack`] refuses.
pub fn seal_ack(collector: &Identity, ack: &Ack) -> Vec<u8> {
    let id = ack.device_id.as_bytes();
    let id = &id[..id.len().min(usize::from(u8::MAX))];
    let mut out = Vec::with_capacity(MAX_ACK_LEN);
    out.extend_from_slice(MAGIC);
    out.push(ENVELOPE_VERSION);
    out.push(ALG_ED25519_SHA256);
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id);
    out.extend_from_slice(&ack.batch_seq.to_be_bytes());
    out.extend_from_slice(&ack.hash);
    out.extend_from_slice(&ack.created_ns.to_be_bytes());
    let signature = collector.sign(DOMAIN, &out[MAGIC.len()..]);
    out.extend_from_slice(&signature);
    out
}

/// Verify an ack against the pinned collector key. Never panics.
pub fn open_ack(bytes: &[u8], collector_key: &PublicKey) -> Result<Ack, Reject> {
    if bytes.len() > MAX_ACK_LEN {
        return Err(Reject::TooLarge { len: bytes.len(), max: MAX_ACK_LEN });
    }
    if bytes.len() < MAGIC.len() + SIG_LEN {
        return Err(Reject::Malformed("truncated"));
    }
    let (signed, signature) = bytes.split_at(bytes.len() - SIG_LEN);
    let mut r = Reader(signed);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(Reject::Malformed("not a picket ack (bad magic)"));
    }
    let payload = r.0;
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(Reject::UnsupportedVersion(version));
    }
    if r.u8()? != ALG_ED25519_SHA256 {
        return Err(Reject::Malformed("unknown signature algorithm"));
    }
    let device_id = read_id(&mut r)?;
    let batch_seq = r.u64()?;
    let hash = r.array()?;
    let created_ns = i64::from_be_bytes(r.array()?);
    if !r.0.is_empty() {
        return Err(Reject::Malformed("trailing bytes in ack"));
    }
    if !collector_key.verify(DOMAIN, payload, signature) {
        return Err(Reject::BadSignature);
    }
    Ok(Ack { device_id, batch_seq, hash, created_ns })
}
