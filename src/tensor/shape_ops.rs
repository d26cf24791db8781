//! Data movement and reductions: nearest upsampling, channel concatenation and slicing, strided
//! sums (reduce.wgsl), the sinusoidal embedding and the weighted squared-error loss.

use super::kernel_def::KernelDef;
use super::params::{wgsl_params, WgslParams};
use super::{groups_for, stand_in, Tensor};
use crate::gpu::{Dispatch, KernelKey, KernelSource};

wgsl_params! {
    /// reduce.wgsl.
    pub struct ReduceParams { outer: u32, rows: u32, inner: u32, out_offset: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }
}
wgsl_params! {
    /// sinusoidal.wgsl.
    pub struct SinusoidalParams { n: u32, dim: u32, scale: f32, _p: u32 }
}
wgsl_params! {
    /// weighted_mse.wgsl.
    pub struct WeightedMseParams { n: u32, len: u32, _p0: u32, _p1: u32 }
}
wgsl_params! {
    /// upsample.wgsl.
    pub struct UpsampleParams { planes: u32, h: u32, w: u32, _p: u32 }
}
wgsl_params! {
    /// channel_copy.wgsl.
    pub struct ChannelCopyParams { n: u32, cs: u32, cd: u32, hw: u32, offset: u32, _p0: u32, _p1: u32, _p2: u32 }
}
wgsl_params! {
    /// channel_pack2.wgsl.
    pub struct ChannelPack2Params { n: u32, ca: u32, cb: u32, hw: u32 }
}
wgsl_params! {
    /// cross_entropy.wgsl.
    pub struct CrossEntropyParams { n: u32, k: u32, scale: f32, _p: u32 }
}

fn reduce_def(mode: u32, vec4: bool) -> KernelDef {
    KernelDef::new::<ReduceParams>(
        KernelKey::new("reduce")
            .u32("MODE", mode)
            .flag("VEC4", vec4),
        move || KernelSource {
            parts: vec![
                super::elem_prelude(vec4).into(),
                include_str!("../../shaders/reduce.wgsl").into(),
            ],
        },
    )
}
fn sinusoidal_def() -> KernelDef {
    KernelDef::fixed::<SinusoidalParams>(
        KernelKey::new("sinusoidal"),
        include_str!("../../shaders/sinusoidal.wgsl"),
    )
}
fn weighted_mse_def() -> KernelDef {
    KernelDef::fixed::<WeightedMseParams>(
        KernelKey::new("weighted_mse"),
        include_str!("../../shaders/weighted_mse.wgsl"),
    )
}
fn upsample_def(mode: u32) -> KernelDef {
    KernelDef::fixed::<UpsampleParams>(
        KernelKey::new("upsample").u32("MODE", mode),
        include_str!("../../shaders/upsample.wgsl"),
    )
}
fn channel_copy_def(mode: u32) -> KernelDef {
    KernelDef::fixed::<ChannelCopyParams>(
        KernelKey::new("channel_copy").u32("MODE", mode),
        include_str!("../../shaders/channel_copy.wgsl"),
    )
}
/// MODE 0 reads B, MODE 1 writes it: its access mode is prepended per MODE, since WGSL rejects
/// even a dead store to a read-only binding and the concatenation may read one tensor twice.
fn channel_pack2_def(mode: u32) -> KernelDef {
    KernelDef::new::<ChannelPack2Params>(
        KernelKey::new("channel_pack2").u32("MODE", mode),
        move || KernelSource {
            parts: vec![
                if mode == 0 {
                    "@group(0) @binding(2) var<storage, read> B: array<f32>;\n\
                     fn store_b(i: u32, v: f32) {}\n"
                } else {
                    "@group(0) @binding(2) var<storage, read_write> B: array<f32>;\n\
                     fn store_b(i: u32, v: f32) { B[i] = v; }\n"
                }
                .into(),
                include_str!("../../shaders/channel_pack2.wgsl").into(),
            ],
        },
    )
}
fn cross_entropy_def() -> KernelDef {
    KernelDef::fixed::<CrossEntropyParams>(
        KernelKey::new("cross_entropy"),
        include_str!("../../shaders/cross_entropy.wgsl"),
    )
}

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut v = Vec::new();
    for mode in [ReduceMode::Sum, ReduceMode::SumSquares, ReduceMode::Dot] {
        v.extend([false, true].map(|vec4| reduce_def(mode as u32, vec4)));
    }
    v.extend([sinusoidal_def(), weighted_mse_def(), cross_entropy_def()]);
    v.extend([0, 1].map(upsample_def));
    v.extend([0, 1, 2].map(channel_copy_def));
    v.extend([0, 1].map(channel_pack2_def));
    v
}

