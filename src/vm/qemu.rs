//! The QEMU command line.
//!
//! The default machine is `microvm` booting an uncompressed `vmlinux` through
//! its PVH entry point: the fastest configuration measured under TCG (1.8 s to
//! the first answered op). Under TCG the CPU model is `qemu64` (`max` was
//! ~0.3 s slower to boot and 2-4x slower at bulk I/O); under KVM, `host`.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::accel::Accel;

/// Everything QEMU needs to know.
pub struct QemuConfig<'a> {
    /// The VM's name (shown by `ps`).
    pub name: &'a str,
    /// The accelerator (`-M microvm,accel=...`).
    pub accel: Accel,
    /// Guest memory in MiB (`-m`).
    pub memory_mib: u64,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// Guest RAM: a descriptor QEMU inherits (see `super::memory`).
    pub memory_fd: RawFd,
    /// How the agent reaches the host.
    pub channel: Channel,
    /// QMP socket QEMU listens on.
    pub qmp: &'a Path,
    /// What to boot; `None` waits for a snapshot (`-incoming defer`).
    pub boot: Option<BootImage<'a>>,
    /// An interactive console port (`virtconsole`, `/dev/hvc0` in the
    /// guest) whose host end is this Unix socket, QEMU listening.
    pub console_port: Option<&'a Path>,
    /// The benchmarks' raw virtio-serial port, its host end this Unix
    /// socket, QEMU listening (see `BootExtras::raw_port`).
    pub raw_port: Option<&'a Path>,
    /// A virtio balloon that only reports free pages (see [`BALLOON`]).
    pub balloon: bool,
}

/// The free-page-reporting balloon: the guest's `virtio_balloon` driver
/// tells QEMU which pages it freed (in chunks of 2 MiB or more, ~2 s after
/// they were freed), and QEMU punches them out of the memfd. A guest that
/// allocated and freed 160 MiB goes back to what it holds, instead of
/// keeping every page it ever touched (bench/memory.lua). It is never
/// inflated. Last on the command line: the devices before it keep their
/// virtio-mmio slots, as snapshots of machines without it expect.
pub const BALLOON: &str = "virtio-balloon-device,free-page-reporting=on";

/// The name of the interactive console port (`/sys/class/virtio-ports/*/name`).
pub const CONSOLE_PORT_NAME: &str = "org.provium.console";

/// Kernel, initramfs and command line of a fresh boot.
pub struct BootImage<'a> {
    /// The kernel (`-kernel`).
    pub kernel: &'a Path,
    /// The initramfs (`-initrd`).
    pub initrd: &'a Path,
    /// The whole kernel command line: provium's parameters, then the user's.
    pub cmdline: String,
}

/// The device that carries the agent's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// vhost-user vsock device served by a daemon at this control socket.
    VhostUser(PathBuf),
    /// Kernel vhost-vsock with this guest CID.
    Kernel(u32),
    /// A virtio-serial port whose host side connects to this Unix socket.
    Serial(PathBuf),
}

