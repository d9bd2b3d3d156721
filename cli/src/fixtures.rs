//! `provium fixtures list|clean|dir`: the fixture cache
//! (`provium.vm_fixture` snapshots, see `provium::fixtures`).

use std::time::SystemTime;

use provium::fixtures::{cache_dir, Cache, CacheError, EntryInfo};

use crate::fmt;

/// Why a fixtures command failed.
#[derive(Debug, thiserror::Error)]
pub enum FixturesError {
    /// the cache cannot be read or changed (the message names the path)
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// the fixture cache's size cap is malformed
    #[error(transparent)]
    Config(#[from] provium::fixtures::ConfigError),
    /// no remote store is set: pass --remote oci://host[:port]/repository, or set PROVIUM_FIXTURE_REMOTE, or `remote` in the [fixtures] table of provium.toml
    #[error(
        "no remote store is set: pass --remote oci://host[:port]/repository, or set \
         PROVIUM_FIXTURE_REMOTE, or `remote` in the [fixtures] table of provium.toml"
    )]
    NoRemote,
    /// the remote store failed (the message names it and the operation)
    #[error(transparent)]
    Remote(provium::fixtures::remote::RemoteError),
    /// the default guest image cannot be prepared
    #[error("{0}")]
    Image(String),
    /// no {place} fixture has a key starting with {prefix}
    #[error("no {place} fixture has a key starting with {prefix}")]
    NoMatch {
        /// The key digits given.
        prefix: String,
        /// `cached` or `remote`.
        place: &'static str,
    },
    /// {count} {place} fixtures have a key starting with {prefix}: give more digits
    #[error("{count} {place} fixtures have a key starting with {prefix}: give more digits")]
    Ambiguous {
        /// The key digits given.
        prefix: String,
        /// How many keys start with them.
        count: usize,
        /// `cached` or `remote`.
        place: &'static str,
    },
    /// {failed} of {tried} {what} failed (each is named above)
    #[error("{failed} of {tried} {what} failed (each is named above)")]
    Failed {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        tried: usize,
        /// `pushes`, `pulls`, `deletions`.
        what: &'static str,
    },
}

/// One line of `list`.
pub fn row(e: &EntryInfo, now: SystemTime) -> String {
    format!(
        "{:<16}  {:>9}  {:<13}  {}",
        fmt::short_key(&e.hex),
        fmt::bytes(e.bytes_on_disk),
        fmt::ago(Some(e.last_used), now),
        e.builder
            .as_ref()
            .map(|b| b.display().to_string())
            .unwrap_or_else(|| "?".into())
    )
}

/// Lists the fixtures, least recently used first.
pub fn list() -> Result<(), FixturesError> {
    let dir = cache_dir();
    if !dir.exists() {
        println!("no fixtures ({} does not exist)", dir.display());
        return Ok(());
    }
    let entries = Cache::open(&dir)?.list()?;
    if entries.is_empty() {
        println!("no fixtures in {}", dir.display());
        return Ok(());
    }
    println!("{:<16}  {:>9}  {:<13}  BUILDER", "KEY", "SIZE", "LAST USED");
    let now = SystemTime::now();
    for e in &entries {
        println!("{}", row(e, now));
    }
    let total: u64 = entries.iter().map(|e| e.bytes_on_disk).sum();
    println!(
        "{} fixture(s), {} in {}",
        entries.len(),
        fmt::bytes(total),
        dir.display()
    );
    Ok(())
}

/// Removes every fixture nobody uses.
pub fn clean() -> Result<(), FixturesError> {
    let dir = cache_dir();
    if !dir.exists() {
        println!("nothing to clean ({} does not exist)", dir.display());
        return Ok(());
    }
    let report = Cache::open(&dir)?.clean()?;
    let now = SystemTime::now();
    for e in &report.entries {
        println!("removed {}", row(e, now));
    }
    for p in &report.other {
        println!("removed {}", p.display());
    }
    let freed: u64 = report.entries.iter().map(|e| e.bytes_on_disk).sum();
    println!(
        "freed {} ({} fixture(s) removed)",
        fmt::bytes(freed),
        report.entries.len()
    );
    Ok(())
}

/// Prints the cache directory.
pub fn dir() {
    println!("{}", cache_dir().display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn a_row_shows_key_size_age_and_builder() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let e = EntryInfo {
            hex: "f".repeat(64),
            path: PathBuf::from("/c/x.snap"),
            bytes_on_disk: 5 << 20,
            last_used: now - Duration::from_secs(7200),
            builder: Some(PathBuf::from("/src/spec/web.fixture.lua")),
        };
        assert_eq!(
            row(&e, now),
            "ffffffffffffffff    5.0 MiB  2 h ago        /src/spec/web.fixture.lua"
        );
    }
}