/// What a reduction sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduceMode {
    Sum = 0,
    SumSquares = 1,
    Dot = 2,
}

/// out[out_offset + r] = scale * sum over (o, j) of f(x[(o * rows + r) * inner + j]).
pub(crate) fn reduce_into(
    x: &Tensor,
    y: Option<&Tensor>,
    mode: ReduceMode,
    (outer, rows, inner): (usize, usize, usize),
    scale: f32,
    out: &Tensor,
    out_offset: usize,
) {
    let gpu = x.gpu();
    assert_eq!(
        outer * rows * inner,
        x.numel(),
        "reduce view does not cover {:?}",
        x.shape()
    );
    assert!(out_offset + rows <= out.numel());
    assert_eq!(
        y.is_some(),
        mode == ReduceMode::Dot,
        "{mode:?}: a second input is given exactly for Dot"
    );
    // 16-byte loads where every row segment starts on one (both the pooled buffers and, with
    // inner a multiple of 4, every segment are 16-byte aligned).
    let vec4 = inner % 4 == 0;
    let pipeline = super::pipeline_of(gpu, reduce_def(mode as u32, vec4));
    let yb = y.map(|t| t.bind()).unwrap_or_else(|| stand_in(gpu));
    let params = ReduceParams {
        outer: outer as u32,
        rows: rows as u32,
        inner: inner as u32,
        out_offset: out_offset as u32,
        scale,
        ..Default::default()
    };
    gpu.dispatch(Dispatch {
        pipeline,
        params: params.bytes(),
        buffers: vec![x.bind(), yb, out.bind()],
        workgroups: gpu.grid_1d(rows as u32),
    });
}

impl Tensor {
    /// Sum (times `scale`) of each sample: [N, ...] -> \[N\].
    pub fn sum_per_sample(&self, scale: f32) -> Tensor {
        let n = self.shape()[0];
        let out = Tensor::empty(self.gpu(), &[n]);
        reduce_into(
            self,
            None,
            ReduceMode::Sum,
            (1, n, self.numel() / n.max(1)),
            scale,
            &out,
            0,
        );
        out
    }
    pub fn mean_per_sample(&self) -> Tensor {
        let len = self.numel() / self.shape()[0].max(1);
        self.sum_per_sample(1.0 / len as f32)
    }
    /// Sum of everything (times `scale`) as a \[1\] tensor.
    pub fn sum_all(&self, scale: f32) -> Tensor {
        let out = Tensor::empty(self.gpu(), &[1]);
        reduce_into(
            self,
            None,
            ReduceMode::Sum,
            (1, 1, self.numel()),
            scale,
            &out,
            0,
        );
        out
    }
    pub fn mean_all(&self) -> Tensor {
        self.sum_all(1.0 / self.numel() as f32)
    }
    /// [N, C, ...] summed over samples and pixels: \[C\] (bias gradients).
    pub fn sum_per_channel(&self) -> Tensor {
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let out = Tensor::empty(self.gpu(), &[c]);
        reduce_into(
            self,
            None,
            ReduceMode::Sum,
            (n, c, self.numel() / (n * c).max(1)),
            1.0,
            &out,
            0,
        );
        out
    }
    /// [N, C, ...] summed over pixels only: [N, C].
    pub fn sum_per_sample_channel(&self) -> Tensor {
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let out = Tensor::empty(self.gpu(), &[n, c]);
        reduce_into(
            self,
            None,
            ReduceMode::Sum,
            (1, n * c, self.numel() / (n * c).max(1)),
            1.0,
            &out,
            0,
        );
        out
    }
    /// Sum of squares, written at `out[offset]` (for the global gradient norm).
    pub fn sum_squares_into(&self, out: &Tensor, offset: usize) {
        reduce_into(
            self,
            None,
            ReduceMode::SumSquares,
            (1, 1, self.numel()),
            1.0,
            out,
            offset,
        );
    }
    /// Dot product of two same-shaped tensors as a \[1\] tensor.
    pub fn dot(&self, other: &Tensor) -> Tensor {
        assert_eq!(self.numel(), other.numel());
        let out = Tensor::empty(self.gpu(), &[1]);
        reduce_into(
            self,
            Some(other),
            ReduceMode::Dot,
            (1, 1, self.numel()),
            1.0,
            &out,
            0,
        );
        out
    }

