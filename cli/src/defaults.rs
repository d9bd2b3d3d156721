//! The command's constants, in one place.

use std::time::Duration;

/// The profile booted when none is named: provium's own guest.
pub const DEFAULT_PROFILE: &str = "default";

/// Guest memory when neither `--memory` nor the profile says.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// The least memory a guest may be given.
pub const MIN_MEMORY_MIB: u64 = 64;
/// The most virtual CPUs a guest may be given.
pub const MAX_CPUS: u32 = provium::vm::MAX_CPUS;
/// How long a guest may take from starting QEMU to its agent's answer.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// `provium image gc --keep`: images kept besides the current default.
pub const DEFAULT_KEEP: usize = 2;

/// VM names (QEMU's `-name provium:<name>`, shown by `ps`).
pub const VM_NAME_RUN: &str = "run";
pub const VM_NAME_SHELL: &str = "shell";
pub const VM_NAME_DOCTOR: &str = "doctor";

/// The guest end of the interactive console port: the machine's only
/// `virtconsole` (the kernel console is the serial port, ttyS0).
pub const GUEST_TTY: &str = "/dev/hvc0";
/// How long the shell start-up waits for [`GUEST_TTY`] to appear, in
/// 50 ms steps.
pub const GUEST_TTY_WAIT_STEPS: u32 = 100;
/// The byte that ends a shell session from the host side: Ctrl-] (as in
/// telnet and `virsh console`).
pub const ESCAPE_BYTE: u8 = 0x1d;
/// After the guest shell ended, its last output is still copied until the
/// console port has been quiet this long...
pub const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// ... but never longer than this.
pub const DRAIN_MAX: Duration = Duration::from_secs(1);
/// Read buffer of the shell's byte pumps.
pub const PUMP_BUFFER: usize = 16 * 1024;

/// Exit codes.
pub mod exit {
    /// Everything worked.
    pub const SUCCESS: i32 = 0;
    /// Something failed (the message says what and how to fix it).
    pub const FAILURE: i32 = 1;
    /// Bad arguments (clap's own code for usage errors).
    pub const USAGE: i32 = 2;
    /// `run`: the command ran out of its `--timeout` (as `timeout(1)`).
    pub const TIMED_OUT: i32 = 124;
    /// `run`: provium itself failed (the guest did not boot, or died), so
    /// the command has no status (as `env`, `nice`, `docker run`).
    pub const INFRA: i32 = 125;
    /// `run`: the program exists in the guest but cannot be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// `run`: the program does not exist in the guest.
    pub const NOT_FOUND: i32 = 127;
    /// A process killed by signal N exits 128 + N (shell convention).
    pub const SIGNAL_BASE: i32 = 128;
}
