//! Lua bindings: core userdata and functions in Rust, the public classes in
//! `prelude.lua` (see [`errors`] for why the split).

pub mod args;
pub mod bench;
pub mod errors;
pub mod file;
pub mod fixtures;
pub mod objects;
pub mod ops;
pub mod process;
pub mod readinto;
pub mod snapshot;
pub mod tail;
pub mod target;
pub mod vm;
pub mod worker;

use mlua::{AnyUserData, Lua, Table, Value};

use errors::{ret, ApiError};
use vm::VmHandle;

const PRELUDE: &str = include_str!("prelude.lua");

/// Builds the `provium` module table.
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
                let img = crate::images::default_image_cached()
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
    fixtures::register(lua, &core)?;
    core.set("version", env!("CARGO_PKG_VERSION"))?;
    core.set("protocol_version", provium_protocol::PROTOCOL_VERSION)?;
    lua.load(PRELUDE)
        .set_name("=provium/prelude.lua")
        .call(core)
}
