//! Seeded Gaussian noise from a counter-based generator (philox_normal.wgsl): the same seed and
//! stream give the same numbers on every backend, in any order of generation, with no state.

use super::kernel_def::KernelDef;
use super::params::{wgsl_params, WgslParams};
use super::{groups_for, Tensor};
use crate::gpu::{Dispatch, Gpu, KernelKey};

wgsl_params! {
    /// philox_normal.wgsl: the 64-bit seed and stream as halves (WGSL has no 64-bit integers).
    pub struct PhiloxParams { n: u32, key0: u32, key1: u32, stream_lo: u32, stream_hi: u32, block0: u32, _p1: u32, _p2: u32 }
}

fn philox_def() -> KernelDef {
    KernelDef::fixed::<PhiloxParams>(
        KernelKey::new("philox_normal"),
        include_str!("../../shaders/philox_normal.wgsl"),
    )
}

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    vec![philox_def()]
}

impl Tensor {
    /// Standard normal noise; `stream` separates independent draws under one seed
    /// (e.g. the training step number).
    pub fn randn(gpu: &Gpu, shape: &[usize], seed: u64, stream: u64) -> Tensor {
        Tensor::randn_from(gpu, shape, seed, stream, 0)
    }

    /// The values `randn(.., seed, stream)` of a larger draw has from element `first` on
    /// (`first` a multiple of 4: values come four per Philox block): chunks of one draw.
    pub fn randn_from(gpu: &Gpu, shape: &[usize], seed: u64, stream: u64, first: usize) -> Tensor {
        assert!(
            first.is_multiple_of(4),
            "a draw is split at a multiple of 4 values"
        );
        let out = Tensor::empty(gpu, shape);
        let n = out.numel();
        let pipeline = super::pipeline_of(gpu, philox_def());
        let params = PhiloxParams {
            n: n as u32,
            key0: seed as u32,
            key1: (seed >> 32) as u32,
            stream_lo: stream as u32,
            stream_hi: (stream >> 32) as u32,
            block0: (first / 4) as u32,
            ..Default::default()
        };
        gpu.dispatch(Dispatch {
            pipeline,
            params: params.bytes(),
            buffers: vec![out.bind()],
            workgroups: groups_for(gpu, n.div_ceil(4)),
        });
        out
    }
}

fn philox4x32(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = 0xD2511F53u64 * c[0] as u64;
        let p1 = 0xCD9E8D57u64 * c[2] as u64;
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(0x9E3779B9), k[1].wrapping_add(0xBB67AE85)];
    }
    c
}

/// The CPU reference of `Tensor::randn` (f64 transform), for tests and for checking a backend.
pub fn philox_normal_cpu(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let unit = |x: u32| ((x >> 8) as f64 + 0.5) / 16777216.0;
    let mut out = Vec::with_capacity(n + 3);
    for blk in 0..n.div_ceil(4) {
        let b = philox4x32(
            [blk as u32, stream as u32, (stream >> 32) as u32, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        for pair in [(b[0], b[1]), (b[2], b[3])] {
            let r = (-2.0 * unit(pair.0).ln()).sqrt();
            let t = std::f64::consts::TAU * unit(pair.1);
            out.push((r * t.cos()) as f32);
            out.push((r * t.sin()) as f32);
        }
    }
    out.truncate(n);
    out
}
