//! Booting the guest of a profile, and making sure it dies with us.

use std::sync::Arc;

use provium::image::{self, config};
use provium::runtime;
use provium::transport::Client;
use provium::vm::console::Console;
use provium::vm::{BootExtras, BootSpec, Machine, Transport, VmError};

use crate::cli::{TransportArg, VmArgs};
use crate::defaults;
use crate::fmt;

/// Lines of the guest console shown with a failure.
const CONSOLE_LINES: usize = 30;

/// Why a guest could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// the profile cannot be used (unknown, unreadable, bad values)
    #[error("{0}")]
    Profile(String),
    /// the default guest image cannot be built or found
    #[error("cannot prepare the default guest image: {0} (see `provium doctor`)")]
    Image(String),
    /// this host's settings are wrong (PROVIUM_VSOCK, PROVIUM_ACCEL)
    #[error("{0}")]
    Host(VmError),
    /// more memory than the host has
    #[error("a guest of {want}M is more than this host's memory ({host}M): give --memory less")]
    TooMuchMemory { want: u64, host: u64 },
    /// QEMU or the agent did not come up
    #[error("cannot boot profile {profile:?}: {error}{console}")]
    Boot {
        profile: String,
        error: VmError,
        console: String,
    },
    /// Ctrl-C while the guest booted
    #[error("interrupted (SIGINT) while the guest booted")]
    Interrupted,
}

/// What to boot.
pub struct GuestSpec<'a> {
    /// The VM's name (QEMU's `-name provium:<name>`).
    pub name: &'a str,
    pub profile: &'a str,
    pub vm: &'a VmArgs,
}

/// A booted guest; killed (and waited for) when dropped.
pub struct Guest {
    /// `Some` until dropped.
    machine: Option<Machine>,
}

impl Guest {
    /// Resolves the profile, builds what it needs and boots it.
    pub fn boot(spec: &GuestSpec<'_>, extras: BootExtras) -> Result<Guest, BootError> {
        let boot = boot_spec(spec)?;
        let booted = runtime::block_on_interruptible(Machine::boot_with(boot, extras))
            .ok_or(BootError::Interrupted)?;
        match booted {
            Ok(machine) => Ok(Guest {
                machine: Some(machine),
            }),
            Err((error, console)) => Err(BootError::Boot {
                profile: spec.profile.to_string(),
                error,
                console: console.map(|c| console_note(&c)).unwrap_or_default(),
            }),
        }
    }

    /// The running machine.
    pub fn machine(&self) -> &Machine {
        match &self.machine {
            Some(m) => m,
            None => unreachable!("the machine is taken only when the guest is dropped"),
        }
    }

    /// The agent connection.
    pub fn client(&self) -> &Arc<Client> {
        self.machine().client()
    }

    /// Why the guest cannot be used any more, with the end of its console.
    pub fn death_note(&self) -> String {
        let m = self.machine();
        let reason = m
            .dead_reason()
            .unwrap_or_else(|| "the agent connection ended".into());
        format!("{reason}{}", console_note(m.console()))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(m) = self.machine.take() {
            runtime::block_on(m.kill());
        }
    }
}

/// `\n--- guest console (last N lines) ---\n...`, or nothing for an empty
/// console.
pub fn console_note(console: &Console) -> String {
    let tail = console.tail(CONSOLE_LINES);
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- guest console (last {CONSOLE_LINES} lines) ---\n{tail}")
    }
}

fn boot_spec(spec: &GuestSpec<'_>) -> Result<BootSpec, BootError> {
    let vm = spec.vm;
    let (kernel, initrd, cmdline, memory_mib, cpus) = if spec.profile == defaults::DEFAULT_PROFILE {
        let image = image::boot::default_image_cached().map_err(BootError::Image)?;
        (
            image.kernel.clone(),
            image.initrd.clone(),
            String::new(),
            vm.memory.unwrap_or(defaults::DEFAULT_MEMORY_MIB),
            vm.cpus.unwrap_or(1),
        )
    } else {
        let p = config::profile(spec.profile).map_err(BootError::Profile)?;
        let bad =
            |detail: String| BootError::Profile(format!("profile {:?}: {detail}", spec.profile));
        if !p.kernel.is_file() {
            return Err(bad(format!(
                "its kernel {} is not a file",
                p.kernel.display()
            )));
        }
        let initrd = image::boot::profile_initrd(p.initrd.as_deref()).map_err(bad)?;
        let memory_mib = match (vm.memory, &p.memory) {
            (Some(m), _) => m,
            (None, Some(text)) => crate::cli::parse_memory_mib(text)
                .map_err(|e| bad(format!("memory {text:?}: {e}")))?,
            (None, None) => defaults::DEFAULT_MEMORY_MIB,
        };
        let cpus = vm.cpus.or(p.cpus).unwrap_or(1);
        (p.kernel, initrd, p.cmdline, memory_mib, cpus)
    };
    if let Some(host) = host_memory_mib() {
        if memory_mib > host {
            return Err(BootError::TooMuchMemory {
                want: memory_mib,
                host,
            });
        }
    }
    let transport = match vm.transport {
        Some(TransportArg::Vsock) => Transport::Vsock,
        Some(TransportArg::Serial) => Transport::Serial,
        None => Transport::host_default().map_err(BootError::Host)?,
    };
    Ok(BootSpec {
        name: spec.name.to_string(),
        kernel,
        initrd,
        extra_initrd: None,
        cmdline_append: cmdline,
        memory_mib,
        cpus,
        transport,
        timeout: vm.boot_timeout,
    })
}

/// The host's RAM (`MemTotal`), in MiB.
fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// A one-line description of a boot for progress messages.
pub fn describe(profile: &str, took: std::time::Duration) -> String {
    format!("booted profile {profile:?} in {}", fmt::seconds(took))
}
