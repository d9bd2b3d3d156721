//! Kernel module dependencies: read from each `.ko`'s `.modinfo` section (Debian's
//! package ships no `modules.dep`; depmod runs at install time) and ordered so that
//! every module comes after the modules it needs.

use std::collections::{BTreeSet, HashMap, HashSet};

use object::{Object, ObjectSection};

/// A module file as it goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// Module name (`virtio_pci`), also the file's stem.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The module name a file stands for: its name without `.ko` (and a compression
/// suffix), dashes turned into underscores, as the kernel and depmod name modules.
pub(crate) fn name_from_file(file_name: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))?;
    if stem.is_empty() {
        return None;
    }
    Some(normalize(stem))
}

/// `virtio-rng` and `virtio_rng` are the same module.
pub(crate) fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` entry of a `.ko` file's `.modinfo` section.
pub(crate) fn depends_of_ko(ko: &[u8]) -> Result<Vec<String>, String> {
    let file = object::File::parse(ko).map_err(|e| format!("not an ELF object: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| "no .modinfo section".to_string())?;
    let data = section.data().map_err(|e| e.to_string())?;
    Ok(depends_of_modinfo(data))
}

/// Parses `.modinfo` contents: NUL-separated `key=value` strings; `depends=` holds
/// a comma-separated (possibly empty) list of module names.
pub(crate) fn depends_of_modinfo(data: &[u8]) -> Vec<String> {
    let mut deps = BTreeSet::new();
    for entry in data.split(|&b| b == 0) {
        let Some(list) = entry.strip_prefix(b"depends=") else {
            continue;
        };
        for dep in String::from_utf8_lossy(list).split(',') {
            let dep = dep.trim();
            if !dep.is_empty() {
                deps.insert(normalize(dep));
            }
        }
    }
    deps.into_iter().collect()
}

/// Looks a module's dependencies up: `Ok(None)` if there is no such module.
pub(crate) type DepsOf<'a> = dyn FnMut(&str) -> Result<Option<Vec<String>>, String> + 'a;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// A module (asked for, or needed by another) that the kernel does not have.
    Missing(String),
    /// Modules that depend on each other, in the order found.
    Cycle(Vec<String>),
    /// `deps_of` failed for this module.
    Unreadable(String, String),
}

/// Orders `wanted` and everything they depend on, dependencies first. Modules are
/// visited in the order asked for, dependencies in name order, so the result is
/// deterministic. Names in `builtin` are part of the kernel and are left out.
/// `deps_of` returns a module's dependencies, `Ok(None)` if there is no such module.
pub(crate) fn load_order(
    wanted: &[String],
    builtin: &HashSet<String>,
    deps_of: &mut DepsOf<'_>,
) -> Result<Vec<String>, ResolveError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    struct Walk<'a, 'b> {
        builtin: &'a HashSet<String>,
        deps_of: &'a mut DepsOf<'b>,
        state: HashMap<String, State>,
        stack: Vec<String>,
        order: Vec<String>,
    }
    impl Walk<'_, '_> {
        fn visit(&mut self, name: &str) -> Result<(), ResolveError> {
            if self.builtin.contains(name) {
                return Ok(());
            }
            match self.state.get(name) {
                Some(State::Done) => return Ok(()),
                Some(State::Visiting) => {
                    let from = self.stack.iter().position(|n| n == name).unwrap_or(0);
                    let mut cycle = self.stack[from..].to_vec();
                    cycle.push(name.to_string());
                    return Err(ResolveError::Cycle(cycle));
                }
                None => {}
            }
            let mut deps = (self.deps_of)(name)
                .map_err(|e| ResolveError::Unreadable(name.to_string(), e))?
                .ok_or_else(|| ResolveError::Missing(name.to_string()))?;
            deps.sort();
            deps.dedup();
            self.state.insert(name.to_string(), State::Visiting);
            self.stack.push(name.to_string());
            for dep in &deps {
                self.visit(dep)?;
            }
            self.stack.pop();
            self.state.insert(name.to_string(), State::Done);
            self.order.push(name.to_string());
            Ok(())
        }
    }
    let mut walk = Walk {
        builtin,
        deps_of,
        state: HashMap::new(),
        stack: Vec::new(),
        order: Vec::new(),
    };
    for name in wanted {
        walk.visit(&normalize(name))?;
    }
    Ok(walk.order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn order(
        g: &HashMap<String, Vec<String>>,
        wanted: &[&str],
        builtin: &[&str],
    ) -> Result<Vec<String>, ResolveError> {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        let builtin: HashSet<String> = builtin.iter().map(|s| s.to_string()).collect();
        load_order(&wanted, &builtin, &mut |n| Ok(g.get(n).cloned()))
    }

    /// The dependency graph of Debian's 6.1 cloud kernel for the default modules.
    fn debian_cloud() -> HashMap<String, Vec<String>> {
        graph(&[
            ("virtio_ring", &[]),
            ("virtio", &[]),
            ("virtio_mmio", &["virtio", "virtio_ring"]),
            ("virtio_pci_modern_dev", &[]),
            ("virtio_pci_legacy_dev", &[]),
            (
                "virtio_pci",
                &[
                    "virtio_pci_modern_dev",
                    "virtio_ring",
                    "virtio",
                    "virtio_pci_legacy_dev",
                ],
            ),
            ("vsock", &[]),
            ("vmw_vsock_virtio_transport_common", &["vsock"]),
            (
                "vmw_vsock_virtio_transport",
                &[
                    "vmw_vsock_virtio_transport_common",
                    "virtio",
                    "virtio_ring",
                    "vsock",
                ],
            ),
            ("virtio_console", &["virtio", "virtio_ring"]),
        ])
    }

    #[test]
    fn dependencies_come_first() {
        let g = debian_cloud();
        let got = order(
            &g,
            &[
                "virtio_mmio",
                "virtio_pci",
                "vsock",
                "vmw_vsock_virtio_transport",
                "virtio_console",
            ],
            &[],
        )
        .expect("order");
        assert_eq!(
            got,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
                "virtio_console",
            ]
        );
        for (i, m) in got.iter().enumerate() {
            for d in &g[m] {
                let j = got.iter().position(|x| x == d).expect("dep present");
                assert!(j < i, "{d} must load before {m}");
            }
        }
    }

    #[test]
    fn builtin_missing_and_cycles() {
        let g = debian_cloud();
        // A builtin module is neither loaded nor looked up.
        let got = order(&g, &["virtio_console"], &["virtio", "virtio_ring"]).expect("order");
        assert_eq!(got, ["virtio_console"]);
        assert_eq!(
            order(&g, &["virtio-console", "nope"], &[]),
            Err(ResolveError::Missing("nope".into()))
        );
        let cyclic = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(
            order(&cyclic, &["a"], &[]),
            Err(ResolveError::Cycle(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "a".into()
            ]))
        );
    }

    #[test]
    fn modinfo_parsing() {
        let data = b"license=GPL\0depends=virtio_ring,virtio-foo,\0retpoline=Y\0intree=Y\0name=virtio_pci\0vermagic=6.1.0\0";
        assert_eq!(depends_of_modinfo(data), ["virtio_foo", "virtio_ring"]);
        assert!(depends_of_modinfo(b"depends=\0name=vsock\0").is_empty());
        assert!(depends_of_ko(b"not elf").is_err());
        assert_eq!(
            name_from_file("virtio-rng.ko").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(name_from_file("vsock.ko.xz").as_deref(), Some("vsock"));
        assert_eq!(name_from_file("modules.order"), None);
        assert_eq!(name_from_file(".ko"), None);
    }
}
