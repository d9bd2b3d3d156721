//! LEGACY: `snapshot.meta`, the description of snapshots taken before
//! `snapshot.json`; only read (to restore them, and migrate).
//!
//! One `key = value` per line, split at the first `=`, both sides trimmed;
//! the first line of a key counts, lines without `=` and unknown keys are
//! ignored. Numbers are decimal; `vm` is one line. `balloon = true|false`
//! is optional: earlier versions never wrote it (their machines had no
//! balloon), but a snapshot's `snapshot.json` rewritten in this form keeps
//! what its machine had.
//!
//! ```text
//! format = 2
//! protocol = 6
//! transport = serial
//! accel = kvm
//! memory_mib = 256
//! cpus = 1
//! vm = web
//! created = 1764990000
//! ```

use super::{accel_named, cpus_in_range, memory_in_range, transport_named, SnapshotMeta};

/// Parses the text; the error names the field (the caller names the file).
pub(super) fn parse(text: &str) -> Result<SnapshotMeta, String> {
    Ok(SnapshotMeta {
        format: number32(text, "format")?,
        protocol: number32(text, "protocol")?,
        transport: transport_named(field(text, "transport")?)?,
        accel: accel_named(field(text, "accel")?)?,
        memory_mib: memory_in_range(number(text, "memory_mib")?)?,
        cpus: cpus_in_range(number32(text, "cpus")?)?,
        vm: field(text, "vm")?.to_string(),
        created: number(text, "created")?,
        balloon: match field(text, "balloon") {
            Err(_) => false,
            Ok("true") => true,
            Ok("false") => false,
            Ok(_) => return Err("balloon is not true or false".into()),
        },
    })
}

/// The format and protocol the text claims, whatever the rest says.
pub(super) fn versions(text: &str) -> Option<(u32, u32)> {
    Some((
        number32(text, "format").ok()?,
        number32(text, "protocol").ok()?,
    ))
}

fn field<'a>(text: &'a str, key: &str) -> Result<&'a str, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .ok_or_else(|| format!("has no {key}"))
}

fn number(text: &str, key: &str) -> Result<u64, String> {
    field(text, key)?
        .parse()
        .map_err(|_| format!("{key} is not a number"))
}

// Not `as u32`: that would read 4294967298 as format 2.
fn number32(text: &str, key: &str) -> Result<u32, String> {
    u32::try_from(number(text, key)?).map_err(|_| format!("{key} is out of range"))
}

/// The text as earlier versions wrote it (to make legacy snapshots in tests).
#[cfg(test)]
pub(super) fn render(meta: &SnapshotMeta) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "format = {}", meta.format);
    let _ = writeln!(s, "protocol = {}", meta.protocol);
    let _ = writeln!(s, "transport = {}", meta.transport.as_str());
    let _ = writeln!(s, "accel = {}", meta.accel.as_str());
    let _ = writeln!(s, "memory_mib = {}", meta.memory_mib);
    let _ = writeln!(s, "cpus = {}", meta.cpus);
    let _ = writeln!(s, "vm = {}", meta.vm.replace('\n', " "));
    let _ = writeln!(s, "created = {}", meta.created);
    s
}
