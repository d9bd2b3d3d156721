//! Property-based fuzzing of [`SnapshotMeta::load`] on `snapshot.json` (run
//! with `-- fuzz`): whatever the file holds, loading ends in a description
//! that says exactly what the file says, or in an error that names the
//! file; never in a panic.

use super::fuzz_tests::{any_meta, legacy_path, names_the_problem, TempDir, KEYS};
use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fuzz_config::config;
use serde_json::{json, Value};

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn fuzz_json_load_says_what_the_file_says(
        file in json_file(),
        state in proptest::bool::weighted(0.85),
        ram in 0..8u8,
    ) {
        let dir = TempDir::new();
        std::fs::write(meta_path(&dir.0), &file).expect("write");
        // A legacy file never counts next to a JSON one.
        std::fs::write(legacy_path(&dir.0), b"garbage").expect("write");
        if state {
            std::fs::write(state_path(&dir.0), b"s").expect("write");
        }
        match ram {
            0 => {}
            1 => std::fs::create_dir(ram_path(&dir.0)).expect("mkdir"),
            _ => std::fs::write(ram_path(&dir.0), b"r").expect("write"),
        }
        let meta = match SnapshotMeta::load(&dir.0) {
            Ok(meta) => meta,
            Err(e) => {
                prop_assert!(names_the_problem(&e, META_FILE), "{}", e);
                return Ok(());
            }
        };
        prop_assert!(state && ram >= 2, "loaded without its state and RAM files");
        // Only machines this host may start.
        prop_assert!((1..=crate::vm::MAX_CPUS).contains(&meta.cpus), "cpus {}", meta.cpus);
        prop_assert!(
            (1..=crate::vm::MAX_SNAPSHOT_MEMORY_MIB).contains(&meta.memory_mib),
            "memory_mib {}",
            meta.memory_mib
        );
        // serde skips unknown keys without checking their strings' escapes,
        // so a file that loads may still hold a lone surrogate there (which
        // `Value` refuses); the fields that count were checked by the load.
        let Ok(doc) = serde_json::from_slice::<Value>(&file) else {
            return Ok(());
        };
        prop_assert_eq!(doc["format"].as_u64(), Some(u64::from(FORMAT)));
        prop_assert_eq!(doc["protocol"].as_u64(), Some(u64::from(provium_protocol::PROTOCOL_VERSION)));
        prop_assert_eq!(doc["cpus"].as_u64(), Some(u64::from(meta.cpus)));
        prop_assert_eq!(doc["memory_mib"].as_u64(), Some(meta.memory_mib));
        prop_assert_eq!(doc["created"].as_u64(), Some(meta.created));
        prop_assert_eq!(doc["transport"].as_str(), Some(meta.transport.as_str()));
        prop_assert_eq!(doc["accel"].as_str(), Some(meta.accel.as_str()));
        prop_assert_eq!(doc["vm"].as_str(), Some(meta.vm.as_str()));
    }

    #[test]
    fn fuzz_json_round_trips(meta in any_meta()) {
        let dir = TempDir::with_data();
        meta.save(&dir.0).expect("save");
        // Any name, exactly (the legacy file kept one trimmed line).
        prop_assert_eq!(SnapshotMeta::load(&dir.0).expect("loads"), meta);
    }
}

/// JSON values that are valid for some field, almost valid, or neither.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(FORMAT)),
        Just(json!(provium_protocol::PROTOCOL_VERSION)),
        // Valid after truncation to 32 bits: must not pass as 2.
        Just(json!(u64::from(u32::MAX) + 1 + u64::from(FORMAT))),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(2.0)),
        Just(json!(1e300)),
        Just(json!("2")),
        Just(Value::Null),
        Just(json!([])),
        Just(json!({ "format": 2 })),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        prop_oneof![
            Just("serial"),
            Just("vsock"),
            Just("tcg"),
            Just("kvm"),
            Just("KVM"),
            Just(" serial")
        ]
        .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        vec(any::<char>(), 0..8).prop_map(|c| Value::from(c.into_iter().collect::<String>())),
    ]
}

