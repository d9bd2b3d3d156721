//! Snapshot directories: what a snapshot holds and how it is described.
//!
//! A snapshot is a directory, written under a temporary name and renamed
//! into place only when complete (a failure, a full disk included, leaves
//! nothing behind):
//!
//! * `state` — QEMU's device state (a migration stream without the RAM,
//!   tens of KB: see `x-ignore-shared` in [`super::qmp`]);
//! * `ram` — the guest's RAM, a sparse file whose all-zero pages are holes;
//! * `snapshot.json` — its description ([`SnapshotMeta`]), a JSON document
//!   of the [`crate::metadata`] kind;
//! * `console.log` — the last console output before the snapshot.
//!
//! ```json
//! {
//!   "format": 2,
//!   "protocol": 7,
//!   "transport": "serial",
//!   "accel": "kvm",
//!   "memory_mib": 256,
//!   "cpus": 1,
//!   "vm": "web",
//!   "created": 1764990000,
//!   "balloon": true
//! }
//! ```
//!
//! Snapshots taken by earlier versions have `snapshot.meta` instead,
//! `key = value` lines (`legacy`): they restore as before, and the first
//! read writes `snapshot.json` next to it (the legacy file stays, for those
//! versions). A directory this process cannot write (a read-only copy)
//! restores all the same, from the legacy file each time.
//!
//! Restoring never changes the snapshot's files (that migration aside): the
//! RAM is copied into the new VM's own memory, so one snapshot can be
//! restored any number of times. The RAM is not compressed: restoring must
//! copy it into memory either way, and reading the sparse file from the page
//! cache (~65 MB for a booted default guest) costs less than decompressing
//! it would.

mod legacy;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::accel::Accel;
use super::{Transport, MAX_CPUS, MAX_SNAPSHOT_MEMORY_MIB};
use crate::metadata::{MetadataError, MetadataFile};

/// Version of the directory layout; bumped on any incompatible change
/// (2: kernel-vsock guests dial the port named by their CID, no recorded
/// port). The description's move to JSON is not one: both files describe
/// format 2.
pub const FORMAT: u32 = 2;

/// The name of the description file.
pub const META_FILE: &str = "snapshot.json";

/// The name of the description file of snapshots taken by earlier versions.
pub const LEGACY_META_FILE: &str = "snapshot.meta";

/// The device state file.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// The RAM file.
pub fn ram_path(dir: &Path) -> PathBuf {
    dir.join("ram")
}

/// The console output up to the snapshot (optional: shown in the failure
/// messages of restored VMs).
pub fn console_path(dir: &Path) -> PathBuf {
    dir.join("console.log")
}

/// How much console output a snapshot keeps.
pub const CONSOLE_BYTES: usize = 64 * 1024;

/// The description file.
pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

/// Errors reading a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// the snapshot directory is missing or incomplete
    #[error("{path} is not a snapshot: {why}")]
    NotASnapshot {
        /// The directory given as a snapshot.
        path: String,
        /// What is missing or malformed.
        why: String,
    },
    /// the snapshot was written by another version of provium
    #[error("{path} was written by another provium (snapshot format {found}, protocol {protocol}; this one reads format {FORMAT}, protocol {ours})")]
    Version {
        /// The snapshot directory.
        path: String,
        /// The snapshot's layout version ([`FORMAT`] of its writer).
        found: u32,
        /// The protocol version of the agent inside the snapshot.
        protocol: u32,
        /// This rock's [`provium_protocol::PROTOCOL_VERSION`].
        ours: u32,
    },
}

/// What restoring needs to know about a snapshot: `snapshot.json`.
///
/// A bad value is refused naming its field (module `field`), as the legacy
/// parser did; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The directory layout version ([`FORMAT`] when written).
    #[serde(deserialize_with = "field::format")]
    pub format: u32,
    /// The protocol version of the snapshotted agent.
    #[serde(deserialize_with = "field::protocol")]
    pub protocol: u32,
    /// How the snapshotted agent talks to the host; the restored VM keeps it.
    #[serde(with = "field::transport")]
    pub transport: Transport,
    /// The accelerator it ran under; a restore needs the same one.
    #[serde(with = "field::accel")]
    pub accel: Accel,
    /// Guest memory in MiB; the restored VM gets the same.
    #[serde(deserialize_with = "field::memory_mib")]
    pub memory_mib: u64,
    /// Virtual CPUs; the restored VM gets the same.
    #[serde(deserialize_with = "field::cpus")]
    pub cpus: u32,
    /// The VM it was taken from (for messages).
    #[serde(deserialize_with = "field::vm")]
    pub vm: String,
    /// Seconds since the epoch.
    #[serde(deserialize_with = "field::created")]
    pub created: u64,
    /// Whether the machine has the free-page-reporting balloon (QEMU's
    /// device set must match the snapshot's). Absent in snapshots of
    /// earlier versions, which had none.
    #[serde(default)]
    pub balloon: bool,
}

