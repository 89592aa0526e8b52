//! The signed batch envelope: [`seal`] on the device, [`open`] at the collector. Byte layout in
//! docs/wire.md, "Batch envelope".

use serde::Deserialize;

use crate::{Identity, KeyId, Keyring, Reject, WireError, sha256, validate_id};

/// Version byte of the batch header (and of acks).
pub const ENVELOPE_VERSION: u8 = 1;
/// The batch holds alerts, actions or gap records (sent first, committed durably).
pub const FLAG_PRIORITY: u16 = 1;

pub(crate) const ALG_ED25519_SHA256: u8 = 1;
const MAGIC: &[u8; 4] = b"PKB1";
const DOMAIN: &[u8] = b"picket-batch-v1\0";
const SIG_LEN: usize = 64;
/// Magic and the u16 header length.
const PREFIX_LEN: usize = 6;
/// Header bytes before the device id: version, alg, flags, key_id, stream_id, boot_id, batch_seq,
/// first_seq, last_seq, count, prev_hash, body_hash, created_ns, id length.
const HEADER_FIXED_LEN: usize = 145;
const KNOWN_FLAGS: u16 = FLAG_PRIORITY;

/// A batch header. Its encoding is fixed (big-endian, documented byte by byte) so the signed bytes
/// are canonical without any serializer in the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    pub device_id: String,
    pub key_id: KeyId,
    /// Names the chain: 16 random bytes, new with each journal. `batch_seq` and `prev_hash`
    /// count within a stream (a new stream starts again at batch 1 with a zero `prev_hash`).
    pub stream_id: [u8; 16],
    /// `/proc/sys/kernel/random/boot_id` at sealing ([`crate::boot_id`]), zeros if unknown.
    pub boot_id: [u8; 16],
    /// 1, 2, 3, ... contiguous per stream.
    pub batch_seq: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Number of events. Seqs are strictly increasing but need not be contiguous: a priority
    /// batch carries alerts ahead of the routine events between them.
    pub count: u32,
    /// `hash` of the previous batch; zeros for batch 1.
    pub prev_hash: [u8; 32],
    /// SHA-256 of the body bytes.
    pub body_hash: [u8; 32],
    /// Unix time in ns when sealed (device clock: informative only).
    pub created_ns: i64,
    /// [`FLAG_PRIORITY`]; other bits are reserved and must be zero.
    pub flags: u16,
}

/// What the sender decides for a batch; the rest of the header comes from the identity and the
/// events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInput {
    pub stream_id: [u8; 16],
    pub boot_id: [u8; 16],
    pub batch_seq: u64,
    pub prev_hash: [u8; 32],
    pub created_ns: i64,
    pub flags: u16,
}

/// A sealed batch: `bytes` is what goes on the wire (and into the journal, so a resend is
/// byte-identical); `hash` is what the next batch's `prev_hash` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    pub header: BatchHeader,
    /// SHA-256(header bytes || signature).
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A batch whose signature, body hash and body lines all checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBatch {
    pub header: BatchHeader,
    /// SHA-256(header bytes || signature), the same value the sender computed.
    pub hash: [u8; 32],
    /// NDJSON: each event's JSON text followed by `\n`.
    pub body: Vec<u8>,
    /// Each line's `seq`, in order.
    pub seqs: Vec<u64>,
}

impl VerifiedBatch {
    /// `(seq, line without its '\n')` for each event.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let text = self.body.strip_suffix(b"\n").unwrap_or_default();
        self.seqs.iter().copied().zip(text.split(|&b| b == b'\n'))
    }
}

