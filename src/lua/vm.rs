//! The core VM userdata behind the Lua `Vm` class (`lua/provium/vm.lua`).
//!
//! Each method returns `true, results...` or `false, err` (see
//! [`super::errors`]); the Lua class raises. Lifecycle: `created` → `booted`
//! (→ `dead` when QEMU or the agent goes away) → `shutdown`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mlua::{UserData, UserDataMethods, Value};

use super::args;
use super::console::{console_expect, console_note};
use super::errors::{ret, ApiError, ApiResult};
use super::target::Target;
use super::vm_options::{VmConfig, DEFAULT_BOOT_TIMEOUT};
use crate::runtime;
use crate::vm::console::{Console, TAIL_LINES};
use crate::vm::{BootSpec, Machine, RestoreSpec};

/// Lifecycle state.
enum State {
    Created,
    Booted(Box<Machine>),
    Shutdown,
}

/// A VM as Lua holds it.
pub struct VmHandle {
    cfg: VmConfig,
    state: Mutex<State>,
    /// Console of the last boot, kept for messages after the machine is gone.
    last_console: Mutex<Option<Arc<Console>>>,
}

impl VmHandle {
    /// Validates creation options: `provium:vm(name, profile, opts)`.
    pub fn new(name: &Value, profile: &Value, opts: &Value) -> ApiResult<VmHandle> {
        Ok(VmHandle {
            cfg: VmConfig::parse(name, profile, opts)?,
            state: Mutex::new(State::Created),
            last_console: Mutex::new(None),
        })
    }

    /// Resolves the profile into a boot spec (builds the default image on
    /// first use, with progress on stderr).
    pub fn boot_spec(&self, opts: &Value) -> ApiResult<BootSpec> {
        self.cfg.boot_spec(opts)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// `created|booted|paused|dead|shutdown`.
    pub fn state_name(&self) -> &'static str {
        match &*self.lock() {
            State::Created => "created",
            State::Booted(m) if m.guest_shut_down() => "shutdown",
            State::Booted(m) if m.dead_reason().is_some() => "dead",
            State::Booted(m) if m.is_paused() => "paused",
            State::Booted(_) => "booted",
            State::Shutdown => "shutdown",
        }
    }

    /// The client of a booted VM, or the state error for `call`.
    /// The agent endpoint of the booted VM, for `call`.
    pub fn target(&self, call: &str) -> ApiResult<Target> {
        self.with_machine(call, |m| {
            if m.is_paused() {
                return Err(ApiError::msg(format!(
                    "{} (cannot {call})",
                    self.paused_message()
                )));
            }
            Ok(Target {
                client: m.client().clone(),
                console: m.console().clone(),
                label: format!("vm \"{}\"", self.cfg.name),
                prefix: "vm",
                worker: None,
                run_timeout: self.cfg.run_timeout,
            })
        })
    }

    fn raw_endpoint(&self, call: &str) -> ApiResult<crate::vm::raw::RawEndpoint> {
        self.target(call)?;
        match &*self.lock() {
            State::Booted(m) => m.raw_endpoint().ok_or_else(|| {
                ApiError::msg(format!(
                    "vm:{call}: raw probes need transport = \"vsock\", or a VM booted \
                     with {{_raw_port = true}} (this VM uses {})",
                    m.transport().as_str()
                ))
            }),
            _ => Err(ApiError::msg(format!("vm:{call}: VM not booted"))),
        }
    }

    fn paused_message(&self) -> String {
        format!("vm \"{}\": VM is paused; use resume()", self.cfg.name)
    }