impl MetadataFile for SnapshotMeta {
    const FILE: &'static str = META_FILE;
    const LEGACY_FILE: &'static str = LEGACY_META_FILE;
    /// Snapshots are made to be copied and shared; a read-only one restores
    /// from its legacy file every time, which is no news worth a warning.
    const READ_ONLY_IS_NORMAL: bool = true;

    fn parse_legacy(text: &str) -> Result<SnapshotMeta, String> {
        legacy::parse(text)
    }
}

impl SnapshotMeta {
    /// Writes `snapshot.json` into `dir` (atomically, synced).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        self.write_in(dir).map_err(|e| {
            let kind = match &e {
                MetadataError::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::Other,
            };
            std::io::Error::new(kind, e.to_string())
        })
    }

    /// Reads and checks the description of the snapshot at `dir` (from
    /// `snapshot.json`, else the legacy `snapshot.meta`).
    pub fn load(dir: &Path) -> Result<SnapshotMeta, SnapshotError> {
        let not = |why: String| SnapshotError::NotASnapshot {
            path: dir.display().to_string(),
            why,
        };
        let meta = match SnapshotMeta::read_in(dir) {
            Ok(Some(meta)) => meta,
            Ok(None) if dir.is_dir() => {
                return Err(not(format!(
                    "it has no {META_FILE} (nor the {LEGACY_META_FILE} of earlier versions)"
                )))
            }
            Ok(None) => return Err(not("no such directory".into())),
            // Another version's file may differ in more than its numbers:
            // say so rather than what this version misses in it.
            Err(e) => {
                return Err(match claimed_versions(dir) {
                    Some((format, protocol)) => check_versions(dir, format, protocol)
                        .err()
                        .unwrap_or_else(|| not(why(e))),
                    None => not(why(e)),
                })
            }
        };
        check_versions(dir, meta.format, meta.protocol)?;
        for f in [state_path(dir), ram_path(dir)] {
            if !f.is_file() {
                return Err(not(format!("{} is missing", f.display())));
            }
        }
        Ok(meta)
    }
}

/// `memory_mib` if it is 1 to [`MAX_SNAPSHOT_MEMORY_MIB`]: a snapshot shared
/// through a registry must not make this host start any size of machine.
fn memory_in_range(mib: u64) -> Result<u64, String> {
    if (1..=MAX_SNAPSHOT_MEMORY_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(format!(
            "memory_mib {mib} is out of range (1 to {MAX_SNAPSHOT_MEMORY_MIB})"
        ))
    }
}

/// `cpus` if it is 1 to [`MAX_CPUS`].
fn cpus_in_range(cpus: u32) -> Result<u32, String> {
    if (1..=MAX_CPUS).contains(&cpus) {
        Ok(cpus)
    } else {
        Err(format!("cpus {cpus} is out of range (1 to {MAX_CPUS})"))
    }
}

/// Refuses a snapshot of another format or protocol.
fn check_versions(dir: &Path, format: u32, protocol: u32) -> Result<(), SnapshotError> {
    if format == FORMAT && protocol == provium_protocol::PROTOCOL_VERSION {
        return Ok(());
    }
    Err(SnapshotError::Version {
        path: dir.display().to_string(),
        found: format,
        protocol,
        ours: provium_protocol::PROTOCOL_VERSION,
    })
}

/// What is wrong with a description file, naming it (not its directory,
/// which the error names already).
fn why(e: MetadataError) -> String {
    let name = |path: &Path| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    match e {
        MetadataError::Malformed { path, detail } => format!("{}: {detail}", name(&path)),
        MetadataError::Io {
            action,
            path,
            source,
        } => format!("cannot {action} {}: {source}", name(&path)),
        e @ MetadataError::Encode { .. } => e.to_string(),
    }
}

