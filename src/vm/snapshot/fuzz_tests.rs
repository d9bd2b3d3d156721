//! Property-based fuzzing of [`SnapshotMeta::load`] (run with `-- fuzz`):
//! whatever the legacy `snapshot.meta` of a directory without
//! `snapshot.json` holds, loading ends in a description that says exactly
//! what the file says (and a `snapshot.json` that says the same), or in an
//! error that names the file; never in a panic. `snapshot.json` itself:
//! [`super::fuzz_json`].

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fuzz_config::config;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, empty directory per case (removed on drop).
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    /// With `state` and `ram` files.
    pub(super) fn with_data() -> TempDir {
        let dir = TempDir::new();
        std::fs::write(state_path(&dir.0), b"s").expect("write");
        std::fs::write(ram_path(&dir.0), b"r").expect("write");
        dir
    }

    pub(super) fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "provium-fuzz-meta-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The legacy description file.
/// Any description this rock could write (current format and protocol).
pub(super) fn any_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        any::<bool>(),
        any::<bool>(),
        1..=crate::vm::MAX_SNAPSHOT_MEMORY_MIB,
        1..=crate::vm::MAX_CPUS,
        vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect::<String>()),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(serial, kvm, memory_mib, cpus, vm, created, balloon)| SnapshotMeta {
                format: FORMAT,
                protocol: provium_protocol::PROTOCOL_VERSION,
                transport: if serial {
                    Transport::Serial
                } else {
                    Transport::Vsock
                },
                accel: if kvm { Accel::Kvm } else { Accel::Tcg },
                memory_mib,
                cpus,
                vm,
                created,
                balloon,
            },
        )
}

pub(super) fn legacy_path(dir: &Path) -> PathBuf {
    dir.join(LEGACY_META_FILE)
}

/// Whether a refusal names what is wrong: the description file, a missing
/// data file, or another version.
pub(super) fn names_the_problem(err: &SnapshotError, file: &str) -> bool {
    let msg = err.to_string();
    match err {
        SnapshotError::NotASnapshot { why, .. } => {
            why.contains(file) || why.ends_with(" is missing")
        }
        SnapshotError::Version { .. } => msg.contains("another provium"),
    }
}

pub(super) const KEYS: [&str; 8] = [
    "format",
    "protocol",
    "transport",
    "accel",
    "memory_mib",
    "cpus",
    "vm",
    "created",
];

/// Values that are valid for some key, almost valid, or neither.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(FORMAT.to_string()),
        Just(provium_protocol::PROTOCOL_VERSION.to_string()),
        // Valid after truncation to 32 bits: must not pass as 2.
        Just((u64::from(u32::MAX) + 1 + u64::from(FORMAT)).to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("+2".to_string()),
        Just("0x2".to_string()),
        Just(String::new()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        // In range for memory_mib and cpus, and around their ends.
        (1..=crate::vm::MAX_SNAPSHOT_MEMORY_MIB).prop_map(|n| n.to_string()),
        (0..=128u32).prop_map(|n| n.to_string()),
        prop_oneof![Just("serial"), Just("vsock"), Just("tcg"), Just("kvm")].prop_map(String::from),
        "[ -~]{0,12}",
        vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
}

/// One line: a known key (or not), spaced any way, maybe no `=`.
fn line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        8 => proptest::sample::select(&KEYS[..]).prop_map(String::from),
        1 => "[a-z_ =]{0,10}",
    ];
    let space = prop_oneof![Just(""), Just(" "), Just("\t"), Just("  ")];
    (
        space.clone(),
        key,
        space.clone(),
        any::<bool>(),
        space,
        value(),
    )
        .prop_map(|(a, k, b, eq, c, v)| {
            let sep = if eq { "=" } else { " " };
            format!("{a}{k}{b}{sep}{c}{v}")
        })
}

/// An edit of one line of a valid file.
#[derive(Debug, Clone)]
enum Edit {
    /// A new value for its key.
    Value(String),
    /// Its number plus 2^32 (what a 32-bit field must not wrap back).
    Wrap,
    Drop,
    /// Another line before it.
    Insert(String),
}

/// Whole files: valid ones with a few lines edited, generated lines,
/// and raw bytes (not even UTF-8).
fn meta_file() -> impl Strategy<Value = Vec<u8>> {
    let valid = legacy::render(&SnapshotMeta {
        format: FORMAT,
        protocol: provium_protocol::PROTOCOL_VERSION,
        transport: Transport::Vsock,
        accel: Accel::Kvm,
        memory_mib: 256,
        cpus: 2,
        vm: "web".into(),
        created: 1_700_000_000,
        balloon: true,
    });
    let lines: Vec<String> = valid.lines().map(String::from).collect();
    let edit = prop_oneof![
        3 => value().prop_map(Edit::Value),
        2 => Just(Edit::Wrap),
        1 => Just(Edit::Drop),
        2 => line().prop_map(Edit::Insert),
    ];
    let edited = (
        vec((any::<proptest::sample::Index>(), edit), 1..4),
        any::<bool>(),
    )
        .prop_map(move |(edits, crlf)| {
            let mut out = lines.clone();
            for (at, e) in edits {
                if out.is_empty() {
                    break;
                }
                let i = at.index(out.len());
                let key = out[i].split('=').next().unwrap_or("").to_string();
                match e {
                    Edit::Value(v) => out[i] = format!("{key}= {v}"),
                    Edit::Wrap => {
                        if let Some(n) =
                            field(&out[i], key.trim()).and_then(|v| v.parse::<u64>().ok())
                        {
                            out[i] = format!("{key}= {}", n.wrapping_add(1 << 32));
                        }
                    }
                    Edit::Drop => {
                        out.remove(i);
                    }
                    Edit::Insert(l) => out.insert(i, l),
                }
            }
            let nl = if crlf { "\r\n" } else { "\n" };
            out.join(nl).into_bytes()
        });
    prop_oneof![
        4 => edited,
        2 => vec(line(), 0..12).prop_map(|l| l.join("\n").into_bytes()),
        1 => vec(any::<u8>(), 0..200),
    ]
}

