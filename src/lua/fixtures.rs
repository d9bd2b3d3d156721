//! The core functions behind `provium.vm_fixture` and `provium.fixtures`:
//! keys, cache lookups, build locks and installs (see [`crate::fixtures`]).
//! The build itself (running the builder, closing its VMs, restoring the
//! entry) is Lua, in `lua/provium/fixtures.lua`.

use std::path::{Path, PathBuf};

use mlua::{AnyUserData, Lua, Table, UserData, UserDataMethods};

use super::errors::{ret, ApiError, ApiResult};
use super::snapshot::{set_default_dir, Snapshot};
use crate::fixtures::key::{fixture_key, KeyInputs};
use crate::fixtures::lock::CacheLock;
use crate::fixtures::meta::EntryMeta;
use crate::fixtures::{cache_dir, cap_bytes, Cache, EntryInfo};
use crate::vm::snapshot::SnapshotMeta;

const CALL: &str = "provium.vm_fixture";

fn cache() -> ApiResult<Cache> {
    Cache::open(cache_dir()).map_err(|e| ApiError::msg(format!("{CALL}: {e}")))
}

/// A held build lock (released by `release()` or collection).
struct BuildLock(std::sync::Mutex<Option<CacheLock>>);

impl UserData for BuildLock {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("release", |lua, this, ()| {
            this.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            ret(lua, Ok(()))
        });
    }
}

fn key(lua: &Lua, builder: String, package_path: String) -> ApiResult<Table> {
    let image = crate::image::boot::default_image_cached()
        .map_err(|e| ApiError::msg(format!("{CALL}: cannot prepare the default guest: {e}")))?;
    let builder = std::fs::canonicalize(&builder)
        .map_err(|e| ApiError::msg(format!("{CALL}: cannot read the builder {builder}: {e}")))?;
    let inputs = KeyInputs {
        builder: builder.clone(),
        package_path,
        image_identity: image.key.as_bytes().to_vec(),
        protocol_version: provium_protocol::PROTOCOL_VERSION,
    };
    let k = fixture_key(&inputs).map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?;
    let t = lua.create_table()?;
    t.set("hex", k.hex)?;
    t.set("builder", builder.display().to_string())?;
    t.set("manifest", lua.create_sequence_from(k.manifest)?)?;
    Ok(t)
}

fn lock(lua: &Lua, hex: String, label: String) -> ApiResult<AnyUserData> {
    let c = cache()?;
    let err = |e| ApiError::msg(format!("{CALL}: {e}"));
    let held = c
        .lock_or_wait(&hex, |holder| {
            let who = holder
                .map(|s| format!(" (being built by {s})"))
                .unwrap_or_default();
            tracing::info!("waiting for fixture {label}{who}");
        })
        .map_err(err)?;
    Ok(lua.create_userdata(BuildLock(std::sync::Mutex::new(Some(held))))?)
}

fn install(hex: String, snap: AnyUserData, builder: String, manifest: Table) -> ApiResult<String> {
    let c = cache()?;
    let snap = snap.borrow::<Snapshot>()?;
    let dir = snap.take_dir().ok_or_else(|| {
        ApiError::msg(format!(
            "{CALL}: {builder} returned a Snapshot that was deleted"
        ))
    })?;
    let manifest: Vec<String> = manifest
        .sequence_values::<String>()
        .collect::<mlua::Result<_>>()?;
    let meta = EntryMeta::new(&builder, manifest);
    let entry = c
        .install(&hex, &dir, &meta)
        .map_err(|e| ApiError::msg(format!("{CALL}: caching the snapshot of {builder}: {e}")))?;
    Ok(entry.display().to_string())
}

/// The staging directory for snapshots of a build of `hex` (on the cache's
/// file system, named so that `clean` knows whose it is).
fn stage_dir(hex: &str) -> ApiResult<PathBuf> {
    let c = cache()?;
    Ok(c.dir().join(format!(
        "{}stage{}-{}-0",
        crate::fixtures::cache::TMP_PREFIX,
        &hex[..hex.len().min(12)],
        std::process::id()
    )))
}

