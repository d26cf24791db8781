//! Elementwise maps (elementwise.wgsl), per-sample scalars (per_sample.wgsl), channel broadcast
//! (channel_bias.wgsl) and in-place axpby (axpby_inplace.wgsl).

use super::kernel_def::KernelDef;
use super::params::{wgsl_params, WgslParams};
use super::{groups_for, stand_in, Tensor};
use crate::gpu::{Dispatch, KernelKey};

wgsl_params! {
    /// elementwise.wgsl and axpby_inplace.wgsl.
    pub struct MapParams { n4: u32, a: f32, b: f32, _pad: u32 }
}
wgsl_params! {
    /// per_sample.wgsl.
    pub struct PerSampleParams { n: u32, len: u32, _p0: u32, _p1: u32 }
}
wgsl_params! {
    /// channel_bias.wgsl.
    pub struct ChannelBiasParams { n: u32, c: u32, hw: u32, v_stride: u32 }
}

const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");

/// `elementwise.wgsl` for one [`MapOp`] (by number: 0..=MapOp::LAST).
fn map_def(op: u32) -> KernelDef {
    KernelDef::fixed::<MapParams>(KernelKey::new("elementwise").u32("OP", op), ELEMENTWISE)
}
fn axpby_inplace_def() -> KernelDef {
    KernelDef::fixed::<MapParams>(
        KernelKey::new("axpby_inplace"),
        include_str!("../../shaders/axpby_inplace.wgsl"),
    )
}
fn per_sample_def(has_y: bool) -> KernelDef {
    KernelDef::fixed::<PerSampleParams>(
        KernelKey::new("per_sample").flag("HAS_Y", has_y),
        include_str!("../../shaders/per_sample.wgsl"),
    )
}
fn channel_bias_def() -> KernelDef {
    KernelDef::fixed::<ChannelBiasParams>(
        KernelKey::new("channel_bias"),
        include_str!("../../shaders/channel_bias.wgsl"),
    )
}

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut v: Vec<KernelDef> = (0..=MapOp::LAST as u32).map(map_def).collect();
    v.push(axpby_inplace_def());
    v.extend([false, true].map(per_sample_def));
    v.push(channel_bias_def());
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MapOp {
    Fill = 0,
    Scale = 1,
    Axpby = 2,
    Mul = 3,
    Silu = 4,
    SiluGrad = 5,
    Square = 6,
    AddScalar = 7,
    Sqrt = 8,
    Div = 9,
    Clamp = 10,
    Mask = 11,
}

impl MapOp {
    /// The highest op number (the registry enumerates 0..=LAST).
    const LAST: MapOp = MapOp::Mask;
    /// Which of (x, y) the kernel reads for this op; the others are bound to a stand-in.
    fn reads(self) -> (bool, bool) {
        use MapOp::*;
        match self {
            Fill => (false, false),
            Axpby | Mul | SiluGrad | Div | Mask => (true, true),
            Scale | Silu | Square | AddScalar | Sqrt | Clamp => (true, false),
        }
    }
}

pub(crate) fn map_into(
    out: &Tensor,
    op: MapOp,
    x: Option<&Tensor>,
    y: Option<&Tensor>,
    a: f32,
    b: f32,
) {
    let gpu = out.gpu();
    let n4 = out.numel().div_ceil(4);
    for t in [x, y].into_iter().flatten() {
        assert_eq!(
            t.numel(),
            out.numel(),
            "{op:?}: {:?} vs output {:?}",
            t.shape(),
            out.shape()
        );
    }
    assert_eq!(
        (x.is_some(), y.is_some()),
        op.reads(),
        "{op:?}: which inputs are given"
    );
    let pipeline = super::pipeline_of(gpu, map_def(op as u32));
    let bx = x.map(|t| t.bind()).unwrap_or_else(|| stand_in(gpu));
    let by = y.map(|t| t.bind()).unwrap_or_else(|| stand_in(gpu));
    gpu.dispatch(Dispatch {
        pipeline,
        params: MapParams {
            n4: n4 as u32,
            a,
            b,
            _pad: 0,
        }
        .bytes(),
        buffers: vec![bx, by, out.bind()],
        workgroups: groups_for(gpu, n4),
    });
}

pub(crate) fn fill(t: &Tensor, value: f32) {
    map_into(t, MapOp::Fill, None, None, value, 0.0);
}

fn map(op: MapOp, x: &Tensor, y: Option<&Tensor>, a: f32, b: f32) -> Tensor {
    let out = Tensor::empty(x.gpu(), x.shape());
    map_into(&out, op, Some(x), y, a, b);
    out
}