    /// Nearest-neighbour x2 upsampling of [N, C, H, W].
    pub fn upsample2x(&self) -> Tensor {
        let s = self.shape();
        let out = Tensor::empty(self.gpu(), &[s[0], s[1], s[2] * 2, s[3] * 2]);
        upsample_launch(0, self, &out, s[0] * s[1], s[2], s[3]);
        out
    }
    /// Backward of upsample2x: `self` is the gradient at the upsampled size.
    pub fn upsample2x_grad(&self) -> Tensor {
        let s = self.shape();
        assert!(
            s[2].is_multiple_of(2) && s[3].is_multiple_of(2),
            "upsample gradient needs even sizes, got {s:?}"
        );
        let out = Tensor::empty(self.gpu(), &[s[0], s[1], s[2] / 2, s[3] / 2]);
        upsample_launch(1, self, &out, s[0] * s[1], s[2] / 2, s[3] / 2);
        out
    }

    /// Concatenation along channels of [N, C_i, H, W] tensors (two parts: one launch; more:
    /// one launch a part).
    pub fn concat_channels(parts: &[&Tensor]) -> Tensor {
        let first = parts[0].shape();
        let cd: usize = parts.iter().map(|t| t.shape()[1]).sum();
        let mut shape = first.to_vec();
        shape[1] = cd;
        let out = Tensor::empty(parts[0].gpu(), &shape);
        for t in parts {
            assert_eq!(t.shape()[0], first[0]);
            assert_eq!(t.shape()[2..], first[2..], "concat: spatial shapes differ");
        }
        if let [a, b] = parts {
            channel_pack2(0, a, b, &out);
            return out;
        }
        let mut off = 0;
        for t in parts {
            channel_copy(0, t, &out, t.shape()[1], cd, off);
            off += t.shape()[1];
        }
        out
    }
    /// Channels `0 .. first` and `first ..` of [N, C, H, W] as two tensors, in one launch
    /// (the gradient of a two-part concatenation).
    pub fn split_channels(&self, first: usize) -> (Tensor, Tensor) {
        let c = self.shape()[1];
        assert!(first > 0 && first < c, "split at channel {first} of {c}");
        let part = |count: usize| {
            let mut shape = self.shape().to_vec();
            shape[1] = count;
            Tensor::empty(self.gpu(), &shape)
        };
        let (a, b) = (part(first), part(c - first));
        channel_pack2(1, self, &a, &b);
        (a, b)
    }
    /// [N, C, H, W] placed at channels `offset .. offset + C` of a [N, channels, H, W] tensor
    /// that is zero elsewhere, in one launch (the gradient of `slice_channels`).
    pub fn place_channels(&self, offset: usize, channels: usize) -> Tensor {
        let count = self.shape()[1];
        assert!(offset + count <= channels);
        let mut shape = self.shape().to_vec();
        shape[1] = channels;
        let out = Tensor::empty(self.gpu(), &shape);
        channel_copy(2, self, &out, count, channels, offset);
        out
    }
    /// Channels `offset .. offset + count` of [N, C, H, W].
    pub fn slice_channels(&self, offset: usize, count: usize) -> Tensor {
        let mut shape = self.shape().to_vec();
        assert!(offset + count <= shape[1]);
        shape[1] = count;
        let out = Tensor::empty(self.gpu(), &shape);
        channel_copy(1, self, &out, count, self.shape()[1], offset);
        out
    }

