//! Behaviour of the envelope, keys and ids as the uplink and the collector rely on it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use picket_wire::*;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn input(batch_seq: u64) -> BatchInput {
    BatchInput {
        stream_id: [5; 16],
        boot_id: [7; 16],
        batch_seq,
        prev_hash: [0; 32],
        created_ns: 1_700_000_000_000_000_000,
        flags: 0,
    }
}

fn device() -> (Identity, Keyring) {
    let id = Identity::generate("router-7").unwrap();
    let mut ring = Keyring::new();
    ring.insert(id.id(), id.public_key());
    (id, ring)
}

const LINES: [&str; 3] = [
    r#"{"seq":10,"kind":"auth.failure","user":{"name":"root"}}"#,
    r#"{"kind":"alert","seq":12}"#,
    r#"{"seq":13,"kind":"file.create","file":{"path":"/etc/x\ny"}}"#,
];

fn small_batch(id: &Identity) -> SealedBatch {
    seal(id, input(1), &LINES[..2]).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn seal_then_open_round_trips_header_lines_and_hash() {
    let (id, ring) = device();
    let sealed = seal(&id, BatchInput { flags: FLAG_PRIORITY, ..input(1) }, &LINES).unwrap();
    let h = &sealed.header;
    assert_eq!((h.first_seq, h.last_seq, h.count, h.flags), (10, 13, 3, FLAG_PRIORITY));
    assert_eq!(h.key_id, id.key_id());

    let batch = open(&sealed.bytes, &ring, MAX).unwrap();
    assert_eq!(batch.header, sealed.header);
    assert_eq!(batch.hash, sealed.hash);
    assert_eq!(batch.seqs, [10, 12, 13]);
    let lines: Vec<(u64, &[u8])> = batch.lines().collect();
    let expected: Vec<(u64, &[u8])> = [10, 12, 13].into_iter().zip(LINES.map(str::as_bytes)).collect();
    assert_eq!(lines, expected);
    assert_eq!(peek_header(&sealed.bytes).unwrap(), sealed.header);

    // The chain: batch 2 carries batch 1's hash.
    let next = seal(&id, BatchInput { prev_hash: sealed.hash, ..input(2) }, &[r#"{"seq":14}"#]).unwrap();
    assert_eq!(open(&next.bytes, &ring, MAX).unwrap().header.prev_hash, sealed.hash);
}

#[test]
fn sealing_is_deterministic() {
    let (id, _) = device();
    let a = seal(&id, input(5), &LINES).unwrap();
    let b = seal(&id, input(5), &LINES).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.bytes, seal(&id, input(6), &LINES).unwrap().bytes);
}

#[test]
fn flipping_any_single_byte_is_rejected() {
    let (id, ring) = device();
    let sealed = small_batch(&id);
    for pos in 0..sealed.bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = sealed.bytes.clone();
            bytes[pos] ^= mask;
            assert!(open(&bytes, &ring, MAX).is_err(), "byte {pos} ^ {mask:#x} accepted");
        }
    }
}

#[test]
fn truncated_at_every_length_is_rejected() {
    let (id, ring) = device();
    let sealed = small_batch(&id);
    for len in 0..sealed.bytes.len() {
        assert!(open(&sealed.bytes[..len], &ring, MAX).is_err(), "accepted at length {len}");
    }
    let mut longer = sealed.bytes.clone();
    longer.push(b'\n');
    assert_eq!(open(&longer, &ring, MAX).unwrap_err(), Reject::BodyHashMismatch);
}

