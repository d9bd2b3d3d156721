//! `provium fixtures push|pull|prune`: the fixture cache and the remote
//! store (an OCI registry, see `provium::fixtures::remote`).
//!
//! Every command goes through all its fixtures, printing one line each,
//! and fails at the end when any transfer failed.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use provium::fixtures::meta::EntryMeta;
use provium::fixtures::remote::{self, Remote, RemoteError, ThisMachine};
use provium::fixtures::{cache_dir, cap_bytes, Cache, EntryInfo};
use provium_protocol::PROTOCOL_VERSION;

use crate::cli::{PruneArgs, PullArgs, PushArgs, RemoteArg};
use crate::fixtures::FixturesError;
use crate::fmt;

/// The store `arg` names, else the configured one.
fn open(arg: &RemoteArg) -> Result<Remote, FixturesError> {
    let remote = match &arg.remote {
        Some(text) => Some(Remote::at(text)?),
        None => Remote::configured()?,
    };
    remote.ok_or(FixturesError::NoRemote)
}

fn this_machine() -> Result<ThisMachine, FixturesError> {
    ThisMachine::current().map_err(FixturesError::Image)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The keys among `all` that `prefixes` select (all of them when there
/// are no prefixes); each prefix must select exactly one.
pub fn select<'a>(
    all: &'a [String],
    prefixes: &[String],
    place: &'static str,
) -> Result<Vec<&'a String>, FixturesError> {
    if prefixes.is_empty() {
        return Ok(all.iter().collect());
    }
    let mut out = Vec::new();
    for prefix in prefixes {
        let matching: Vec<&String> = all.iter().filter(|k| k.starts_with(prefix)).collect();
        match matching.as_slice() {
            [] => {
                return Err(FixturesError::NoMatch {
                    prefix: prefix.clone(),
                    place,
                })
            }
            [one] => {
                if !out.contains(one) {
                    out.push(*one);
                }
            }
            many => {
                return Err(FixturesError::Ambiguous {
                    prefix: prefix.clone(),
                    count: many.len(),
                    place,
                })
            }
        }
    }
    Ok(out)
}

/// What a command did, fixture by fixture: each outcome prints its line
/// and is counted.
#[derive(Default)]
struct Tally {
    /// Transfers (or deletions) made, and their bytes.
    done: usize,
    bytes: u64,
    /// Fixtures already where they were to go.
    present: usize,
    /// Fixtures not taken, with the reason printed.
    skipped: usize,
    /// Transfers that failed, with the error printed.
    failed: usize,
}

impl Tally {
    fn done(&mut self, line: String, bytes: u64) {
        println!("{line}");
        self.done += 1;
        self.bytes += bytes;
    }

    fn present(&mut self, short: &str, detail: &str) {
        if detail.is_empty() {
            println!("present  {short}");
        } else {
            println!("present  {short}  {detail}");
        }
        self.present += 1;
    }

    fn skipped(&mut self, short: &str, why: impl std::fmt::Display) {
        println!("skipped  {short}  {why}");
        self.skipped += 1;
    }

    fn failed(&mut self, short: &str, e: impl std::fmt::Display) {
        println!("FAILED   {short}  {e}");
        self.failed += 1;
    }

    /// Fails when any of the tries failed.
    fn outcome(&self, what: &'static str) -> Result<(), FixturesError> {
        if self.failed == 0 {
            Ok(())
        } else {
            Err(FixturesError::Failed {
                failed: self.failed,
                tried: self.done + self.failed,
                what,
            })
        }
    }
}