/// The value of the first `key = value` line of `text` for `key`, as
/// `load` reads it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// Found by `fuzz_meta_load_says_what_the_file_says`: 2^32 + 2 was
/// read as format 2. (The JSON reader is held to the same.)
#[test]
fn fuzz_regression_wrapped_numbers_are_refused() {
    let good = SnapshotMeta {
        format: FORMAT,
        protocol: provium_protocol::PROTOCOL_VERSION,
        transport: Transport::Serial,
        accel: Accel::Tcg,
        memory_mib: 64,
        cpus: 1,
        vm: "a".into(),
        created: 1,
        balloon: false,
    };
    for (key, value) in [
        ("format", 1u64 << 32 | 2),
        ("protocol", 1 << 32 | 2),
        ("cpus", 1 << 32 | 1),
    ] {
        let dir = TempDir::with_data();
        let text: String = legacy::render(&good)
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if k.trim() == key => format!("{key} = {value}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(legacy_path(&dir.0), text).expect("write");
        let err = SnapshotMeta::load(&dir.0).expect_err(key);
        assert!(err.to_string().contains("out of range"), "{err}");
        // The same in JSON.
        let mut doc = serde_json::to_value(&good).expect("encode");
        doc[key] = json!(value);
        std::fs::write(meta_path(&dir.0), doc.to_string()).expect("write");
        let err = SnapshotMeta::load(&dir.0).expect_err(key).to_string();
        let want = format!("snapshot.json: {key} is out of range");
        assert!(err.contains(&want), "{err}");
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn fuzz_meta_load_says_what_the_file_says(
        file in meta_file(),
        state in proptest::bool::weighted(0.85),
        ram in 0..8u8,
    ) {
        let dir = TempDir::new();
        std::fs::write(legacy_path(&dir.0), &file).expect("write");
        if state {
            std::fs::write(state_path(&dir.0), b"s").expect("write");
        }
        // Mostly a file; else missing, or a directory (which is no
        // RAM file).
        match ram {
            0 => {}
            1 => std::fs::create_dir(ram_path(&dir.0)).expect("mkdir"),
            _ => std::fs::write(ram_path(&dir.0), b"r").expect("write"),
        }
        let meta = match SnapshotMeta::load(&dir.0) {
            Ok(meta) => meta,
            Err(e) => {
                prop_assert!(names_the_problem(&e, LEGACY_META_FILE), "{}", e);
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
        // Migrated: the JSON file says the same, and is read from now on.
        let json = std::fs::read(meta_path(&dir.0)).expect("snapshot.json written");
        let written: SnapshotMeta = serde_json::from_slice(&json).expect("valid JSON");
        prop_assert_eq!(&written, &meta);
        std::fs::remove_file(legacy_path(&dir.0)).expect("rm");
        prop_assert_eq!(&SnapshotMeta::load(&dir.0).expect("loads from JSON"), &meta);
        let text = std::str::from_utf8(&file).expect("loaded, so UTF-8");
        let number = |key: &str| field(text, key).and_then(|v| v.parse::<u64>().ok());
        prop_assert_eq!(number("format"), Some(u64::from(FORMAT)));
        prop_assert_eq!(number("protocol"), Some(u64::from(provium_protocol::PROTOCOL_VERSION)));
        prop_assert_eq!(number("cpus"), Some(u64::from(meta.cpus)));
        prop_assert_eq!(number("memory_mib"), Some(meta.memory_mib));
        prop_assert_eq!(number("created"), Some(meta.created));
        prop_assert_eq!(field(text, "transport"), Some(meta.transport.as_str()));
        prop_assert_eq!(field(text, "accel"), Some(meta.accel.as_str()));
        prop_assert_eq!(field(text, "vm"), Some(meta.vm.as_str()));
    }

    #[test]
    fn fuzz_meta_round_trips(meta in any_meta()) {
        let dir = TempDir::with_data();
        std::fs::write(legacy_path(&dir.0), legacy::render(&meta)).expect("write");
        let back = SnapshotMeta::load(&dir.0).expect("loads");
        // The name is one trimmed line of the file.
        let vm = meta.vm.replace('\n', " ").trim().to_string();
        // Legacy files predate the balloon: it reads as absent.
        prop_assert_eq!(back, SnapshotMeta { vm, balloon: false, ..meta });
    }
}
