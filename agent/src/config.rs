//! Options read from the kernel command line (`/proc/cmdline`).
//!
//! * `provium.transport=vsock|serial` (default `vsock`)
//! * `provium.port=N`: the host's vsock port to dial (default [`HOST_PORT`]);
//!   `provium.port=cid`: the port numbered like the guest's own CID, read
//!   again at every dial (kernel vhost-vsock: a restored guest gets a new
//!   CID, and so a port no other copy of the snapshot listens on)
//! * `provium.debug` (or `provium.debug=1`): verbose logging
//! * `provium.console` (or `provium.console=1`): the machine has an
//!   interactive console port (`virtconsole`, `/dev/hvc0`), so the
//!   virtio_console driver is needed whatever the transport
//! * `provium.raw_port`: the machine has the benchmarks' raw virtio-serial
//!   port ([`provium_protocol::RAW_PORT_NAME`], served by `rawport`)

use provium_protocol::HOST_PORT;

/// How the op server reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Dial CID 2 (the host) over vsock.
    Vsock,
    /// Serve the virtio-serial port named [`provium_protocol::SERIAL_PORT_NAME`].
    Serial,
}

/// Which host vsock port the agent dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPort {
    /// Always this port.
    Fixed(u32),
    /// The port whose number is the guest's current CID.
    OwnCid,
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Transport carrying the protocol.
    pub transport: Transport,
    /// vsock port on the host to dial.
    pub port: HostPort,
    /// Verbose logging.
    pub debug: bool,
    /// The machine has an interactive console port (`provium shell`).
    pub console: bool,
    /// The machine has the benchmarks' raw virtio-serial port.
    pub raw_port: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport: Transport::Vsock,
            port: HostPort::Fixed(HOST_PORT),
            debug: false,
            console: false,
            raw_port: false,
        }
    }
}

impl Config {
    /// Parses a kernel command line; unknown or malformed `provium.*` values
    /// are logged and left at their defaults.
    pub fn from_cmdline(cmdline: &str) -> Config {
        let mut cfg = Config::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("provium.transport", Some("vsock")) => cfg.transport = Transport::Vsock,
                ("provium.transport", Some("serial")) => cfg.transport = Transport::Serial,
                ("provium.port", Some("cid")) => cfg.port = HostPort::OwnCid,
                ("provium.port", Some(v)) => match v.parse() {
                    Ok(port) => cfg.port = HostPort::Fixed(port),
                    Err(_) => log!("ignoring bad kernel option {word:?}"),
                },
                ("provium.debug", None | Some("1" | "on" | "true" | "yes")) => cfg.debug = true,
                ("provium.debug", Some(_)) => cfg.debug = false,
                ("provium.console", None | Some("1" | "on" | "true" | "yes")) => cfg.console = true,
                ("provium.console", Some(_)) => cfg.console = false,
                ("provium.raw_port", None) => cfg.raw_port = true,
                (k, _) if k.starts_with("provium.") => {
                    log!("ignoring unknown or malformed kernel option {word:?}")
                }
                _ => {}
            }
        }
        cfg
    }

    /// Whether the virtio_console driver is needed: the protocol runs over
    /// a virtio-serial port, or the machine has a console port.
    pub fn needs_virtio_console(&self) -> bool {
        self.transport == Transport::Serial || self.console || self.raw_port
    }

    /// Reads `/proc/cmdline` (defaults when it cannot be read).
    pub fn load() -> Config {
        match std::fs::read_to_string("/proc/cmdline") {
            Ok(line) => Config::from_cmdline(&line),
            Err(e) => {
                log!("cannot read /proc/cmdline ({e}); using defaults");
                Config::default()
            }
        }
    }
}

/// Exit code with which the op server asks PID 1 to power the machine off.
pub const POWEROFF_EXIT_CODE: i32 = 79;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(
            Config::from_cmdline("console=ttyS0 quiet"),
            Config::default()
        );
    }

    #[test]
    fn options() {
        let cfg = Config::from_cmdline(
            "console=ttyS0 provium.transport=serial provium.port=4000 provium.debug\n",
        );
        assert_eq!(cfg.transport, Transport::Serial);
        assert_eq!(cfg.port, HostPort::Fixed(4000));
        assert!(cfg.debug);
    }

    #[test]
    fn port_from_own_cid() {
        let cfg = Config::from_cmdline("console=ttyS0 provium.port=cid");
        assert_eq!(cfg.port, HostPort::OwnCid);
        assert_eq!(cfg.transport, Transport::Vsock);
    }

    #[test]
    fn a_console_port_needs_virtio_console_over_vsock_too() {
        let plain = Config::from_cmdline("console=ttyS0 provium.port=cid");
        assert!(!plain.console && !plain.needs_virtio_console());
        let shell = Config::from_cmdline("console=ttyS0 provium.port=cid provium.console");
        assert!(shell.console && shell.needs_virtio_console());
        assert_eq!(shell.transport, Transport::Vsock);
        let serial = Config::from_cmdline("provium.transport=serial provium.console=0");
        assert!(!serial.console && serial.needs_virtio_console());
    }

    #[test]
    fn the_raw_port_needs_virtio_console_over_vsock_too() {
        let raw = Config::from_cmdline("console=ttyS0 provium.port=cid provium.raw_port");
        assert!(raw.raw_port && raw.needs_virtio_console());
        assert!(!Config::from_cmdline("provium.port=cid").raw_port);
    }

    #[test]
    fn bad_values_keep_defaults() {
        let cfg = Config::from_cmdline("provium.transport=carrier-pigeon provium.port=x");
        assert_eq!(cfg, Config::default());
    }
}
