//! The index of a kernel directory's extracted modules: `modules.dep`
//! (`name: dep dep`, one line per extracted module) and `modules.builtin`
//! (one name per line), both plain text in the format of the kernel's own
//! files.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use super::error::ImageError;
use crate::metadata;

const MODULES_DEP: &str = "modules.dep";
const MODULES_BUILTIN: &str = "modules.builtin";

/// `modules.dep` and `modules.builtin` of a kernel directory.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Each extracted module and the modules it needs.
    pub deps: BTreeMap<String, Vec<String>>,
    /// The modules built into the kernel.
    pub builtin: HashSet<String>,
}

impl Index {
    /// Reads the index of `dir`; missing files are empty.
    pub(crate) fn read(dir: &Path) -> Result<Index, ImageError> {
        let read = |name: &str| -> Result<String, ImageError> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(ImageError::io("read", &path, e)),
            }
        };
        let mut index = Index::default();
        for line in read(MODULES_DEP)?.lines() {
            if let Some((name, deps)) = line.split_once(':') {
                index.deps.insert(
                    name.trim().to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                );
            }
        }
        index.builtin = read(MODULES_BUILTIN)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Ok(index)
    }

    /// Writes both files of `dir`, each atomically.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let mut dep = String::new();
        for (name, deps) in &self.deps {
            dep.push_str(name);
            dep.push(':');
            for d in deps {
                dep.push(' ');
                dep.push_str(d);
            }
            dep.push('\n');
        }
        let mut builtin: Vec<&String> = self.builtin.iter().collect();
        builtin.sort();
        let builtin: String = builtin.into_iter().map(|n| format!("{n}\n")).collect();
        metadata::write_atomic(&dir.join(MODULES_BUILTIN), builtin.as_bytes())?;
        Ok(metadata::write_atomic(
            &dir.join(MODULES_DEP),
            dep.as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_files() {
        let dir = std::env::temp_dir().join(format!(
            "provium-modindex-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let empty = Index::read(&dir).expect("no files");
        assert!(empty.deps.is_empty() && empty.builtin.is_empty());
        let mut index = Index::default();
        index.deps.insert("b".into(), vec!["a".into()]);
        index.deps.insert("a".into(), vec![]);
        index
            .builtin
            .extend(["virtio".to_string(), "ext4".to_string()]);
        index.write(&dir).expect("write");
        assert_eq!(
            fs::read_to_string(dir.join(MODULES_DEP)).expect("dep"),
            "a:\nb: a\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join(MODULES_BUILTIN)).expect("builtin"),
            "ext4\nvirtio\n"
        );
        let back = Index::read(&dir).expect("read");
        assert_eq!(back.deps, index.deps);
        assert_eq!(back.builtin, index.builtin);
        let _ = fs::remove_dir_all(&dir);
    }
}
