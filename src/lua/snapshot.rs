//! Snapshots as Lua sees them: `vm:snapshot(path?)` → Snapshot userdata,
//! `vm:restore(snap | path)`, `snap:size()`, `snap:path()`, `snap:delete()`.
//!
//! A snapshot taken without a path is temporary: it lives next to the VM run
//! directories and is removed when its Snapshot is collected, deleted, or
//! the process ends (a killed process's are swept by the next one). One
//! taken with a path stays until `snap:delete()`. A fixture build moves its
//! snapshot into the fixture cache ([`Snapshot::take_dir`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use mlua::{Lua, UserData, UserDataMethods, UserDataRef, Value};

use super::args;
use super::errors::{ret, ApiError, ApiResult};
use super::vm::VmHandle;
use crate::vm::rundir::RunDir;
use crate::vm::snapshot::{self, SnapshotMeta};

/// Where snapshots without a path go while a fixture is being built (the
/// cache's own file system, so installing it is a rename).
static DEFAULT_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets (or clears) the directory for snapshots taken without a path.
pub fn set_default_dir(dir: Option<PathBuf>) {
    *DEFAULT_DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// A snapshot directory held by Lua.
pub struct Snapshot {
    dir: Mutex<Option<PathBuf>>,
    /// Removed on drop.
    temporary: bool,
}

impl Snapshot {
    /// Its directory, unless deleted.
    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands the directory over (to the fixture cache): this Snapshot no
    /// longer owns or deletes it.
    pub fn take_dir(&self) -> Option<PathBuf> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn delete(&self) -> ApiResult<()> {
        if let Some(dir) = self.take_dir() {
            std::fs::remove_dir_all(&dir).map_err(|e| {
                ApiError::msg(format!("snap:delete: cannot remove {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }

    fn live(&self, call: &str) -> ApiResult<PathBuf> {
        self.dir()
            .ok_or_else(|| ApiError::msg(format!("{call}: the snapshot was deleted")))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.temporary {
            if let Some(dir) = self.take_dir() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl UserData for Snapshot {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("path", |lua, this, ()| {
            let r = this.live("snap:path").map(|p| p.display().to_string());
            ret(lua, r)
        });
        m.add_method("size", |lua, this, ()| {
            let r = this.live("snap:size").and_then(|p| {
                snapshot::disk_usage(&p).map_err(|e| {
                    ApiError::msg(format!("snap:size: cannot read {}: {e}", p.display()))
                })
            });
            ret(lua, r)
        });
        m.add_method("delete", |lua, this, ()| ret(lua, this.delete()));
        m.add_method("describe", |lua, this, ()| {
            let text = match this.dir() {
                None => "deleted".to_string(),
                Some(p) => match SnapshotMeta::load(&p) {
                    Ok(meta) => format!("{} of vm \"{}\"", p.display(), meta.vm),
                    Err(_) => p.display().to_string(),
                },
            };
            ret(lua, Ok(text))
        });
    }
}

/// `vm:snapshot(path?)`.
pub fn take(lua: &Lua, vm: &VmHandle, path: &Value) -> ApiResult<mlua::AnyUserData> {
    const CALL: &str = "vm:snapshot";
    let (dest, temporary) = match path {
        Value::Nil => {
            let default = DEFAULT_DIR
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let dest = match default {
                Some(dir) => unique_in(&dir),
                None => RunDir::scratch_path("snap"),
            }
            .map_err(|e| ApiError::msg(format!("{CALL}: no place for the snapshot: {e}")))?;
            (dest, true)
        }
        Value::String(s) => {
            let p = PathBuf::from(s.to_str()?.to_string());
            if p.as_os_str().is_empty() {
                return Err(ApiError::msg(format!("{CALL}: path must not be empty")));
            }
            (p, false)
        }
        other => {
            return Err(ApiError::msg(format!(
                "{CALL}: path must be a string or nil (got {})",
                args::show(other)
            )))
        }
    };
    vm.snapshot(&dest)?;
    Ok(lua.create_userdata(Snapshot {
        dir: Mutex::new(Some(dest)),
        temporary,
    })?)
}

fn unique_in(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let pid = std::process::id();
    for n in 0u32.. {
        let p = dir.join(format!("snap-{pid}-{n}"));
        if !p.exists() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no free name"))
}

/// `vm:restore(snap | path, opts?)`; `spare` is set by fixtures only (see
/// `crate::vm::spare`).
pub fn restore(vm: &VmHandle, snap: &Value, opts: &Value, spare: bool) -> ApiResult<()> {
    const CALL: &str = "vm:restore";
    let dir = match snap {
        Value::String(s) => PathBuf::from(s.to_str()?.to_string()),
        other => match borrow(other) {
            Some(s) => s.live(CALL)?,
            None => {
                return Err(ApiError::msg(format!(
                    "{CALL}: snapshot must be a Snapshot or a path (got {})",
                    args::show(other)
                )))
            }
        },
    };
    let mut timeout: Option<Duration> = None;
    if let Some(t) = args::opt_table(CALL, "opts", opts)? {
        args::check_keys(CALL, "opts", &t, &["timeout"])?;
        let tv: Value = t.raw_get("timeout")?;
        if !tv.is_nil() {
            timeout = Some(args::duration(CALL, "opts.timeout", &tv)?);
        }
    }
    SnapshotMeta::load(&dir).map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?;
    vm.restore(&dir, timeout, spare)
}

/// The Snapshot inside a Lua value, if it is one.
fn borrow(v: &Value) -> Option<UserDataRef<Snapshot>> {
    match v {
        Value::UserData(ud) => ud.borrow::<Snapshot>().ok(),
        _ => None,
    }
}