/// `provium fixtures push`.
pub fn push(args: &PushArgs) -> Result<(), FixturesError> {
    let remote = open(&args.remote)?;
    let cache = Cache::open(cache_dir())?;
    let entries = cache.list()?;
    let keys: Vec<String> = entries.iter().map(|e| e.hex.clone()).collect();
    let chosen = select(&keys, &args.keys, "cached")?;
    if chosen.is_empty() {
        println!("no cached fixtures to push ({})", cache.dir().display());
        return Ok(());
    }
    let here = this_machine()?;
    let present: HashSet<String> = remote.keys()?.into_iter().collect();
    let mut tally = Tally::default();
    for hex in chosen {
        let Some(entry) = entries.iter().find(|e| e.hex == *hex) else {
            continue;
        };
        let short = fmt::short_key(hex);
        if present.contains(hex) {
            tally.present(short, &builder(entry));
            continue;
        }
        let meta = match cache.meta(hex) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                tally.skipped(short, format!("its metadata is unreadable: {e}"));
                continue;
            }
        };
        if let Err(why) = here.made_here(&meta) {
            tally.skipped(short, why);
            continue;
        }
        let label = meta.builder.display().to_string();
        match remote.push(&here.expect(hex), &entry.path, &label) {
            Ok(t) => tally.done(
                format!(
                    "pushed   {short}  {:>8} in {}  {label}",
                    megabytes(t.bytes),
                    fmt::seconds(t.elapsed)
                ),
                t.bytes,
            ),
            Err(e) => tally.failed(short, e),
        }
    }
    println!(
        "pushed {} ({}) to {}; {} already there, {} skipped, {} failed",
        tally.done,
        megabytes(tally.bytes),
        remote.location(),
        tally.present,
        tally.skipped,
        tally.failed
    );
    tally.outcome("pushes")
}

fn builder(e: &EntryInfo) -> String {
    e.builder
        .as_ref()
        .map(|b| b.display().to_string())
        .unwrap_or_else(|| "?".into())
}

/// `provium fixtures pull`.
pub fn pull(args: &PullArgs) -> Result<(), FixturesError> {
    let remote = open(&args.remote)?;
    let keys = remote.keys()?;
    let chosen = select(&keys, &args.keys, "remote")?;
    if chosen.is_empty() {
        println!("no fixtures in {}", remote.location());
        return Ok(());
    }
    let cache = Cache::open(cache_dir())?;
    let cached: HashSet<String> = cache.list()?.into_iter().map(|e| e.hex).collect();
    let here = this_machine()?;
    let origin = remote.location().to_string();
    let mut tally = Tally::default();
    for key in chosen {
        let short = fmt::short_key(key);
        if cached.contains(key) {
            tally.present(short, "");
            continue;
        }
        let listed = match remote.describe(key) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                tally.failed(short, e);
                continue;
            }
        };
        let config = match listed.config {
            Ok(c) => c,
            Err(e) => {
                tally.skipped(short, e);
                continue;
            }
        };
        let expect = here.expect(key);
        if let Err(e) = config.check(&expect) {
            tally.skipped(short, e);
            continue;
        }
        // A builder of this key in another process finishes first; its
        // entry then counts as present.
        let _lock = cache.lock_or_wait(key, |holder| {
            let who = holder.map(|s| format!(" by {s}")).unwrap_or_default();
            println!("waiting  {short}  (being built here{who})");
        })?;
        if cache.lookup(key).is_some() {
            tally.present(short, &config.builder);
            continue;
        }
        let meta = EntryMeta::new(
            &config.builder,
            here.pulled_manifest(&origin, &config.builder),
        );
        match remote::pull_into(&remote, &cache, &expect, &meta) {
            Ok(Some((_, t))) => tally.done(
                format!(
                    "pulled   {short}  {:>8} in {}  {}",
                    megabytes(t.bytes),
                    fmt::seconds(t.elapsed),
                    config.builder
                ),
                t.bytes,
            ),
            Ok(None) => {}
            Err(e) => tally.failed(short, e),
        }
    }
    println!(
        "pulled {} ({}) from {origin}; {} already cached, {} skipped \
         (made for another provium or guest image, or not a fixture), {} failed",
        tally.done,
        megabytes(tally.bytes),
        tally.present,
        tally.skipped,
        tally.failed
    );
    for e in cache.evict(cap_bytes()?)? {
        println!(
            "evicted  {}  (the cache is over its cap)",
            fmt::short_key(&e.hex)
        );
    }
    tally.outcome("pulls")
}

/// Why prune deletes an artifact, if it does.
pub fn stale(
    listed: &remote::Listed,
    older_than: Option<Duration>,
    now: SystemTime,
) -> Option<String> {
    if !listed.ours {
        return None;
    }
    match &listed.config {
        Err(e) => return Some(e.to_string()),
        Ok(c) if c.protocol < PROTOCOL_VERSION => {
            return Some(format!(
                "made with protocol {}; this provium speaks {PROTOCOL_VERSION}",
                c.protocol
            ))
        }
        Ok(_) => {}
    }
    let age = now.duration_since(listed.created?).ok()?;
    if age >= older_than? {
        return Some(format!("pushed {}", fmt::ago(listed.created, now)));
    }
    None
}

