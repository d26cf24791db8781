//! The cooperative-matrix family's self-check: before an adapter runs a GEMM on cooperative
//! matrices, every tile the policy can pick multiplies asymmetric operands (B A != A B) of odd
//! sizes with partial edge tiles and a partial last K slice, in all four transpose layouts
//! (which cover the core's four staging layouts, the convolution loaders included), batched,
//! with alpha and a bias, and once with tiny operands marked as gradients (the power-of-2 scaling
//! path). The operands are small integers (times powers of 2), exact in f16, whose products and
//! sums are exact in f32: the check wants every element equal to the CPU's, so a layout or
//! synchronisation fault of a driver cannot hide under a tolerance. The verdict is cached per
//! adapter, driver, everything that compiles into the family's kernels (the full text of every
//! coop GEMM the policy can launch, loaders included) and the fewstep, wgpu and naga versions that
//! compile them (`$FEWSTEP_CACHE_DIR` or the user's cache folder), so the check costs its compile
//! time once. Only a pass and a reproducible wrong product are cached: a check that could not run
//! (a lost device, memory running out, a kernel the driver would not build) is tried again by the
//! next process, and `fewstep selftest` checks afresh whatever the cache says.

use super::gemm_coop::{coop_tile_rule, CoopTile};
use crate::gpu::Gpu;

/// What the check found: `Ok` or the first wrong product, named.
pub type Verdict = Result<(), String>;

/// A verdict, and whether it says something about the driver that the next run would find
/// again (a pass, a wrong product) rather than about this moment (a product that did not run).
struct Checked {
    verdict: Verdict,
    // The web caches nothing (and never has cooperative matrices).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    reproducible: bool,
}

impl Checked {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn wrong(why: String) -> Checked {
        Checked {
            verdict: Err(why),
            reproducible: true,
        }
    }
    fn not_run(why: String) -> Checked {
        Checked {
            verdict: Err(why),
            reproducible: false,
        }
    }
}

/// The tiles the check covers on this adapter: those the policy can pick that fit its limits.
pub(crate) fn checked_tiles(gpu: &Gpu, s: u32, sg: u32) -> Vec<CoopTile> {
    coop_tile_rule(s, sg)
        .into_iter()
        .filter(|t| t.check(gpu.limits()).is_ok())
        .collect()
}

/// Small integers in -3..=3 from a fixed sequence (the check is the same on every run).
#[cfg(not(target_arch = "wasm32"))]
fn integers(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 33) % 7) as f32 - 3.0
        })
        .collect()
}

/// Runs the check on `gpu` (its matrices S x S on subgroups of SG lanes). `fault` swaps in a
/// kernel that reads B column-major, a wrong product of the kind a driver's layout bug gives
/// (the tests prove with it that the check fails and the blocked family runs).
#[cfg(not(target_arch = "wasm32"))]
fn run(gpu: &Gpu, s: u32, sg: u32, fault: bool) -> Checked {
    use super::gemm_core::GemmCore;
    use super::{MatmulOpts, Tensor};
    let tiles = checked_tiles(gpu, s, sg);
    if tiles.is_empty() {
        return Checked::not_run(format!(
            "no cooperative-matrix tile for {s}x{s} matrices on subgroups of {sg} fits this device's limits"
        ));
    }
    let layouts = [(false, false), (true, false), (false, true), (true, true)];
    for (ti, tile) in tiles.iter().enumerate() {
        for (li, &(ta, tb)) in layouts.iter().enumerate() {
            let (m, n, k) = (
                (tile.bm() + 3) as usize,
                (tile.bn() + 5) as usize,
                (2 * tile.bk + 3) as usize,
            );
            let batch = if li % 2 == 0 { 2 } else { 1 };
            let seed = (ti * 4 + li) as u64;
            // The second layout's operands are marked as gradients and made tiny (powers of 2
            // times the integers: still exact), so the scaling path is checked too.
            let gradients = li == 1;
            let tiny = |v: Vec<f32>, e: i32| -> Vec<f32> {
                let f = if gradients { 2f32.powi(e) } else { 1.0 };
                v.into_iter().map(|x| x * f).collect()
            };
            let a = tiny(integers(batch * m * k, 2 * seed + 1), -20);
            let b = tiny(integers(batch * k * n, 2 * seed + 2), -18);
            let with_bias = li == 3;
            let bias = if with_bias {
                integers(n, seed + 100)
            } else {
                Vec::new()
            };
            let alpha = if with_bias { 0.5 } else { 1.0 };
            let ash = if ta { [batch, k, m] } else { [batch, m, k] };
            let bsh = if tb { [batch, n, k] } else { [batch, k, n] };
            let at = Tensor::from_slice(gpu, &ash, &a);
            let bt = Tensor::from_slice(gpu, &bsh, &b);
            let bias_t = with_bias.then(|| Tensor::from_slice(gpu, &[n], &bias));
            let opts = MatmulOpts {
                trans_a: ta,
                trans_b: tb,
                alpha,
                gradients: (gradients, gradients),
            };
            let c = at.matmul_on(&bt, opts, bias_t.as_ref(), GemmCore::Coop(*tile), fault);
            let what = format!(
                "a {m}x{n}x{k} product (batch {batch}, trans_a {ta}, trans_b {tb}) on tile {tile}"
            );
            let got = match c.to_vec_blocking() {
                Ok(got) => got,
                Err(e) => return Checked::not_run(format!("{what} did not run: {e}")),
            };
            let mut want = crate::reference::matmul_ref(&a, &b, batch, m, n, k, ta, tb);
            for (i, w) in want.iter_mut().enumerate() {
                *w = alpha as f64 * *w + bias.get(i % n).map_or(0.0, |&v| v as f64);
            }
            if let Some((i, (g, w))) = got
                .iter()
                .zip(&want)
                .enumerate()
                .find(|(_, (g, w))| **g as f64 != **w)
            {
                let (bi, r, col) = (i / (m * n), i % (m * n) / n, i % n);
                return Checked::wrong(format!(
                    "{what}: element [{bi}, {r}, {col}] is {g}, the exact product is {w}"
                ));
            }
        }
    }
    Checked {
        verdict: Ok(()),
        reproducible: true,
    }
}

