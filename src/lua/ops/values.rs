//! Lua values of agent replies: stat tables, listings, run results,
//! syscall results.

use mlua::{ffi, Lua, Table};
use provium_protocol::{DirEntry, RunOutcome, StatInfo};
use serde_bytes::ByteBuf;

/// The stat table of `st`.
pub fn stat_table(lua: &Lua, st: &StatInfo) -> mlua::Result<Table> {
    // SAFETY: the closure only pushes numbers and static strings into the
    // table it creates (see `push_stat`).
    unsafe { lua.exec_raw((), |state| push_stat(state, st)) }
}

/// Sets `list[i] = {ok = stat table of st}` (a batch row).
pub fn set_stat_row(lua: &Lua, list: &Table, i: usize, st: &StatInfo) -> mlua::Result<()> {
    let i = ffi::lua_Integer::try_from(i).map_err(mlua::Error::external)?;
    // SAFETY: `list` is argument 1 of the protected call; the closure pushes
    // two fresh tables (see `push_stat`) and stores them, leaving the stack
    // as it found it.
    unsafe {
        lua.exec_raw::<()>(list, |state| {
            ffi::lua_createtable(state, 0, 1);
            push_stat(state, st);
            ffi::lua_setfield(state, -2, c"ok".as_ptr());
            ffi::lua_rawseti(state, 1, i);
            ffi::lua_pop(state, 1);
        })
    }
}

/// Pushes the stat table of `st` with the raw C API.
///
/// Measured reason for not using mlua's `Table::raw_set` here: in a module
/// each `raw_set` is a protected call of its own; for a batch of 1,000 stats
/// (18 fields each) that was ~5 ms of the host's ~11 ms of CPU per batch
/// (`perf`, bench/batch.lua). One protected call per table (`exec_raw`)
/// does the same work.
///
/// # Safety
/// `state` must be inside a protected call with 3 free stack slots. Only
/// numbers and static strings are pushed; nothing here needs dropping if a
/// memory error unwinds the call.
unsafe fn push_stat(state: *mut ffi::lua_State, st: &StatInfo) {
    use std::ffi::CStr;
    let int = |key: &CStr, v: i64| {
        ffi::lua_pushinteger(state, v);
        ffi::lua_setfield(state, -2, key.as_ptr());
    };
    let num = |key: &CStr, v: f64| {
        ffi::lua_pushnumber(state, v);
        ffi::lua_setfield(state, -2, key.as_ptr());
    };
    // As mlua converts a u64: an integer when it fits, else a float.
    let uint = |key: &CStr, v: u64| match i64::try_from(v) {
        Ok(v) => int(key, v),
        Err(_) => num(key, v as f64),
    };
    let secs = |ns: i64| ns as f64 / 1e9;
    ffi::lua_createtable(state, 0, 18);
    uint(c"size", st.size);
    num(c"mtime", secs(st.mtime_ns));
    int(c"mtime_ns", st.mtime_ns);
    num(c"atime", secs(st.atime_ns));
    int(c"atime_ns", st.atime_ns);
    num(c"ctime", secs(st.ctime_ns));
    int(c"ctime_ns", st.ctime_ns);
    int(c"perm", i64::from(st.perm()));
    int(c"mode", i64::from(st.mode));
    let kind = st.entry_type().as_str();
    ffi::lua_pushlstring(state, kind.as_ptr().cast(), kind.len());
    ffi::lua_setfield(state, -2, c"entry_type".as_ptr());
    int(c"uid", i64::from(st.uid));
    int(c"gid", i64::from(st.gid));
    uint(c"ino", st.ino);
    uint(c"nlink", st.nlink);
    uint(c"dev", st.dev);
    uint(c"rdev", st.rdev);
    uint(c"blocks", st.blocks);
    uint(c"blksize", st.blksize);
}

/// The listing table: `{ {name=, entry_type=}, ... }`.
pub fn entries_table(lua: &Lua, entries: Vec<DirEntry>) -> mlua::Result<Table> {
    let list = lua.create_table_with_capacity(entries.len(), 0)?;
    for e in entries {
        let row = lua.create_table_with_capacity(0, 2)?;
        row.raw_set("name", lua.create_string(&e.name)?)?;
        row.raw_set("entry_type", e.entry_type.as_str())?;
        list.raw_push(row)?;
    }
    Ok(list)
}

/// The fields of a RunResult (the Lua class adds its methods).
pub fn run_result(
    lua: &Lua,
    o: RunOutcome,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
    command: Option<&str>,
) -> mlua::Result<Table> {
    out.extend_from_slice(&o.stdout);
    err.extend_from_slice(&o.stderr);
    let t = lua.create_table_with_capacity(0, 7)?;
    if let Some(c) = command {
        t.raw_set("command", c)?;
    }
    t.raw_set("stdout", lua.create_string(&*out)?)?;
    t.raw_set("stderr", lua.create_string(&*err)?)?;
    match o.status {
        provium_protocol::ExitStatus::Exited(code) => {
            t.raw_set("status", "exited")?;
            t.raw_set("exit_code", code)?;
            t.raw_set("timed_out", false)?;
        }
        provium_protocol::ExitStatus::Signalled(sig) => {
            t.raw_set("status", "signalled")?;
            t.raw_set("exit_code", -1)?;
            t.raw_set("signal", sig)?;
            t.raw_set("timed_out", false)?;
        }
        provium_protocol::ExitStatus::TimedOut => {
            t.raw_set("status", "timed_out")?;
            t.raw_set("exit_code", -2)?;
            t.raw_set("signal", libc::SIGKILL)?;
            t.raw_set("timed_out", true)?;
        }
    }
    Ok(t)
}

/// `{ret=, result=, errno=, out_bufs={...}}`.
pub fn syscall_table(lua: &Lua, ret: i64, errno: i32, bufs: Vec<ByteBuf>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("ret", ret)?;
    t.raw_set("result", ret)?;
    t.raw_set("errno", errno)?;
    let out = lua.create_table_with_capacity(bufs.len(), 0)?;
    for b in bufs {
        out.raw_push(lua.create_string(&b)?)?;
    }
    t.raw_set("out_bufs", out)?;
    Ok(t)
}