#[test]
fn unknown_device_and_unknown_key_are_rejected_with_their_reason() {
    let (id, _) = device();
    let sealed = small_batch(&id);

    let err = open(&sealed.bytes, &Keyring::new(), MAX).unwrap_err();
    assert_eq!(err, Reject::UnknownDevice("router-7".into()));
    assert_eq!(err.as_str(), "unknown_device");

    let mut other = Keyring::new();
    other.insert("router-7", Identity::generate("x").unwrap().public_key());
    let err = open(&sealed.bytes, &other, MAX).unwrap_err();
    assert_eq!(err, Reject::UnknownKey { device: "router-7".into(), key_id: id.key_id() });
    assert_eq!(err.as_str(), "unknown_key");

    // The key is bound to the id: the same key enrolled for another device does not help.
    let mut elsewhere = Keyring::new();
    elsewhere.insert("router-8", id.public_key());
    assert_eq!(open(&sealed.bytes, &elsewhere, MAX).unwrap_err().as_str(), "unknown_device");
}

#[test]
fn signature_by_another_key_is_rejected() {
    let (enrolled, ring) = device();
    let impostor = Identity::generate("router-7").unwrap();
    let mut bytes = small_batch(&impostor).bytes;
    // Claim the enrolled key: magic (4) + header_len (2) + version, alg, flags (4).
    bytes[10..18].copy_from_slice(&enrolled.key_id().0);
    let err = open(&bytes, &ring, MAX).unwrap_err();
    assert_eq!(err, Reject::BadSignature);
    assert_eq!(err.as_str(), "bad_signature");
}

#[test]
fn oversized_is_rejected_before_parsing() {
    let (id, ring) = device();
    let garbage = vec![0u8; 101];
    assert_eq!(open(&garbage, &ring, 100).unwrap_err(), Reject::TooLarge { len: 101, max: 100 });
    let sealed = small_batch(&id);
    let max = sealed.bytes.len() - 1;
    assert_eq!(open(&sealed.bytes, &ring, max).unwrap_err().as_str(), "too_large");
    assert!(open(&sealed.bytes, &ring, sealed.bytes.len()).is_ok());
}

#[test]
fn malformed_envelopes_say_why() {
    let (id, ring) = device();
    assert_eq!(open(b"", &ring, MAX).unwrap_err().as_str(), "malformed");
    assert_eq!(open(b"PKA1\0\0", &ring, MAX).unwrap_err().as_str(), "malformed");
    let mut bytes = small_batch(&id).bytes;
    bytes[6] = 2;
    assert_eq!(open(&bytes, &ring, MAX).unwrap_err(), Reject::UnsupportedVersion(2));
    assert_eq!(peek_header(&bytes).unwrap_err().as_str(), "unsupported_version");
}