#[cfg(target_arch = "wasm32")]
fn run(_: &Gpu, _: u32, _: u32, _: bool) -> Checked {
    Checked::not_run("WebGPU has no cooperative matrices".into())
}

/// Whether a verdict may come from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Use a cached verdict for this adapter, driver, kernel text and versions if there is one.
    Use,
    /// Check afresh (`fewstep selftest`), and cache what was found.
    Ignore,
}

/// The check's verdict for `gpu`, from the cache when this adapter, driver, kernel text and
/// versions were checked before. Only a pass or a wrong product is cached; an injected fault
/// never is.
pub(crate) fn verdict(gpu: &Gpu, s: u32, sg: u32, fault: bool, cached: Cached) -> Verdict {
    let key = cache_key(gpu, s, sg);
    if !fault && cached == Cached::Use {
        if let Some(v) = cache::read(&key) {
            return v;
        }
    }
    let c = run(gpu, s, sg, fault);
    if !fault {
        cache::store(&key, &c);
    }
    c.verdict
}

/// The cache key of `gpu`'s verdict (see `cache_key`), where it has cooperative matrices.
pub fn key_of(gpu: &Gpu) -> Option<String> {
    gpu.coop_sizes().map(|(s, sg)| cache_key(gpu, s, sg))
}

/// Where the verdicts are cached (native; `None` without a home or cache folder).
#[cfg(not(target_arch = "wasm32"))]
pub fn cache_file() -> Option<std::path::PathBuf> {
    cache::file()
}

/// The folder fewstep's caches live in (native; `None` without a home or cache folder).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn cache_dir() -> Option<std::path::PathBuf> {
    cache::dir()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use cache::replace_line as replace_cache_line;

