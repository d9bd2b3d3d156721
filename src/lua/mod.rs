//! Lua bindings: the native module `provium.core` (core userdata and
//! functions). The public classes are Lua modules in `lua/provium/` that
//! build on it (see [`errors`] for why the split).

pub mod args;
pub mod bench;
pub mod console;
pub mod errors;
pub mod file;
pub mod fixtures;
pub mod fixtures_remote;
#[cfg(test)]
pub mod loopback;
pub mod ops;
pub mod process;
pub mod readinto;
pub mod registry;
pub mod snapshot;
pub mod tail;
pub mod target;
#[cfg(test)]
mod tests;
pub mod vm;
pub mod vm_options;
pub mod worker;

use mlua::{AnyUserData, Lua, Table, Value};

use std::os::unix::ffi::OsStrExt;

use errors::{ret, ApiError, ApiResult};
use vm::VmHandle;

/// Builds the `provium.core` module table.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let core = lua.create_table()?;
    core.set(
        "new_vm",
        lua.create_function(|lua, (name, profile, opts): (Value, Value, Value)| {
            ret(lua, VmHandle::new(&name, &profile, &opts))
        })?,
    )?;
    core.set(
        "boot_many",
        lua.create_function(|lua, list: Table| {
            let r = (|| {
                let uds: Vec<AnyUserData> = list
                    .sequence_values::<AnyUserData>()
                    .collect::<mlua::Result<_>>()?;
                let refs: Vec<mlua::UserDataRef<VmHandle>> = uds
                    .iter()
                    .map(|u| u.borrow::<VmHandle>())
                    .collect::<mlua::Result<_>>()?;
                let vms: Vec<&VmHandle> = refs.iter().map(|r| &**r).collect();
                vm::boot_many(&vms)
            })();
            ret(lua, r)
        })?,
    )?;
    core.set(
        "prepare_default_guest",
        lua.create_function(|lua, ()| {
            let r = (|| {
                let img = crate::image::boot::default_image_cached()
                    .map_err(|e| ApiError::msg(format!("provium.prepare_default_guest: {e}")))?;
                let t = lua.create_table()?;
                t.set("kernel", img.kernel.display().to_string())?;
                t.set("initrd", img.initrd.display().to_string())?;
                t.set("key", img.key.clone())?;
                t.set("kernel_release", img.kernel_release.clone())?;
                t.set("kernel_package", img.kernel_package.clone())?;
                Ok::<_, ApiError>(t)
            })();
            ret(lua, r)
        })?,
    )?;
    core.set(
        "host",
        lua.create_function(|lua, ()| {
            let r = (|| {
                let h = crate::vm::host::HostReport::detect()
                    .map_err(|e| ApiError::msg(format!("provium.host: {e}")))?;
                let t = lua.create_table()?;
                t.set("kind", h.kind())?;
                t.set("accel", h.accel.as_str())?;
                t.set("accel_reason", h.accel_reason.clone())?;
                t.set("vsock", h.vsock.as_str())?;
                t.set("vsock_reason", h.vsock_reason.clone())?;
                t.set("transport", h.transport.as_str())?;
                t.set("transport_reason", h.transport_reason)?;
                Ok::<_, ApiError>(t)
            })();
            ret(lua, r)
        })?,
    )?;
    core.set(
        "now",
        lua.create_function(|_, ()| {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            Ok(START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_secs_f64())
        })?,
    )?;
    core.set("ops", registry::lua_rows(lua)?)?;
    core.set(
        "call",
        lua.create_function(|lua, mv: mlua::MultiValue| {
            let mut it = mv.into_iter();
            let r = match (it.next(), it.next()) {
                (Some(Value::UserData(ud)), Some(op)) => {
                    let rest: Vec<Value> = it.collect();
                    registry::call(lua, &ud, &op, &rest)
                }
                _ => Err(ApiError::msg(
                    "provium.core.call: expected (vm_or_worker, op, ...)",
                )),
            };
            ret(lua, r)
        })?,
    )?;
    core.set(
        "batch",
        lua.create_function(|lua, (ud, list): (AnyUserData, Value)| {
            ret(lua, registry::batch(lua, &ud, &list))
        })?,
    )?;
    core.set(
        "snapshot",
        lua.create_function(|lua, (vm, path): (mlua::UserDataRef<VmHandle>, Value)| {
            ret(lua, snapshot::take(lua, &vm, &path))
        })?,
    )?;
    core.set(
        "restore",
        lua.create_function(
            |lua,
             (vm, snap, opts, spare): (
                mlua::UserDataRef<VmHandle>,
                Value,
                Value,
                Option<bool>,
            )| {
                ret(
                    lua,
                    snapshot::restore(&vm, &snap, &opts, spare.unwrap_or(false)),
                )
            },
        )?,
    )?;
    fixtures::register(lua, &core)?;
    fixtures_remote::register(lua, &core)?;
    core.set(
        "read_host_file",
        lua.create_function(|lua, (call, path): (String, Value)| {
            ret(lua, read_host_file(lua, &call, &path))
        })?,
    )?;
    core.set(
        "check_options",
        lua.create_function(
            |lua, (call, name, opts, known): (String, String, Value, Vec<String>)| {
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                let r = args::opt_table(&call, &name, &opts).and_then(|t| match t {
                    Some(t) => args::check_keys(&call, &name, &t, &known).map(|()| true),
                    None => Ok(true),
                });
                ret(lua, r)
            },
        )?,
    )?;
    core.set(
        "progress",
        lua.create_function(|_, line: String| {
            tracing::info!("{line}");
            Ok(())
        })?,
    )?;
    core.set(
        "warn",
        lua.create_function(|_, line: String| {
            tracing::warn!("{line}");
            Ok(())
        })?,
    )?;
    core.set("version", env!("CARGO_PKG_VERSION"))?;
    core.set("protocol_version", provium_protocol::PROTOCOL_VERSION)?;
    Ok(core)
}

/// `core.read_host_file(call, path)` → the bytes and permission bits of a
/// host file (push_file's source).
fn read_host_file(lua: &Lua, call: &str, path: &Value) -> ApiResult<(mlua::String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let p = args::path(call, "host_path", path)?;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&p));
    let fail =
        |e: std::io::Error| ApiError::msg(format!("{call}: cannot read {}: {e}", p.display()));
    let meta = std::fs::metadata(p).map_err(fail)?;
    if meta.is_dir() {
        return Err(ApiError::msg(format!(
            "{call}: {} is a directory; push_file copies one file",
            p.display()
        )));
    }
    let data = std::fs::read(p).map_err(fail)?;
    Ok((
        lua.create_string(&data)?,
        meta.permissions().mode() & 0o7777,
    ))
}