impl Tensor {
    pub fn scale(&self, a: f32) -> Tensor {
        map(MapOp::Scale, self, None, a, 0.0)
    }
    /// a * self + b * other
    pub fn axpby(&self, a: f32, other: &Tensor, b: f32) -> Tensor {
        map(MapOp::Axpby, self, Some(other), a, b)
    }
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.axpby(1.0, other, 1.0)
    }
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.axpby(1.0, other, -1.0)
    }
    pub fn mul(&self, other: &Tensor) -> Tensor {
        map(MapOp::Mul, self, Some(other), 0.0, 0.0)
    }
    /// self / (other + eps)
    pub fn div(&self, other: &Tensor, eps: f32) -> Tensor {
        map(MapOp::Div, self, Some(other), eps, 0.0)
    }
    pub fn add_scalar(&self, a: f32) -> Tensor {
        map(MapOp::AddScalar, self, None, a, 0.0)
    }
    pub fn square(&self) -> Tensor {
        map(MapOp::Square, self, None, 0.0, 0.0)
    }
    pub fn sqrt(&self) -> Tensor {
        map(MapOp::Sqrt, self, None, 0.0, 0.0)
    }
    pub fn silu(&self) -> Tensor {
        map(MapOp::Silu, self, None, 0.0, 0.0)
    }
    /// Gradient of SiLU at `self` (the forward input) times the incoming gradient `dy`.
    pub fn silu_grad(&self, dy: &Tensor) -> Tensor {
        map(MapOp::SiluGrad, self, Some(dy), 0.0, 0.0)
    }

    /// Elementwise clamp to [lo, hi].
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        map(MapOp::Clamp, self, None, lo, hi)
    }
    /// self * scale where noise > threshold, else 0 (dropout with a Gaussian `noise` of the same
    /// shape: threshold = the drop probability's normal quantile, scale = 1 / keep probability).
    pub fn mask_where_above(&self, noise: &Tensor, threshold: f32, scale: f32) -> Tensor {
        map(MapOp::Mask, self, Some(noise), threshold, scale)
    }

    /// In place: self = a * self + b * y (EMA, accumulation).
    pub fn axpby_inplace(&self, a: f32, y: &Tensor, b: f32) {
        assert_eq!(self.numel(), y.numel());
        let gpu = self.gpu();
        let n4 = self.numel().div_ceil(4);
        let pipeline = super::pipeline_of(gpu, axpby_inplace_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: MapParams {
                n4: n4 as u32,
                a,
                b,
                _pad: 0,
            }
            .bytes(),
            buffers: vec![self.bind(), y.bind()],
            workgroups: groups_for(gpu, n4),
        });
    }

    /// out[s, ..] = self[s, ..] * sa\[s\] + y[s, ..] * sb\[s\], for per-sample scalars sa, sb of
    /// shape \[N\] (N = the first dimension). Without `y` the second term is absent.
    pub fn per_sample_axpby(&self, sa: &Tensor, y: Option<(&Tensor, &Tensor)>) -> Tensor {
        let gpu = self.gpu();
        let n = self.shape()[0];
        assert_eq!(
            sa.numel(),
            n,
            "per-sample scalars must have one value per sample"
        );
        let len = self.numel() / n.max(1);
        let out = Tensor::empty(gpu, self.shape());
        let (by, bsb) = match y {
            Some((t, sb)) => {
                assert_eq!(t.shape(), self.shape());
                assert_eq!(sb.numel(), n);
                (t.bind(), sb.bind())
            }
            None => (stand_in(gpu), stand_in(gpu)),
        };
        let pipeline = super::pipeline_of(gpu, per_sample_def(y.is_some()));
        gpu.dispatch(Dispatch {
            pipeline,
            params: PerSampleParams {
                n: self.numel() as u32,
                len: len as u32,
                ..Default::default()
            }
            .bytes(),
            buffers: vec![self.bind(), by, sa.bind(), bsb, out.bind()],
            workgroups: groups_for(gpu, self.numel()),
        });
        out
    }

    /// out[s, c, p] = self[s, c, p] + v[s, c] (v: [N, C], per sample) or + v\[c\] (v: \[C\], shared).
    pub fn add_channel_vector(&self, v: &Tensor) -> Tensor {
        let gpu = self.gpu();
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let hw = self.numel() / (n * c).max(1);
        let v_stride = if v.numel() == c {
            0
        } else {
            assert_eq!(v.numel(), n * c, "channel vector must be [C] or [N, C]");
            c
        };
        let out = Tensor::empty(gpu, self.shape());
        let pipeline = super::pipeline_of(gpu, channel_bias_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: ChannelBiasParams {
                n: n as u32,
                c: c as u32,
                hw: hw as u32,
                v_stride: v_stride as u32,
            }
            .bytes(),
            buffers: vec![self.bind(), v.bind(), out.bind()],
            workgroups: groups_for(gpu, self.numel()),
        });
        out
    }
}
