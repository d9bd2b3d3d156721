//! `provium image build|list|gc`: the guest image cache.

use std::time::SystemTime;

use provium::image::agent::AGENT;
use provium::image::{self, boot, gc, CachedImage};

use crate::cli::GcArgs;
use crate::fmt;

/// Why an image command failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// building or reading the cache failed
    #[error("guest image cache {}: {source}", .dir.display())]
    Cache {
        dir: std::path::PathBuf,
        source: image::ImageError,
    },
}

fn cache_err(source: image::ImageError) -> ImageError {
    ImageError::Cache {
        dir: image::cache_dir(),
        source,
    }
}

/// Builds the default image (or finds it) and says where it is.
pub fn build() -> Result<(), ImageError> {
    let image = image::default_image(AGENT, &boot::progress).map_err(cache_err)?;
    println!(
        "default guest image {} (kernel {}, {})",
        fmt::short_key(&image.key),
        image.kernel_release,
        image.kernel_package
    );
    if let Some(dir) = image.initrd.parent() {
        println!("  {}", dir.display());
    }
    Ok(())
}

/// The key of the current default image, if it is cached.
fn default_key() -> Option<String> {
    image::cached_default_image(AGENT)
        .ok()
        .flatten()
        .map(|i| i.key)
}

/// The table of `list`: a header and one row per image.
pub fn table(images: &[CachedImage], default: Option<&str>, now: SystemTime) -> Vec<String> {
    let mut rows = vec![format!(
        "{:<16}  {:<22}  {:>9}  {:<13}  {}",
        "KEY", "KERNEL", "SIZE", "LAST USED", "NOTES"
    )];
    for i in images {
        let mut notes = Vec::new();
        if Some(i.key.as_str()) == default {
            notes.push("default");
        }
        if i.in_use {
            notes.push("in use");
        }
        if !i.complete {
            notes.push("incomplete");
        }
        rows.push(format!(
            "{:<16}  {:<22}  {:>9}  {:<13}  {}",
            fmt::short_key(&i.key),
            i.kernel_release.as_deref().unwrap_or("?"),
            fmt::bytes(i.own_bytes),
            fmt::ago(i.last_used, now),
            notes.join(", ")
        ));
    }
    rows
}

/// Lists the cached images, most recently used first.
pub fn list() -> Result<(), ImageError> {
    let images = gc::list_images().map_err(cache_err)?;
    let dir = image::cache_dir();
    if images.is_empty() {
        println!("no guest images in {}", dir.join("images").display());
        return Ok(());
    }
    let default = default_key();
    for row in table(&images, default.as_deref(), SystemTime::now()) {
        println!("{row}");
    }
    let own: u64 = images.iter().map(|i| i.own_bytes).sum();
    println!(
        "{} image(s), {} of their own in {}; each vmlinux is a hard link to its kernel in {}",
        images.len(),
        fmt::bytes(own),
        dir.join("images").display(),
        dir.join("kernel").display()
    );
    Ok(())
}

/// Removes all but the default and the `--keep` most recently used.
pub fn collect(args: &GcArgs) -> Result<(), ImageError> {
    let protect: Vec<String> = default_key().into_iter().collect();
    let now = SystemTime::now();
    let line = |verb: &str, i: &CachedImage| {
        println!(
            "{verb} {} (kernel {}, last used {}, {})",
            fmt::short_key(&i.key),
            i.kernel_release.as_deref().unwrap_or("?"),
            fmt::ago(i.last_used, now),
            fmt::bytes(i.own_bytes)
        )
    };
    if args.dry_run {
        let images = gc::list_images().map_err(cache_err)?;
        let doomed = gc::select_for_removal(&images, args.keep, &protect);
        let mut bytes = 0;
        for i in images.iter().filter(|i| doomed.contains(&i.key)) {
            if i.in_use {
                line("would keep (in use)", i);
            } else {
                line("would remove", i);
                bytes += i.own_bytes;
            }
        }
        println!("would free {}", fmt::bytes(bytes));
        return Ok(());
    }
    let report = gc::collect_garbage(args.keep, &protect, &boot::progress).map_err(cache_err)?;
    for i in &report.removed {
        line("removed", i);
    }
    for i in &report.kept_in_use {
        line("kept (in use)", i);
    }
    println!(
        "freed {} ({} image(s) removed)",
        fmt::bytes(report.freed_bytes),
        report.removed.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn the_table_marks_the_default_and_the_images_in_use() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let image = |key: &str, in_use: bool| CachedImage {
            key: key.repeat(64),
            dir: PathBuf::from("/x"),
            kernel_release: Some("6.1.0-57-cloud-amd64".into()),
            kernel_package: None,
            built: None,
            last_used: Some(now - Duration::from_secs(600)),
            own_bytes: 3_576_504,
            shared_bytes: 53_243_444,
            complete: true,
            in_use,
        };
        let default = "a".repeat(64);
        let rows = table(&[image("a", true), image("b", false)], Some(&default), now);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("KEY "));
        assert_eq!(
            rows[1],
            "aaaaaaaaaaaaaaaa  6.1.0-57-cloud-amd64      3.4 MiB  10 min ago     default, in use"
        );
        assert!(rows[2].starts_with("bbbbbbbbbbbbbbbb "));
        assert!(rows[2].ends_with("10 min ago     "));
    }
}
