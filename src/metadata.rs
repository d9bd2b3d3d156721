//! The metadata files of the caches: small JSON documents, one typed struct
//! per kind (the crate-private `MetadataFile` trait), written atomically.
//!
//! The image cache's kernel records and manifests
//! ([`crate::image`]), the fixture cache's entry files
//! ([`crate::fixtures::meta`]) and the description of every snapshot
//! directory ([`crate::vm::snapshot`], in the fixture cache or wherever a
//! user put it) are such files. Earlier versions wrote them
//! as hand-made text under other names; reading falls back to that legacy
//! file when the JSON one is absent, parses it with the kind's
//! `MetadataFile::parse_legacy` and writes the JSON file next to it (same
//! modification time, since caches keep last use there). The legacy file is
//! left alone: older provium versions sharing the cache still read it, and
//! nothing here reads it once the JSON file exists.
//!
//! Writing the JSON file from a legacy one is best effort: in a directory
//! this process cannot write, the legacy content is returned all the same,
//! with a warning, or a debug line for kinds whose directories are often
//! read-only on purpose (`MetadataFile::READ_ONLY_IS_NORMAL`).
//!
//! Files are written through a temporary file in the same directory and a
//! rename (`write_atomic`), so a reader sees the old content or the new,
//! never a part. A migration links its file into place instead of renaming,
//! so it never replaces a file a writer put there meanwhile.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Prefix of every file or directory under construction in the caches.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Why a metadata file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// cannot {action} {path}: {source}
    #[error("cannot {action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done, as a verb ("read", "write", "rename into").
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// {path} is not a valid cache metadata file: {detail}
    #[error("{path} is not a valid cache metadata file: {detail}", path = .path.display())]
    Malformed {
        /// The JSON or legacy file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// cannot encode {path} as JSON: {source}
    #[error("cannot encode {path} as JSON: {source}", path = .path.display())]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> MetadataError {
    MetadataError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A kind of metadata file: its JSON form is the struct's serde form, its
/// legacy form what [`MetadataFile::parse_legacy`] reads. Each lives in a
/// directory of its cache under a fixed name.
pub(crate) trait MetadataFile: Serialize + DeserializeOwned {
    /// The file's name.
    const FILE: &'static str;
    /// The name of the legacy text file it replaces.
    const LEGACY_FILE: &'static str;

    /// Whether directories of this kind are often read-only on purpose
    /// (published or shared copies): then a legacy file that cannot be
    /// rewritten as JSON there is logged at debug level, not warned about
    /// on every read.
    const READ_ONLY_IS_NORMAL: bool = false;

    /// Parses the legacy text; the error says what is wrong with it.
    fn parse_legacy(text: &str) -> Result<Self, String>;

    /// Reads the file in `dir`, or its legacy file when there is no JSON one
    /// (writing the JSON one from it); `Ok(None)` when there is neither.
    fn read_in(dir: &Path) -> Result<Option<Self>, MetadataError> {
        read(
            &dir.join(Self::FILE),
            &dir.join(Self::LEGACY_FILE),
            Self::parse_legacy,
            Self::READ_ONLY_IS_NORMAL,
        )
    }

    /// Writes the file in `dir` atomically.
    fn write_in(&self, dir: &Path) -> Result<(), MetadataError> {
        write(&dir.join(Self::FILE), self)
    }

    /// The file in `dir` if there is one, else its legacy file if there is
    /// one: what marks an entry as complete, whichever version made it.
    fn existing_in(dir: &Path) -> Option<PathBuf> {
        [Self::FILE, Self::LEGACY_FILE]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
    }
}

/// Writes `value` to `path` as JSON (pretty, so people can read it),
/// atomically.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), MetadataError> {
    write_atomic(path, &encode(path, value)?)
}

fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, MetadataError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| MetadataError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    Ok(json)
}

