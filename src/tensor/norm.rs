//! Group normalisation and row softmax (group_norm*.wgsl, softmax.wgsl).

use super::Tensor;
use crate::gpu::{Dispatch, KernelKey, KernelSource};

/// Saved by the forward pass for the backward: per (sample, group) mean and 1/std.
#[derive(Clone, Debug)]
pub struct GroupNormStats {
    pub stats: Tensor,
    pub groups: usize,
    pub eps: f32,
}

fn nchw(x: &Tensor) -> (usize, usize, usize) {
    let s = x.shape();
    assert!(s.len() >= 2, "group norm needs [N, C, ...], got {s:?}");
    (s[0], s[1], s[2..].iter().product())
}

impl Tensor {
    /// Group norm over [N, C, ...] with per-channel affine gamma, beta ([C]).
    pub fn group_norm(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        groups: usize,
        eps: f32,
    ) -> (Tensor, GroupNormStats) {
        self.group_norm_launch(gamma, beta, groups, eps, false)
    }

    /// SiLU of the group norm, `y * sigmoid(y)` with `y = group_norm(..)`, in one launch.
    pub fn group_norm_silu(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        groups: usize,
        eps: f32,
    ) -> (Tensor, GroupNormStats) {
        self.group_norm_launch(gamma, beta, groups, eps, true)
    }

