//! Processes started with `run_async`.

use std::sync::Mutex;
use std::time::Duration;

use mlua::{Lua, UserData, UserDataMethods, Value};
use provium_protocol::{HandleId, Op, Reply, StreamSource, CH_STDERR, CH_STDOUT};
use serde_bytes::ByteBuf;

use super::args;
use super::args::{arg, quote};
use super::errors::{guest_failure, ret, ApiError, ApiResult};
use super::ops::reply::run_one;
use super::ops::request::{Kind, Request};
use super::ops::run::{command_line, run_spec};
use super::tail::TailUd;
use super::target::Target;

/// How long `close` waits after SIGTERM (the agent escalates to SIGKILL).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Signal names (case-insensitive, with or without `SIG`), or numbers 1-64.
pub fn signal(call: &str, v: &Value, default: Option<i32>) -> ApiResult<i32> {
    let bad = |what: String| ApiError::msg(format!("{call}: {what}"));
    match v {
        Value::Nil => {
            default.ok_or_else(|| bad("expected a signal name or number (got nil)".into()))
        }
        Value::String(s) => {
            let name = s.to_string_lossy().to_ascii_lowercase();
            let name = name.strip_prefix("sig").unwrap_or(&name).to_string();
            let n = match name.as_str() {
                "hup" => libc::SIGHUP,
                "int" => libc::SIGINT,
                "quit" => libc::SIGQUIT,
                "kill" => libc::SIGKILL,
                "usr1" => libc::SIGUSR1,
                "usr2" => libc::SIGUSR2,
                "pipe" => libc::SIGPIPE,
                "alrm" => libc::SIGALRM,
                "term" => libc::SIGTERM,
                "chld" => libc::SIGCHLD,
                "cont" => libc::SIGCONT,
                "stop" => libc::SIGSTOP,
                "tstp" => libc::SIGTSTP,
                "winch" => libc::SIGWINCH,
                "abrt" => libc::SIGABRT,
                "segv" => libc::SIGSEGV,
                _ => {
                    return Err(bad(format!(
                        "unknown signal name `{}` (known: term, kill, int, hup, quit, stop, cont, usr1, usr2, alrm, pipe, chld, winch, tstp, abrt, segv)",
                        s.to_string_lossy()
                    )))
                }
            };
            Ok(n)
        }
        v => match args::integer(v) {
            Some(n) if (1..=64).contains(&n) => Ok(n as i32),
            _ => Err(bad(format!(
                "signal must be a name like \"term\" or a number 1..64 (got {})",
                args::show(v)
            ))),
        },
    }
}

/// A process as Lua holds it.
pub struct ProcessUd {
    t: Target,
    handle: HandleId,
    pid: u32,
    program: Vec<u8>,
    /// The command line, for the RunResult's `command`.
    command: String,
    state: Mutex<ProcState>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProcState {
    Running,
    Waited,
    Closed,
}

impl ProcessUd {
    /// `run_async(cmd, args_or_opts?)`.
    pub fn start(call: &str, t: &Target, rest: &[Value]) -> ApiResult<ProcessUd> {
        if let Value::Table(o) = arg(rest, 1) {
            for key in ["timeout", "timeout_ms"] {
                if !o.raw_get::<Value>(key)?.is_nil() {
                    return Err(ApiError::msg(format!(
                        "{call}: `{key}` is not honoured here; pass it to proc:wait(timeout) instead"
                    )));
                }
            }
        }
        let spec = run_spec(call, arg(rest, 0), arg(rest, 1), rest.len(), t.run_timeout)?;
        let program = spec.program.clone();
        let command = command_line(&spec);
        let done = t.roundtrip(call, Op::RunAsync(spec))?;
        match done.result {
            Ok(Reply::Process { handle, pid }) => Ok(ProcessUd {
                t: t.clone(),
                handle,
                pid,
                program,
                command,
                state: Mutex::new(ProcState::Running),
            }),
            Ok(_) => Err(ApiError::msg(format!("{call}: unexpected reply"))),
            Err(f) => Err(guest_failure(
                call,
                format!("{call}({})", quote(&program)),
                Some(&program),
                f,
            )),
        }
    }

    fn state(&self) -> ProcState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, s: ProcState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn live(&self, call: &str) -> ApiResult<()> {
        match self.state() {
            ProcState::Closed => Err(ApiError::msg(format!("{call}: process is closed"))),
            _ => Ok(()),
        }
    }

    fn simple(&self, call: &str, op: Op) -> ApiResult<Reply> {
        self.live(call)?;
        let done = self.t.roundtrip(call, op)?;
        done.result.map_err(|f| {
            guest_failure(
                call,
                format!("{call}() on pid {} ({})", self.pid, quote(&self.program)),
                None,
                f,
            )
        })
    }

    fn wait(&self, lua: &Lua, timeout: Option<Duration>) -> ApiResult<mlua::MultiValue> {
        let call = "proc:wait";
        self.live(call)?;
        if self.state() == ProcState::Waited {
            return Err(ApiError::msg(format!(
                "proc:wait: handle {} already waited on (proc:wait is one-shot — capture the result)",
                self.handle.0
            )));
        }
        let req = Request {
            op: Op::ProcWait {
                handle: self.handle,
                timeout_ms: timeout.map(|d| d.as_millis().max(1) as u64),
            },
            kind: Kind::Run,
            name: call.into(),
            shown: Some(format!("{call}() on pid {}", self.pid)),
            path: None,
            limit: None,
            command: Some(self.command.clone()),
        };
        let r = run_one(lua, &self.t, req);
        self.set_state(ProcState::Waited);
        r
    }