/// Reads the JSON file `path`; when it does not exist, the legacy file
/// `legacy` (parsed by `parse_legacy`), from which `path` is then written.
/// `Ok(None)` when neither exists.
///
/// Writing `path` is best effort: when it fails (a read-only cache) the
/// legacy content is returned all the same, with a warning, or a debug line
/// when `quiet`.
pub(crate) fn read<T: Serialize + DeserializeOwned>(
    path: &Path,
    legacy: &Path,
    parse_legacy: fn(&str) -> Result<T, String>,
    quiet: bool,
) -> Result<Option<T>, MetadataError> {
    if let Some(value) = read_json(path)? {
        return Ok(Some(value));
    }
    let text = match fs::read_to_string(legacy) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", legacy, e)),
    };
    let value = parse_legacy(&text).map_err(|detail| MetadataError::Malformed {
        path: legacy.to_path_buf(),
        detail: format!("(legacy text format) {detail}"),
    })?;
    let modified = fs::metadata(legacy).and_then(|m| m.modified()).ok();
    match encode(path, &value).and_then(|json| create_atomic(path, &json, modified)) {
        Ok(true) => Ok(Some(value)),
        // A writer (or another reader migrating) was first: its file wins.
        Ok(false) => Ok(read_json(path)?.or(Some(value))),
        Err(e) => {
            let (legacy, path) = (legacy.display(), path.display());
            if quiet {
                tracing::debug!("cannot rewrite {legacy} as {path} (read as it is): {e}");
            } else {
                tracing::warn!("cannot rewrite {legacy} as {path}: {e}");
            }
            Ok(Some(value))
        }
    }
}

/// Reads and decodes the JSON file `path`; `Ok(None)` when it does not
/// exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, MetadataError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| MetadataError::Malformed {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// `<pid>-<nanoseconds>`: unique enough for temporary names of one cache.
pub(crate) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}

/// `.tmp-<name>-<pid>-<nanos>` next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{TMP_PREFIX}{name}-{}", unique_suffix()))
}

/// Writes and syncs the temporary file `tmp`, dated `modified` if given.
fn write_temp(tmp: &Path, data: &[u8], modified: Option<SystemTime>) -> Result<(), MetadataError> {
    let mut f = File::create(tmp).map_err(|e| io_err("create", tmp, e))?;
    f.write_all(data).map_err(|e| io_err("write", tmp, e))?;
    if let Some(time) = modified {
        f.set_modified(time)
            .map_err(|e| io_err("set the time of", tmp, e))?;
    }
    f.sync_all().map_err(|e| io_err("sync", tmp, e))
}

/// Writes `path` through a temporary file in the same directory and a
/// rename, so readers see the old content or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), MetadataError> {
    let tmp = temp_path(path);
    let result = write_temp(&tmp, data, None)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err("rename into", path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], but only if `path` does not exist: the temporary