/// The format and protocol the description file in `dir` claims, read
/// alone: `None` when it does not say.
fn claimed_versions(dir: &Path) -> Option<(u32, u32)> {
    /// The numbers of `snapshot.json`, the other fields ignored.
    #[derive(Deserialize)]
    struct Versions {
        #[serde(deserialize_with = "field::format")]
        format: u32,
        #[serde(deserialize_with = "field::protocol")]
        protocol: u32,
    }
    match std::fs::read(meta_path(dir)) {
        Ok(bytes) => serde_json::from_slice::<Versions>(&bytes)
            .ok()
            .map(|v| (v.format, v.protocol)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            legacy::versions(&std::fs::read_to_string(dir.join(LEGACY_META_FILE)).ok()?)
        }
        Err(_) => None,
    }
}

/// The transport named `name` in a description.
fn transport_named(name: &str) -> Result<Transport, String> {
    match name {
        "serial" => Ok(Transport::Serial),
        "vsock" => Ok(Transport::Vsock),
        other => Err(format!("unknown transport {other:?}")),
    }
}

/// The accelerator named `name` in a description.
fn accel_named(name: &str) -> Result<Accel, String> {
    match name {
        "tcg" => Ok(Accel::Tcg),
        "kvm" => Ok(Accel::Kvm),
        other => Err(format!("unknown accel {other:?}")),
    }
}

/// The fields' serde forms. Errors name the field (serde's own would name
/// the Rust type, "expected u32"); serde_json adds where in the file.
mod field {
    use serde::de::{Deserialize, Deserializer, Error as _};

    /// A whole number that must fit `T`.
    fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, key: &str) -> Result<T, D::Error> {
        let n = u64::deserialize(d).map_err(|e| D::Error::custom(format!("{key}: {e}")))?;
        // Not `as u32`: that would read 4294967298 as format 2.
        T::try_from(n).map_err(|_| D::Error::custom(format!("{key} is out of range")))
    }

    /// A string.
    fn text<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<String, D::Error> {
        String::deserialize(d).map_err(|e| D::Error::custom(format!("{key}: {e}")))
    }

    pub(super) fn format<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        number(d, "format")
    }

    pub(super) fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        number(d, "protocol")
    }

    pub(super) fn memory_mib<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        super::memory_in_range(number(d, "memory_mib")?).map_err(D::Error::custom)
    }

    pub(super) fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        super::cpus_in_range(number(d, "cpus")?).map_err(D::Error::custom)
    }

    pub(super) fn created<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        number(d, "created")
    }

    pub(super) fn vm<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, "vm")
    }

    /// `"serial"` or `"vsock"`.
    pub(super) mod transport {
        use serde::de::{Deserializer, Error as _};
        use serde::Serializer;

        use crate::vm::Transport;

        pub(crate) fn serialize<S: Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(t.as_str())
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
            super::super::transport_named(&super::text(d, "transport")?).map_err(D::Error::custom)
        }
    }

    /// `"kvm"` or `"tcg"`.
    pub(super) mod accel {
        use serde::de::{Deserializer, Error as _};
        use serde::Serializer;

        use crate::vm::accel::Accel;

        pub(crate) fn serialize<S: Serializer>(a: &Accel, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(a.as_str())
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Accel, D::Error> {
            super::super::accel_named(&super::text(d, "accel")?).map_err(D::Error::custom)
        }
    }
}

