//! The plan cache: one line per (device, bucket): `KEY<TAB>BUCKET<TAB>CHOICE`, natively in
//! `kernel-plan.tsv` beside the self-check's verdicts (`$FEWSTEP_CACHE_DIR`, else the user's
//! cache folder), in the browser under the local storage item `fewstep-kernel-plan`. The key names the adapter, driver, precision, the fewstep, wgpu and naga
//! versions and a hash of the full text of every kernel the tuner may choose on this device, so
//! a new driver, compiler or kernel is measured again rather than trusted.

use std::collections::BTreeMap;

use super::Choice;
use crate::gpu::Gpu;

/// This device's key (see the module's documentation).
pub fn device_key(gpu: &Gpu) -> String {
    use super::super::gemm_kernels::{abs_max_def, gemm_def, split_sum_def, Loader};
    let mut defs = vec![abs_max_def(), split_sum_def(false), split_sum_def(true)];
    for core in super::cores(gpu) {
        defs.extend(Loader::ALL.map(|l| gemm_def(core, l)));
    }
    let i = gpu.info();
    let adapter = format!(
        "{}|{:04x}:{:04x}|{:?}|{} {}",
        i.name, i.vendor, i.device, i.backend, i.driver, i.driver_info
    );
    key_of(
        &adapter,
        gpu.precision().name(),
        &super::super::coop_check::compiler_versions(),
        defs.into_iter().map(|d| (d.source)().render(&d.key)),
    )
}

/// The key of an adapter (name, ids, backend, driver), precision, compiler versions and the
/// full text of every candidate kernel.
fn key_of(
    adapter: &str,
    precision: &str,
    versions: &str,
    kernels: impl Iterator<Item = String>,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for text in kernels {
        for byte in text.bytes().chain([0]) {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{adapter}|{precision}|{versions}|{h:016x}").replace(['\t', '\n'], " ")
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn a_changed_kernel_text_or_version_changes_the_key() {
        let kernels = || ["fn a() {}".to_string(), "fn b() {}".to_string()].into_iter();
        let versions = "fewstep 0.1.0 wgpu 30.0.2 naga 30.0.2";
        let key = super::key_of("lavapipe", "f32", versions, kernels());
        assert_eq!(key, super::key_of("lavapipe", "f32", versions, kernels()));
        let edited = ["fn a() {}".to_string(), "fn b() { }".to_string()].into_iter();
        for other in [
            super::key_of("lavapipe", "f32", versions, edited),
            super::key_of(
                "lavapipe",
                "f32",
                "fewstep 0.1.0 wgpu 30.0.2 naga 30.0.3",
                kernels(),
            ),
            super::key_of("lavapipe", "mixed", versions, kernels()),
            super::key_of("radv", "f32", versions, kernels()),
            super::key_of("lavapipe", "f32", versions, kernels().take(1)),
        ] {
            assert_ne!(key, other);
        }
        assert!(!key.contains('\t'));
    }
}

/// The entries of device `key` in the cache's text: bucket -> choice (lines that no longer
/// parse are skipped: they are measured again).
fn entries_in(text: &str, key: &str) -> BTreeMap<String, Choice> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            if f.next()? != key {
                return None;
            }
            let bucket = f.next()?;
            let choice = f.next()?.parse().ok()?;
            Some((bucket.to_string(), choice))
        })
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{file, kept_where, read, store};
#[cfg(target_arch = "wasm32")]
pub use web::{file, kept_where, read, store};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{BTreeMap, Choice};
    use std::path::{Path, PathBuf};

    /// `kernel-plan.tsv` in the cache folder (`None` without one).
    pub fn file() -> Option<PathBuf> {
        crate::tensor::coop_check::cache_dir().map(|d| d.join("kernel-plan.tsv"))
    }

    /// The cached plan of the device `key`: bucket -> choice (lines that no longer parse are
    /// skipped: they are measured again).
    pub fn read(key: &str) -> BTreeMap<String, Choice> {
        file().map(|f| read_in(&f, key)).unwrap_or_default()
    }

    pub fn read_in(path: &Path, key: &str) -> BTreeMap<String, Choice> {
        super::entries_in(&std::fs::read_to_string(path).unwrap_or_default(), key)
    }

    pub fn kept_where() -> String {
        file().map_or("not kept (no cache folder)".into(), |f| {
            format!("kept in {}", f.display())
        })
    }

    /// Adds or replaces one entry.
    pub fn store(key: &str, bucket: &str, choice: &Choice) {
        if let Some(path) = file() {
            store_in(&path, key, bucket, choice);
        }
    }

    pub fn store_in(path: &Path, key: &str, bucket: &str, choice: &Choice) {
        let line = format!("{key}\t{bucket}\t{choice}");
        crate::tensor::coop_check::replace_cache_line(path, &[key, bucket], &line);
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::tensor::gemm_core::GemmCore;

        #[test]
        fn entries_are_kept_per_device_and_bucket() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kernel-plan.tsv");
            let tiled = Choice::new(GemmCore::Tiled);
            let sub = Choice::new(GemmCore::Subgroup { sg: 8 });
            store_in(&path, "dev a", "matmul m64 n64 k64 b1", &tiled);
            store_in(&path, "dev b", "matmul m64 n64 k64 b1", &sub);
            store_in(&path, "dev a", "matmul m64 n64 k64 b1", &sub);
            store_in(&path, "dev a", "conv-forward m16 n4096 k256 b1", &tiled);
            let a = read_in(&path, "dev a");
            assert_eq!(a.len(), 2);
            assert_eq!(
                a["matmul m64 n64 k64 b1"], sub,
                "the newer entry replaces the older"
            );
            assert_eq!(read_in(&path, "dev b").len(), 1);
            assert!(read_in(&path, "dev c").is_empty());
            std::fs::write(&path, "dev a\tmatmul m1 n1 k1 b1\tfast\n").unwrap();
            assert!(
                read_in(&path, "dev a").is_empty(),
                "an unreadable line is skipped"
            );
        }
    }
}

/// The browser: one local storage item (a few KB; synchronous, so a bucket planned between two
/// steps is kept before the next).
#[cfg(target_arch = "wasm32")]
mod web {
    use super::{BTreeMap, Choice};

    const ITEM: &str = "fewstep-kernel-plan";

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok().flatten()
    }

    pub fn file() -> Option<std::path::PathBuf> {
        None
    }

    pub fn kept_where() -> String {
        "kept in this browser's local storage".into()
    }

    pub fn read(key: &str) -> BTreeMap<String, Choice> {
        let text = storage()
            .and_then(|s| s.get_item(ITEM).ok().flatten())
            .unwrap_or_default();
        super::entries_in(&text, key)
    }

    /// Adds or replaces one entry; a full or missing storage keeps nothing (the bucket is
    /// measured again on the next visit).
    pub fn store(key: &str, bucket: &str, choice: &Choice) {
        let Some(s) = storage() else { return };
        let text = s.get_item(ITEM).ok().flatten().unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                let mut f = l.split('\t');
                !(f.next() == Some(key) && f.next() == Some(bucket))
            })
            .map(String::from)
            .collect();
        lines.push(format!("{key}\t{bucket}\t{choice}"));
        let _ = s.set_item(ITEM, &lines.join("\n"));
    }
}