/// Seal `lines` (one event's JSON text each, without newline) into a signed batch. Each line
/// must be a JSON object with an unsigned integer `seq`, strictly increasing, at least one line.
/// Deterministic: the same identity, input and lines give identical bytes.
pub fn seal(identity: &Identity, batch: BatchInput, lines: &[&str]) -> Result<SealedBatch, WireError> {
    let bad = WireError::BadBatch;
    if batch.batch_seq == 0 {
        return Err(bad("batch_seq starts at 1".into()));
    }
    if batch.flags & !KNOWN_FLAGS != 0 {
        return Err(bad(format!("reserved flags {:#06x} set", batch.flags & !KNOWN_FLAGS)));
    }
    let count = u32::try_from(lines.len()).map_err(|_| bad("too many events".into()))?;
    if count == 0 {
        return Err(bad("no events".into()));
    }
    let id = identity.id().as_bytes();
    let header_len = HEADER_FIXED_LEN + id.len();
    let body_len: usize = lines.iter().map(|l| l.len() + 1).sum();
    // Write the body in place first: the header needs its hash, and this avoids a second copy.
    let body_at = PREFIX_LEN + header_len + SIG_LEN;
    let mut bytes = vec![0u8; body_at];
    bytes.reserve_exact(body_len);
    let (mut first, mut last) = (None, None);
    for (i, line) in lines.iter().enumerate() {
        if line.contains('\n') {
            return Err(bad(format!("event {i}: contains a newline")));
        }
        let seq = line_seq(line).map_err(|reason| bad(format!("event {i}: {reason}")))?;
        if let Some(prev) = last
            && seq <= prev
        {
            return Err(bad(format!("event {i}: seq {seq} does not follow {prev}")));
        }
        first.get_or_insert(seq);
        last = Some(seq);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    let header = BatchHeader {
        device_id: identity.id().to_string(),
        key_id: identity.key_id(),
        stream_id: batch.stream_id,
        boot_id: batch.boot_id,
        batch_seq: batch.batch_seq,
        first_seq: first.unwrap_or_default(),
        last_seq: last.unwrap_or_default(),
        count,
        prev_hash: batch.prev_hash,
        body_hash: sha256(&bytes[body_at..]),
        created_ns: batch.created_ns,
        flags: batch.flags,
    };
    let header_bytes = encode_header(&header);
    debug_assert_eq!(header_bytes.len(), header_len);
    let signature = identity.sign(DOMAIN, &header_bytes);
    bytes[..4].copy_from_slice(MAGIC);
    // Fits: the id is validated (≤ 64 bytes), so the header is at most 209 bytes.
    bytes[4..6].copy_from_slice(&u16::try_from(header_len).unwrap_or(u16::MAX).to_be_bytes());
    bytes[PREFIX_LEN..PREFIX_LEN + header_len].copy_from_slice(&header_bytes);
    bytes[PREFIX_LEN + header_len..body_at].copy_from_slice(&signature);
    let hash = sha256(&bytes[PREFIX_LEN..body_at]);
    Ok(SealedBatch { header, hash, bytes })
}

/// Verify a received batch: size bound first, then envelope, key lookup by (device id, key id),
/// signature, body hash and body lines. Never panics.
pub fn open(bytes: &[u8], keyring: &Keyring, max_bytes: usize) -> Result<VerifiedBatch, Reject> {
    if bytes.len() > max_bytes {
        return Err(Reject::TooLarge { len: bytes.len(), max: max_bytes });
    }
    let env = Envelope::parse(bytes)?;
    let header = env.header;
    let Some(key) = keyring.get(&header.device_id, header.key_id) else {
        return Err(if keyring.knows_device(&header.device_id) {
            Reject::UnknownKey { device: header.device_id, key_id: header.key_id }
        } else {
            Reject::UnknownDevice(header.device_id)
        });
    };
    if !key.verify(DOMAIN, env.header_bytes, env.signature) {
        return Err(Reject::BadSignature);
    }
    if sha256(env.body) != header.body_hash {
        return Err(Reject::BodyHashMismatch);
    }
    let seqs = check_body(env.body, &header).map_err(Reject::BadBody)?;
    Ok(VerifiedBatch { hash: sha256(env.signed_and_sig), header, body: env.body.to_vec(), seqs })
}

/// Parse the header without verifying anything (for reports about rejected messages).
pub fn peek_header(bytes: &[u8]) -> Result<BatchHeader, Reject> {
    Envelope::parse(bytes).map(|env| env.header)
}

struct Envelope<'a> {
    header: BatchHeader,
    header_bytes: &'a [u8],
    signature: &'a [u8],
    /// Header bytes followed by the signature: the input of the batch hash.
    signed_and_sig: &'a [u8],
    body: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, Reject> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(Reject::Malformed("not a picket batch (bad magic)"));
        }
        let header_len = usize::from(r.u16()?);
        let header_bytes = r.take(header_len)?;
        let signature = r.take(SIG_LEN)?;
        let header = decode_header(header_bytes)?;
        let signed_and_sig = &bytes[PREFIX_LEN..PREFIX_LEN + header_len + SIG_LEN];
        Ok(Envelope { header, header_bytes, signature, signed_and_sig, body: r.0 })
    }
}

