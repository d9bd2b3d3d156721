//! The guest operations, one row each: the single place that says which ops
//! exist, how Lua arguments become a request, how a direct call runs, whether
//! batches record it, which objects offer it and what it returns.
//!
//! Lua asks for the rows (`core.ops`) and installs one method per row on
//! `Vm` and `Worker`; a call is `core.call(ud, index, ...)`. Adding a guest
//! op: one `Op` variant (protocol), one agent handler, one row here (plus its
//! builder), and its doc in `lua/provium/_meta.lua`; [`op_row`] makes a
//! forgotten row a compile error, and `spec/meta_spec.lua` a forgotten doc.

use mlua::{AnyUserData, IntoLuaMulti, Lua, MultiValue, Table, Value};
use provium_protocol::Op;

use super::args;
use super::errors::{ApiError, ApiResult};
use super::file::{self, FileUd};
use super::ops::reply::run_one;
use super::ops::request::{Kind, Request};
use super::ops::{fs, raw, run, stream};
use super::process::ProcessUd;
use super::readinto;
use super::target::Target;
use super::vm::VmHandle;
use super::worker::WorkerUd;

/// Makes a request from Lua arguments (`call` is e.g. `vm:stat`).
pub type Build = fn(call: &str, t: &Target, rest: &[Value]) -> ApiResult<Request>;

/// Runs a direct call with its own flow (streams, uploads, objects).
pub type Run = fn(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue>;

/// Which objects offer an op as a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// `vm:` and `worker:`.
    VmAndWorker,
    /// `vm:` only.
    VmOnly,
    /// No method: reachable through `core.call` only (benchmarks, tests).
    Internal,
}

/// What a method returns, for the Lua class that wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// Plain values.
    Values,
    /// A RunResult table.
    RunResult,
    /// A File.
    File,
    /// A Tail.
    Tail,
    /// A Process.
    Process,
    /// A Worker.
    Worker,
}

impl Returns {
    fn as_str(self) -> &'static str {
        match self {
            Returns::Values => "values",
            Returns::RunResult => "run_result",
            Returns::File => "file",
            Returns::Tail => "tail",
            Returns::Process => "process",
            Returns::Worker => "worker",
        }
    }
}

/// One guest operation.
pub struct OpDef {
    /// The method name (`vm:<name>`).
    pub name: &'static str,
    /// The request builder; ops with one are batchable when `batch` is set.
    pub build: Option<Build>,
    /// A direct call's own flow; `None`: build, then one round trip.
    pub run: Option<Run>,
    /// Whether `vm:batch` records it.
    pub batch: bool,
    /// Which objects offer it.
    pub offer: Offer,
    /// What it returns.
    pub returns: Returns,
    /// Its first argument may be a File (passed as the File's handle).
    pub file_arg: bool,
}

const fn simple(name: &'static str, build: Build) -> OpDef {
    OpDef {
        name,
        build: Some(build),
        run: None,
        batch: true,
        offer: Offer::VmAndWorker,
        returns: Returns::Values,
        file_arg: false,
    }
}

const fn object(name: &'static str, run: Run, returns: Returns) -> OpDef {
    OpDef {
        name,
        build: None,
        run: Some(run),
        batch: false,
        offer: Offer::VmAndWorker,
        returns,
        file_arg: false,
    }
}

/// Every guest operation. The order is the index Lua calls them by.
pub static OPS: &[OpDef] = &[
    OpDef {
        run: Some(read_file),
        ..simple("read_file", fs::read_file)
    },
    OpDef {
        run: Some(fs::write_file_call),
        ..simple("write_file", fs::write_file)
    },
    simple("stat", fs::stat),
    simple("listdir", fs::listdir),
    simple("mkdir", fs::mkdir),
    simple("unlink", fs::unlink),
    simple("rename", fs::rename),
    simple("chmod", fs::chmod),
    simple("symlink", fs::symlink),
    OpDef {
        run: Some(run::call),
        returns: Returns::RunResult,
        ..simple("run", run::build)
    },
    simple("syscall", raw::build),
    object("open_file", open_file, Returns::File),
    object("tail_file", tail_file, Returns::Tail),
    OpDef {
        file_arg: true,
        ..object("fd_stream", fd_stream, Returns::Tail)
    },
    OpDef {
        file_arg: true,
        ..object("ioctl", ioctl, Returns::Values)
    },
    object("run_async", run_async, Returns::Process),
    OpDef {
        offer: Offer::VmOnly,
        ..object("spawn_worker", spawn_worker, Returns::Worker)
    },
    OpDef {
        batch: false,
        offer: Offer::Internal,
        ..simple("ping", ping)
    },
];

