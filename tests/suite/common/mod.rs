//! Shared test helpers: device creation, fresh random inputs, f64 CPU references, and comparison
//! with named tolerances.
#![allow(dead_code)]

pub mod bin;

use fewstep::gpu::{Gpu, GpuOptions, KernelVariant};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn gpu() -> Gpu {
    Gpu::new_blocking(GpuOptions::from_env())
        .expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)")
}

/// Every GEMM family the adapter supports (subgroup kernels only where the adapter has them).
pub fn variants(gpu: &Gpu) -> Vec<KernelVariant> {
    let mut v = vec![KernelVariant::Tiled];
    if gpu.has_subgroups() {
        v.push(KernelVariant::Subgroup);
    }
    v
}

/// Fresh inputs each run; the seed is printed so a failure can be replayed with FEWSTEP_TEST_SEED.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("FEWSTEP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("{test}: FEWSTEP_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise, naming the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // A NaN counts as infinitely far off.
        let excess = if g.is_nan() {
            f64::INFINITY
        } else {
            (g as f64 - w).abs() - (atol + rtol * w.abs())
        };
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but the reference is {} (|diff| {:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * |ref|)",
            got[i],
            want[i],
            (got[i] as f64 - want[i]).abs()
        );
    }
}

#[allow(unused_imports)]
pub use fewstep::reference::*;

pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Central finite difference of a scalar function at `x[i]`.
pub fn central_difference(x: &[f32], i: usize, eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> f64 {
    let mut xp = x.to_vec();
    xp[i] += eps;
    let fp = f(&xp);
    xp[i] = x[i] - eps;
    let fm = f(&xp);
    (fp - fm) / (2.0 * eps as f64)
}