/// `provium fixtures prune`.
pub fn prune(args: &PruneArgs) -> Result<(), FixturesError> {
    let remote = open(&args.remote)?;
    let keys = remote.keys()?;
    let now = SystemTime::now();
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut tally = Tally::default();
    let mut kept = 0;
    for key in &keys {
        let short = fmt::short_key(key);
        let listed = match remote.describe(key) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                tally.failed(short, e);
                continue;
            }
        };
        let Some(why) = stale(&listed, args.older_than, now) else {
            kept += 1;
            continue;
        };
        let done = if args.dry_run {
            Ok(())
        } else {
            remote.delete(&listed.digest)
        };
        match done {
            Ok(()) => tally.done(
                format!("{verb}  {short}  {:>8}  {why}", megabytes(listed.bytes)),
                listed.bytes,
            ),
            Err(e) => tally.failed(short, e),
        }
    }
    println!(
        "{verb} {} ({}) from {}; {kept} kept, {} failed",
        tally.done,
        megabytes(tally.bytes),
        remote.location(),
        tally.failed
    );
    if tally.done > 0 && !args.dry_run {
        println!("the registry frees their space in its garbage collection");
    }
    tally.outcome("deletions")
}

/// Errors of the store, for `FixturesError`.
impl From<RemoteError> for FixturesError {
    fn from(e: RemoteError) -> FixturesError {
        FixturesError::Remote(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provium::fixtures::remote::{ArtifactError, FixtureConfig};

    fn keys() -> Vec<String> {
        vec!["ab12".repeat(16), "ab34".repeat(16), "cd56".repeat(16)]
    }

    #[test]
    fn prefixes_select_one_key_each() {
        let all = keys();
        assert_eq!(select(&all, &[], "remote").unwrap().len(), 3);
        let one = select(&all, &["cd5".into(), "cd56".into()], "remote").unwrap();
        assert_eq!(one, vec![&all[2]]);
        let e = select(&all, &["ab".into()], "remote").unwrap_err();
        assert_eq!(
            e.to_string(),
            "2 remote fixtures have a key starting with ab: give more digits"
        );
        let e = select(&all, &["ef".into()], "cached").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no cached fixture has a key starting with ef"
        );
    }

    fn listed(protocol: u32, created: Option<SystemTime>, ours: bool) -> remote::Listed {
        remote::Listed {
            key: "a".repeat(64),
            digest: "sha256:0".into(),
            created,
            bytes: 5_000_000,
            ours,
            config: Ok(FixtureConfig {
                key: "a".repeat(64),
                protocol,
                image: "img".into(),
                builder: "b".into(),
                files: vec![],
            }),
        }
    }

    #[test]
    fn prune_deletes_old_protocols_broken_configs_and_old_pushes_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let day = Duration::from_secs(86_400);
        let fresh = listed(PROTOCOL_VERSION, Some(now - day), true);
        assert_eq!(stale(&fresh, None, now), None);
        assert_eq!(stale(&fresh, Some(2 * day), now), None);
        assert_eq!(
            stale(&fresh, Some(day), now).as_deref(),
            Some("pushed 24 h ago")
        );
        let old = listed(PROTOCOL_VERSION - 1, Some(now), true);
        assert!(stale(&old, None, now).is_some_and(
            |w| w.starts_with(&format!("made with protocol {}", PROTOCOL_VERSION - 1))
        ));
        let newer = listed(PROTOCOL_VERSION + 1, Some(now - 10 * day), true);
        assert_eq!(stale(&newer, None, now), None);
        let undated = listed(PROTOCOL_VERSION, None, true);
        assert_eq!(stale(&undated, Some(Duration::ZERO), now), None);
        let mut broken = listed(PROTOCOL_VERSION, None, true);
        broken.config = Err(ArtifactError::Config("nope".into()));
        assert!(stale(&broken, None, now).is_some());
        let mut foreign = listed(PROTOCOL_VERSION - 1, Some(now - 10 * day), false);
        assert_eq!(stale(&foreign, Some(Duration::ZERO), now), None);
        foreign.config = Err(ArtifactError::Config("not ours".into()));
        assert_eq!(stale(&foreign, None, now), None);
    }
}
