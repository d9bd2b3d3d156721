//! Snapshot directories: what a snapshot holds and how it is described.
//!
//! A snapshot is a directory, written under a temporary name and renamed
//! into place only when complete (a failure, a full disk included, leaves
//! nothing behind):
//!
//! * `state` — QEMU's device state (a migration stream without the RAM,
//!   tens of KB: see `x-ignore-shared` in [`super::qmp`]);
//! * `ram` — the guest's RAM, a sparse file whose all-zero pages are holes;
//! * `snapshot.meta` — `key = value` lines ([`SnapshotMeta`]);
//! * `console.log` — the last console output before the snapshot.
//!
//! Restoring never writes into the directory: the RAM is copied into the
//! new VM's own memory, so one snapshot can be restored any number of
//! times. The RAM is not compressed: restoring must copy it into memory
//! either way, and reading the sparse file from the page cache (~65 MB for
//! a booted default guest) costs less than decompressing it would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::accel::Accel;
use super::Transport;

/// Version of the directory layout; bumped on any incompatible change
/// (2: kernel-vsock guests dial the port named by their CID, no recorded port).
pub const FORMAT: u32 = 2;

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
    dir.join("snapshot.meta")
}

/// Errors reading a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// the snapshot directory is missing or incomplete
    #[error("{path} is not a snapshot: {why}")]
    NotASnapshot { path: String, why: String },
    /// the snapshot was written by another version of provium
    #[error("{path} was written by another provium (snapshot format {found}, protocol {protocol}; this one reads format {FORMAT}, protocol {ours})")]
    Version {
        path: String,
        found: u32,
        protocol: u32,
        ours: u32,
    },
}

/// What restoring needs to know about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub format: u32,
    pub protocol: u32,
    pub transport: Transport,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    /// The VM it was taken from (for messages).
    pub vm: String,
    /// Seconds since the epoch.
    pub created: u64,
}

impl SnapshotMeta {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "format = {}", self.format);
        let _ = writeln!(s, "protocol = {}", self.protocol);
        let _ = writeln!(s, "transport = {}", self.transport.as_str());
        let _ = writeln!(s, "accel = {}", self.accel.as_str());
        let _ = writeln!(s, "memory_mib = {}", self.memory_mib);
        let _ = writeln!(s, "cpus = {}", self.cpus);
        let _ = writeln!(s, "vm = {}", self.vm.replace('\n', " "));
        let _ = writeln!(s, "created = {}", self.created);
        s
    }

    /// Reads and checks the description of the snapshot at `dir`.
    pub fn load(dir: &Path) -> Result<SnapshotMeta, SnapshotError> {
        let not = |why: String| SnapshotError::NotASnapshot {
            path: dir.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(meta_path(dir))
            .map_err(|e| not(format!("cannot read snapshot.meta: {e}")))?;
        let field = |key: &str| -> Result<&str, SnapshotError> {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim())
                .ok_or_else(|| not(format!("snapshot.meta has no {key}")))
        };
        let num = |key: &str| -> Result<u64, SnapshotError> {
            field(key)?
                .parse()
                .map_err(|_| not(format!("snapshot.meta: {key} is not a number")))
        };
        // Not `as u32`: that would read 4294967298 as format 2.
        let num32 = |key: &str| -> Result<u32, SnapshotError> {
            u32::try_from(num(key)?)
                .map_err(|_| not(format!("snapshot.meta: {key} is out of range")))
        };
        let format = num32("format")?;
        let protocol = num32("protocol")?;
        if format != FORMAT || protocol != provium_protocol::PROTOCOL_VERSION {
            return Err(SnapshotError::Version {
                path: dir.display().to_string(),
                found: format,
                protocol,
                ours: provium_protocol::PROTOCOL_VERSION,
            });
        }
        let transport = match field("transport")? {
            "serial" => Transport::Serial,
            "vsock" => Transport::Vsock,
            other => return Err(not(format!("snapshot.meta: unknown transport {other:?}"))),
        };
        let accel = match field("accel")? {
            "tcg" => Accel::Tcg,
            "kvm" => Accel::Kvm,
            other => return Err(not(format!("snapshot.meta: unknown accel {other:?}"))),
        };
        for f in [state_path(dir), ram_path(dir)] {
            if !f.is_file() {
                return Err(not(format!("{} is missing", f.display())));
            }
        }
        Ok(SnapshotMeta {
            format,
            protocol,
            transport,
            accel,
            memory_mib: num("memory_mib")?,
            cpus: num32("cpus")?,
            vm: field("vm")?.to_string(),
            created: num("created")?,
        })
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

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            format: FORMAT,
            protocol: provium_protocol::PROTOCOL_VERSION,
            transport: Transport::Serial,
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            vm: "a".into(),
            created: 1,
        }
    }

    #[test]
    fn meta_round_trips_and_checks_versions() {
        let dir = std::env::temp_dir().join(format!("provium-snapmeta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = SnapshotMeta::load(&dir).unwrap_err();
        assert!(err.to_string().contains("is not a snapshot"), "{err}");
        std::fs::write(meta_path(&dir), meta().render()).unwrap();
        let err = SnapshotMeta::load(&dir).unwrap_err();
        assert!(err.to_string().contains("state is missing"), "{err}");
        std::fs::write(state_path(&dir), b"x").unwrap();
        std::fs::write(ram_path(&dir), b"x").unwrap();
        assert_eq!(SnapshotMeta::load(&dir).unwrap(), meta());
        let old = meta()
            .render()
            .replace(&format!("format = {FORMAT}"), "format = 1");
        std::fs::write(meta_path(&dir), old).unwrap();
        let err = SnapshotMeta::load(&dir).unwrap_err();
        assert!(err.to_string().contains("another provium"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod fuzz_tests;
