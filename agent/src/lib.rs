//! The provium guest agent.
//!
//! One static binary plays two roles in the guest:
//!
//! * **PID 1** ([`init`]): mounts the pseudo file systems, loads the kernel
//!   modules of the initramfs, starts syslogd, then forks the op server and
//!   stays behind as a reaper that powers the machine off when asked.
//! * **op server** ([`server`]): dials the host over vsock (or serves a
//!   virtio-serial port) and answers the provium wire protocol
//!   ([`provium_protocol`]) on every connection ([`conn`]).
//! * **worker** ([`worker`]): re-executed by the op server with other
//!   credentials or namespaces, serves one channel to its parent agent.
//!
//! [`conn::serve`] works on any pair of byte streams, which is how the tests
//! and the `--serve-stdio` developer mode run the agent without a VM.

#![deny(missing_docs)]

#[macro_use]
pub mod log;

pub mod auth;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod error;
pub mod frames;
pub mod handles;
pub mod inflight;
pub mod init;
pub mod ops;
pub mod pool;
pub mod prereq;
pub mod rawport;
pub mod sender;
pub mod server;
pub mod sys;
pub mod trigger;
pub mod vports;
pub mod worker;
