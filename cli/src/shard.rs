//! `provium shard --total N --index I PATH...`: the spec files of one shard
//! of a suite, for CI matrices and Kubernetes indexed Jobs. Every runner
//! given the same files and the same durations computes the same split, so
//! the shards cover the suite exactly once with no coordination.
//!
//! Spec files are the `*_spec.lua` files under the given directories (as
//! busted finds them) and the files named directly. With durations (a file
//! of `seconds path` lines, such as a previous run recorded), the longest
//! files are placed first, each on the shard with the least time so far;
//! a file without a recorded duration counts as the median of those with
//! one. Without durations every file counts the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why the shard cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// --total must be at least 1
    #[error("--total must be at least 1")]
    NoShards,
    /// --index {index} is out of range for --total {total} (shards are numbered 0 to {last})
    #[error(
        "--index {index} is out of range for --total {total} (shards are numbered 0 to {last})"
    )]
    Index {
        /// The index given.
        index: usize,
        /// The number of shards.
        total: usize,
        /// The last valid index.
        last: usize,
    },
    /// cannot read {path}: {source}
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// {path}:{line}: expected `seconds path`, got {text:?}
    #[error("{path}:{line}: expected `seconds path`, got {text:?}")]
    Durations {
        /// The durations file.
        path: PathBuf,
        /// The line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// no spec files (*_spec.lua) under {0}
    #[error("no spec files (*_spec.lua) under {0}")]
    NoSpecs(String),
}

/// Prints the files of shard `index` of `total`, one per line.
pub fn shard(
    paths: &[PathBuf],
    total: usize,
    index: usize,
    durations: Option<&Path>,
) -> Result<(), ShardError> {
    for file in select(paths, total, index, durations)? {
        println!("{}", file.display());
    }
    Ok(())
}

/// The files of shard `index` of `total`, in path order.
pub fn select(
    paths: &[PathBuf],
    total: usize,
    index: usize,
    durations: Option<&Path>,
) -> Result<Vec<PathBuf>, ShardError> {
    if total == 0 {
        return Err(ShardError::NoShards);
    }
    if index >= total {
        return Err(ShardError::Index {
            index,
            total,
            last: total - 1,
        });
    }
    let files = spec_files(paths)?;
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ShardError::NoSpecs(shown.join(" ")));
    }
    let known = match durations {
        Some(p) => read_durations(p)?,
        None => HashMap::new(),
    };
    let mut shard = split(&files, total, &known).swap_remove(index);
    shard.sort();
    Ok(shard)
}

/// The spec files under `paths`, sorted, each once.
fn spec_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ShardError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ShardError::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    let mut out: Vec<PathBuf> = out.iter().map(|p| plain(p)).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ShardError> {
    let read = |source| ShardError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_spec.lua"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// `path` without `.` components (`./spec/a_spec.lua` is `spec/a_spec.lua`),
/// so that spec files and recorded durations name files alike.
fn plain(path: &Path) -> PathBuf {
    let out: PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// `seconds path` lines (blank lines and `#` comments skipped).
fn read_durations(path: &Path) -> Result<HashMap<PathBuf, f64>, ShardError> {
    let text = std::fs::read_to_string(path).map_err(|source| ShardError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(char::is_whitespace)
            .and_then(|(secs, file)| {
                let secs: f64 = secs.parse().ok()?;
                (secs.is_finite() && secs >= 0.0).then(|| (plain(Path::new(file.trim())), secs))
            });
        let Some((file, secs)) = parsed else {
            return Err(ShardError::Durations {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_string(),
            });
        };
        out.insert(file, secs);
    }
    Ok(out)
}

/// Splits `files` into `total` shards: longest first, each onto the shard
/// with the least time so far (the lowest index on ties). Deterministic.
fn split(files: &[PathBuf], total: usize, known: &HashMap<PathBuf, f64>) -> Vec<Vec<PathBuf>> {
    let mut recorded: Vec<f64> = files.iter().filter_map(|f| known.get(f).copied()).collect();
    recorded.sort_by(f64::total_cmp);
    let fallback = recorded.get(recorded.len() / 2).copied().unwrap_or(1.0);
    let mut weighted: Vec<(f64, &PathBuf)> = files
        .iter()
        .map(|f| (known.get(f).copied().unwrap_or(fallback), f))
        .collect();
    weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut shards = vec![Vec::new(); total];
    let mut load = vec![0.0f64; total];
    for (secs, file) in weighted {
        let mut best = 0;
        for i in 1..total {
            if load[i] < load[best] {
                best = i;
            }
        }
        load[best] += secs;
        shards[best].push(file.clone());
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("spec/f{i:02}_spec.lua")))
            .collect()
    }

    #[test]
    fn every_file_lands_in_exactly_one_shard() {
        let all = files(23);
        for total in 1..=7 {
            let shards = split(&all, total, &HashMap::new());
            let mut seen: Vec<PathBuf> = shards.concat();
            seen.sort();
            assert_eq!(seen, all, "total {total}");
            let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{sizes:?}");
            assert_eq!(shards, split(&all, total, &HashMap::new()), "deterministic");
        }
    }

    #[test]
    fn durations_balance_the_shards() {
        let all = files(6);
        let known: HashMap<PathBuf, f64> = [(0, 60.0), (1, 10.0), (2, 10.0), (3, 10.0), (4, 10.0)]
            .into_iter()
            .map(|(i, s)| (all[i].clone(), s))
            .collect();
        // f05 has no duration: it counts as the median (10 s).
        let shards = split(&all, 2, &known);
        assert_eq!(shards[0], vec![all[0].clone()]);
        assert_eq!(shards[1].len(), 5);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = select(&[PathBuf::from(".")], 0, 0, None).unwrap_err();
        assert_eq!(err.to_string(), "--total must be at least 1");
        let err = select(&[PathBuf::from(".")], 4, 4, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--index 4 is out of range for --total 4 (shards are numbered 0 to 3)"
        );
        let err = select(&[PathBuf::from("/nonexistent/spec")], 2, 0, None).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read /nonexistent/spec"),
            "{err}"
        );
    }

    #[test]
    fn paths_lose_their_dot_components() {
        assert_eq!(
            plain(Path::new("./spec/a_spec.lua")),
            Path::new("spec/a_spec.lua")
        );
        assert_eq!(
            plain(Path::new("spec/./b/c.lua")),
            Path::new("spec/b/c.lua")
        );
        assert_eq!(plain(Path::new("/abs/x.lua")), Path::new("/abs/x.lua"));
        assert_eq!(plain(Path::new("./")), Path::new("."));
    }

    #[test]
    fn finds_spec_files_and_reads_durations() {
        let dir = std::env::temp_dir().join(format!("provium-shard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["a_spec.lua", "sub/b_spec.lua", "helper.lua"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let durations = dir.join("durations");
        std::fs::write(
            &durations,
            format!("# seconds path\n5 {}\n", dir.join("a_spec.lua").display()),
        )
        .unwrap();
        let one = select(std::slice::from_ref(&dir), 1, 0, Some(&durations)).unwrap();
        assert_eq!(
            one,
            vec![dir.join("a_spec.lua"), dir.join("sub/b_spec.lua")]
        );
        std::fs::write(&durations, "five a_spec.lua\n").unwrap();
        let err = select(std::slice::from_ref(&dir), 1, 0, Some(&durations)).unwrap_err();
        assert!(
            err.to_string().contains(":1: expected `seconds path`"),
            "{err}"
        );
        let err = select(&[dir.join("sub/none")], 1, 0, None).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