fn encode_header(h: &BatchHeader) -> Vec<u8> {
    let id = h.device_id.as_bytes();
    let mut out = Vec::with_capacity(HEADER_FIXED_LEN + id.len());
    out.push(ENVELOPE_VERSION);
    out.push(ALG_ED25519_SHA256);
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.extend_from_slice(&h.key_id.0);
    out.extend_from_slice(&h.stream_id);
    out.extend_from_slice(&h.boot_id);
    out.extend_from_slice(&h.batch_seq.to_be_bytes());
    out.extend_from_slice(&h.first_seq.to_be_bytes());
    out.extend_from_slice(&h.last_seq.to_be_bytes());
    out.extend_from_slice(&h.count.to_be_bytes());
    out.extend_from_slice(&h.prev_hash);
    out.extend_from_slice(&h.body_hash);
    out.extend_from_slice(&h.created_ns.to_be_bytes());
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id);
    out
}

/// Decode exactly one header; also checks what can be checked without the key, so garbage is
/// turned away before a signature verification is spent on it.
fn decode_header(bytes: &[u8]) -> Result<BatchHeader, Reject> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(Reject::UnsupportedVersion(version));
    }
    if r.u8()? != ALG_ED25519_SHA256 {
        return Err(Reject::Malformed("unknown signature algorithm"));
    }
    let flags = r.u16()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Reject::Malformed("reserved flag set"));
    }
    let key_id = KeyId(r.array()?);
    let stream_id = r.array()?;
    let boot_id = r.array()?;
    let batch_seq = r.u64()?;
    let first_seq = r.u64()?;
    let last_seq = r.u64()?;
    let count = r.u32()?;
    let prev_hash = r.array()?;
    let body_hash = r.array()?;
    let created_ns = i64::from_be_bytes(r.array()?);
    let device_id = read_id(&mut r)?;
    if !r.0.is_empty() {
        return Err(Reject::Malformed("trailing bytes after header"));
    }
    if batch_seq == 0 {
        return Err(Reject::Malformed("batch_seq 0"));
    }
    // count ≥ 1 seqs, strictly increasing from first_seq to last_seq.
    if count == 0 || first_seq > last_seq || u64::from(count - 1) > last_seq - first_seq {
        return Err(Reject::Malformed("count and seq range disagree"));
    }
    Ok(BatchHeader {
        device_id,
        key_id,
        stream_id,
        boot_id,
        batch_seq,
        first_seq,
        last_seq,
        count,
        prev_hash,
        body_hash,
        created_ns,
        flags,
    })
}

/// u8 length, then a valid id.
pub(crate) fn read_id(r: &mut Reader<'_>) -> Result<String, Reject> {
    let len = usize::from(r.u8()?);
    let raw = r.take(len)?;
    std::str::from_utf8(raw)
        .ok()
        .filter(|id| validate_id(id).is_ok())
        .map(str::to_string)
        .ok_or(Reject::Malformed("invalid device id"))
}

/// The body is NDJSON matching the header; returns the seqs.
fn check_body(body: &[u8], header: &BatchHeader) -> Result<Vec<u64>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    let text = text.strip_suffix('\n').ok_or("body does not end with a newline")?;
    let mut seqs: Vec<u64> = Vec::new();
    for line in text.split('\n') {
        if seqs.len() >= usize::try_from(header.count).unwrap_or(usize::MAX) {
            return Err("more lines than count");
        }
        let seq = line_seq(line)?;
        if seqs.last().is_some_and(|&prev| seq <= prev) {
            return Err("seqs not strictly increasing");
        }
        seqs.push(seq);
    }
    if seqs.len() != usize::try_from(header.count).unwrap_or(usize::MAX) {
        return Err("fewer lines than count");
    }
    if seqs.first() != Some(&header.first_seq) || seqs.last() != Some(&header.last_seq) {
        return Err("first_seq or last_seq does not match the lines");
    }
    Ok(seqs)
}

