//! The core VM userdata behind the Lua `Vm` class of the prelude.
//!
//! Each method returns `true, results...` or `false, err` (see
//! [`super::errors`]); the prelude raises. Lifecycle: `created` → `booted`
//! (→ `dead` when QEMU or the agent goes away) → `shutdown`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mlua::{MultiValue, Table, UserData, UserDataMethods, Value};

use super::args;
use super::errors::{ret, ApiError, ApiResult};
use super::ops;
use super::target::Target;
use crate::image::boot as guest;
use crate::runtime;
use crate::vm::console::{Console, TAIL_LINES};
use crate::vm::{BootSpec, Machine, RestoreSpec, Transport};

/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Smallest memory a guest may be given.
const MIN_MEMORY_MIB: u64 = 64;
/// Default time from starting QEMU to the agent's hello.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifecycle state.
enum State {
    Created,
    Booted(Box<Machine>),
    Shutdown,
}

/// Options fixed at creation.
#[derive(Clone)]
pub struct VmConfig {
    pub name: String,
    pub profile: String,
    pub memory_mib: u64,
    pub cpus: u32,
    /// `None`: the host's default ([`Transport::host_default`]).
    pub transport: Option<Transport>,
    /// How long the agent may stay silent while a call waits (`None`:
    /// forever); see [`crate::transport::liveness`].
    pub stall_timeout: Option<Duration>,
    /// Default deadline of `run` and `proc:wait` (`opts.run_timeout`).
    pub run_timeout: Option<Duration>,
}

/// A VM as Lua holds it.
pub struct VmHandle {
    cfg: VmConfig,
    state: Mutex<State>,
    /// Console of the last boot, kept for messages after the machine is gone.
    last_console: Mutex<Option<Arc<Console>>>,
}

