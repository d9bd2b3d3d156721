//! provium: boot real Linux guests under QEMU and drive them from Lua.
//!
//! Layers, bottom up:
//! * [`provium_protocol`] — frames and messages shared with the guest agent;
//! * [`transport`] — the multiplexed connection to an agent;
//! * [`vm`] — QEMU, the vsock device, the console;
//! * [`image`] — what a guest boots: the default image (Debian's kernel and an
//!   initramfs around the embedded agent), `provium.toml` profiles, extra files;
//! * [`fixtures`] — the fixture cache key and the on-disk fixture cache;
//! * [`metadata`] — the JSON metadata files of both caches;
//! * [`lua`] — the Lua module.
//!
//! All I/O runs on the rock's own tokio runtime ([`runtime`]); Lua calls block
//! on replies.

#![deny(missing_docs)]

pub mod fixtures;
#[cfg(test)]
mod fuzz_config;
pub mod image;
pub mod interrupt;
pub mod log;
pub mod lua;
pub mod metadata;
pub mod runtime;
pub mod transport;
pub mod vm;

// The rock is a Lua module: it takes Lua's symbols from the interpreter that
// loads it. Unit tests have no interpreter, so they link the system Lua 5.4
// (liblua5.4-dev, which scripts/setup installs).
#[cfg(test)]
#[link(name = "lua5.4")]
extern "C" {}

/// Entry point for `require("provium.core")` (`luaopen_provium_core`); the
/// Lua modules of `lua/provium/` build the public API on it.
#[mlua::lua_module(name = "provium_core")]
fn provium_core(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    log::init();
    lua::open(lua)
}