    /// Runs `f` on the machine of a booted (or paused) VM that is alive.
    fn with_machine<T>(
        &self,
        call: &str,
        f: impl FnOnce(&Machine) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let state = self.lock();
        let name = &self.cfg.name;
        match &*state {
            State::Booted(m) => {
                if let Some(reason) = m.dead_reason() {
                    if m.guest_shut_down() {
                        return Err(ApiError::msg(format!(
                            "vm \"{name}\": VM is shutdown; create a new one (cannot {call}): {reason}"
                        )));
                    }
                    return Err(ApiError::msg(format!(
                        "vm \"{name}\": VM died; create a new one (cannot {call}): {reason}{}",
                        console_note(m.console())
                    )));
                }
                f(m)
            }
            State::Created => Err(ApiError::msg(format!(
                "vm \"{name}\": VM not booted (cannot {call})"
            ))),
            State::Shutdown => Err(ApiError::msg(format!(
                "vm \"{name}\": VM is shutdown; create a new one (cannot {call})"
            ))),
        }
    }

    /// Stops the guest's vCPUs (idempotent).
    pub fn pause(&self) -> ApiResult<()> {
        let msg = self.paused_message();
        self.with_machine("pause", |m| {
            if m.is_paused() {
                return Ok(());
            }
            m.pause(&msg)
                .map_err(|e| ApiError::msg(format!("vm:pause: vm \"{}\": {e}", self.cfg.name)))
        })
    }

    /// Lets a paused guest run again (idempotent).
    pub fn resume(&self) -> ApiResult<()> {
        self.with_machine("resume", |m| {
            if !m.is_paused() {
                return Ok(());
            }
            m.resume()
                .map_err(|e| ApiError::msg(format!("vm:resume: vm \"{}\": {e}", self.cfg.name)))
        })
    }

    /// Writes a snapshot to the new directory `dest`.
    pub fn snapshot(&self, dest: &std::path::Path) -> ApiResult<()> {
        self.with_machine("snapshot", |m| {
            m.snapshot(dest).map(drop).map_err(|e| {
                ApiError::msg(format!(
                    "vm:snapshot: vm \"{}\": {e}{}",
                    self.cfg.name,
                    console_note(m.console())
                ))
            })
        })
    }