fn entry_info(lua: &Lua, e: &EntryInfo) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("key", e.hex.clone())?;
    t.set("path", e.path.display().to_string())?;
    t.set("size", e.bytes_on_disk)?;
    let secs = e
        .last_used
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    t.set("last_used", secs)?;
    if let Some(b) = &e.builder {
        t.set("builder", b.display().to_string())?;
    }
    Ok(t)
}

/// Registers the `fixture_*` core functions.
pub fn register(lua: &Lua, core: &Table) -> mlua::Result<()> {
    core.set(
        "fixture_key",
        lua.create_function(|lua, (b, p): (String, String)| ret(lua, key(lua, b, p)))?,
    )?;
    core.set(
        "fixture_lookup",
        lua.create_function(|lua, hex: String| {
            ret(
                lua,
                cache().map(|c| c.lookup(&hex).map(|p| p.display().to_string())),
            )
        })?,
    )?;
    core.set(
        "fixture_lock",
        lua.create_function(|lua, (hex, label): (String, String)| ret(lua, lock(lua, hex, label)))?,
    )?;
    core.set(
        "fixture_stage",
        lua.create_function(|lua, hex: Option<String>| {
            let r = match hex {
                Some(h) => stage_dir(&h).map(|d| {
                    set_default_dir(Some(d.clone()));
                    d.display().to_string()
                }),
                None => {
                    set_default_dir(None);
                    Ok(String::new())
                }
            };
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_unstage",
        lua.create_function(|lua, dir: String| {
            // Only removes it when empty (a snapshot that was not returned
            // stays until its Snapshot is collected).
            let _ = std::fs::remove_dir(Path::new(&dir));
            ret(lua, Ok(()))
        })?,
    )?;
    core.set(
        "fixture_install",
        lua.create_function(
            |lua, (hex, snap, builder, manifest): (String, AnyUserData, String, Table)| {
                ret(lua, install(hex, snap, builder, manifest))
            },
        )?,
    )?;
    core.set(
        "fixture_check",
        lua.create_function(|lua, dir: String| {
            ret(
                lua,
                SnapshotMeta::load(Path::new(&dir))
                    .map(drop)
                    .map_err(|e| ApiError::msg(e.to_string())),
            )
        })?,
    )?;
    core.set(
        "fixture_discard",
        lua.create_function(|lua, (hex, why): (String, String)| {
            let r = cache().and_then(|c| {
                c.discard(&hex, &why)
                    .map_err(|e| ApiError::msg(format!("{CALL}: {e}")))
            });
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_remove",
        lua.create_function(|lua, hex: String| {
            let r = cache().and_then(|c| {
                let _held = c
                    .lock(&hex)
                    .map_err(|e| ApiError::msg(format!("provium.fixtures.remove: {e}")))?;
                c.remove(&hex)
                    .map_err(|e| ApiError::msg(format!("provium.fixtures.remove: {e}")))
            });
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_list",
        lua.create_function(|lua, ()| {
            let r = cache().and_then(|c| {
                let list = c
                    .list()
                    .map_err(|e| ApiError::msg(format!("provium.fixtures.list: {e}")))?;
                let t = lua.create_table()?;
                for e in &list {
                    t.raw_push(entry_info(lua, e)?)?;
                }
                Ok(t)
            });
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_clean",
        lua.create_function(|lua, ()| {
            let r = cache().and_then(|c| {
                let report = c
                    .clean()
                    .map_err(|e| ApiError::msg(format!("provium.fixtures.clean: {e}")))?;
                Ok(report.entries.len())
            });
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_evict",
        lua.create_function(|lua, ()| {
            let r = (|| {
                let cap = cap_bytes().map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?;
                let c = cache()?;
                let gone = c
                    .evict(cap)
                    .map_err(|e| ApiError::msg(format!("{CALL}: evicting: {e}")))?;
                for e in &gone {
                    tracing::info!(
                        "fixture cache over {cap} bytes: evicted {} ({} bytes)",
                        e.path.display(),
                        e.bytes_on_disk
                    );
                }
                Ok::<_, ApiError>(gone.len())
            })();
            ret(lua, r)
        })?,
    )?;
    core.set(
        "fixture_cache_dir",
        lua.create_function(|lua, ()| ret(lua, Ok(cache_dir().display().to_string())))?,
    )?;
    Ok(())
}