/// The QEMU binary: `$PROVIUM_QEMU` or `qemu-system-x86_64` from `PATH`.
pub fn binary() -> OsString {
    std::env::var_os("PROVIUM_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Kernel command line parameters provium always sets.
pub fn base_cmdline(accel: Accel) -> String {
    // cryptomgr.notests: the crypto self-tests cost ~340 ms of boot under TCG.
    let mut s = String::from("console=ttyS0 panic=-1 quiet cryptomgr.notests");
    match accel {
        Accel::Tcg => s.push_str(&format!(" tsc_early_khz={}", super::tsc::host_tsc_khz())),
        // microvm has no RTC under KVM; the kernel's CMOS RTC probe then
        // spins on absent ports (5.1 s of a 12.4 s boot under nested KVM).
        Accel::Kvm => s.push_str(" initcall_blacklist=cmos_init"),
    }
    s
}

/// A path inside a QEMU option string (commas doubled).
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// Builds the argument list.
pub fn args(cfg: &QemuConfig<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(&format!("provium:{}", cfg.name.replace(',', ",,")));
    push("-M");
    push(&format!(
        "microvm,accel={},memory-backend=mem",
        cfg.accel.as_str()
    ));
    push("-cpu");
    push(match cfg.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "qemu64",
    });
    push("-m");
    push(&format!("{}M", cfg.memory_mib));
    push("-smp");
    push(&cfg.cpus.to_string());
    // Shared, so that vhost-user can map it and snapshots can skip it.
    push("-object");
    push(&format!(
        "memory-backend-file,id=mem,size={}M,mem-path=/proc/self/fd/{},share=on",
        cfg.memory_mib, cfg.memory_fd
    ));
    for flag in ["-nodefaults", "-no-user-config", "-no-reboot"] {
        push(flag);
    }
    push("-display");
    push("none");
    push("-serial");
    push("stdio");
    push("-qmp");
    push(&format!("unix:{},server=on,wait=off", opt_path(cfg.qmp)));
    match &cfg.channel {
        Channel::VhostUser(control) => {
            push("-chardev");
            push(&format!("socket,id=vsockc,path={}", opt_path(control)));
            push("-device");
            push("vhost-user-vsock-device,chardev=vsockc");
        }
        Channel::Kernel(cid) => {
            push("-device");
            push(&format!("vhost-vsock-device,guest-cid={cid}"));
        }
        Channel::Serial(sock) => {
            push("-device");
            push("virtio-serial-device,max_ports=2");
            push("-chardev");
            push(&format!("socket,id=agentc,path={}", opt_path(sock)));
            push("-device");
            push(&format!(
                "virtserialport,chardev=agentc,name={}",
                provium_protocol::SERIAL_PORT_NAME
            ));
        }
    }
    // After the agent's channel: its port, named without a bus, must land
    // on its own virtio-serial device.
    if let Some(sock) = cfg.console_port {
        push("-device");
        push("virtio-serial-device,id=conbus,max_ports=1");
        push("-chardev");
        push(&format!(
            "socket,id=conport,path={},server=on,wait=off",
            opt_path(sock)
        ));
        push("-device");
        push(&format!(
            "virtconsole,bus=conbus.0,chardev=conport,name={CONSOLE_PORT_NAME}"
        ));
    }
    if let Some(sock) = cfg.raw_port {
        push("-device");
        push("virtio-serial-device,id=rawbus,max_ports=2");
        push("-chardev");
        push(&format!(
            "socket,id=rawport,path={},server=on,wait=off",
            opt_path(sock)
        ));
        push("-device");
        push(&format!(
            "virtserialport,bus=rawbus.0,chardev=rawport,name={}",
            provium_protocol::RAW_PORT_NAME
        ));
    }
    if cfg.balloon {
        push("-device");
        push(BALLOON);
    }
    match &cfg.boot {
        Some(b) => {
            push("-append");
            push(&b.cmdline);
            a.push("-kernel".into());
            a.push(b.kernel.as_os_str().to_owned());
            a.push("-initrd".into());
            a.push(b.initrd.as_os_str().to_owned());
        }
        None => {
            a.push("-incoming".into());
            a.push("defer".into());
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg<'a>(channel: Channel, console_port: Option<&'a Path>) -> QemuConfig<'a> {
        QemuConfig {
            name: "t",
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            memory_fd: 3,
            channel,
            qmp: Path::new("/run/x/qmp.sock"),
            boot: None,
            console_port,
            raw_port: None,
            balloon: false,
        }
    }

    fn joined(c: &QemuConfig<'_>) -> String {
        args(c)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_console_port_is_a_virtconsole_on_its_own_bus_after_the_agent_port() {
        let plain = joined(&cfg(Channel::Serial("/run/x/agent.sock".into()), None));
        assert!(!plain.contains("virtconsole"), "{plain}");
        let sock = Path::new("/run/x,y/console-port.sock");
        let line = joined(&cfg(
            Channel::Serial("/run/x/agent.sock".into()),
            Some(sock),
        ));
        assert!(
            line.contains("socket,id=conport,path=/run/x,,y/console-port.sock,server=on,wait=off"),
            "{line}"
        );
        assert!(line.contains("virtconsole,bus=conbus.0,chardev=conport,name=org.provium.console"));
        let agent = line.find("virtserialport").expect("agent port");
        assert!(agent < line.find("id=conbus").expect("console bus"));
        let mut raw = cfg(Channel::Serial("/run/x/agent.sock".into()), None);
        raw.raw_port = Some(Path::new("/run/x/raw-port.sock"));
        raw.balloon = true;
        let line = joined(&raw);
        assert!(
            line.contains(
                "virtio-serial-device,id=rawbus,max_ports=2 -chardev \
                 socket,id=rawport,path=/run/x/raw-port.sock,server=on,wait=off -device \
                 virtserialport,bus=rawbus.0,chardev=rawport,name=org.provium.raw"
            ),
            "{line}"
        );
        // The balloon comes last: earlier devices keep their slots.
        assert!(line.find("rawbus").expect("raw bus") < line.find(BALLOON).expect("balloon"));
        let vsock = joined(&cfg(Channel::Kernel(5000), Some(sock)));
        assert!(
            vsock.contains("virtio-serial-device,id=conbus,max_ports=1"),
            "{vsock}"
        );
    }
}
