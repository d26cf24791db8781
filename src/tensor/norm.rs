//! Group normalisation and row softmax (group_norm*.wgsl, softmax.wgsl).

use super::kernel_def::KernelDef;
use super::params::{wgsl_params, WgslParams};
use super::Tensor;
use crate::gpu::{Dispatch, KernelKey, KernelSource};

wgsl_params! {
    /// group_norm.wgsl and group_norm_grad.wgsl.
    pub struct GroupNormParams { c: u32, hw: u32, groups: u32, eps: f32, total: u32 }
}
wgsl_params! {
    /// group_norm_param_grad.wgsl.
    pub struct GroupNormParamGradParams { c: u32, hw: u32, groups: u32, n: u32 }
}
wgsl_params! {
    /// softmax.wgsl.
    pub struct SoftmaxParams { rows: u32, len: u32, scale: f32, _p: u32 }
}

/// The three group-norm kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NormKernel {
    Forward,
    InputGrad,
    ParamGrad,
}

/// One of the group-norm kernels: `SILU` fused or not, 16-byte loads (`VEC4`) where the pixel
/// count is a multiple of 4. The forward and the input gradient reduce over a whole group with
/// the shared block sum; the parameter gradient reduces per channel in its own code.
fn norm_def(kernel: NormKernel, silu: bool, vec4: bool) -> KernelDef {
    let (name, text, block_sum) = match kernel {
        NormKernel::Forward => (
            "group_norm",
            include_str!("../../shaders/group_norm.wgsl"),
            true,
        ),
        NormKernel::InputGrad => (
            "group_norm_grad",
            include_str!("../../shaders/group_norm_grad.wgsl"),
            true,
        ),
        NormKernel::ParamGrad => (
            "group_norm_param_grad",
            include_str!("../../shaders/group_norm_param_grad.wgsl"),
            false,
        ),
    };
    let key = KernelKey::new(name).flag("SILU", silu).flag("VEC4", vec4);
    let source = move || {
        let mut parts = vec![super::elem_prelude(vec4).into()];
        if block_sum {
            parts.push(include_str!("../../shaders/block_sum.wgsl").into());
        }
        parts.push(text.into());
        KernelSource { parts }
    };
    match kernel {
        NormKernel::ParamGrad => KernelDef::new::<GroupNormParamGradParams>(key, source),
        _ => KernelDef::new::<GroupNormParams>(key, source),
    }
}

fn softmax_def(mode: u32, row_per_invocation: bool) -> KernelDef {
    KernelDef::fixed::<SoftmaxParams>(
        KernelKey::new("softmax")
            .u32("MODE", mode)
            .flag("ROW_PER_INVOCATION", row_per_invocation),
        include_str!("../../shaders/softmax.wgsl"),
    )
}

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut v = Vec::new();
    for kernel in [
        NormKernel::Forward,
        NormKernel::InputGrad,
        NormKernel::ParamGrad,
    ] {
        for silu in [false, true] {
            v.extend([false, true].map(|vec4| norm_def(kernel, silu, vec4)));
        }
    }
    for mode in [0, 1] {
        v.extend([false, true].map(|alone| softmax_def(mode, alone)));
    }
    v
}

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
    /// Group norm over [N, C, ...] with per-channel affine gamma, beta (\[C\]).
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
        let pipeline = norm_pipeline(gpu, NormKernel::Forward, (silu, hw));
        gpu.dispatch(Dispatch {
            pipeline,
            params: GroupNormParams {
                c: c as u32,
                hw: hw as u32,
                groups: groups as u32,
                eps,
                total: (n * groups) as u32,
            }
            .bytes(),
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
        let (dx, p) = self.group_norm_grad_parts(gamma, None, dy, saved, (true, true));
        let (dg, db) = p.expect("asked for");
        (dx.expect("asked for"), dg, db)
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
        let (dx, p) = self.group_norm_grad_parts(gamma, Some(beta), dy, saved, (true, true));
        let (dg, db) = p.expect("asked for");
        (dx.expect("asked for"), dg, db)
    }

    /// The backward of group norm (`beta`: Some for `group_norm_silu`'s) in its two launches,
    /// each only when `want` asks for it: (dx, (dgamma, dbeta)). The tape's units pass their
    /// `needs` here, so a frozen input or frozen parameters cost no launch.
    pub fn group_norm_grad_parts(
        &self,
        gamma: &Tensor,
        beta: Option<&Tensor>,
        dy: &Tensor,
        saved: &GroupNormStats,
        (want_dx, want_params): (bool, bool),
    ) -> (Option<Tensor>, Option<(Tensor, Tensor)>) {
        let silu = beta.is_some();
        // The shaders name BETA (and GAMMA) in both variants, so the automatic layouts always
        // have them; without SiLU they are never read, and gamma stands in for beta.
        let beta_or_gamma = beta.unwrap_or(gamma);
        let gpu = self.gpu();
        let (n, c, hw) = nchw(self);
        let g = saved.groups;
        let dx = want_dx.then(|| Tensor::empty(gpu, self.shape()));
        if let Some(dx) = &dx {
            let pipeline = norm_pipeline(gpu, NormKernel::InputGrad, (silu, hw));
            gpu.dispatch(Dispatch {
                pipeline,
                params: GroupNormParams {
                    c: c as u32,
                    hw: hw as u32,
                    groups: g as u32,
                    eps: saved.eps,
                    total: (n * g) as u32,
                }
                .bytes(),
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
        }
        if !want_params {
            return (dx, None);
        }
        let dgamma = Tensor::empty(gpu, &[c]);
        let dbeta = Tensor::empty(gpu, &[c]);
        let pipeline = norm_pipeline(gpu, NormKernel::ParamGrad, (silu, hw));
        gpu.dispatch(Dispatch {
            pipeline,
            params: GroupNormParamGradParams {
                c: c as u32,
                hw: hw as u32,
                groups: g as u32,
                n: n as u32,
            }
            .bytes(),
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
        (dx, Some((dgamma, dbeta)))
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

/// The pipeline of one of the three group-norm kernels for (SiLU fused, pixels per channel).
fn norm_pipeline(
    gpu: &crate::gpu::Gpu,
    kernel: NormKernel,
    (silu, hw): (bool, usize),
) -> std::rc::Rc<wgpu::ComputePipeline> {
    super::pipeline_of(gpu, norm_def(kernel, silu, hw % 4 == 0))
}

fn softmax_launch(mode: u32, x: &Tensor, y: Option<&Tensor>, scale: f32) -> Tensor {
    let gpu = x.gpu();
    let len = *x.shape().last().expect("softmax of a scalar");
    let rows = x.numel() / len.max(1);
    let out = Tensor::empty(gpu, x.shape());
    // CPU adapters: a row per invocation (no barriers; see softmax.wgsl).
    let alone = super::kernel_policy::softmax_row_per_invocation(gpu);
    let pipeline = super::pipeline_of(gpu, softmax_def(mode, alone));
    let yb = y.map(|t| t.bind()).unwrap_or_else(|| super::stand_in(gpu));
    gpu.dispatch(Dispatch {
        pipeline,
        params: SoftmaxParams {
            rows: rows as u32,
            len: len as u32,
            scale,
            _p: 0,
        }
        .bytes(),
        buffers: vec![x.bind(), yb, out.bind()],
        workgroups: if alone {
            super::groups_for(gpu, rows)
        } else {
            gpu.grid_1d(rows as u32)
        },
    });
    out
}