/// The row of every request the host sends for a guest op, by the `Op` it
/// builds; `None` for protocol plumbing. Exhaustive: a new `Op` variant does
/// not compile until it is given a row (or declared plumbing here).
pub fn op_row(op: &Op) -> Option<&'static str> {
    Some(match op {
        Op::Ping => "ping",
        Op::Stat { .. } => "stat",
        Op::ReadFile { .. } => "read_file",
        Op::WriteFile { .. } => "write_file",
        Op::ListDir { .. } => "listdir",
        Op::Mkdir { .. } => "mkdir",
        Op::Unlink { .. } => "unlink",
        Op::Rename { .. } => "rename",
        Op::Chmod { .. } => "chmod",
        Op::Symlink { .. } => "symlink",
        Op::Run(_) => "run",
        Op::Syscall(_) => "syscall",
        Op::OpenFile { .. } => "open_file",
        Op::Stream(_) => "tail_file",
        Op::Ioctl(_) => "ioctl",
        Op::RunAsync(_) => "run_async",
        Op::SpawnWorker(_) => "spawn_worker",
        Op::Batch(_) => return None,
        // Methods of the objects the rows return (File, Process, Worker),
        // and the plumbing of the connection.
        Op::Poweroff
        | Op::FileRead { .. }
        | Op::FileWrite { .. }
        | Op::FileSeek { .. }
        | Op::Close { .. }
        | Op::ProcWait { .. }
        | Op::ProcSignal { .. }
        | Op::ProcStatus { .. }
        | Op::ProcStdin { .. }
        | Op::ProcCloseStdin { .. }
        | Op::InWorker { .. }
        | Op::WorkerSignal { .. }
        | Op::WorkerJoin { .. } => return None,
    })
}

/// The row named `name`, with its index.
pub fn find(name: &str) -> Option<(usize, &'static OpDef)> {
    OPS.iter().enumerate().find(|(_, d)| d.name == name)
}

/// The row an op value names: its 1-based index, or its name.
fn lookup(op: &Value) -> Option<&'static OpDef> {
    match op {
        Value::Integer(i) => usize::try_from(*i - 1).ok().and_then(|i| OPS.get(i)),
        Value::String(s) => find(&s.to_string_lossy()).map(|(_, d)| d),
        _ => None,
    }
}

/// `core.ops`: the rows as Lua tables `{name=, batch=, vm=, worker=,
/// returns=, file_arg=}`, in index order (1-based in Lua).
pub fn lua_rows(lua: &Lua) -> mlua::Result<Table> {
    let list = lua.create_table_with_capacity(OPS.len(), 0)?;
    for d in OPS {
        let row = lua.create_table_with_capacity(0, 6)?;
        row.raw_set("name", d.name)?;
        row.raw_set("batch", d.batch)?;
        row.raw_set("vm", d.offer != Offer::Internal)?;
        row.raw_set("worker", d.offer == Offer::VmAndWorker)?;
        row.raw_set("returns", d.returns.as_str())?;
        row.raw_set("file_arg", d.file_arg)?;
        list.raw_push(row)?;
    }
    Ok(list)
}

/// `core.call(ud, op, ...)`: runs op `op` (its 1-based index, or its name)
/// on a VM or a Worker.
pub fn call(lua: &Lua, ud: &AnyUserData, op: &Value, rest: &[Value]) -> ApiResult<MultiValue> {
    let def = lookup(op).ok_or_else(|| {
        ApiError::msg(format!(
            "provium: unknown guest operation {}",
            args::show(op)
        ))
    })?;
    let (prefix, t) = endpoint(ud, def.name)?;
    let call = format!("{prefix}:{}", def.name);
    if prefix == "worker" && def.offer == Offer::VmOnly {
        return Err(ApiError::msg(format!(
            "{call}: workers cannot {}; use vm:{}",
            def.name.replace('_', " "),
            def.name
        )));
    }
    run_def(lua, def, &call, &t, rest)
}

/// The agent endpoint of a VM or a Worker userdata for op `name`: its call
/// prefix (`vm`, `worker`) and its target.
fn endpoint(ud: &AnyUserData, name: &str) -> ApiResult<(&'static str, Target)> {
    if let Ok(vm) = ud.borrow::<VmHandle>() {
        return Ok(("vm", vm.target(name)?));
    }
    if let Ok(w) = ud.borrow::<WorkerUd>() {
        w.live(&format!("worker:{name}"))?;
        return Ok(("worker", w.target().clone()));
    }
    #[cfg(test)]
    if let Ok(l) = ud.borrow::<super::loopback::Loopback>() {
        return Ok(("vm", l.target(&format!("vm:{name}"))?));
    }
    Err(ApiError::msg(format!("{name}: expected a VM or a Worker")))
}

