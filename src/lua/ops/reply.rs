//! Running a [`Request`] and turning the agent's answer into Lua values.

use mlua::{IntoLuaMulti, Lua, MultiValue};
use provium_protocol::{Failure, Reply, CHUNK_LEN};

use super::request::{Kind, Request};
use super::values::{entries_table, run_result, stat_table, syscall_table};
use crate::lua::errors::{ApiError, ApiResult};
use crate::lua::target::Target;
use crate::transport::client::PendingCall;
use crate::transport::Completed;

/// Turns one reply into Lua values (or the error to raise).
pub fn convert(
    lua: &Lua,
    req: &Request,
    result: Result<Reply, Failure>,
    channels: [Vec<u8>; 3],
) -> ApiResult<MultiValue> {
    let reply = result.map_err(|f| req.failure(f))?;
    let unexpected = || ApiError::msg(format!("{}: the agent sent an unexpected reply", req.name));
    let [mut body, mut out, mut err] = channels;
    Ok(match (req.kind, reply) {
        (Kind::Unit, _) => MultiValue::new(),
        (Kind::Bytes, Reply::Bytes(tail)) => {
            if body.is_empty() {
                lua.create_string(&tail)?.into_lua_multi(lua)?
            } else {
                body.extend_from_slice(&tail);
                lua.create_string(&body)?.into_lua_multi(lua)?
            }
        }
        (Kind::Stat, Reply::Stat(st)) => stat_table(lua, &st)?.into_lua_multi(lua)?,
        (Kind::Entries, Reply::Entries(tail)) => {
            // A large listing came ahead in `Data` chunks.
            let mut entries = provium_protocol::DirEntry::decode_run(&body).map_err(|e| {
                ApiError::msg(format!("{}: bad listing from the agent: {e}", req.name))
            })?;
            entries.extend(tail);
            entries_table(lua, entries)?.into_lua_multi(lua)?
        }
        (Kind::Run, Reply::Run(o)) => {
            run_result(lua, o, &mut out, &mut err, req.command.as_deref())?.into_lua_multi(lua)?
        }
        (Kind::Syscall, Reply::Syscall { ret, errno, bufs }) => {
            syscall_table(lua, ret, errno, bufs)?.into_lua_multi(lua)?
        }
        _ => return Err(unexpected()),
    })
}

/// Runs a batchable operation: one round trip.
pub fn run_one(lua: &Lua, t: &Target, req: Request) -> ApiResult<MultiValue> {
    let done = t.roundtrip(&req.name, req.op.clone())?;
    let Completed { result, channels } = done;
    convert(lua, &req, result, channels)
}

/// Sends `data` as the `Data` of call `pending`, in chunks, the last one
/// marked (write_file's body, run's stdin).
pub fn send_upload(t: &Target, call: &str, pending: &PendingCall, data: &[u8]) -> ApiResult<()> {
    let mut chunks = data.chunks(CHUNK_LEN).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        t.client
            .send_data(pending.id, chunk, last)
            .map_err(|e| t.infra(call, e))?;
    }
    Ok(())
}
