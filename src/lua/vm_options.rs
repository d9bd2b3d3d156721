//! The options of a VM: `provium:vm(name, profile, opts)` at creation and
//! `vm:boot(opts)`, validated into a [`VmConfig`] and a boot spec.

use std::time::Duration;

use mlua::{Table, Value};

use super::args;
use super::errors::{ApiError, ApiResult};
use crate::image::boot as guest;
use crate::vm::{BootSpec, Transport};

/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Smallest memory a guest may be given.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Default time from starting QEMU to the agent's hello.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Options fixed at creation.
#[derive(Clone)]
pub struct VmConfig {
    /// The VM's name (non-empty UTF-8, no control characters).
    pub name: String,
    /// The profile: `"default"` or a profile of `provium.toml`.
    pub profile: String,
    /// Guest memory in MiB (at least [`MIN_MEMORY_MIB`], at most the host's).
    pub memory_mib: u64,
    /// Virtual CPUs (1 to 64).
    pub cpus: u32,
    /// `None`: the host's default ([`Transport::host_default`]).
    pub transport: Option<Transport>,
    /// How long the agent may stay silent while a call waits (`None`:
    /// forever); see [`crate::transport::liveness`].
    pub stall_timeout: Option<Duration>,
    /// Default deadline of `run` and `proc:wait` (`opts.run_timeout`).
    pub run_timeout: Option<Duration>,
}

/// The host's RAM (`MemTotal`), in MiB.
/// `bytes` for a message: whole MiB as `512M`, anything else in bytes.
fn show_bytes(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}M", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl VmConfig {
    /// Validates creation options: `provium:vm(name, profile, opts)`.
    pub fn parse(name: &Value, profile: &Value, opts: &Value) -> ApiResult<VmConfig> {
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
        let mut run_timeout = Some(super::ops::run::DEFAULT_RUN_TIMEOUT);
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
            cpus = args::field_int(CALL, &t, "cpus", "opts", 1, crate::vm::MAX_CPUS as i64)?
                .map(|c| c as u32);
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
        // The memory asked for, in bytes, and where it was asked (for messages).
        let mut asked = memory.map(|b| (b, "opts.memory".to_string()));
        let mut cpus = cpus.unwrap_or(0);
        if profile != "default" {
            let p = crate::image::config::profile(&profile)
                .map_err(|e| ApiError::msg(format!("{CALL}(\"{name}\"): {e}")))?;
            if asked.is_none() {
                if let Some(m) = p.memory {
                    let bytes = args::parse_size_str(m.trim()).ok_or_else(|| {
                        ApiError::msg(format!(
                            "{CALL}(\"{name}\"): profile {profile:?}: memory must be a size like \"512M\" (got {m:?})"
                        ))
                    })?;
                    asked = Some((bytes, format!("profile {profile:?}: memory")));
                }
            }
            if cpus == 0 {
                cpus = p.cpus.unwrap_or(1);
            }
        }
        if cpus == 0 {
            cpus = 1;
        }
        let memory_mib = match &asked {
            Some((bytes, _)) => bytes.div_ceil(1 << 20),
            None => DEFAULT_MEMORY_MIB,
        };
        if let (Some((bytes, what)), Some(host_mib)) = (&asked, host_memory_mib()) {
            if memory_mib > host_mib {
                return Err(ApiError::msg(format!(
                    "{CALL}: {what} {} exceeds this host's memory ({host_mib}M)",
                    show_bytes(*bytes)
                )));
            }
        }
        if let Some((bytes, what)) = &asked {
            if memory_mib < MIN_MEMORY_MIB {
                return Err(ApiError::msg(format!(
                    "{CALL}: {what} must be at least {MIN_MEMORY_MIB}M (got {}; a bare number is bytes)",
                    show_bytes(*bytes)
                )));
            }
        }
        Ok(VmConfig {
            name,
            profile,
            memory_mib,
            cpus,
            transport,
            stall_timeout,
            run_timeout,
        })
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
                &["kernel_cmdline_append", "files", "timeout", "_raw_port"],
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
        let (kernel, initrd, mut cmdline) = if self.profile == "default" {
            let image = guest::default_image_cached().map_err(|e| {
                ApiError::msg(format!("{CALL}: cannot prepare the default guest: {e}"))
            })?;
            (image.kernel.clone(), image.initrd.clone(), String::new())
        } else {
            let p = crate::image::config::profile(&self.profile)
                .map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?;
            let initrd = guest::profile_initrd(p.initrd.as_deref())
                .map_err(|e| ApiError::msg(format!("{CALL}: profile {:?}: {e}", self.profile)))?;
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
            name: self.name.clone(),
            kernel,
            initrd,
            extra_initrd,
            cmdline_append: cmdline,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            transport: match self.transport {
                Some(t) => t,
                None => {
                    Transport::host_default().map_err(|e| ApiError::msg(format!("{CALL}: {e}")))?
                }
            },
            timeout,
        })
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