/// A field with a valid value (another one than in the file, mostly), a
/// number just out of its range, or an unknown field.
fn valid_field() -> impl Strategy<Value = (&'static str, Value)> {
    let name = |c: Vec<char>| Value::from(c.into_iter().collect::<String>());
    prop_oneof![
        Just(("format", json!(FORMAT))),
        Just(("protocol", json!(provium_protocol::PROTOCOL_VERSION))),
        prop_oneof![Just("serial"), Just("vsock")].prop_map(|t| ("transport", json!(t))),
        prop_oneof![Just("kvm"), Just("tcg")].prop_map(|a| ("accel", json!(a))),
        // Mostly in range (a valid field), sometimes anything.
        (1..=crate::vm::MAX_SNAPSHOT_MEMORY_MIB).prop_map(|n| ("memory_mib", json!(n))),
        any::<u64>().prop_map(|n| ("memory_mib", json!(n))),
        (1..=crate::vm::MAX_CPUS).prop_map(|n| ("cpus", json!(n))),
        (0..=128u32).prop_map(|n| ("cpus", json!(n))),
        vec(any::<char>(), 0..12).prop_map(move |c| ("vm", name(c))),
        any::<u64>().prop_map(|n| ("created", json!(n))),
        json_value().prop_map(|v| ("port", v)),
    ]
}

/// An edit of a valid `snapshot.json`.
#[derive(Debug, Clone)]
enum JsonEdit {
    /// A new value for a field (or an unknown one).
    Set(String, Value),
    /// A field left out.
    Remove(proptest::sample::Index),
    /// A field given twice (in the text: a map cannot hold it).
    Twice(String, Value),
    /// The text cut short.
    Cut(proptest::sample::Index),
    /// A byte put into the text.
    Byte(proptest::sample::Index, u8),
}

/// Whole files: valid ones with a few edits, printable text, raw bytes.
fn json_file() -> impl Strategy<Value = Vec<u8>> {
    let valid = serde_json::to_value(SnapshotMeta {
        format: FORMAT,
        protocol: provium_protocol::PROTOCOL_VERSION,
        transport: Transport::Vsock,
        accel: Accel::Kvm,
        memory_mib: 256,
        cpus: 2,
        vm: "web".into(),
        created: 1_700_000_000,
        balloon: true,
    })
    .expect("encode");
    let key = prop_oneof![
        8 => proptest::sample::select(&KEYS[..]).prop_map(String::from),
        1 => "[a-z_]{0,10}",
    ];
    let edit = prop_oneof![
        4 => valid_field().prop_map(|(k, v)| JsonEdit::Set(k.into(), v)),
        4 => (key.clone(), json_value()).prop_map(|(k, v)| JsonEdit::Set(k, v)),
        1 => any::<proptest::sample::Index>().prop_map(JsonEdit::Remove),
        1 => (key, json_value()).prop_map(|(k, v)| JsonEdit::Twice(k, v)),
        1 => any::<proptest::sample::Index>().prop_map(JsonEdit::Cut),
        1 => (any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(i, b)| JsonEdit::Byte(i, b)),
    ];
    let edited = (vec(edit, 0..4), any::<bool>()).prop_map(move |(edits, pretty)| {
        let mut doc = valid.clone();
        let mut twice = Vec::new();
        let mut text_edits = Vec::new();
        for e in edits {
            let fields = doc.as_object_mut().expect("an object");
            match e {
                JsonEdit::Set(k, v) => {
                    fields.insert(k, v);
                }
                JsonEdit::Remove(at) => {
                    if !fields.is_empty() {
                        let k = fields.keys().nth(at.index(fields.len())).cloned();
                        k.map(|k| fields.remove(&k));
                    }
                }
                JsonEdit::Twice(k, v) => twice.push((k, v)),
                other => text_edits.push(other),
            }
        }
        let mut text = if pretty {
            serde_json::to_vec_pretty(&doc).expect("encode")
        } else {
            serde_json::to_vec(&doc).expect("encode")
        };
        for (k, v) in twice {
            let end = text
                .iter()
                .rposition(|&b| b == b'}')
                .expect("a closing brace");
            let extra = format!(",{}:{v}", json!(k));
            text.splice(end..end, extra.into_bytes());
        }
        for e in text_edits {
            match e {
                JsonEdit::Cut(at) => text.truncate(at.index(text.len() + 1)),
                JsonEdit::Byte(at, b) => text.insert(at.index(text.len() + 1), b),
                _ => {}
            }
        }
        text
    });
    prop_oneof![
        6 => edited,
        1 => "[ -~]{0,60}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..200),
    ]
}
