//! Every kernel against a plain CPU reference (f64 accumulation) on fresh random inputs, and every
//! backward pass also against central finite differences of the GPU forward pass. One file per
//! family: `gemm.rs` (matmul, convolutions, the blocked tiles, splits of K), `norm.rs` (group norm,
//! its fused SiLU, softmax), `maps.rs` (elementwise maps, per-sample scalars, resampling,
//! reductions, the time embedding, the loss), `optim.rs` (Adam, EMA, the noise generator).

use crate::common;

use common::*;
use fewstep::gpu::KernelVariant;
use fewstep::tensor::{Adam, AdamConfig, Conv2d, GradClip, MatmulOpts, Residual, Tensor};

/// f32 GEMM: error grows like sqrt(K) ulps of the operands' scale (inputs are in [-1, 1]).
const GEMM_ATOL_PER_SQRT_K: f64 = 2e-6;
const GEMM_RTOL: f64 = 1e-5;
/// Elementwise and normalisation kernels: a few ulps, plus transcendental functions.
const MAP_ATOL: f64 = 2e-6;
const MAP_RTOL: f64 = 2e-5;
/// Reductions over up to ~10^4 elements in f32.
const SUM_ATOL: f64 = 1e-4;
const SUM_RTOL: f64 = 1e-5;
/// Central differences of the GPU forward (f32) with step FD_EPS, losses summed in f64.
const FD_EPS: f32 = 1e-2;
const FD_ATOL: f64 = 2e-3;
const FD_RTOL: f64 = 2e-2;

fn gemm_tol(k: usize) -> f64 {
    GEMM_ATOL_PER_SQRT_K * (k as f64).sqrt() * 4.0
}

mod gemm;
mod maps;
mod norm;
mod optim;