    fn group_norm_launch(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> (Tensor, GroupNormStats) {
        let gpu = self.gpu();
        let (n, c, hw) = nchw(self);
        assert!(
            groups > 0 && c % groups == 0,
            "{c} channels do not split into {groups} groups"
        );
        assert_eq!(gamma.numel(), c);
        assert_eq!(beta.numel(), c);
        let out = Tensor::empty(gpu, self.shape());
        let stats = Tensor::empty(gpu, &[n * groups, 2]);
        let pipeline = norm_pipeline(
            gpu,
            "group_norm",
            include_str!("../../shaders/group_norm.wgsl"),
            true,
            (silu, hw),
        );
        gpu.dispatch(Dispatch {
            pipeline,
            params: bytemuck::cast_slice(&[
                c as u32,
                hw as u32,
                groups as u32,
                eps.to_bits(),
                (n * groups) as u32,
            ])
            .to_vec(),
            buffers: vec![
                self.bind(),
                gamma.bind(),
                beta.bind(),
                out.bind(),
                stats.bind(),
            ],
            workgroups: gpu.grid_1d((n * groups) as u32),
        });
        (out, GroupNormStats { stats, groups, eps })
    }

    /// Backward of group norm: (dx, dgamma, dbeta) given the forward input `self` and dy.
    pub fn group_norm_grad(
        &self,
        gamma: &Tensor,
        dy: &Tensor,
        saved: &GroupNormStats,
    ) -> (Tensor, Tensor, Tensor) {
        self.group_norm_grad_launch(gamma, None, dy, saved)
    }

    /// Backward of [`Tensor::group_norm_silu`]: (dx, dgamma, dbeta) given the forward input
    /// `self`, its gamma and beta, and dy (of the SiLU's output); two launches, as without SiLU.
    pub fn group_norm_silu_grad(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        dy: &Tensor,
        saved: &GroupNormStats,
    ) -> (Tensor, Tensor, Tensor) {
        self.group_norm_grad_launch(gamma, Some(beta), dy, saved)
    }

    /// `beta`: Some for the backward of `group_norm_silu`.
    fn group_norm_grad_launch(
        &self,
        gamma: &Tensor,
        beta: Option<&Tensor>,
        dy: &Tensor,
        saved: &GroupNormStats,
    ) -> (Tensor, Tensor, Tensor) {
        let silu = beta.is_some();
        // The shaders name BETA (and GAMMA) in both variants, so the automatic layouts always
        // have them; without SiLU they are never read, and gamma stands in for beta.
        let beta_or_gamma = beta.unwrap_or(gamma);
        let gpu = self.gpu();
        let (n, c, hw) = nchw(self);
        let g = saved.groups;
        let dx = Tensor::empty(gpu, self.shape());
        let pipeline = norm_pipeline(
            gpu,
            "group_norm_grad",
            include_str!("../../shaders/group_norm_grad.wgsl"),
            true,
            (silu, hw),
        );
        gpu.dispatch(Dispatch {
            pipeline,
            params: bytemuck::cast_slice(&[
                c as u32,
                hw as u32,
                g as u32,
                saved.eps.to_bits(),
                (n * g) as u32,
            ])
            .to_vec(),
            buffers: [
                self.bind(),
                gamma.bind(),
                dy.bind(),
                saved.stats.bind(),
                dx.bind(),
            ]
            .into_iter()
            .chain([beta_or_gamma.bind()])
            .collect(),
            workgroups: gpu.grid_1d((n * g) as u32),
        });
        let dgamma = Tensor::empty(gpu, &[c]);
        let dbeta = Tensor::empty(gpu, &[c]);
        let pipeline = norm_pipeline(
            gpu,
            "group_norm_param_grad",
            include_str!("../../shaders/group_norm_param_grad.wgsl"),
            false,
            (silu, hw),
        );
        gpu.dispatch(Dispatch {
            pipeline,
            params: bytemuck::cast_slice(&[c as u32, hw as u32, g as u32, n as u32]).to_vec(),
            buffers: [
                self.bind(),
                dy.bind(),
                saved.stats.bind(),
                dgamma.bind(),
                dbeta.bind(),
            ]
            .into_iter()
            .chain([gamma.bind(), beta_or_gamma.bind()])
            .collect(),
            workgroups: [c as u32, 1, 1],
        });
        (dx, dgamma, dbeta)
    }

    /// softmax(scale * x) along the last dimension.
    pub fn softmax(&self, scale: f32) -> Tensor {
        softmax_launch(0, self, None, scale)
    }

    /// Backward of `softmax(scale * x)`: `self` is the forward output y, `dy` the incoming gradient.
    pub fn softmax_grad(&self, dy: &Tensor, scale: f32) -> Tensor {
        softmax_launch(1, dy, Some(self), scale)
    }
}

/// The pipeline of one of the three group-norm kernels: `SILU` fused or not, 16-byte loads where
/// the pixel count is a multiple of 4; `block_sum`: the kernel reduces over a whole group with
/// the shared block sum (the parameter gradient reduces per channel in its own code).
fn norm_pipeline(
    gpu: &crate::gpu::Gpu,
    name: &'static str,
    text: &'static str,
    block_sum: bool,
    (silu, hw): (bool, usize),
) -> std::rc::Rc<wgpu::ComputePipeline> {
    let vec4 = hw % 4 == 0;
    let key = KernelKey::new(name).flag("SILU", silu).flag("VEC4", vec4);
    super::pipeline(gpu, &key, || {
        let mut parts = vec![super::elem_prelude(vec4).into()];
        if block_sum {
            parts.push(include_str!("../../shaders/block_sum.wgsl").into());
        }
        parts.push(text.into());
        KernelSource { parts }
    })
}

fn softmax_launch(mode: u32, x: &Tensor, y: Option<&Tensor>, scale: f32) -> Tensor {
    let gpu = x.gpu();
    let len = *x.shape().last().expect("softmax of a scalar");
    let rows = x.numel() / len.max(1);
    let out = Tensor::empty(gpu, x.shape());
    // CPU adapters: a row per invocation (no barriers; see softmax.wgsl).
    let alone = gpu.softmax_row_per_invocation();
    let pipeline = super::pipeline(
        gpu,
        &KernelKey::new("softmax")
            .u32("MODE", mode)
            .flag("ROW_PER_INVOCATION", alone),
        || KernelSource::one(include_str!("../../shaders/softmax.wgsl")),
    );
    let yb = y.map(|t| t.bind()).unwrap_or_else(|| super::stand_in(gpu));
    gpu.dispatch(Dispatch {
        pipeline,
        params: bytemuck::cast_slice(&[rows as u32, len as u32, scale.to_bits(), 0]).to_vec(),
        buffers: vec![x.bind(), yb, out.bind()],
        workgroups: if alone {
            super::groups_for(gpu, rows)
        } else {
            gpu.grid_1d(rows as u32)
        },
    });
    out
}
