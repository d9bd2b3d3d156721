//! Workers: separate agent processes inside the guest, with their own
//! credentials and namespaces, offering the guest operations.

use std::sync::Mutex;

use mlua::{UserData, UserDataMethods, Value};
use provium_protocol::{HandleId, Op, Reply, WorkerSpec};
use serde_bytes::ByteBuf;

use super::args;
use super::errors::{guest_failure, ret, ApiError, ApiResult};
use super::process::signal;
use super::target::Target;

const NAMESPACES: &[&str] = &["mount", "net", "pid", "ipc", "uts"];

/// A worker as Lua holds it.
pub struct WorkerUd {
    /// Operations inside the worker.
    inner: Target,
    /// The VM's agent, for control of the worker itself.
    parent: Target,
    handle: HandleId,
    closed: Mutex<bool>,
}

fn spec(call: &str, v: &Value) -> ApiResult<WorkerSpec> {
    let mut spec = WorkerSpec::default();
    let Some(t) = args::opt_table(call, "opts", v)? else {
        return Ok(spec);
    };
    args::check_keys(
        call,
        "opts",
        &t,
        &["uid", "gid", "groups", "cwd", "unshare"],
    )?;
    spec.uid = args::field_int(call, &t, "uid", "opts", 0, u32::MAX as i64 - 1)?.map(|v| v as u32);
    spec.gid = args::field_int(call, &t, "gid", "opts", 0, u32::MAX as i64 - 1)?.map(|v| v as u32);
    if let Some(g) = args::opt_table(call, "opts.groups", &t.raw_get::<Value>("groups")?)? {
        let mut groups = Vec::new();
        for i in 1..=g.raw_len() {
            let v: Value = g.raw_get(i)?;
            match args::integer(&v) {
                Some(n) if (0..u32::MAX as i64).contains(&n) => groups.push(n as u32),
                _ => {
                    return Err(ApiError::msg(format!(
                        "{call}: opts.groups[{i}] must be a group id (got {})",
                        args::show(&v)
                    )))
                }
            }
        }
        spec.groups = Some(groups);
    }
    match t.raw_get::<Value>("cwd")? {
        Value::Nil => {}
        v => spec.cwd = Some(ByteBuf::from(args::path(call, "opts.cwd", &v)?)),
    }
    if let Some(u) = args::opt_table(call, "opts.unshare", &t.raw_get::<Value>("unshare")?)? {
        for i in 1..=u.raw_len() {
            let v: Value = u.raw_get(i)?;
            let name = match &v {
                Value::String(s) => s.to_string_lossy(),
                _ => String::new(),
            };
            if !NAMESPACES.contains(&name.as_str()) {
                return Err(ApiError::msg(format!(
                    "{call}: opts.unshare[{i}] must be one of {} (got {})",
                    NAMESPACES.join(", "),
                    args::show(&v)
                )));
            }
            spec.unshare.push(name);
        }
    }
    Ok(spec)
}

impl WorkerUd {
    /// `vm:spawn_worker(opts?)`.
    pub fn spawn(call: &str, t: &Target, rest: &[Value]) -> ApiResult<WorkerUd> {
        let spec = spec(call, super::args::arg(rest, 0))?;
        let done = t.roundtrip(call, Op::SpawnWorker(spec))?;
        match done.result {
            Ok(Reply::Handle(handle)) => {
                let mut inner = t.clone();
                inner.worker = Some(handle);
                inner.prefix = "worker";
                inner.label = format!("worker#{} of {}", handle.0, t.label);
                Ok(WorkerUd {
                    inner,
                    parent: t.clone(),
                    handle,
                    closed: Mutex::new(false),
                })
            }
            Ok(_) => Err(ApiError::msg(format!("{call}: unexpected reply"))),
            Err(f) => Err(guest_failure(call, format!("{call}()"), None, f)),
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker's agent endpoint.
    pub fn target(&self) -> &Target {
        &self.inner
    }

    /// Fails unless the worker can take calls.
    pub fn live(&self, call: &str) -> ApiResult<()> {
        if self.is_closed() {
            Err(ApiError::msg(format!("{call}: worker is closed")))
        } else {
            Ok(())
        }
    }

    fn control(&self, call: &str, op: Op) -> ApiResult<Reply> {
        let done = self.parent.roundtrip(call, op)?;
        done.result.map_err(|f| {
            guest_failure(
                call,
                format!("{call}() on worker#{}", self.handle.0),
                None,
                f,
            )
        })
    }

    fn join(&self) -> ApiResult<i32> {
        self.live("worker:join")?;
        let r = self.control(
            "worker:join",
            Op::WorkerJoin {
                worker: self.handle,
            },
        );
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        match r? {
            Reply::Exit(code) => Ok(code),
            _ => Err(ApiError::msg("worker:join: unexpected reply")),
        }
    }

    /// SIGTERM and join, errors ignored; idempotent.
    pub fn close(&self) {
        if self.is_closed() {
            return;
        }
        if self.parent.client.closed_reason().is_none() {
            let _ = self.control(
                "worker:close",
                Op::WorkerSignal {
                    worker: self.handle,
                    signal: libc::SIGTERM,
                },
            );
            let _ = self.join();
        }
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

impl Drop for WorkerUd {
    fn drop(&mut self) {
        // Garbage collection: the agent ends the worker on Close; no waiting.
        if !self.is_closed() {
            *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.parent.fire(Op::Close {
                handle: self.handle,
            });
        }
    }
}

impl UserData for WorkerUd {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("kill", |lua, this, sig: Value| {
            let r = (|| {
                this.live("worker:kill")?;
                let signal = signal("worker:kill", &sig, Some(libc::SIGTERM))?;
                this.control(
                    "worker:kill",
                    Op::WorkerSignal {
                        worker: this.handle,
                        signal,
                    },
                )?;
                Ok(())
            })();
            ret(lua, r)
        });
        m.add_method("join", |lua, this, ()| ret(lua, this.join()));
        m.add_method("handle", |lua, this, ()| ret(lua, Ok(this.handle.0)));
        m.add_method("close", |lua, this, ()| {
            this.close();
            ret(lua, Ok(()))
        });
        m.add_method("describe", |lua, this, ()| {
            ret(lua, Ok(this.inner.label.clone()))
        });
    }
}
