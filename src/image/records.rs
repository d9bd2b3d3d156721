//! The metadata files of the image cache, each a typed JSON document
//! ([`crate::metadata`]):
//!
//! * `kernel/<dir>/record.json` — a kernel in the cache: [`KernelRecord`];
//! * `kernel/current.json` — which of them apt gave: [`CurrentKernel`];
//! * `images/<key>/manifest.json` — an image's inputs and file sizes:
//!   [`ImageManifest`].
//!
//! Earlier versions wrote them as `key=value` lines named `record`,
//! `current` and `manifest.txt`; [`legacy`] reads those, and they are
//! rewritten as JSON when read. Nothing hashes these files: image keys
//! are computed from the inputs themselves (see [`super`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::MetadataFile;

/// What is recorded about a kernel in `kernel/<dir>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KernelRecord {
    /// Where the package came from: `apt <meta package>` or `file <path>`.
    pub source: String,
    /// The Debian package, e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub package: String,
    /// Its version, e.g. `6.1.192-3`.
    pub version: String,
    /// The kernel release, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// File name of the `.deb` kept in the directory.
    pub deb: String,
    /// Its size in bytes.
    pub deb_size: u64,
    /// Its blake3 hash (hex): part of every image key of this kernel.
    pub deb_blake3: String,
    /// The archive's SHA-256 of the package (apt only; apt-get checked it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deb_sha256: Option<String>,
    /// When it was fetched (RFC 3339 UTC).
    pub fetched: String,
    /// Size of the extracted `vmlinux`.
    pub vmlinux_size: u64,
    /// How the packaged `vmlinuz` was compressed.
    pub vmlinuz_compression: String,
}

impl MetadataFile for KernelRecord {
    const FILE: &'static str = "record.json";
    const LEGACY_FILE: &'static str = "record";

    fn parse_legacy(text: &str) -> Result<KernelRecord, String> {
        let f = legacy::Fields::parse(text);
        Ok(KernelRecord {
            source: f.text("source")?,
            package: f.text("package")?,
            version: f.text("version")?,
            release: f.text("release")?,
            deb: f.text("deb")?,
            deb_size: f.number("deb_size")?,
            deb_blake3: f.text("deb_blake3")?,
            deb_sha256: f.optional("deb_sha256"),
            fetched: f.text("fetched")?,
            vmlinux_size: f.number("vmlinux_size")?,
            vmlinuz_compression: f.text("vmlinuz_compression")?,
        })
    }
}

/// `kernel/current.json`: the kernel fetched from apt, used until it is
/// removed from the cache (exact versions vanish from the archive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CurrentKernel {
    /// Its directory's name under `kernel/`.
    pub dir: String,
}

impl MetadataFile for CurrentKernel {
    const FILE: &'static str = "current.json";
    const LEGACY_FILE: &'static str = "current";

    /// The legacy file repeated the kernel's record; only `dir` was read.
    fn parse_legacy(text: &str) -> Result<CurrentKernel, String> {
        Ok(CurrentKernel {
            dir: legacy::Fields::parse(text).text("dir")?,
        })
    }
}

/// `images/<key>/manifest.json`: what the key was computed from, and the
/// sizes of the files; its presence makes an image directory complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageManifest {
    /// The image's key (its directory name).
    pub key: String,
    /// The image format version that went into the key.
    pub format: String,
    /// The kernel package, as `name=version`.
    pub kernel_package: String,
    /// The kernel release.
    pub kernel_release: String,
    /// blake3 of the kernel package.
    pub kernel_deb_blake3: String,
    /// The kernel's cache directory.
    pub kernel_dir: String,
    /// The modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// blake3 of the BusyBox binary.
    pub busybox_blake3: String,
    /// blake3 of `/init` (the agent, or a script).
    pub init_blake3: String,
    /// Size of `initrd.cpio`, checked on every lookup.
    pub initrd_size: u64,
    /// Size of `vmlinux`, checked on every lookup.
    pub vmlinux_size: u64,
    /// When it was built (RFC 3339 UTC).
    pub built: String,
}

impl MetadataFile for ImageManifest {
    const FILE: &'static str = "manifest.json";
    const LEGACY_FILE: &'static str = "manifest.txt";

    fn parse_legacy(text: &str) -> Result<ImageManifest, String> {
        let f = legacy::Fields::parse(text);
        Ok(ImageManifest {
            key: f.text("key")?,
            format: f.text("format")?,
            kernel_package: f.text("kernel_package")?,
            kernel_release: f.text("kernel_release")?,
            kernel_deb_blake3: f.text("kernel_deb_blake3")?,
            kernel_dir: f.text("kernel_dir")?,
            // Empty for an image without modules.
            modules: f
                .optional("modules")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            busybox_blake3: f.text("busybox_blake3")?,
            init_blake3: f.text("init_blake3")?,
            initrd_size: f.number("initrd_size")?,
            vmlinux_size: f.number("vmlinux_size")?,
            built: f.text("built")?,
        })
    }
}

/// LEGACY: the `key=value` text the image cache wrote before JSON (one
/// field per line, sorted, values on one line). Only read, to migrate.
mod legacy {
    use super::BTreeMap;

    /// The fields of a legacy file.
    pub(super) struct Fields(BTreeMap<String, String>);

