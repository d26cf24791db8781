//! The cooperative-matrix family's self-check: before an adapter runs a GEMM on cooperative
//! matrices, every tile the policy can pick multiplies asymmetric operands (B A != A B) of odd
//! sizes with partial edge tiles and a partial last K slice, in all four transpose layouts
//! (which cover the core's four staging layouts, the convolution loaders included), batched,
//! with alpha and a bias, and once with tiny operands marked as gradients (the power-of-2 scaling
//! path). The operands are small integers (times powers of 2), exact in f16, whose products and
//! sums are exact in f32: the check wants every element equal to the CPU's, so a layout or
//! synchronisation fault of a driver cannot hide under a tolerance. The verdict is cached per
//! adapter, driver and kernel text (`$FEWSTEP_CACHE_DIR` or the user's cache folder), so the
//! check costs its compile time once.

use super::gemm_coop::{coop_tile_rule, CoopTile};
use crate::gpu::Gpu;

/// What the check found: `Ok` or the first wrong product, named.
pub type Verdict = Result<(), String>;

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
pub(crate) fn run(gpu: &Gpu, s: u32, sg: u32, fault: bool) -> Verdict {
    use super::gemm_kernels::GemmCore;
    use super::{MatmulOpts, Tensor};
    let tiles = checked_tiles(gpu, s, sg);
    if tiles.is_empty() {
        return Err(format!(
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
            let got = c
                .to_vec_blocking()
                .map_err(|e| format!("{what} did not run: {e}"))?;
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
                return Err(format!(
                    "{what}: element [{bi}, {r}, {col}] is {g}, the exact product is {w}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn run(_: &Gpu, _: u32, _: u32, _: bool) -> Verdict {
    Err("WebGPU has no cooperative matrices".into())
}

/// The check's verdict for `gpu`, from the cache when this adapter, driver and kernel text were
/// checked before (an injected fault is never cached).
pub(crate) fn verdict(gpu: &Gpu, s: u32, sg: u32, fault: bool) -> Verdict {
    let key = cache_key(gpu, s, sg);
    if !fault {
        if let Some(v) = cache::read(&key) {
            return v;
        }
    }
    let v = run(gpu, s, sg, fault);
    if !fault {
        cache::write(&key, &v);
    }
    v
}

/// Where the verdicts are cached (native; `None` without a home or cache folder).
#[cfg(not(target_arch = "wasm32"))]
pub fn cache_file() -> Option<std::path::PathBuf> {
    cache::file()
}

/// Adapter, driver, matrix and subgroup size, and a hash of the kernels the check compiles.
fn cache_key(gpu: &Gpu, s: u32, sg: u32) -> String {
    let i = gpu.info();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in checked_tiles(gpu, s, sg) {
        for (ak, bn) in [(true, true), (false, true), (true, false), (false, false)] {
            for byte in super::gemm_coop::coop_core(t, ak, bn, false).bytes() {
                h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!(
        "{}|{:04x}:{:04x}|{:?}|{} {}|{s}x{s}|sg{sg}|{h:016x}",
        i.name, i.vendor, i.device, i.backend, i.driver, i.driver_info
    )
    .replace(['\t', '\n'], " ")
}

#[cfg(not(target_arch = "wasm32"))]
mod cache {
    use super::Verdict;
    use std::path::PathBuf;

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
        let text = std::fs::read_to_string(file()?).ok()?;
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

    /// Adds or replaces this adapter's line; a cache that cannot be written only costs the
    /// check again next time.
    pub fn write(key: &str, v: &Verdict) {
        let Some(path) = file() else { return };
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| l.split('\t').next() != Some(key))
            .map(|l| format!("{l}\n"))
            .collect();
        match v {
            Ok(()) => text += &format!("{key}\tok\n"),
            Err(why) => text += &format!("{key}\tfail\t{}\n", why.replace(['\t', '\n'], " ")),
        }
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = crate::atomic_file::write(&path, text.as_bytes());
    }
}

#[cfg(target_arch = "wasm32")]
mod cache {
    use super::Verdict;
    pub fn read(_: &str) -> Option<Verdict> {
        None
    }
    pub fn write(_: &str, _: &Verdict) {}
}
