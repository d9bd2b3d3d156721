//! Builds the guest agent (a static musl binary) so the rock can embed it.
//!
//! The agent is compiled by a nested `cargo build` into its own target
//! directory (a second target directory avoids waiting on the lock that the
//! outer build holds). Set `PROVIUM_AGENT_BIN` to use a prebuilt agent instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT_TARGET: &str = "x86_64-unknown-linux-musl";

fn main() {
    println!("cargo:rerun-if-env-changed=PROVIUM_AGENT_BIN");
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let agent = match env::var_os("PROVIUM_AGENT_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_agent(&root),
    };
    if !agent.is_file() {
        panic!("provium: agent binary {} does not exist", agent.display());
    }
    println!("cargo:rustc-env=PROVIUM_AGENT_BIN={}", agent.display());
}

fn build_agent(root: &Path) -> PathBuf {
    for dir in ["agent", "protocol"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    // Next to the outer build's artefacts: CARGO_TARGET_DIR when set.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("agent");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "provium-agent",
            "--target",
            AGENT_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's wrappers and flags (clippy, coverage, host RUSTFLAGS) are
    // not meant for the guest binary.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("provium: cannot run cargo to build the agent");
    if !status.success() {
        panic!(
            "provium: building the guest agent failed; is the musl target installed? \
             (rustup target add {AGENT_TARGET})"
        );
    }
    target_dir
        .join(AGENT_TARGET)
        .join("release")
        .join("provium-agent")
}