fn run_def(
    lua: &Lua,
    def: &OpDef,
    call: &str,
    t: &Target,
    rest: &[Value],
) -> ApiResult<MultiValue> {
    if let Some(run) = def.run {
        return run(lua, call, t, rest);
    }
    let build = def
        .build
        .ok_or_else(|| ApiError::msg(format!("{call}: internal: no builder")))?;
    run_one(lua, t, build(call, t, rest)?)
}

/// `core.batch(ud, list)`: runs recorded calls (`{{op, count, args...},
/// ...}`, `op` an index or a name, `count` the number of arguments) in one
/// round trip (see [`super::ops::batch`]); returns the rows `{ {ok=value} |
/// {err=error}, ... }` in order and the list of the rows the Lua side must
/// finish (errors, run results).
pub fn batch(lua: &Lua, ud: &AnyUserData, list: &Value) -> ApiResult<MultiValue> {
    let (prefix, t) = endpoint(ud, "batch")?;
    let call = format!("{prefix}:batch");
    let Value::Table(list) = list else {
        return Err(ApiError::msg(format!(
            "{call}: internal: recorded calls missing"
        )));
    };
    let mut reqs = Vec::new();
    // Call names by op (`vm:stat`), made once per batch, not per entry.
    let mut names: Vec<(&'static str, String)> = Vec::new();
    let mut rest: Vec<Value> = Vec::new();
    for entry in list.clone().sequence_values::<Table>() {
        let entry = entry?;
        let op: Value = entry.raw_get(1)?;
        let Some((def, build)) = lookup(&op)
            .filter(|d| d.batch)
            .and_then(|d| d.build.map(|b| (d, b)))
        else {
            return Err(ApiError::msg(format!(
                "{call}: {} cannot be batched",
                args::show(&op)
            )));
        };
        let count: usize = entry.raw_get(2)?;
        rest.clear();
        for i in 3..3 + count {
            rest.push(entry.raw_get::<Value>(i)?);
        }
        let at = match names.iter().position(|(n, _)| *n == def.name) {
            Some(at) => at,
            None => {
                names.push((def.name, format!("{prefix}:{}", def.name)));
                names.len() - 1
            }
        };
        reqs.push(build(&names[at].1, &t, &rest)?);
    }
    let (rows, unfinished) = super::ops::batch::run(lua, &t, &call, reqs)?;
    Ok((rows, unfinished).into_lua_multi(lua)?)
}

// Direct-call flows of the rows -------------------------------------------

fn read_file(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    readinto::read_file(lua, t, fs::read_file(call, t, rest)?)
}

fn ping(call: &str, _t: &Target, _rest: &[Value]) -> ApiResult<Request> {
    Ok(Request::new(call, Op::Ping, Kind::Unit, None))
}

fn open_file(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(lua
        .create_userdata(FileUd::open(call, t, rest)?)?
        .into_lua_multi(lua)?)
}

fn tail_file(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(lua
        .create_userdata(stream::tail_file(call, t, rest)?)?
        .into_lua_multi(lua)?)
}

fn fd_stream(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(lua
        .create_userdata(stream::fd_stream(call, t, rest)?)?
        .into_lua_multi(lua)?)
}

fn ioctl(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(file::ioctl(lua, call, t, rest)?.into_lua_multi(lua)?)
}

fn run_async(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(lua
        .create_userdata(ProcessUd::start(call, t, rest)?)?
        .into_lua_multi(lua)?)
}

fn spawn_worker(lua: &Lua, call: &str, t: &Target, rest: &[Value]) -> ApiResult<MultiValue> {
    Ok(lua
        .create_userdata(WorkerUd::spawn(call, t, rest)?)?
        .into_lua_multi(lua)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_batchable_rows_have_builders() {
        for (i, d) in OPS.iter().enumerate() {
            assert_eq!(find(d.name).map(|(j, _)| j), Some(i), "{} twice", d.name);
            if d.batch {
                assert!(
                    d.build.is_some(),
                    "{} is batchable without a builder",
                    d.name
                );
            }
            assert!(
                d.build.is_some() || d.run.is_some(),
                "{} cannot run",
                d.name
            );
        }
    }

    #[test]
    fn every_row_op_names_a_row() {
        use provium_protocol::{OpenMode, RunSpec, StreamSource, SyscallSpec, TailStart};
        let ops = [
            Op::Ping,
            Op::Stat {
                path: vec![],
                follow: true,
            },
            Op::Chmod {
                path: vec![],
                mode: 0,
            },
            Op::Run(RunSpec::default()),
            Op::Syscall(SyscallSpec::default()),
            Op::OpenFile {
                path: vec![],
                mode: OpenMode::default(),
            },
            Op::Stream(StreamSource::File {
                path: vec![],
                start: TailStart::End,
            }),
        ];
        for op in &ops {
            let name = op_row(op).expect("a guest op");
            assert!(find(name).is_some(), "{name} has no row");
        }
    }
}