/// Bytes the files of `dir` occupy on disk (holes not counted).
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let m = e?.metadata()?;
        total += m.blocks() * 512;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_log;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, SystemTime};

    /// A fresh directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "provium-snapmeta-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// With `state` and `ram` files.
        fn with_data() -> Scratch {
            let s = Scratch::new();
            fs::write(state_path(&s.0), b"s").unwrap();
            fs::write(ram_path(&s.0), b"r").unwrap();
            s
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            format: FORMAT,
            protocol: provium_protocol::PROTOCOL_VERSION,
            transport: Transport::Serial,
            accel: Accel::Kvm,
            memory_mib: 256,
            cpus: 1,
            vm: "web".into(),
            created: 1_764_990_000,
            balloon: false,
        }
    }

    /// A `snapshot.meta` as earlier versions wrote it.
    fn legacy_text() -> String {
        format!(
            "format = 2\nprotocol = {}\ntransport = serial\naccel = kvm\n\
             memory_mib = 256\ncpus = 1\nvm = web\ncreated = 1764990000\n",
            provium_protocol::PROTOCOL_VERSION
        )
    }

    #[test]
    fn meta_round_trips_and_checks_versions() {
        let s = Scratch::new();
        let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
        assert!(err.contains("is not a snapshot"), "{err}");
        assert!(err.contains("it has no snapshot.json"), "{err}");
        let err = SnapshotMeta::load(&s.0.join("none")).unwrap_err();
        assert!(err.to_string().contains("no such directory"), "{err}");
        meta().save(&s.0).unwrap();
        let text = fs::read_to_string(meta_path(&s.0)).unwrap();
        // As in the module's documentation.
        let want = format!(
            "{{\n  \"format\": 2,\n  \"protocol\": {},\n  \"transport\": \"serial\",\n  \
             \"accel\": \"kvm\",\n  \"memory_mib\": 256,\n  \"cpus\": 1,\n  \"vm\": \"web\",\n  \
             \"created\": 1764990000,\n  \"balloon\": false\n}}\n",
            provium_protocol::PROTOCOL_VERSION
        );
        assert_eq!(text, want);
        let err = SnapshotMeta::load(&s.0).unwrap_err();
        assert!(err.to_string().contains("state is missing"), "{err}");
        fs::write(state_path(&s.0), b"x").unwrap();
        fs::write(ram_path(&s.0), b"x").unwrap();
        assert_eq!(SnapshotMeta::load(&s.0).unwrap(), meta());
        SnapshotMeta {
            format: 1,
            ..meta()
        }
        .save(&s.0)
        .unwrap();
        let err = SnapshotMeta::load(&s.0).unwrap_err();
        assert!(err.to_string().contains("another provium"), "{err}");
        // Another version's file is reported as such, whatever else it holds.
        fs::write(
            meta_path(&s.0),
            r#"{"format": 3, "protocol": 6, "ram": {}}"#,
        )
        .unwrap();
        let err = SnapshotMeta::load(&s.0).unwrap_err();
        assert!(err.to_string().contains("snapshot format 3"), "{err}");
    }

    #[test]
    fn legacy_snapshot_restores_and_is_migrated() {
        let s = Scratch::with_data();
        let legacy = s.0.join(LEGACY_META_FILE);
        fs::write(&legacy, legacy_text()).unwrap();
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_990_000);
        fs::File::options()
            .write(true)
            .open(&legacy)
            .and_then(|f| f.set_modified(then))
            .unwrap();
        assert_eq!(SnapshotMeta::existing_in(&s.0), Some(legacy.clone()));
        assert_eq!(SnapshotMeta::load(&s.0).unwrap(), meta());
        let json = meta_path(&s.0);
        let written: SnapshotMeta = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        assert_eq!(written, meta());
        let modified = fs::metadata(&json).and_then(|m| m.modified()).unwrap();
        assert_eq!(modified, then, "the legacy file's time is kept");
        assert_eq!(fs::read_to_string(&legacy).unwrap(), legacy_text(), "kept");
        assert_eq!(SnapshotMeta::existing_in(&s.0), Some(json));
        // From now on the JSON file is the description.
        fs::write(&legacy, "garbage").unwrap();
        assert_eq!(SnapshotMeta::load(&s.0).unwrap(), meta());
    }

    #[test]
    fn legacy_snapshot_of_another_version_is_reported_as_such() {
        let s = Scratch::with_data();
        fs::write(
            s.0.join(LEGACY_META_FILE),
            "format = 1\nprotocol = 3\nport = 5\n",
        )
        .unwrap();
        let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
        assert!(
            err.contains("another provium (snapshot format 1, protocol 3"),
            "{err}"
        );
        assert!(!meta_path(&s.0).exists(), "nothing written from a bad file");
    }

    #[test]
    fn bad_descriptions_name_the_file_and_the_field() {
        use serde_json::{json, Value};
        let valid = serde_json::to_value(meta()).unwrap();
        // A field's new value (none: the field is left out), what the
        // message says.
        let json_cases: [(&str, Option<Value>, &str); 9] = [
            ("transport", None, "missing field `transport`"),
            ("transport", Some(json!("usb")), "unknown transport \"usb\""),
            ("accel", Some(json!("hvf")), "unknown accel \"hvf\""),
            ("accel", Some(json!(1)), "accel: invalid type: integer `1`"),
            (
                "cpus",
                Some(json!(4_294_967_297u64)),
                "cpus is out of range",
            ),
            (
                "format",
                Some(json!(4_294_967_298u64)),
                "format is out of range",
            ),
            (
                "memory_mib",
                Some(json!("256")),
                "memory_mib: invalid type: string",
            ),
            (
                "created",
                Some(json!(-1)),
                "created: invalid value: integer `-1`",
            ),
            ("vm", Some(json!(5)), "vm: invalid type: integer `5`"),
        ];
        for (key, value, want) in json_cases {
            let s = Scratch::with_data();
            let mut doc = valid.clone();
            let fields = doc.as_object_mut().unwrap();
            match value {
                Some(v) => fields.insert(key.into(), v),
                None => fields.remove(key),
            };
            fs::write(meta_path(&s.0), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
            let head = format!("{} is not a snapshot: snapshot.json: ", s.0.display());
            assert!(err.starts_with(&head), "{key}: {err}");
            assert!(err.contains(want), "{key}: {err}");
            assert!(err.contains(" at line "), "{key}: {err}");
        }
        // Well-formed, but no machine this host should start.
        for (key, value, want) in [
            ("cpus", json!(0), "cpus 0 is out of range (1 to 64)"),
            ("cpus", json!(65), "cpus 65 is out of range (1 to 64)"),
            ("memory_mib", json!(0), "memory_mib 0 is out of range"),
            (
                "memory_mib",
                json!(2_097_152u64),
                "memory_mib 2097152 is out of range (1 to 1048576)",
            ),
        ] {
            let s = Scratch::with_data();
            let mut doc = valid.clone();
            doc.as_object_mut().unwrap().insert(key.into(), value);
            fs::write(meta_path(&s.0), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
            assert!(
                err.contains("is not a snapshot: ") && err.contains(want),
                "{err}"
            );
        }
        for text in ["", "{", "not json", "[2]", "{\"format\": 2,}"] {
            let s = Scratch::with_data();
            fs::write(meta_path(&s.0), text).unwrap();
            let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
            assert!(
                err.contains("is not a snapshot: snapshot.json: "),
                "{text:?}: {err}"
            );
        }
        let legacy_cases = [
            ("transport", "transport = usb", "unknown transport \"usb\""),
            ("accel", "", "has no accel"),
            ("cpus", "cpus = 4294967297", "cpus is out of range"),
            (
                "memory_mib",
                "memory_mib = lots",
                "memory_mib is not a number",
            ),
        ];
        for (key, line, want) in legacy_cases {
            let s = Scratch::with_data();
            let text: String = legacy_text()
                .lines()
                .map(|l| {
                    if l.starts_with(key) {
                        format!("{line}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            fs::write(s.0.join(LEGACY_META_FILE), text).unwrap();
            let err = SnapshotMeta::load(&s.0).unwrap_err().to_string();
            assert!(
                err.contains("is not a snapshot: snapshot.meta: "),
                "{key}: {err}"
            );
            assert!(err.contains(want), "{key}: {err}");
            assert!(!meta_path(&s.0).exists(), "nothing written from a bad file");
        }
    }

    /// A legacy snapshot in a directory this process cannot write restores
    /// with no error and no warning (the failed migration is a debug line).
    #[test]
    fn read_only_legacy_snapshot_restores_quietly() {
        let s = Scratch::with_data();
        fs::write(s.0.join(LEGACY_META_FILE), legacy_text()).unwrap();
        for name in ["state", "ram", LEGACY_META_FILE] {
            fs::set_permissions(s.0.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(&s.0, fs::Permissions::from_mode(0o555)).unwrap();
        let dir = s.0.clone();
        let outcome = std::thread::spawn(move || {
            // Root writes anywhere: this thread accesses files as nobody
            // (the file system ids are per thread).
            // SAFETY: plain system calls; they change only this thread.
            if unsafe { libc::geteuid() } == 0 {
                unsafe { libc::setfsuid(65534) };
            }
            let read_only = fs::File::create(dir.join("probe")).is_err()
                && fs::read(dir.join(LEGACY_META_FILE)).is_ok();
            read_only.then(|| test_log::levels(|| SnapshotMeta::load(&dir)))
        })
        .join()
        .unwrap();
        let Some((loaded, levels)) = outcome else {
            eprintln!("skipped: cannot make a directory read-only here");
            return;
        };
        assert_eq!(loaded.unwrap(), meta());
        assert!(!levels.contains(&tracing::Level::WARN), "{levels:?}");
        assert!(levels.contains(&tracing::Level::DEBUG), "{levels:?}");
        assert!(!meta_path(&s.0).exists());
    }
}

#[cfg(test)]
mod fuzz_json;
#[cfg(test)]
mod fuzz_tests;
