//! The committed JSON Schema (`docs/schema/event.schema.json`) must match the types.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p picket-event --test schema`.

use std::path::PathBuf;

use picket_event::Event;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema/event.schema.json")
}

#[test]
fn committed_schema_is_current() {
    let generated = serde_json::to_string_pretty(&Event::json_schema()).unwrap() + "\n";
    let path = committed_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SCHEMA=1 to create it", path.display()));
    assert!(
        committed == generated,
        "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p picket-event --test schema` and commit it",
        path.display()
    );
}

#[test]
fn committed_schema_rejects_what_it_should() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let good = serde_json::json!({
        "schema_version": 1, "kind": "file.create", "seq": 3,
        "@timestamp": "2026-01-01T00:00:00Z", "host": {"id": "d"}, "event": {"severity": 0},
        "file": {"path": "/tmp/x"}
    });
    assert!(v.is_valid(&good), "{:?}", v.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>());
    let mut bad_kind = good.clone();
    bad_kind["kind"] = "file.created".into();
    assert!(!v.is_valid(&bad_kind));
    let mut no_host = good.clone();
    no_host.as_object_mut().unwrap().remove("host");
    assert!(!v.is_valid(&no_host));
}
