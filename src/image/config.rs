//! `provium.toml`: user-defined profiles.
//!
//! Looked up at `$PROVIUM_CONFIG`, else `./provium.toml`. A profile names a
//! kernel and optionally an initrd, a command line, memory and CPUs:
//!
//! ```toml
//! [profiles.mykernel]
//! kernel = "build/vmlinux"      # relative to the file's directory
//! initrd = "build/initrd.cpio"  # optional; the agent is added on top
//! cmdline = "loglevel=4"
//! memory = "512M"
//! cpus = 2
//! ```

use std::path::{Path, PathBuf};

/// A profile from `provium.toml`.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The kernel to boot (a relative path in the file is resolved against
    /// the file's directory).
    pub kernel: PathBuf,
    /// The user's initrd, if any; the agent is added on top of it.
    pub initrd: Option<PathBuf>,
    /// Kernel command line of the profile (empty when it sets none).
    pub cmdline: String,
    /// Guest memory as written in the file (a size such as `"512M"`);
    /// `opts.memory` overrides it, and `None` means the default (256 MiB).
    pub memory: Option<String>,
    /// Virtual CPUs (1 to 64); `opts.cpus` overrides it, and `None` means 1.
    pub cpus: Option<u32>,
}

/// Where the configuration file is, if there is one.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROVIUM_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from("provium.toml");
    p.is_file().then_some(p)
}

/// Loads profile `name` from the configuration file.
pub fn profile(name: &str) -> Result<Profile, String> {
    let Some(path) = config_path() else {
        return Err(format!(
            "unknown profile {name:?}: no provium.toml here (and $PROVIUM_CONFIG is not set); the built-in profile is \"default\""
        ));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let profiles = doc.get("profiles").and_then(|p| p.as_table());
    let Some(entry) = profiles
        .and_then(|p| p.get(name))
        .and_then(|e| e.as_table())
    else {
        let mut known: Vec<String> = profiles
            .map(|p| p.keys().map(|k| format!("{k:?}")).collect())
            .unwrap_or_default();
        known.insert(0, "\"default\"".into());
        return Err(format!(
            "unknown profile {name:?} (known: {}; from {})",
            known.join(", "),
            path.display()
        ));
    };
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let kernel = field("kernel")
        .map(resolve)
        .ok_or_else(|| format!("profile {name:?} in {} has no kernel", path.display()))?;
    let cpus = match entry.get("cpus") {
        None => None,
        Some(v) => Some(
            v.as_integer()
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| (1..=64).contains(c))
                .ok_or_else(|| format!("profile {name:?}: cpus must be an integer in 1..64"))?,
        ),
    };
    let memory = match entry.get("memory") {
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(toml::Value::Integer(i)) => Some(i.to_string()),
        Some(_) => {
            return Err(format!(
                "profile {name:?}: memory must be a size like \"512M\""
            ))
        }
    };
    Ok(Profile {
        kernel,
        initrd: field("initrd").map(resolve),
        cmdline: field("cmdline").unwrap_or_default(),
        memory,
        cpus,
    })
}
