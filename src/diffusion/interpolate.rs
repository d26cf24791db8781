//! A morph between two seeds: the initial noise of seed A's first image and seed B's, mixed by
//! spherical interpolation, then sampled as usual. DDIM is deterministic, so a smooth path
//! through the noise gives a smooth path through the images, which shows what the model has
//! learned to map where. Spherical rather than straight: a straight mix of two independent
//! N(0, I) draws is shorter than either (half-way its norm is ~0.71 of theirs), which a model
//! never saw at t = 1 and answers with washed-out images; the arc keeps the norm.
//!
//! The two draws are the GPU's own (`Tensor::randn`, what `fewstep sample --seed` starts from),
//! read back once; the strip's start is mixed in f64 on the CPU and uploaded: a setup of K
//! images, not an operation in the sampling loop.

use super::model::Denoiser;
use crate::gpu::GpuError;
use crate::tensor::Tensor;

/// Below this angle between the draws (the same seed twice) the arc is a point: no division by
/// sin(angle) ~ 0.
const SAME_DIRECTION: f64 = 1e-6;

/// Spherical interpolation from `a` (s = 0) to `b` (s = 1) along the great circle through
/// them, with the norm changing linearly from |a| to |b| (two draws of one distribution have
/// norms within a fraction of a percent of each other). s = 0 and s = 1 give `a` and `b`
/// exactly.
pub fn slerp(a: &[f32], b: &[f32], s: f64) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "two draws of one shape");
    if s == 0.0 {
        return a.to_vec();
    }
    if s == 1.0 {
        return b.to_vec();
    }
    let dot =
        |x: &[f32], y: &[f32]| -> f64 { x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum() };
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        return a
            .iter()
            .zip(b)
            .map(|(&p, &q)| ((1.0 - s) * p as f64 + s * q as f64) as f32)
            .collect();
    }
    let cos = (dot(a, b) / (na * nb)).clamp(-1.0, 1.0);
    let angle = cos.acos();
    if angle < SAME_DIRECTION {
        return a.to_vec();
    }
    // Unit directions mixed on the arc, then scaled to the interpolated norm.
    let (wa, wb) = (
        ((1.0 - s) * angle).sin() / angle.sin(),
        (s * angle).sin() / angle.sin(),
    );
    let norm = (1.0 - s) * na + s * nb;
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (norm * (wa * p as f64 / na + wb * q as f64 / nb)) as f32)
        .collect()
}

/// Where image k of a strip of `count` sits between A (0) and B (1).
pub fn strip_position(k: usize, count: usize) -> f64 {
    if count <= 1 {
        0.0
    } else {
        k as f64 / (count - 1) as f64
    }
}

/// Checks `A,B` and the count of a strip; the message names the fix.
pub fn parse_seeds(text: &str) -> Result<(u64, u64), String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let bad =
        || format!("'{text}' is not two seeds: give them as A,B (e.g. 1,2), whole numbers >= 0");
    match parts.as_slice() {
        [a, b] => Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}

/// The smallest and largest strips: a morph needs its two ends; more than 64 images is more
/// than a row can show.
pub const STRIP_COUNTS: std::ops::RangeInclusive<usize> = 2..=64;

/// The initial noise [count, C, H, W] of a strip from seed A's first image to seed B's.
pub async fn strip_start(
    model: &Denoiser,
    seeds: (u64, u64),
    count: usize,
) -> Result<Tensor, GpuError> {
    let [c, h, w] = model.image_shape();
    let gpu = model.net.gpu();
    let draw = |seed| Tensor::randn(gpu, &[1, c, h, w], seed, super::sampler::INIT_STREAM);
    let a = draw(seeds.0).to_vec().await?;
    let b = draw(seeds.1).to_vec().await?;
    let mut z = Vec::with_capacity(count * a.len());
    for k in 0..count {
        z.extend(slerp(&a, &b, strip_position(k, count)));
    }
    Ok(Tensor::from_slice(gpu, &[count, c, h, w], &z))
}