/// The `seq` of one line, which must be a JSON object. Only `seq` is decoded; the rest is
/// validated as JSON and skipped. A duplicate `seq` key is refused (it would be ambiguous).
fn line_seq(line: &str) -> Result<u64, &'static str> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    // serde would also read a struct from a JSON array (`[5]`); only objects are events.
    if !line.trim_start().starts_with('{') {
        return Err("line is not a JSON object");
    }
    serde_json::from_str::<Seq>(line)
        .map(|s| s.seq)
        .map_err(|_| "line is not a JSON object with an unsigned integer \"seq\"")
}

/// Bounded reads: every length is checked against what is left, so no input can panic.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        if n > self.0.len() {
            return Err(Reject::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Reject> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Reject> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Reject> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Reject> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sign an arbitrary body under a header that claims `(first, last, count)`: what a buggy or
    /// malicious device could send, signature and body hash valid.
    fn seal_raw(id: &Identity, body: &[u8], first_seq: u64, last_seq: u64, count: u32) -> Vec<u8> {
        let header = BatchHeader {
            device_id: id.id().to_string(),
            key_id: id.key_id(),
            stream_id: [3; 16],
            boot_id: [0; 16],
            batch_seq: 1,
            first_seq,
            last_seq,
            count,
            prev_hash: [0; 32],
            body_hash: sha256(body),
            created_ns: 0,
            flags: 0,
        };
        let header_bytes = encode_header(&header);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&u16::try_from(header_bytes.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&header_bytes);
        out.extend_from_slice(&id.sign(DOMAIN, &header_bytes));
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn open_refuses_signed_batches_with_bad_bodies() {
        let id = Identity::generate("router-7").unwrap();
        let mut ring = Keyring::new();
        ring.insert(id.id(), id.public_key());
        let refused = |body: &[u8], first, last, count| match open(
            &seal_raw(&id, body, first, last, count),
            &ring,
            1 << 20,
        ) {
            Err(Reject::BadBody(reason)) => reason,
            other => panic!("{:?} not refused as a bad body: {other:?}", String::from_utf8_lossy(body)),
        };
        let ok = b"{\"seq\":1}\n{\"seq\":3}\n";
        assert!(open(&seal_raw(&id, ok, 1, 3, 2), &ring, 1 << 20).is_ok());
        assert_eq!(refused(b"{\"seq\":3}\n{\"seq\":3}\n", 3, 4, 2), "seqs not strictly increasing");
        assert_eq!(refused(b"{\"seq\":3}\n{\"seq\":1}\n", 1, 3, 2), "seqs not strictly increasing");
        assert_eq!(refused(ok, 1, 3, 1), "more lines than count");
        assert_eq!(refused(b"{\"seq\":1}\n", 1, 3, 2), "fewer lines than count");
        assert_eq!(refused(ok, 1, 4, 2), "first_seq or last_seq does not match the lines");
        assert_eq!(refused(b"{\"seq\":1}\nnot json\n", 1, 3, 2), "line is not a JSON object");
        assert_eq!(refused(b"{\"seq\":1}\n\n", 1, 3, 2), "line is not a JSON object");
        assert!(refused(b"{\"seq\":1}\n{\"sq\":3}\n", 1, 3, 2).contains("seq"));
        assert_eq!(refused(b"{\"seq\":1}", 1, 1, 1), "body does not end with a newline");
        assert_eq!(refused(b"", 1, 1, 1), "body does not end with a newline");
        assert_eq!(refused(b"{\"seq\":1,\"x\":\"\xff\"}\n", 1, 1, 1), "body is not UTF-8");
    }

    #[test]
    fn header_claims_are_checked_before_the_signature() {
        let id = Identity::generate("router-7").unwrap();
        let ring = Keyring::new();
        for (first, last, count) in [(1, 1, 0), (5, 4, 1), (1, 2, 3)] {
            let err = open(&seal_raw(&id, b"{\"seq\":1}\n", first, last, count), &ring, 1 << 20).unwrap_err();
            assert_eq!(err, Reject::Malformed("count and seq range disagree"));
        }
    }
}