/// Adapter, driver, matrix and subgroup size, the versions that compile the kernels, and a hash
/// of the full text of every kernel the verdict vouches for: each checked tile's GEMM with every
/// loader (the matmul layouts the check runs and the convolution loaders spliced in the same way)
/// and the operand scaling's abs_max.
pub(crate) fn cache_key(gpu: &Gpu, s: u32, sg: u32) -> String {
    use super::gemm_core::GemmCore;
    use super::gemm_kernels::{abs_max_def, gemm_def, Loader};
    let i = gpu.info();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hash = |text: &str| {
        for byte in text.bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut defs = vec![abs_max_def()];
    for t in checked_tiles(gpu, s, sg) {
        defs.extend(Loader::ALL.map(|l| gemm_def(GemmCore::Coop(t), l)));
    }
    for d in defs {
        hash(&(d.source)().render(&d.key));
    }
    format!(
        "{}|{:04x}:{:04x}|{:?}|{} {}|{s}x{s}|sg{sg}|{}|{h:016x}",
        i.name,
        i.vendor,
        i.device,
        i.backend,
        i.driver,
        i.driver_info,
        compiler_versions()
    )
    .replace(['\t', '\n'], " ")
}

/// fewstep's version and the wgpu and naga versions it was built with (from Cargo.lock: a new
/// shader compiler may build the same text into different code).
pub(crate) fn compiler_versions() -> String {
    let lock = include_str!("../../Cargo.lock");
    let version = |name: &str| {
        let at = lock.find(&format!("\nname = \"{name}\"\nversion = \""))?;
        let rest = &lock[at..];
        let v = rest.split("version = \"").nth(1)?;
        Some(v[..v.find('"')?].to_string())
    };
    format!(
        "fewstep {} wgpu {} naga {}",
        env!("CARGO_PKG_VERSION"),
        version("wgpu").unwrap_or_default(),
        version("naga").unwrap_or_default()
    )
}

#[cfg(not(target_arch = "wasm32"))]
mod cache {
    use super::{Checked, Verdict};
    use std::path::{Path, PathBuf};

    /// `$FEWSTEP_CACHE_DIR`, else `$XDG_CACHE_HOME/fewstep`, else `~/.cache/fewstep`.
    pub fn dir() -> Option<PathBuf> {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("FEWSTEP_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("fewstep")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("fewstep")))
    }
    pub fn file() -> Option<PathBuf> {
        dir().map(|d| d.join("coop-check.tsv"))
    }

    /// One line per checked adapter: key, `ok` or `fail`, the reason.
    pub fn read(key: &str) -> Option<Verdict> {
        read_in(&file()?, key)
    }
    pub fn read_in(path: &Path, key: &str) -> Option<Verdict> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, '\t');
            if f.next()? != key {
                return None;
            }
            match (f.next()?, f.next()) {
                ("ok", _) => Some(Ok(())),
                ("fail", why) => Some(Err(format!("{} (cached verdict)", why.unwrap_or("")))),
                _ => None,
            }
        })
    }

    /// Keeps what a check found if the next run would find it again: a pass or a wrong product,
    /// not a product that did not run (a lost device, memory running out).
    pub fn store(key: &str, c: &Checked) {
        if let Some(path) = file() {
            store_in(&path, key, c);
        }
    }
    pub fn store_in(path: &Path, key: &str, c: &Checked) {
        if c.reproducible {
            write(path, key, &c.verdict);
        }
    }

    /// Adds or replaces this adapter's line; a cache that cannot be written only costs the
    /// check again next time.
    fn write(path: &Path, key: &str, v: &Verdict) {
        let line = match v {
            Ok(()) => format!("{key}\tok"),
            Err(why) => format!("{key}\tfail\t{}", why.replace(['\t', '\n'], " ")),
        };
        replace_line(path, &[key], &line);
    }

    /// Replaces the lines of the tab-separated cache `path` whose first fields are `fields`
    /// with `line` (atomically: another process reads the old file or the new one); a cache
    /// that cannot be written only costs measuring or checking again next time.
    pub fn replace_line(path: &Path, fields: &[&str], line: &str) {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| !l.split('\t').take(fields.len()).eq(fields.iter().copied()))
            .map(|l| format!("{l}\n"))
            .collect();
        text += line;
        text.push('\n');
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = crate::atomic_file::write(path, text.as_bytes());
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_passes_and_wrong_products_are_kept() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("coop-check.tsv");
            let key = "lavapipe|10005:0000|Vulkan|llvmpipe|8x8|sg8|fewstep 0.1.0 wgpu 30.0.2 naga 30.0.2|0123";
            store_in(&path, key, &Checked::not_run("a lost device".into()));
            assert_eq!(
                read_in(&path, key),
                None,
                "a product that did not run is not kept"
            );
            store_in(&path, key, &Checked::wrong("element [0, 1, 2] is 3".into()));
            let v = read_in(&path, key).unwrap().unwrap_err();
            assert!(v.contains("element [0, 1, 2] is 3 (cached verdict)"), "{v}");
            // A transient failure later does not erase what was found.
            store_in(&path, key, &Checked::not_run("out of memory".into()));
            assert!(read_in(&path, key).unwrap().is_err());
            store_in(
                &path,
                key,
                &Checked {
                    verdict: Ok(()),
                    reproducible: true,
                },
            );
            assert_eq!(read_in(&path, key), Some(Ok(())));
            assert_eq!(read_in(&path, "another adapter"), None);
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
        }

        #[test]
        fn the_key_names_the_compilers_versions() {
            let v = super::super::compiler_versions();
            let parts: Vec<&str> = v.split(' ').collect();
            assert_eq!(parts.len(), 6, "{v}");
            assert_eq!((parts[0], parts[2], parts[4]), ("fewstep", "wgpu", "naga"));
            for p in [parts[1], parts[3], parts[5]] {
                assert!(
                    p.split('.').count() == 3 && p.split('.').all(|n| n.parse::<u32>().is_ok()),
                    "{v}"
                );
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod cache {
    use super::{Checked, Verdict};
    pub fn read(_: &str) -> Option<Verdict> {
        None
    }
    pub fn store(_: &str, _: &Checked) {}
}