/// The host's RAM (`MemTotal`), in MiB.
fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl VmHandle {
    /// Validates creation options: `provium:vm(name, profile, opts)`.
    pub fn new(name: &Value, profile: &Value, opts: &Value) -> ApiResult<VmHandle> {
        const CALL: &str = "provium:vm";
        let name = match name {
            Value::String(s) if !s.as_bytes().is_empty() => match s.to_str() {
                Ok(n) => n.to_string(),
                Err(_) => {
                    return Err(ApiError::msg(format!(
                        "{CALL}: name must be UTF-8 text (got {})",
                        args::show(name)
                    )))
                }
            },
            other => {
                return Err(ApiError::msg(format!(
                    "{CALL}: name must be a non-empty string (got {})",
                    args::show(other)
                )))
            }
        };
        if name.chars().any(char::is_control) {
            return Err(ApiError::msg(format!(
                "{CALL}: name must not contain control characters or NUL bytes (got {name:?})"
            )));
        }
        let profile = match profile {
            Value::Nil => "default".to_string(),
            Value::String(s) => s.to_str()?.to_string(),
            other => {
                return Err(ApiError::msg(format!(
                    "{CALL}: profile must be a string (got {})",
                    args::show(other)
                )))
            }
        };
        let mut memory = None;
        let mut cpus = None;
        let mut transport = None;
        let mut stall_timeout = Some(crate::transport::liveness::DEFAULT_STALL);
        let mut run_timeout = Some(super::ops::DEFAULT_RUN_TIMEOUT);
        if let Some(t) = args::opt_table(CALL, "opts", opts)? {
            args::check_keys(
                CALL,
                "opts",
                &t,
                &[
                    "memory",
                    "cpus",
                    "transport",
                    "stall_timeout",
                    "run_timeout",
                ],
            )?;
            match t.raw_get::<Value>("run_timeout")? {
                Value::Nil => {}
                Value::Boolean(false) => run_timeout = None,
                v => {
                    let d = args::duration(CALL, "opts.run_timeout", &v)?;
                    if d.is_zero() {
                        return Err(ApiError::msg(format!(
                            "{CALL}: opts.run_timeout must be more than 0, or false for none (got {})",
                            args::show(&v)
                        )));
                    }
                    run_timeout = Some(d);
                }
            }
            match t.raw_get::<Value>("stall_timeout")? {
                Value::Nil => {}
                Value::Boolean(false) => stall_timeout = None,
                v => {
                    let d = args::duration(CALL, "opts.stall_timeout", &v)?;
                    if d < Duration::from_secs(1) {
                        return Err(ApiError::msg(format!(
                            "{CALL}: opts.stall_timeout must be at least 1 s, or false for none (got {})",
                            args::show(&v)
                        )));
                    }
                    stall_timeout = Some(d);
                }
            }
            let m: Value = t.raw_get("memory")?;
            if !m.is_nil() {
                memory = Some(args::size(CALL, "opts.memory", &m)?);
            }
            cpus = args::field_int(CALL, &t, "cpus", "opts", 1, 64)?.map(|c| c as u32);
            let tr: Value = t.raw_get("transport")?;
            match &tr {
                Value::Nil => {}
                Value::String(s) if s.as_bytes() == b"vsock" => transport = Some(Transport::Vsock),
                Value::String(s) if s.as_bytes() == b"serial" => {
                    transport = Some(Transport::Serial)
                }
                other => {
                    return Err(ApiError::msg(format!(
                        "{CALL}: opts.transport must be \"vsock\" or \"serial\" (got {})",
                        args::show(other)
                    )))
                }
            }
        }
        let mut memory_mib = match memory {
            Some(bytes) => bytes.div_ceil(1 << 20),
            None => DEFAULT_MEMORY_MIB,
        };
        let mut cpus = cpus.unwrap_or(0);
        if profile != "default" {
            let p = crate::image::config::profile(&profile)
                .map_err(|e| ApiError::msg(format!("{CALL}(\"{name}\"): {e}")))?;
            if memory.is_none() {
                if let Some(m) = p.memory {
                    let bytes = args::parse_size_str(m.trim()).ok_or_else(|| {
                        ApiError::msg(format!(
                            "{CALL}(\"{name}\"): profile {profile:?}: memory must be a size like \"512M\" (got {m:?})"
                        ))
                    })?;
                    memory_mib = bytes.div_ceil(1 << 20);
                }
            }
            if cpus == 0 {
                cpus = p.cpus.unwrap_or(1);
            }
        }
        if cpus == 0 {
            cpus = 1;
        }
        if let Some(host_mib) = host_memory_mib() {
            if memory_mib > host_mib {
                return Err(ApiError::msg(format!(
                    "{CALL}: opts.memory {memory_mib}M exceeds this host's memory ({host_mib}M)"
                )));
            }
        }
        if memory_mib < MIN_MEMORY_MIB {
            return Err(ApiError::msg(format!(
                "{CALL}: opts.memory must be at least {MIN_MEMORY_MIB}M (got {memory_mib}M)"
            )));
        }
        Ok(VmHandle {
            cfg: VmConfig {
                name,
                profile,
                memory_mib,
                cpus,
                transport,
                stall_timeout,
                run_timeout,
            },
            state: Mutex::new(State::Created),
            last_console: Mutex::new(None),
        })
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
    fn target(&self, call: &str) -> ApiResult<Target> {
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
                    "vm:{call}: raw probes need transport = \"vsock\" (this VM uses {})",
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
    pub fn restore(&self, dir: &std::path::Path, timeout: Option<Duration>) -> ApiResult<()> {
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

    /// Resolves the profile into a boot spec (builds the default image on
    /// first use, with progress on stderr).
    pub fn boot_spec(&self, opts: &Value) -> ApiResult<BootSpec> {
        const CALL: &str = "vm:boot";
        let mut append = String::new();
        let mut timeout = DEFAULT_BOOT_TIMEOUT;
        let mut files: Vec<guest::ExtraFile> = Vec::new();
        if let Some(t) = args::opt_table(CALL, "opts", opts)? {
            args::check_keys(
                CALL,
                "opts",
                &t,
                &["kernel_cmdline_append", "files", "timeout"],
            )?;
            match t.raw_get::<Value>("kernel_cmdline_append")? {
                Value::Nil => {}
                Value::String(s) => append = s.to_str()?.to_string(),
                other => {
                    return Err(ApiError::msg(format!(
                        "{CALL}: opts.kernel_cmdline_append must be a string (got {})",
                        args::show(&other)
                    )))
                }
            }
            let tv: Value = t.raw_get("timeout")?;
            if !tv.is_nil() {
                timeout = args::duration(CALL, "opts.timeout", &tv)?;
            }
            match t.raw_get::<Value>("files")? {
                Value::Nil => {}
                Value::Table(list) => files = extra_files(CALL, &list)?,
                other => {
                    return Err(ApiError::msg(format!(
                    "{CALL}: opts.files must be an array of {{path=, content=, mode=}} (got {})",
                    args::show(&other)
                )))
                }
            }
        }
        let (kernel, initrd, mut cmdline) = if self.cfg.profile == "default" {
            let image = guest::default_image_cached().map_err(|e| {
                ApiError::msg(format!("{CALL}: cannot prepare the default guest: {e}"))
            })?;
            (image.kernel.clone(), image.initrd.clone(), String::new())
        } else {
            let p = crate::image::config::profile(&self.cfg.profile)
                .map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?;
            let initrd = guest::profile_initrd(p.initrd.as_deref()).map_err(|e| {
                ApiError::msg(format!("{CALL}: profile {:?}: {e}", self.cfg.profile))
            })?;
            (p.kernel, initrd, p.cmdline)
        };
        if !append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&append);
        }
        let extra_initrd = if files.is_empty() {
            None
        } else {
            Some(
                guest::extra_cpio(&files)
                    .map_err(|e| ApiError::msg(format!("{CALL}: opts.files: {e}")))?,
            )
        };
        Ok(BootSpec {
            name: self.cfg.name.clone(),
            kernel,
            initrd,
            extra_initrd,
            cmdline_append: cmdline,
            memory_mib: self.cfg.memory_mib,
            cpus: self.cfg.cpus,
            transport: match self.cfg.transport {
                Some(t) => t,
                None => {
                    Transport::host_default().map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?
                }
            },
            timeout,
        })
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

fn extra_files(call: &str, list: &Table) -> ApiResult<Vec<guest::ExtraFile>> {
    let mut out = Vec::new();
    for (i, entry) in list.clone().sequence_values::<Value>().enumerate() {
        let name = format!("opts.files[{}]", i + 1);
        let Value::Table(e) = entry? else {
            return Err(ApiError::msg(format!(
                "{call}: {name} must be a table {{path=, content=, mode=}}"
            )));
        };
        args::check_keys(call, &name, &e, &["path", "content", "mode"])?;
        let path = args::path(call, &format!("{name}.path"), &e.raw_get("path")?)?;
        let path = String::from_utf8(path)
            .map_err(|_| ApiError::msg(format!("{call}: {name}.path must be UTF-8")))?;
        if !path.starts_with('/') {
            return Err(ApiError::msg(format!(
                "{call}: {name}.path must be absolute (got {path:?})"
            )));
        }
        let content = args::bytes(call, &format!("{name}.content"), &e.raw_get("content")?)?;
        let mode = args::field_int(call, &e, "mode", &name, 0, 0o7777)?.unwrap_or(0o644) as u32;
        out.push(guest::ExtraFile {
            path,
            content,
            mode,
        });
    }
    Ok(out)
}

/// `\n--- guest console (last N lines) ---\n...` or nothing.
/// [`console_note`] of a console that may not exist (a start that failed
/// before QEMU ran): empty then.
fn console_note_of(console: Option<&Console>) -> String {
    console.map(console_note).unwrap_or_default()
}

pub fn console_note(console: &Console) -> String {
    let tail = console.tail(TAIL_LINES);
    if tail.trim().is_empty() {
        String::from("\n(the guest console is empty)")
    } else {
        format!("\n--- guest console (last {TAIL_LINES} lines) ---\n{tail}")
    }
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
                match runtime::block_on_interruptible(Machine::boot(spec)) {
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
        m.add_method("snapshot", |lua, this, path: Value| {
            let r = super::snapshot::take(lua, this, &path);
            ret(lua, r)
        });
        m.add_method("restore", |lua, this, (snap, opts): (Value, Value)| {
            let r = super::snapshot::restore(this, &snap, &opts);
            ret(lua, r)
        });
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
                    ops::console_expect(&console, &pat, timeout)
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
        m.add_method("call", |lua, this, mv: MultiValue| {
            let r = super::objects::split_call("vm", mv).and_then(|(op, rest)| {
                let target = this.target(&op)?;
                super::objects::dispatch(lua, &target, &op, &rest)
            });
            ret(lua, r)
        });
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