#[test]
fn seal_refuses_bad_bodies() {
    let (id, _) = device();
    let refused = |lines: &[&str]| match seal(&id, input(1), lines) {
        Err(WireError::BadBatch(msg)) => msg,
        other => panic!("{lines:?} sealed: {other:?}"),
    };
    assert!(refused(&[]).contains("no events"));
    assert!(refused(&[r#"{"seq":2}"#, r#"{"seq":2}"#]).contains("does not follow"));
    assert!(refused(&[r#"{"seq":3}"#, r#"{"seq":2}"#]).contains("does not follow"));
    assert!(refused(&["not json"]).contains("event 0"));
    assert!(refused(&[r#"{"seq":1}"#, r#"{"seq":2"#]).contains("event 1"));
    assert!(refused(&["[5]"]).contains("JSON object"));
    assert!(refused(&[r#"{"kind":"alert"}"#]).contains("seq"));
    assert!(refused(&[r#"{"seq":-1}"#]).contains("seq"));
    assert!(refused(&[r#"{"seq":1.5}"#]).contains("seq"));
    assert!(refused(&[r#"{"seq":"1"}"#]).contains("seq"));
    assert!(refused(&[r#"{"seq":1,"seq":2}"#]).contains("seq"));
    assert!(refused(&["{\"seq\":1,\n\"a\":2}"]).contains("newline"));
    assert!(matches!(seal(&id, input(0), &LINES), Err(WireError::BadBatch(_))));
    assert!(matches!(seal(&id, BatchInput { flags: 2, ..input(1) }, &LINES), Err(WireError::BadBatch(_))));
}

#[test]
fn ack_round_trips_and_a_forged_ack_is_rejected() {
    let collector = Identity::generate("collector").unwrap();
    let ack = Ack { device_id: "router-7".into(), batch_seq: 42, hash: [9; 32], created_ns: -5 };
    let bytes = seal_ack(&collector, &ack);
    assert_eq!(open_ack(&bytes, &collector.public_key()).unwrap(), ack);
    assert_eq!(bytes, seal_ack(&collector, &ack));

    let forger = Identity::generate("collector").unwrap();
    let forged = seal_ack(&forger, &Ack { batch_seq: 1_000_000, ..ack.clone() });
    assert_eq!(open_ack(&forged, &collector.public_key()).unwrap_err(), Reject::BadSignature);

    for pos in 0..bytes.len() {
        let mut b = bytes.clone();
        b[pos] ^= 0x01;
        assert!(open_ack(&b, &collector.public_key()).is_err(), "ack byte {pos} flipped accepted");
    }
    for len in 0..bytes.len() {
        assert!(open_ack(&bytes[..len], &collector.public_key()).is_err());
    }
}

#[test]
fn a_batch_signature_never_passes_as_an_ack_or_the_reverse() {
    let (id, ring) = device();
    let batch = small_batch(&id);
    assert!(open_ack(&batch.bytes, &id.public_key()).is_err());
    let ack =
        seal_ack(&id, &Ack { device_id: "router-7".into(), batch_seq: 1, hash: batch.hash, created_ns: 0 });
    assert_eq!(open(&ack, &ring, MAX).unwrap_err().as_str(), "malformed");
}

#[test]
fn key_file_is_created_0600_once_and_reloads_the_same_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/keys");
    let first = Identity::load_or_create(&dir, DEVICE_KEY_FILE, "router-7").unwrap();
    let path = dir.join(DEVICE_KEY_FILE);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700 & mode(&dir)); // never more than 0700
    assert_eq!(mode(&dir) & 0o077, 0);
    assert!(fs::read_to_string(&path).unwrap().starts_with("-----BEGIN PRIVATE KEY-----\n"));

    let again = Identity::load_or_create(&dir, DEVICE_KEY_FILE, "router-7").unwrap();
    assert_eq!(again.public_key(), first.public_key());
    assert_eq!(Identity::load(&path, "router-7").unwrap().key_id(), first.key_id());
    // Only the key file is left: the temp file is gone.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

    let line = first.public_key_line();
    assert!(line.starts_with("picket-ed25519 ") && line.ends_with(" router-7\n"));
    assert_eq!(Keyring::parse_line(&line).unwrap(), ("router-7".to_string(), first.public_key()));
    assert_eq!(first.key_id().to_string().len(), 16);
    assert!(!format!("{first:?}").contains("PRIVATE"));
}

#[test]
fn group_readable_key_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    Identity::load_or_create(tmp.path(), COLLECTOR_KEY_FILE, "collector").unwrap();
    let path = tmp.path().join(COLLECTOR_KEY_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = Identity::load_or_create(tmp.path(), COLLECTOR_KEY_FILE, "collector").unwrap_err();
    assert!(matches!(err, WireError::KeyPermissions { mode: 0o640, .. }));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("chmod 600"), "{msg}");
    // The refused key is still there, untouched.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Identity::load(&path, "collector").is_ok());
}

#[test]
fn bad_key_files_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("device.key");
    fs::write(&path, "not a key").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = Identity::load(&path, "router-7").unwrap_err();
    assert!(matches!(err, WireError::BadKey { .. }) && err.to_string().contains("device.key"), "{err}");
    let missing = Identity::load(&tmp.path().join("nope.key"), "router-7").unwrap_err();
    assert!(matches!(missing, WireError::Io { .. }));
    assert!(matches!(Identity::generate("bad/id"), Err(WireError::BadId { .. })));
}

#[test]
fn pkcs8_v1_key_from_openssl_loads() {
    // RFC 8410 §10.3 example private key (the form `openssl genpkey -algorithm ed25519` writes).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("device.key");
    let pem = "-----BEGIN PRIVATE KEY-----\n\
               MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
               -----END PRIVATE KEY-----\n";
    fs::write(&path, pem).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let id = Identity::load(&path, "router-7").unwrap();
    assert_eq!(
        id.public_key_line(),
        "picket-ed25519 Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE= router-7\n"
    );
}

#[test]
fn ids_follow_the_agent_device_id_rule() {
    for good in ["router-7.lab_A", "aa:bb:cc", &"a".repeat(128)] {
        assert!(validate_id(good).is_ok(), "{good:?}");
    }
    for bad in ["", "a".repeat(129).as_str(), "a/b", "a b", "a+b", "a#", "..", ".hidden", "ü"] {
        assert!(matches!(validate_id(bad), Err(WireError::BadId { .. })), "{bad:?}");
    }
}

#[test]
fn keyring_load_dir_reports_bad_lines_with_file_and_line_and_loads_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Identity::generate("router-1").unwrap();
    let b = Identity::generate("router-2").unwrap();
    let b2 = Identity::generate("router-2").unwrap();
    let good = format!("# enrolled 2026-01-02\n\n{}  {}", a.public_key_line(), b.public_key_line());
    fs::write(tmp.path().join("good.pub"), good).unwrap();
    let bad = format!(
        "{}picket-ed25519 AAAA router-3\nssh-ed25519 AAAA x\npicket-ed25519 {} bad/id\n",
        b2.public_key_line(),
        a.public_key().to_base64()
    );
    fs::write(tmp.path().join("mixed.pub"), bad).unwrap();
    fs::write(tmp.path().join("notes.txt"), "ignored").unwrap();
    let open_file = tmp.path().join("open.pub");
    fs::write(&open_file, a.public_key_line()).unwrap();
    fs::set_permissions(&open_file, fs::Permissions::from_mode(0o666)).unwrap();

    let (ring, errors) = Keyring::load_dir(tmp.path());
    assert_eq!(ring.len(), 3);
    assert!(ring.knows_device("router-1") && ring.knows_device("router-2") && !ring.knows_device("router-3"));
    assert_eq!(ring.get("router-2", b2.key_id()), Some(&b2.public_key()));
    assert_eq!(ring.get("router-1", b.key_id()), None);

    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    let mixed = tmp.path().join("mixed.pub").display().to_string();
    assert!(msgs[0].starts_with(&format!("{mixed}:2: key is 3 bytes")), "{}", msgs[0]);
    assert!(msgs[1].starts_with(&format!("{mixed}:3: expected")), "{}", msgs[1]);
    assert!(msgs[2].starts_with(&format!("{mixed}:4: invalid id")), "{}", msgs[2]);
    assert!(matches!(errors[3], WireError::KeyPermissions { .. }));

    let (empty, errors) = Keyring::load_dir(&tmp.path().join("missing"));
    assert!(empty.is_empty() && matches!(errors[..], [WireError::Io { .. }]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (_, ring) = device();
        prop_assert!(open(&bytes, &ring, MAX).is_err());
        let _ = peek_header(&bytes);
        let _ = open_ack(&bytes, &Identity::generate("c").unwrap().public_key());
    }

    #[test]
    fn open_never_accepts_a_mutated_batch(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (id, ring) = device();
        let sealed = small_batch(&id);
        let mut bytes = sealed.bytes.clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = peek_header(&bytes);
        if let Ok(batch) = open(&bytes, &ring, MAX) {
            // Only a no-op mutation may pass.
            prop_assert_eq!(&bytes, &sealed.bytes);
            prop_assert_eq!(batch.hash, sealed.hash);
        }
    }
}
