//! Keys: the signing [`Identity`] (a PKCS#8 file on disk), [`PublicKey`] and its [`KeyId`], and
//! the collector's [`Keyring`] of enrolled device keys.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::fsutil::{self, hex};
use crate::{WireError, validate_id};

/// The device's key file name in its data dir.
pub const DEVICE_KEY_FILE: &str = "device.key";
/// The collector's key file name (it signs acks).
pub const COLLECTOR_KEY_FILE: &str = "collector.key";
/// First word of a public key line.
pub const PUBLIC_KEY_TAG: &str = "picket-ed25519";

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// A PEM Ed25519 key is ~170 bytes; anything near this is not a key.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// Bound on one `*.pub` file, so a stray large file cannot balloon the collector.
const MAX_PUB_FILE: u64 = 1024 * 1024;

/// First 8 bytes of SHA-256(public key): names a key in a batch header without carrying it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Any 32 bytes: a value that is not a curve point simply never verifies.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn key_id(&self) -> KeyId {
        let digest = crate::sha256(&self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Standard base64 (with padding) of the 32 bytes, as in key lines.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub(crate) fn verify(&self, domain: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let mut signed = Vec::with_capacity(domain.len() + message.len());
        signed.extend_from_slice(domain);
        signed.extend_from_slice(message);
        UnparsedPublicKey::new(&ED25519, &self.0).verify(&signed, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A signing identity: an Ed25519 key pair and the id it signs as (device id or collector id).
pub struct Identity {
    id: String,
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("id", &self.id).field("key_id", &self.key_id()).finish()
    }
}

impl Identity {
    /// Load `dir/file_name`, or create it on first use (see docs/wire.md, "Key files"). `dir` is
    /// created with mode 0700 if missing; the key file is written once with mode 0600 and never
    /// replaced.
    pub fn load_or_create(dir: &Path, file_name: &str, id: &str) -> Result<Identity, WireError> {
        validate_id(id)?;
        let path = dir.join(file_name);
        let exists = fs::symlink_metadata(&path).is_ok();
        if !exists {
            fsutil::create_private_dir(dir).map_err(WireError::io(dir))?;
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                WireError::BadKey { path: path.clone(), reason: "system random source failed".into() }
            })?;
            match fsutil::write_new_file(dir, file_name, pem_encode(pkcs8.as_ref()).as_bytes(), 0o600) {
                // AlreadyExists: another process won the race; load its key.
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(WireError::io(&path)(e)),
                _ => {}
            }
        }
        Identity::load(&path, id)
    }

    /// Load an existing key file (PEM or DER PKCS#8). Refused if group or others have any access.
    pub fn load(path: &Path, id: &str) -> Result<Identity, WireError> {
        validate_id(id)?;
        // Check the mode on the open file, not the path, so the check and the read see one file.
        let mut file = File::open(path).map_err(WireError::io(path))?;
        let meta = file.metadata().map_err(WireError::io(path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(WireError::KeyPermissions { path: path.to_path_buf(), mode });
        }
        let bad = |reason: &str| WireError::BadKey { path: path.to_path_buf(), reason: reason.to_string() };
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        let raw = fsutil::read_capped(&mut file, MAX_KEY_FILE).map_err(WireError::io(path))?;
        let der = decode_key_file(&raw).map_err(bad)?;
        // v2 (ring's own output) is checked for a consistent public key; v1 (openssl genpkey)
        // carries none, and ring derives it from the seed either way.
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Identity::from_pair(id, pair))
    }

    /// A fresh in-memory identity (tests, benches, tools); nothing is written.
    pub fn generate(id: &str) -> Result<Identity, WireError> {
        validate_id(id)?;
        let bad = || WireError::BadKey { path: PathBuf::new(), reason: "key generation failed".into() };
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| bad())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| bad())?;
        Ok(Identity::from_pair(id, pair))
    }

    fn from_pair(id: &str, pair: Ed25519KeyPair) -> Identity {
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Identity { id: id.to_string(), pair, public: PublicKey(public) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// `picket-ed25519 <base64 of the 32 bytes> <id>\n`: one line of a collector `*.pub` file.
    pub fn public_key_line(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {} {}\n", self.public.to_base64(), self.id)
    }

    /// Ed25519 over `domain || message` (domain separation: a batch signature can never pass as
    /// an ack signature or the reverse).
    pub(crate) fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        let mut signed = Vec::with_capacity(domain.len() + message.len());
        signed.extend_from_slice(domain);
        signed.extend_from_slice(message);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(&signed).as_ref());
        sig
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = String::with_capacity(b64.len() + 80);
    out.push_str(PEM_BEGIN);
    out.push('\n');
    // base64 output is ASCII, so 64-byte chunks are whole characters.
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// PEM (`BEGIN PRIVATE KEY`) or raw DER (starts with a SEQUENCE tag).
fn decode_key_file(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&0x30) {
        return Ok(raw.to_vec());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "neither PEM nor DER")?;
    let start = text.find(PEM_BEGIN).ok_or("no `BEGIN PRIVATE KEY` line")? + PEM_BEGIN.len();
    let len = text[start..].find(PEM_END).ok_or("no `END PRIVATE KEY` line")?;
    let b64: String = text[start..start + len].split_ascii_whitespace().collect();
    BASE64.decode(b64).map_err(|_| "bad base64 in PEM")
}