    /// Sinusoidal embedding of per-sample scalars t \[N\] (times `scale`): [N, dim].
    pub fn sinusoidal_embedding(&self, dim: usize, scale: f32) -> Tensor {
        let gpu = self.gpu();
        let n = self.numel();
        let out = Tensor::empty(gpu, &[n, dim]);
        let pipeline = super::pipeline_of(gpu, sinusoidal_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: SinusoidalParams {
                n: n as u32,
                dim: dim as u32,
                scale,
                _p: 0,
            }
            .bytes(),
            buffers: vec![self.bind(), out.bind()],
            workgroups: groups_for(gpu, n * dim),
        });
        out
    }

    /// Per-sample weighted mean squared error: out\[s\] = w\[s\] * mean((self - target)^2 over sample s).
    pub fn weighted_mse_per_sample(&self, target: &Tensor, w: &Tensor) -> Tensor {
        let gpu = self.gpu();
        assert_eq!(self.shape(), target.shape());
        let n = self.shape()[0];
        assert_eq!(w.numel(), n);
        let out = Tensor::empty(gpu, &[n]);
        let pipeline = super::pipeline_of(gpu, weighted_mse_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: WeightedMseParams {
                n: n as u32,
                len: (self.numel() / n) as u32,
                ..Default::default()
            }
            .bytes(),
            buffers: vec![self.bind(), target.bind(), w.bind(), out.bind()],
            workgroups: [n as u32, 1, 1],
        });
        out
    }
}

fn upsample_launch(mode: u32, x: &Tensor, out: &Tensor, planes: usize, h: usize, w: usize) {
    let gpu = x.gpu();
    let pipeline = super::pipeline_of(gpu, upsample_def(mode));
    gpu.dispatch(Dispatch {
        pipeline,
        params: UpsampleParams {
            planes: planes as u32,
            h: h as u32,
            w: w as u32,
            _p: 0,
        }
        .bytes(),
        buffers: vec![x.bind(), out.bind()],
        workgroups: groups_for(gpu, out.numel()),
    });
}

fn channel_copy(mode: u32, src: &Tensor, dst: &Tensor, cs: usize, cd: usize, offset: usize) {
    let gpu = src.gpu();
    let n = src.shape()[0];
    let hw: usize = src.shape()[2..].iter().product();
    let pipeline = super::pipeline_of(gpu, channel_copy_def(mode));
    let params = ChannelCopyParams {
        n: n as u32,
        cs: cs as u32,
        cd: cd as u32,
        hw: hw as u32,
        offset: offset as u32,
        ..Default::default()
    };
    gpu.dispatch(Dispatch {
        pipeline,
        params: params.bytes(),
        buffers: vec![src.bind(), dst.bind()],
        // MODE 2 writes every element of the large tensor, the others touch the small one.
        workgroups: groups_for(gpu, n * if mode == 2 { cd } else { cs } * hw),
    });
}

/// MODE 0: `a` and `b` concatenated along channels into `c`; MODE 1: `a` split into `b` and `c`.
fn channel_pack2(mode: u32, a: &Tensor, b: &Tensor, c: &Tensor) {
    let gpu = a.gpu();
    let n = a.shape()[0];
    let hw: usize = a.shape()[2..].iter().product();
    let (ca, cb) = if mode == 0 {
        (a.shape()[1], b.shape()[1])
    } else {
        (b.shape()[1], c.shape()[1])
    };
    let pipeline = super::pipeline_of(gpu, channel_pack2_def(mode));
    gpu.dispatch(Dispatch {
        pipeline,
        params: ChannelPack2Params {
            n: n as u32,
            ca: ca as u32,
            cb: cb as u32,
            hw: hw as u32,
        }
        .bytes(),
        buffers: vec![a.bind(), b.bind(), c.bind()],
        workgroups: groups_for(gpu, n * (ca + cb) * hw),
    });
}

impl Tensor {
    /// Softmax cross-entropy of logits [N, K] against labels \[N\] (class indices as f32):
    /// (per-row loss \[N\], gradient of the mean loss with respect to the logits [N, K]).
    pub fn cross_entropy(&self, labels: &Tensor) -> (Tensor, Tensor) {
        let gpu = self.gpu();
        let (n, k) = (self.shape()[0], self.shape()[1]);
        assert_eq!(labels.numel(), n, "one label per row");
        let loss = Tensor::empty(gpu, &[n]);
        let grad = Tensor::empty(gpu, &[n, k]);
        let pipeline = super::pipeline_of(gpu, cross_entropy_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: CrossEntropyParams {
                n: n as u32,
                k: k as u32,
                scale: 1.0 / n as f32,
                _p: 0,
            }
            .bytes(),
            buffers: vec![self.bind(), labels.bind(), loss.bind(), grad.bind()],
            workgroups: [(n as u32).div_ceil(64), 1, 1],
        });
        (loss, grad)
    }
}