    /// Ends the process if it was not waited for (SIGTERM, then SIGKILL of
    /// its group after a grace period), and releases it. Idempotent; never
    /// raises for a process that is already gone.
    pub fn close(&self) {
        let prev = self.state();
        if prev == ProcState::Closed {
            return;
        }
        self.set_state(ProcState::Closed);
        if self.t.client.closed_reason().is_some() {
            return;
        }
        if prev == ProcState::Running {
            let _ = self.t.roundtrip(
                "proc:close",
                Op::ProcSignal {
                    handle: self.handle,
                    signal: libc::SIGTERM,
                    group: true,
                },
            );
            let _ = self.t.roundtrip(
                "proc:close",
                Op::ProcWait {
                    handle: self.handle,
                    timeout_ms: Some(CLOSE_GRACE.as_millis() as u64),
                },
            );
        }
        let _ = self.t.roundtrip(
            "proc:close",
            Op::Close {
                handle: self.handle,
            },
        );
    }
}

impl Drop for ProcessUd {
    fn drop(&mut self) {
        // Garbage collection: the agent ends an unwaited process on Close
        // (SIGTERM, then SIGKILL of its group); do not wait for it here.
        if self.state() != ProcState::Closed {
            self.set_state(ProcState::Closed);
            self.t.fire(Op::Close {
                handle: self.handle,
            });
        }
    }
}

impl UserData for ProcessUd {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("wait", |lua, this, timeout: Value| {
            let r = (|| {
                let t = if timeout.is_nil() {
                    this.t.run_timeout
                } else if timeout == Value::Boolean(false) {
                    None
                } else {
                    let d = args::duration("proc:wait", "timeout", &timeout)?;
                    if d.is_zero() {
                        return Err(ApiError::msg(
                            "proc:wait: timeout=0 would SIGKILL the process immediately. Use proc:status() to poll, or pass a small positive timeout (e.g. \"100ms\").",
                        ));
                    }
                    Some(d)
                };
                this.wait(lua, t)
            })();
            ret(lua, r)
        });
        // `kill` ends the command: its process group, SIGTERM by default
        // (like a timeout, or Ctrl-C in a terminal: `sh -c` forks, and a
        // child left running would hold the output pipes that `wait` reads
        // to their end). `signal` reaches the process alone, and requires
        // a signal.
        for (name, default, group) in [("kill", Some(libc::SIGTERM), true), ("signal", None, false)]
        {
            m.add_method(name, move |lua, this, sig: Value| {
                let call = format!("proc:{name}");
                let r = signal(&call, &sig, default).and_then(|signal| {
                    this.simple(
                        &call,
                        Op::ProcSignal {
                            handle: this.handle,
                            signal,
                            group,
                        },
                    )
                    .map(drop)
                });
                ret(lua, r)
            });
        }
        m.add_method("pid", |lua, this, ()| ret(lua, Ok(this.pid)));
        m.add_method("handle", |lua, this, ()| ret(lua, Ok(this.handle.0)));
        m.add_method("status", |lua, this, ()| {
            let r = (|| {
                if this.state() == ProcState::Waited {
                    return Ok("exited");
                }
                match this.simple(
                    "proc:status",
                    Op::ProcStatus {
                        handle: this.handle,
                    },
                )? {
                    Reply::ProcStatus { running: true } => Ok("running"),
                    Reply::ProcStatus { running: false } => Ok("exited"),
                    _ => Err(ApiError::msg("proc:status: unexpected reply")),
                }
            })();
            ret(lua, r)
        });
        m.add_method("stdin_write", |lua, this, data: Value| {
            let r = (|| {
                let data = args::bytes("proc:stdin_write", "data", &data)?;
                match this.simple(
                    "proc:stdin_write",
                    Op::ProcStdin {
                        handle: this.handle,
                        data: ByteBuf::from(data),
                    },
                )? {
                    Reply::Count(n) => Ok(n),
                    _ => Err(ApiError::msg("proc:stdin_write: unexpected reply")),
                }
            })();
            ret(lua, r)
        });
        m.add_method("close_stdin", |lua, this, ()| {
            let r = this
                .simple(
                    "proc:close_stdin",
                    Op::ProcCloseStdin {
                        handle: this.handle,
                    },
                )
                .map(drop);
            ret(lua, r)
        });
        for (name, channel) in [("stdout_stream", CH_STDOUT), ("stderr_stream", CH_STDERR)] {
            m.add_method(name, move |lua, this, ()| {
                let call = format!("proc:{name}");
                let r = (|| {
                    this.live(&call)?;
                    let tail = TailUd::start(
                        &this.t,
                        &call,
                        Op::Stream(StreamSource::Process {
                            handle: this.handle,
                            channel,
                        }),
                        format!("{name} of pid {}", this.pid),
                    )?;
                    Ok(lua.create_userdata(tail)?)
                })();
                ret(lua, r)
            });
        }
        m.add_method("close", |lua, this, ()| {
            this.close();
            ret(lua, Ok(()))
        });
        m.add_method("describe", |lua, this, ()| {
            ret(
                lua,
                Ok(format!(
                    "pid {} ({})",
                    this.pid,
                    String::from_utf8_lossy(&this.program)
                )),
            )
        });
    }
}