    impl Fields {
        /// Lines without `=` are skipped; a key is trimmed, its value not.
        pub(super) fn parse(text: &str) -> Fields {
            let mut fields = BTreeMap::new();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    fields.insert(k.trim().to_string(), v.to_string());
                }
            }
            Fields(fields)
        }

        /// The field `key`, which must be there and not empty.
        pub(super) fn text(&self, key: &str) -> Result<String, String> {
            self.optional(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("no {key}= field"))
        }

        /// The field `key` if it is there.
        pub(super) fn optional(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }

        /// The field `key`, a number of bytes.
        pub(super) fn number(&self, key: &str) -> Result<u64, String> {
            let v = self.text(key)?;
            v.trim()
                .parse()
                .map_err(|_| format!("{key}={v} is not a number"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kernel/current` and `kernel/<dir>/record` of a real cache (made by
    /// the `key=value` writer this module replaces).
    const LEGACY_CURRENT: &str = "\
deb=linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb
deb_blake3=bfc27384ddf3c1e598ddd18276144d02a32c4229d08d79a576816d6c60a23cc3
deb_sha256=4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754
deb_size=26705532
dir=linux-image-6.1.0-57-cloud-amd64_6.1.192-3
fetched=2026-12-05T22:57:48Z
package=linux-image-6.1.0-57-cloud-amd64
release=6.1.0-57-cloud-amd64
source=apt linux-image-cloud-amd64
version=6.1.192-3
vmlinux_size=53243444
vmlinuz_compression=LZ4
";

    /// `images/<key>/manifest.txt` of a real cache.
    const LEGACY_MANIFEST: &str = "\
built=2026-12-06T06:27:25Z
busybox_blake3=76e44689a528bda69b49b5cbe87fecf7a3595e2934dcea7e13a64e6c70d6be6c
format=provium-guest-image/1
init_blake3=e902bb450dfb0bcb61f4d54f46dfaa50011206469e2e003a38e782c042ff689a
initrd_size=3584696
kernel_deb_blake3=bfc27384ddf3c1e598ddd18276144d02a32c4229d08d79a576816d6c60a23cc3
kernel_dir=/root/.cache/provium/kernel/linux-image-6.1.0-57-cloud-amd64_6.1.192-3
kernel_package=linux-image-6.1.0-57-cloud-amd64=6.1.192-3
kernel_release=6.1.0-57-cloud-amd64
key=c844e6a467b79906e0bcab2c574efdf7a9a7db801f7281888c265843346177e2
modules=virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport virtio_console
vmlinux_size=53243444
";

    fn legacy_record() -> String {
        LEGACY_CURRENT.replace("dir=linux-image-6.1.0-57-cloud-amd64_6.1.192-3\n", "")
    }

    #[test]
    fn real_legacy_kernel_record() {
        let r = KernelRecord::parse_legacy(&legacy_record()).expect("record");
        assert_eq!(r.package, "linux-image-6.1.0-57-cloud-amd64");
        assert_eq!(r.version, "6.1.192-3");
        assert_eq!(r.release, "6.1.0-57-cloud-amd64");
        assert_eq!(
            r.deb,
            "linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb"
        );
        assert_eq!(r.deb_size, 26_705_532);
        assert_eq!(
            r.deb_blake3,
            "bfc27384ddf3c1e598ddd18276144d02a32c4229d08d79a576816d6c60a23cc3"
        );
        assert_eq!(r.deb_sha256.as_deref().map(str::len), Some(64));
        assert_eq!(r.source, "apt linux-image-cloud-amd64");
        assert_eq!(r.vmlinux_size, 53_243_444);
        assert_eq!(r.vmlinuz_compression, "LZ4");
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            serde_json::from_str::<KernelRecord>(&json).expect("back"),
            r
        );
        // `current` held the same fields and `dir`.
        assert_eq!(
            KernelRecord::parse_legacy(LEGACY_CURRENT).expect("current"),
            r
        );
    }

    #[test]
    fn real_legacy_current() {
        let c = CurrentKernel::parse_legacy(LEGACY_CURRENT).expect("current");
        assert_eq!(c.dir, "linux-image-6.1.0-57-cloud-amd64_6.1.192-3");
        assert_eq!(
            CurrentKernel::parse_legacy("package=x\n").map_err(|e| e.contains("dir=")),
            Err(true)
        );
    }

    #[test]
    fn real_legacy_manifest() {
        let m = ImageManifest::parse_legacy(LEGACY_MANIFEST).expect("manifest");
        assert_eq!(
            m.key,
            "c844e6a467b79906e0bcab2c574efdf7a9a7db801f7281888c265843346177e2"
        );
        assert_eq!(
            m.kernel_package,
            "linux-image-6.1.0-57-cloud-amd64=6.1.192-3"
        );
        assert_eq!(m.modules.len(), 10);
        assert_eq!(m.modules[0], "virtio_ring");
        assert_eq!(m.initrd_size, 3_584_696);
        assert_eq!(m.vmlinux_size, 53_243_444);
        assert_eq!(m.format, "provium-guest-image/1");
        let without_modules: String = LEGACY_MANIFEST
            .lines()
            .map(|l| match l.starts_with("modules=") {
                true => "modules=\n".to_string(),
                false => format!("{l}\n"),
            })
            .collect();
        let m = ImageManifest::parse_legacy(&without_modules).expect("no modules");
        assert!(m.modules.is_empty());
    }

    #[test]
    fn legacy_errors_say_which_field() {
        let no_size = LEGACY_MANIFEST.replace("initrd_size=3584696\n", "initrd_size=big\n");
        let err = ImageManifest::parse_legacy(&no_size).expect_err("bad size");
        assert!(err.contains("initrd_size=big"), "{err}");
        let err = KernelRecord::parse_legacy("package=\n").expect_err("empty");
        assert!(err.contains("no "), "{err}");
    }
}