/// Public keys the collector accepts, by device id (a device may have several during rotation).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, Vec<PublicKey>>,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Load every `*.pub` file of `dir` (sorted by name). Every bad file or line is returned as
    /// an error naming it; good lines load regardless. A file writable by group or others is
    /// refused whole: whoever can write it can enroll a device.
    pub fn load_dir(dir: &Path) -> (Keyring, Vec<WireError>) {
        let mut ring = Keyring::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return (ring, vec![WireError::io(dir)(e)]),
        };
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) if entry.path().extension().is_some_and(|ext| ext == "pub") => {
                    paths.push(entry.path())
                }
                Ok(_) => {}
                Err(e) => errors.push(WireError::io(dir)(e)),
            }
        }
        paths.sort();
        for path in paths {
            let text = match read_pub_file(&path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse_key_line(line) {
                    Ok((id, key)) => ring.insert(&id, key),
                    Err(reason) => {
                        errors.push(WireError::PubKeyFile { path: path.clone(), line: n + 1, reason })
                    }
                }
            }
        }
        (ring, errors)
    }

    pub fn insert(&mut self, id: &str, key: PublicKey) {
        let keys = self.keys.entry(id.to_string()).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// Parse one `picket-ed25519 <base64> <id>` line (surrounding whitespace ignored).
    pub fn parse_line(line: &str) -> Result<(String, PublicKey), WireError> {
        parse_key_line(line.trim()).map_err(WireError::PubKeyLine)
    }

    pub fn get(&self, id: &str, key_id: KeyId) -> Option<&PublicKey> {
        self.keys.get(id)?.iter().find(|k| k.key_id() == key_id)
    }

    pub fn knows_device(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Number of keys (not devices).
    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read_pub_file(path: &Path) -> Result<String, WireError> {
    let mut file = File::open(path).map_err(WireError::io(path))?;
    let meta = file.metadata().map_err(WireError::io(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(WireError::KeyPermissions { path: path.to_path_buf(), mode });
    }
    let raw = fsutil::read_capped(&mut file, MAX_PUB_FILE).map_err(WireError::io(path))?;
    String::from_utf8(raw).map_err(|_| WireError::PubKeyFile {
        path: path.to_path_buf(),
        line: 1,
        reason: "file is not UTF-8 text".into(),
    })
}

fn parse_key_line(line: &str) -> Result<(String, PublicKey), String> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(PUBLIC_KEY_TAG), Some(b64), Some(id), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("expected `{PUBLIC_KEY_TAG} <base64 key> <id>`"));
    };
    let bytes = BASE64.decode(b64).map_err(|_| "key is not valid base64".to_string())?;
    let key: [u8; 32] =
        bytes.try_into().map_err(|b: Vec<u8>| format!("key is {} bytes, expected 32", b.len()))?;
    validate_id(id).map_err(|e| e.to_string())?;
    Ok((id.to_string(), PublicKey(key)))
}
