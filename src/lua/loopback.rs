//! A loopback target for the Lua-layer tests: the embedded guest agent run
//! as a host process (`provium-agent --serve-stdio`) on one end of a socket
//! pair, driven by the real transport, registry and Lua modules. No QEMU:
//! `cargo test` checks argument handling, error objects, batches, scopes and
//! object lifetimes in seconds; the busted specs prove the real guest.
//!
//! Test-only (`cfg(test)`): `core.loopback()` exists in the test Lua states
//! of [`super::tests`] and nowhere else.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use mlua::{UserData, UserDataMethods};

use super::errors::{ret, ApiError, ApiResult};
use super::target::Target;
use crate::transport::{self, Client};
use crate::vm::console::Console;

/// The guest agent built for the default image (a static binary that also
/// runs on the host).
pub const AGENT: &str = env!("PROVIUM_AGENT_BIN");

/// A loopback VM as Lua holds it.
pub struct Loopback {
    name: String,
    target: Target,
    child: Mutex<Option<Child>>,
}

impl Loopback {
    /// Starts an agent and completes the handshake.
    pub fn start(name: &str) -> ApiResult<Loopback> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| ApiError::msg(format!("loopback: {what}: {e}"));
        let (host, agent) = UnixStream::pair().map_err(|e| fail("socketpair", &e))?;
        let agent_out = agent.try_clone().map_err(|e| fail("dup", &e))?;
        let child = Command::new(AGENT)
            .arg("--serve-stdio")
            .stdin(Stdio::from(OwnedFd::from(agent)))
            .stdout(Stdio::from(OwnedFd::from(agent_out)))
            .spawn()
            .map_err(|e| fail(AGENT, &e))?;
        let token = transport::fresh_token().map_err(|e| fail("token", &e))?;
        let handshake = async move {
            host.set_nonblocking(true)?;
            let mut stream = tokio::net::UnixStream::from_std(host)?;
            let hello = transport::handshake(&mut stream, token)
                .await
                .map_err(std::io::Error::other)?;
            let std = stream.into_std()?;
            std.set_nonblocking(false)?;
            Ok::<_, std::io::Error>((OwnedFd::from(std), hello))
        };
        let (fd, hello) = crate::runtime::block_on(handshake).map_err(|e| fail("handshake", &e))?;
        let client = Client::start(fd, hello, token).map_err(|e| fail("client", &e))?;
        let console = Console::new(&std::env::temp_dir().join("provium-loopback.console"));
        Ok(Loopback {
            name: name.to_string(),
            target: Target {
                client,
                console,
                label: format!("vm \"{name}\""),
                prefix: "vm",
                worker: None,
                run_timeout: Some(std::time::Duration::from_secs(60)),
            },
            child: Mutex::new(Some(child)),
        })
    }

    /// The agent endpoint, for `call`.
    pub fn target(&self, call: &str) -> ApiResult<Target> {
        self.target.check_alive(call)?;
        Ok(self.target.clone())
    }

    fn state(&self) -> &'static str {
        let running = self.child.lock().map(|c| c.is_some()).unwrap_or(false);
        match (running, self.target.client.closed_reason()) {
            (true, None) => "booted",
            (true, Some(_)) => "dead",
            (false, _) => "shutdown",
        }
    }

    /// Closes the connection and reaps the agent (idempotent).
    fn shutdown(&self) {
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        if let Some(mut child) = child {
            // The agent ends its connection on EOF and ends the processes it
            // started (as a guest's poweroff would); a stuck one is killed.
            self.target.client.close("the loopback VM was shut down");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the agent without closing the connection: what a VM whose
    /// guest died looks like to the transport.
    fn kill_agent(&self) {
        if let Ok(mut c) = self.child.lock() {
            if let Some(child) = c.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl UserData for Loopback {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("name", |lua, this, ()| ret(lua, Ok(this.name.clone())));
        m.add_method("state", |lua, this, ()| ret(lua, Ok(this.state())));
        m.add_method("shutdown", |lua, this, ()| {
            this.shutdown();
            ret(lua, Ok(true))
        });
        m.add_method("kill_agent", |lua, this, ()| {
            this.kill_agent();
            ret(lua, Ok(true))
        });
    }
}

/// Adds `core.loopback(name)` to the core table of a test Lua state.
pub fn register(lua: &mlua::Lua, core: &mlua::Table) -> mlua::Result<()> {
    core.set(
        "loopback",
        lua.create_function(|lua, name: String| ret(lua, Loopback::start(&name)))?,
    )
}
