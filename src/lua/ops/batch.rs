//! A batch's round trip: its requests go out as one `Op::Batch`; the
//! results come back in order, runs of them ahead of the reply as `Data`
//! on [`CH_BODY`] and the rest in `Reply::Batch`, and each becomes its row
//! of the result list as soon as it arrives, while the guest still runs
//! the later entries.

use mlua::{IntoLua, Lua, Table};
use provium_protocol::{Failure, Op, Reply, CH_BODY};

use super::reply::convert;
use super::request::{Kind, Request};
use super::values::set_stat_row;
use crate::lua::errors::{guest_failure, ApiError, ApiResult};
use crate::lua::target::Target;
use crate::transport::client::{Event, Next};

/// Runs `reqs` as batch call `call` (e.g. `vm:batch`) → the list of rows,
/// `{ok = value}` or `{err = error}`, in order, and the indexes of the rows
/// that hold an error or a run result (the Lua side gives those their
/// class; most batches have none, and then it need not look at each row).
pub fn run(lua: &Lua, t: &Target, call: &str, mut reqs: Vec<Request>) -> ApiResult<(Table, Table)> {
    let out = lua.create_table_with_capacity(reqs.len(), 0)?;
    let unfinished = lua.create_table()?;
    if reqs.is_empty() {
        return Ok((out, unfinished));
    }
    // The ops are not needed after sending: move them out instead of cloning.
    let ops = reqs
        .iter_mut()
        .map(|r| std::mem::replace(&mut r.op, Op::Ping))
        .collect();
    let pending = t.call(call, Op::Batch(ops))?;
    let mut rows = Rows {
        lua,
        out: &out,
        unfinished: &unfinished,
        reqs: &reqs,
        done: 0,
    };
    loop {
        match t.client.next(&pending, None) {
            Next::Event(Event::Data(CH_BODY, body, range)) => {
                if let Err(e) = rows.put_encoded(call, &body[range]) {
                    t.client.cancel(pending.id);
                    return Err(e);
                }
            }
            Next::Event(Event::Data(channel, ..)) => {
                t.client.cancel(pending.id);
                return Err(ApiError::msg(format!(
                    "{call}: the agent sent results on channel {channel}, not {CH_BODY}"
                )));
            }
            Next::Event(Event::Reply(Ok(Reply::Batch(last)))) => {
                let got = rows.done + last.len();
                if got != reqs.len() {
                    return Err(ApiError::msg(format!(
                        "{call}: the agent sent {got} results for {} entries",
                        reqs.len()
                    )));
                }
                for result in last {
                    rows.put(result)?;
                }
                return Ok((out, unfinished));
            }
            Next::Event(Event::Reply(Ok(_))) => {
                return Err(ApiError::msg(format!(
                    "{call}: the agent sent an unexpected reply"
                )))
            }
            Next::Event(Event::Reply(Err(f))) => {
                return Err(guest_failure(call, format!("{call}()"), None, f))
            }
            Next::Interrupted => return Err(t.interrupted(call, &pending)),
            Next::Timeout | Next::Closed => return Err(t.gone(call)),
        }
    }
}

/// The result list being filled.
struct Rows<'a> {
    lua: &'a Lua,
    out: &'a Table,
    /// Indexes of the rows with an error or a run result.
    unfinished: &'a Table,
    reqs: &'a [Request],
    /// Rows set so far.
    done: usize,
}

impl Rows<'_> {
    /// Sets the rows of a run of encoded results sent ahead.
    fn put_encoded(&mut self, call: &str, mut bytes: &[u8]) -> ApiResult<()> {
        while !bytes.is_empty() {
            let (result, rest) = postcard::take_from_bytes::<Result<Reply, Failure>>(bytes)
                .map_err(|e| {
                    ApiError::msg(format!(
                        "{call}: the agent sent a result that cannot be decoded \
                         (entry {}): {e}",
                        self.done + 1
                    ))
                })?;
            if self.done >= self.reqs.len() {
                return Err(ApiError::msg(format!(
                    "{call}: the agent sent more results than the {} entries",
                    self.reqs.len()
                )));
            }
            self.put(result)?;
            bytes = rest;
        }
        Ok(())
    }

    /// Sets the next row from its result.
    fn put(&mut self, result: Result<Reply, Failure>) -> ApiResult<()> {
        let i = self.done;
        let Some(req) = self.reqs.get(i) else {
            return Ok(());
        };
        self.done += 1;
        if let (Kind::Stat, Ok(Reply::Stat(st))) = (req.kind, &result) {
            set_stat_row(self.lua, self.out, i + 1, st)?;
            return Ok(());
        }
        let row = self.lua.create_table_with_capacity(0, 1)?;
        match convert(self.lua, req, result, Default::default()) {
            Ok(values) => {
                if let Some(v) = values.into_iter().next() {
                    row.raw_set("ok", v)?;
                    if req.kind == Kind::Run {
                        self.unfinished.raw_push(i + 1)?;
                    }
                }
            }
            Err(e) => {
                row.raw_set("err", e.into_lua(self.lua)?)?;
                self.unfinished.raw_push(i + 1)?;
            }
        }
        self.out.raw_set(i + 1, row)?;
        Ok(())
    }
}
