//! The core functions that share fixtures through a remote store
//! (`provium.vm_fixture` calls them; see [`crate::fixtures::remote`]):
//! `fixture_pull` after a local miss, `fixture_push` after a local build.
//!
//! A remote store never fails a test: whatever goes wrong (no registry, a
//! refused artifact, bad credentials) is one warning line, and the fixture
//! is built here.

use std::path::Path;
use std::time::Duration;

use mlua::{Lua, Table};

use super::errors::ret;
use crate::fixtures::meta::EntryMeta;
use crate::fixtures::remote::{self, Expect, Remote, ThisMachine, Transfer};
use crate::fixtures::{cache_dir, Cache};

/// Transfers at least this long get a progress line.
const NOTABLE: Duration = Duration::from_secs(1);

/// What this machine wants of the artifact of `hex`.
fn expect(hex: &str) -> Result<Expect, String> {
    ThisMachine::current().map(|m| m.expect(hex))
}

/// The configured store; a broken setting is warned about and counts as
/// none.
fn configured(builder: &str) -> Option<Remote> {
    match Remote::configured() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("fixture {builder}: no remote store ({e}); building it here");
            None
        }
    }
}

fn megabytes(t: &Transfer) -> f64 {
    t.bytes as f64 / 1e6
}

/// Pulls the entry of `hex` into the cache → its directory, or `None`
/// (no store, no artifact, or a failure, which is warned about).
fn pull(hex: &str, builder: &str, manifest: Vec<String>) -> Option<String> {
    let remote = configured(builder)?;
    let warn = |why: String| {
        tracing::warn!(
            "fixture {builder}: not taken from {} ({why}); building it here",
            remote.location()
        );
    };
    let expect = match expect(hex) {
        Ok(e) => e,
        Err(why) => {
            warn(why);
            return None;
        }
    };
    let cache = match Cache::open(cache_dir()) {
        Ok(c) => c,
        Err(e) => {
            warn(e.to_string());
            return None;
        }
    };
    let meta = EntryMeta::new(builder, manifest);
    let result = remote::pull_into(&remote, &cache, &expect, &meta).map_err(|e| e.to_string());
    match result {
        Ok(None) => {
            tracing::debug!("fixture {builder}: {hex} is not in {}", remote.location());
            None
        }
        Ok(Some((dir, t))) => {
            if t.elapsed >= NOTABLE {
                tracing::info!(
                    "pulled fixture {builder} from {} ({:.1} MB in {:.1} s)",
                    remote.location(),
                    megabytes(&t),
                    t.elapsed.as_secs_f64()
                );
            }
            Some(dir.display().to_string())
        }
        Err(why) => {
            warn(why);
            None
        }
    }
}

/// Pushes the cached entry `dir` of `hex`; a failure is warned about.
fn push(hex: &str, dir: &str, builder: &str) {
    let Some(remote) = configured(builder) else {
        return;
    };
    let result = expect(hex).and_then(|expect| {
        remote
            .push(&expect, Path::new(dir), builder)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(t) if t.elapsed >= NOTABLE => tracing::info!(
            "pushed fixture {builder} to {} ({:.1} MB in {:.1} s)",
            remote.location(),
            megabytes(&t),
            t.elapsed.as_secs_f64()
        ),
        Ok(_) => {}
        Err(why) => tracing::warn!(
            "fixture {builder}: not shared through {} ({why})",
            remote.location()
        ),
    }
}

/// Registers `fixture_pull` and `fixture_push`.
pub fn register(lua: &Lua, core: &Table) -> mlua::Result<()> {
    core.set(
        "fixture_pull",
        lua.create_function(|lua, (hex, builder, manifest): (String, String, Table)| {
            let manifest: Vec<String> = manifest
                .sequence_values::<String>()
                .collect::<mlua::Result<_>>()?;
            ret(lua, Ok(pull(&hex, &builder, manifest)))
        })?,
    )?;
    core.set(
        "fixture_push",
        lua.create_function(|lua, (hex, dir, builder): (String, String, String)| {
            push(&hex, &dir, &builder);
            ret(lua, Ok(()))
        })?,
    )?;
    Ok(())
}