    /// Starts this created VM from the snapshot at `dir`.
    /// With `spare`, a machine restored ahead from `dir` is taken if there
    /// is one, and the next is started (fixtures, see `crate::vm::spare`).
    pub fn restore(
        &self,
        dir: &std::path::Path,
        timeout: Option<Duration>,
        spare: bool,
    ) -> ApiResult<()> {
        let name = &self.cfg.name;
        let rollback = match &*self.lock() {
            State::Created => false,
            State::Booted(_) => true,
            State::Shutdown => {
                return Err(ApiError::msg(format!(
                    "vm \"{name}\": VM is shutdown; create a new one (cannot restore)"
                )))
            }
        };
        let spec = RestoreSpec {
            name: name.clone(),
            snapshot: dir.to_path_buf(),
            timeout: timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT),
            spare,
        };
        let Some(restored) = runtime::block_on_interruptible(Machine::restore(spec)) else {
            return Err(ApiError::msg(format!(
                "vm \"{name}\": restore interrupted (SIGINT){}",
                if rollback {
                    "; the VM is left as it was"
                } else {
                    ""
                }
            )));
        };
        if !rollback {
            return self.finish_start("restore", restored);
        }
        // A rollback: the snapshot was restored into a new machine while the
        // old one ran on, so a snapshot that fails (unreadable, corrupt, of
        // another host) leaves the VM as it was. Only now is it replaced.
        match restored {
            Err((e, console)) => Err(ApiError::msg(format!(
                "vm \"{name}\": restore failed: {e}; the VM is left as it was{}",
                console_note_of(console.as_deref())
            ))),
            Ok(m) => {
                m.client().set_stall_timeout(self.cfg.stall_timeout);
                let console = m.console().clone();
                let previous = std::mem::replace(&mut *self.lock(), State::Booted(Box::new(m)));
                *self.last_console.lock().unwrap_or_else(|e| e.into_inner()) = Some(console);
                if let State::Booted(old) = previous {
                    let reason = format!(
                        "vm \"{name}\" was restored from a snapshot; objects opened before \
                         cannot be used"
                    );
                    runtime::block_on(old.kill_because(reason));
                }
                Ok(())
            }
        }
    }

    /// Checks that the VM can boot now.
    pub fn check_bootable(&self) -> ApiResult<()> {
        let name = &self.cfg.name;
        match &*self.lock() {
            State::Created => Ok(()),
            State::Booted(m) if m.dead_reason().is_some() => Err(ApiError::msg(format!(
                "vm \"{name}\": VM died; create a new one (cannot boot)"
            ))),
            State::Booted(_) => Err(ApiError::msg(format!(
                "vm \"{name}\": VM already booted (cannot boot)"
            ))),
            State::Shutdown => Err(ApiError::msg(format!(
                "vm \"{name}\": VM is shutdown; create a new one (cannot boot)"
            ))),
        }
    }

    /// Records the outcome of a boot.
    pub fn finish_boot(
        &self,
        r: Result<Machine, (crate::vm::VmError, Option<Arc<Console>>)>,
    ) -> ApiResult<()> {
        self.finish_start("boot", r)
    }

    fn finish_start(
        &self,
        what: &str,
        r: Result<Machine, (crate::vm::VmError, Option<Arc<Console>>)>,
    ) -> ApiResult<()> {
        match r {
            Ok(m) => {
                m.client().set_stall_timeout(self.cfg.stall_timeout);
                *self.last_console.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(m.console().clone());
                *self.lock() = State::Booted(Box::new(m));
                Ok(())
            }
            Err((e, console)) => {
                let note = console_note_of(console.as_deref());
                *self.last_console.lock().unwrap_or_else(|e| e.into_inner()) = console;
                Err(ApiError::msg(format!(
                    "vm \"{}\": {what} failed: {e}{note}",
                    self.cfg.name
                )))
            }
        }
    }

    /// Shuts the VM down (idempotent).
    pub fn shutdown(&self) {
        let prev = std::mem::replace(&mut *self.lock(), State::Shutdown);
        if let State::Booted(m) = prev {
            runtime::block_on(m.shutdown());
        }
    }

    fn console(&self) -> Option<Arc<Console>> {
        self.last_console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for VmHandle {
    fn drop(&mut self) {
        // Garbage collection or interpreter exit: no clean poweroff, just make
        // sure nothing outlives us (ChildGuard kills on drop).
        let prev = std::mem::replace(&mut *self.lock(), State::Shutdown);
        drop(prev);
    }
}

/// `\n--- guest console (last N lines) ---\n...` or nothing.
/// [`console_note`] of a console that may not exist (a start that failed
/// before QEMU ran): empty then.
fn console_note_of(console: Option<&Console>) -> String {
    console.map(console_note).unwrap_or_default()
}

impl UserData for VmHandle {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("name", |lua, this, ()| ret(lua, Ok(this.cfg.name.clone())));
        m.add_method("profile", |lua, this, ()| {
            ret(lua, Ok(this.cfg.profile.clone()))
        });
        m.add_method("state", |lua, this, ()| ret(lua, Ok(this.state_name())));
        m.add_method("boot", |lua, this, opts: Value| {
            let r = (|| {
                this.check_bootable()?;
                let spec = this.boot_spec(&opts)?;
                // `_raw_port`: the benchmarks' raw serial port (see
                // `BootExtras::raw_port`); undocumented, like `vm:_raw_*`.
                let raw_port = match &opts {
                    Value::Table(t) => t.raw_get::<Option<bool>>("_raw_port")?.unwrap_or(false),
                    _ => false,
                };
                let extras = crate::vm::BootExtras {
                    raw_port,
                    ..Default::default()
                };
                match runtime::block_on_interruptible(Machine::boot_with(spec, extras)) {
                    Some(r) => this.finish_boot(r),
                    None => Err(ApiError::msg(format!(
                        "vm \"{}\": boot interrupted (SIGINT)",
                        this.name()
                    ))),
                }
            })();
            ret(lua, r)
        });
        m.add_method("pause", |lua, this, ()| ret(lua, this.pause()));
        m.add_method("resume", |lua, this, ()| ret(lua, this.resume()));
        m.add_method("shutdown", |lua, this, ()| {
            this.shutdown();
            ret(lua, Ok(()))
        });
        m.add_method("console_log", |lua, this, ()| {
            let bytes = this.console().map(|c| c.contents()).unwrap_or_default();
            ret(lua, lua.create_string(&bytes).map_err(ApiError::from))
        });
        m.add_method("console_lines", |lua, this, n: Value| {
            let r = (|| {
                let n = match n {
                    Value::Nil => TAIL_LINES,
                    v => args::integer(&v)
                        .filter(|n| (1..=100_000).contains(n))
                        .map(|n| n as usize)
                        .ok_or_else(|| {
                            ApiError::msg(format!(
                                "console:tail: n must be an integer in 1..100000 (got {})",
                                args::show(&v)
                            ))
                        })?,
                };
                let text = this.console().map(|c| c.tail(n)).unwrap_or_default();
                Ok(lua.create_string(&text)?)
            })();
            ret(lua, r)
        });
        m.add_method("console_tail", |lua, this, ()| {
            let r = match this.console() {
                Some(c) => lua
                    .create_userdata(super::tail::TailUd::console(
                        c,
                        format!("console of vm \"{}\"", this.cfg.name),
                    ))
                    .map_err(ApiError::from),
                None => Err(ApiError::msg(format!(
                    "console:read: vm \"{}\" has not been booted",
                    this.cfg.name
                ))),
            };
            ret(lua, r)
        });
        m.add_method(
            "console_expect",
            |lua, this, (pattern, timeout): (Value, Value)| {
                let r = (|| {
                    const CALL: &str = "console:expect";
                    let pat = args::bytes(CALL, "pattern", &pattern)?;
                    let timeout = if timeout.is_nil() {
                        Duration::from_secs(30)
                    } else {
                        args::duration(CALL, "timeout", &timeout)?
                    };
                    let Some(console) = this.console() else {
                        return Err(ApiError::msg(format!(
                            "{CALL}: vm \"{}\" has not been booted",
                            this.cfg.name
                        )));
                    };
                    console_expect(&console, &pat, timeout)
                })();
                ret(lua, r)
            },
        );
        m.add_method(
            "_raw_echo",
            |lua, this, (n, size, warmup): (usize, usize, Option<usize>)| {
                let r = this
                    .raw_endpoint("_raw_echo")
                    .and_then(|ep| super::bench::raw_echo(ep, n, size, warmup.unwrap_or(100)));
                ret(lua, r)
            },
        );
        m.add_method("_raw_bulk", |lua, this, (bytes, dir): (u64, String)| {
            let r = this
                .raw_endpoint("_raw_bulk")
                .and_then(|ep| super::bench::raw_bulk(ep, bytes, dir == "to_guest"));
            ret(lua, r)
        });
        m.add_method(
            "_raw_stranger",
            |lua, this, (proof, secs): (mlua::String, Option<f64>)| {
                let r = this.raw_endpoint("_raw_stranger").and_then(|ep| {
                    let wait = Duration::from_secs_f64(secs.unwrap_or(3.0).clamp(0.0, 60.0));
                    super::bench::raw_stranger(ep, proof.as_bytes().to_vec(), wait)
                });
                let r = match r {
                    Ok((got, closed)) => Ok((lua.create_string(&got)?, closed)),
                    Err(e) => Err(e),
                };
                ret(lua, r)
            },
        );
    }
}

/// Boots several VMs concurrently (`provium:boot()`).
pub fn boot_many(vms: &[&VmHandle]) -> ApiResult<()> {
    let mut specs = Vec::new();
    for vm in vms {
        vm.check_bootable()?;
        specs.push(vm.boot_spec(&Value::Nil)?);
    }
    let results = runtime::block_on(async move {
        let handles: Vec<_> = specs
            .into_iter()
            .map(|s| tokio::spawn(Machine::boot(s)))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    });
    let mut first_err = None;
    for (vm, r) in vms.iter().zip(results) {
        let r = match r {
            Ok(r) => r,
            Err(e) => Err((
                crate::vm::VmError::Infra(format!("boot task failed: {e}")),
                None,
            )),
        };
        if let Err(e) = vm.finish_boot(r) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