/// file is hard-linked to `path` (which fails when something is there),
/// then removed. `Ok(false)` when `path` existed.
fn create_atomic(
    path: &Path,
    data: &[u8],
    modified: Option<SystemTime>,
) -> Result<bool, MetadataError> {
    let tmp = temp_path(path);
    let result = write_temp(&tmp, data, modified).and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("create", path, e)),
    });
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    /// A kind of metadata whose legacy form is `name:count`.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Thing {
        name: String,
        count: u64,
    }

    impl MetadataFile for Thing {
        const FILE: &'static str = "thing.json";
        const LEGACY_FILE: &'static str = "thing";

        fn parse_legacy(text: &str) -> Result<Thing, String> {
            let (name, count) = text.trim().split_once(':').ok_or("no colon")?;
            let count = count.parse().map_err(|_| format!("bad count {count:?}"))?;
            Ok(Thing {
                name: name.into(),
                count,
            })
        }
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "provium-metadata-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("mkdir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The directory's file names, temporaries included.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip() {
        let s = Scratch::new("round");
        assert_eq!(Thing::read_in(&s.0).expect("read"), None);
        assert_eq!(Thing::existing_in(&s.0), None);
        let thing = Thing {
            name: "a \"quoted\"\nname".into(),
            count: 7,
        };
        thing.write_in(&s.0).expect("write");
        assert_eq!(names(&s.0), ["thing.json"], "no temporary left");
        let text = fs::read_to_string(s.0.join("thing.json")).expect("text");
        assert!(text.starts_with('{') && text.ends_with("}\n"), "{text}");
        assert_eq!(Thing::read_in(&s.0).expect("read"), Some(thing));
        assert_eq!(Thing::existing_in(&s.0), Some(s.0.join("thing.json")));
    }

    #[test]
    fn legacy_file_is_migrated_keeping_its_time() {
        let s = Scratch::new("legacy");
        let legacy = s.0.join("thing");
        fs::write(&legacy, "old:3\n").expect("legacy");
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        File::options()
            .write(true)
            .open(&legacy)
            .and_then(|f| f.set_modified(then))
            .expect("date");
        assert_eq!(Thing::existing_in(&s.0), Some(legacy.clone()));
        let want = Thing {
            name: "old".into(),
            count: 3,
        };
        assert_eq!(Thing::read_in(&s.0).expect("read"), Some(want));
        assert_eq!(names(&s.0), ["thing", "thing.json"]);
        let json = s.0.join("thing.json");
        let text = fs::read_to_string(&json).expect("json");
        assert!(text.contains("\"count\": 3"), "{text}");
        let modified = fs::metadata(&json).and_then(|m| m.modified());
        assert_eq!(modified.expect("mtime"), then);
        assert_eq!(fs::read_to_string(&legacy).expect("kept"), "old:3\n");
        // The JSON file is what counts from now on.
        fs::write(&legacy, "changed:9\n").expect("legacy");
        assert_eq!(
            Thing::read_in(&s.0).expect("read").map(|t| t.count),
            Some(3)
        );
        assert_eq!(Thing::existing_in(&s.0), Some(json));
    }

    #[test]
    fn a_migration_never_replaces_a_json_file() {
        let s = Scratch::new("race");
        let path = s.0.join("thing.json");
        fs::write(&path, "{\"name\":\"new\",\"count\":1}").expect("json");
        assert!(!create_atomic(&path, b"{}", None).expect("create"));
        assert_eq!(
            Thing::read_in(&s.0).expect("read").map(|t| t.name),
            Some("new".into())
        );
        assert_eq!(names(&s.0), ["thing.json"], "no temporary left");
    }

    #[test]
    fn malformed_files_are_named() {
        let s = Scratch::new("bad");
        fs::write(s.0.join("thing"), "no separator\n").expect("legacy");
        let err = Thing::read_in(&s.0).expect_err("bad legacy");
        assert!(matches!(err, MetadataError::Malformed { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&s.0.join("thing").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("legacy") && msg.contains("no colon"), "{msg}");
        assert_eq!(names(&s.0), ["thing"], "nothing written from a bad file");

        fs::write(s.0.join("thing.json"), "{\"name\": 5}").expect("json");
        let msg = Thing::read_in(&s.0).expect_err("bad json").to_string();
        assert!(
            msg.contains(&s.0.join("thing.json").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn unwritable_directory_still_reads_legacy() {
        let s = Scratch::new("ro");
        fs::write(s.0.join("thing"), "old:1").expect("legacy");
        // Not a directory we can write into: the JSON file's directory is gone.
        let value = read(
            &s.0.join("missing/thing.json"),
            &s.0.join("thing"),
            Thing::parse_legacy,
            false,
        )
        .expect("read");
        assert_eq!(value.map(|t| t.count), Some(1));
    }

    #[test]
    fn unmigrated_legacy_warns_unless_read_only_is_normal() {
        let s = Scratch::new("quiet");
        fs::write(s.0.join("thing"), "old:1").expect("legacy");
        let json = s.0.join("missing/thing.json");
        for quiet in [false, true] {
            let (value, levels) =
                test_log::levels(|| read(&json, &s.0.join("thing"), Thing::parse_legacy, quiet));
            assert_eq!(value.expect("read").map(|t| t.count), Some(1));
            let count = |level| levels.iter().filter(|l| **l == level).count();
            assert_eq!(
                count(tracing::Level::WARN),
                usize::from(!quiet),
                "{levels:?}"
            );
            assert_eq!(
                count(tracing::Level::DEBUG),
                usize::from(quiet),
                "{levels:?}"
            );
        }
    }
}

/// Test support: the log events a closure makes on its thread.
#[cfg(test)]
pub(crate) mod test_log {
    use std::sync::{Arc, Mutex};

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

    /// Records the level of each event.
    struct Levels(Arc<Mutex<Vec<Level>>>);

    impl<S: Subscriber> Layer<S> for Levels {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            seen.push(*event.metadata().level());
        }
    }

    /// Runs `f`; returns its result and the levels of the events it logged.
    pub(crate) fn levels<R>(f: impl FnOnce() -> R) -> (R, Vec<Level>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Levels(seen.clone()));
        let result = tracing::subscriber::with_default(subscriber, f);
        let levels = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (result, levels)
    }
}
