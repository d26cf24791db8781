//! Adam / AdamW with global gradient-norm clipping, all on the GPU: partial sums of squares of
//! every gradient go into one buffer (sum_squares_multi.wgsl), clip_scale.wgsl turns them into a
//! factor, and the update (adam_multi.wgsl, optionally with the EMA of the weights) reads that
//! factor. Both multi-tensor kernels take up to `MAX_TENSORS_PER_LAUNCH` tensors per launch, so
//! an update is a handful of launches rather than two per parameter tensor. No readback, so a
//! training step stays one submit.

use super::kernel_def::KernelDef;
use super::params::{wgsl_params, WgslParams};
use super::Tensor;
use crate::gpu::{Binding, Dispatch, Gpu, KernelKey, KernelSource};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 gives plain Adam.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Clip the global L2 norm of all gradients to `max_norm` (<= 0: no clipping).
#[derive(Clone, Copy, Debug)]
pub struct GradClip {
    pub max_norm: f32,
}

/// Most tensors one adam_multi launch takes (fewer where the device allows fewer storage buffers
/// per shader stage: each tensor takes 4, or 5 with the EMA): bounds the generated shader's size.
const MAX_TENSORS_PER_LAUNCH: usize = 16;

/// Most tensors one sum_squares_multi launch takes (one storage buffer each; fewer where the
/// device allows fewer).
const MAX_SUM_SQUARES_PER_LAUNCH: usize = 64;

/// `tab` entries past the last tensor of a launch: a first workgroup no launch reaches.
const UNUSED: u32 = u32::MAX;

/// Floats per workgroup of sum_squares_multi.wgsl (its `CHUNK`).
const SUM_SQUARES_CHUNK: usize = 4096;

wgsl_params! {
    /// adam_multi.wgsl, before its `tab` (one `vec4<u32>` per tensor slot).
    pub struct AdamHeader {
        lr: f32, beta1: f32, beta2: f32, eps: f32, bc1: f32, bc2: f32, wd: f32, ema_a: f32,
        ema_b: f32, _p0: u32, _p1: u32, _p2: u32,
    }
}
wgsl_params! {
    /// sum_squares_multi.wgsl, before its `tab`.
    pub struct SumSquaresHeader { out_offset: u32, _p0: u32, _p1: u32, _p2: u32 }
}
wgsl_params! {
    /// clip_scale.wgsl.
    pub struct ClipScaleParams { count: u32, max_norm: f32, _p0: u32, _p1: u32 }
}

/// sum_squares_multi.wgsl for `k` gradients per launch.
fn sum_squares_def(k: usize) -> KernelDef {
    KernelDef::new::<SumSquaresHeader>(
        KernelKey::new("sum_squares_multi").u32("K", k as u32),
        move || KernelSource {
            parts: vec![sum_squares_multi_source(k).into()],
        },
    )
    .with_params_tail(16 * k)
}
fn clip_scale_def() -> KernelDef {
    KernelDef::fixed::<ClipScaleParams>(
        KernelKey::new("clip_scale"),
        include_str!("../../shaders/clip_scale.wgsl"),
    )
}
/// adam_multi.wgsl for `k` parameters per launch, with or without the fused EMA.
fn adam_def(k: usize, ema: bool) -> KernelDef {
    KernelDef::new::<AdamHeader>(
        KernelKey::new("adam_multi")
            .u32("K", k as u32)
            .flag("EMA", ema),
        move || KernelSource {
            parts: vec![adam_multi_source(k, ema).into()],
        },
    )
    .with_params_tail(16 * k)
}

/// Every variant of this file's kernels (tensor/registry.rs): any tensor count per launch up
/// to the caps (the device's storage-buffer limit picks it).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut v: Vec<KernelDef> = (1..=MAX_SUM_SQUARES_PER_LAUNCH)
        .map(sum_squares_def)
        .collect();
    v.push(clip_scale_def());
    for ema in [false, true] {
        v.extend((1..=MAX_TENSORS_PER_LAUNCH).map(|k| adam_def(k, ema)));
    }
    v
}

/// Optimizer state for a fixed list of parameter tensors.
pub struct Adam {
    pub config: AdamConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Updates done so far (bias correction uses it).
    pub step: u64,
    /// One partial sum of squares per workgroup of sum_squares_multi.wgsl, all gradients.
    sumsq: Tensor,
    /// [clip factor, gradient norm] of the last step, on the GPU.
    pub clip: Tensor,
    /// Most tensors per launch (tests set it lower to cross launch boundaries).
    tensors_per_launch: usize,
}

/// Workgroups a sum of squares of `n` floats takes.
fn sum_squares_groups(n: usize) -> usize {
    n.div_ceil(SUM_SQUARES_CHUNK)
}

/// Splits `0..lens.len()` into launches of at most `k` tensors; per launch the tensors' range
/// and per tensor (first workgroup in the launch, `lens[i]`), given workgroups per tensor.
fn plan(
    lens: &[usize],
    k: usize,
    groups: impl Fn(usize) -> usize,
) -> Vec<(std::ops::Range<usize>, Vec<[u32; 4]>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lens.len() {
        let end = (i + k).min(lens.len());
        let mut tab = Vec::with_capacity(k);
        let mut wg = 0usize;
        for &n in &lens[i..end] {
            tab.push([wg as u32, n as u32, 0, 0]);
            wg += groups(n);
        }
        tab.resize(k, [UNUSED, 0, 0, 0]);
        out.push((i..end, tab, wg));
        i = end;
    }
    out
}

/// Replaces the `//@BINDINGS` and `//@CASES` lines of a multi-tensor shader.
fn generate(text: &str, bindings: String, cases: String) -> String {
    text.replace("//@BINDINGS", &bindings)
        .replace("//@CASES", &cases)
}

/// adam_multi.wgsl for `k` tensors per launch, with or without the EMA.
fn adam_multi_source(k: usize, ema: bool) -> String {
    let per = if ema { 5 } else { 4 };
    let mut bindings = String::new();
    let mut cases = String::new();
    for j in 0..k {
        let b = 2 + per * j;
        bindings.push_str(&format!(
            "@group(0) @binding({}) var<storage, read_write> W{j}: array<vec4<f32>>;\n\
             @group(0) @binding({}) var<storage, read> G{j}: array<vec4<f32>>;\n\
             @group(0) @binding({}) var<storage, read_write> M{j}: array<vec4<f32>>;\n\
             @group(0) @binding({}) var<storage, read_write> V{j}: array<vec4<f32>>;\n",
            b,
            b + 1,
            b + 2,
            b + 3
        ));
        let mut case = format!(
            "        case {j}u: {{ let r = adam(W{j}[i], G{j}[i], M{j}[i], V{j}[i], clip); \
             W{j}[i] = r.w; M{j}[i] = r.m; V{j}[i] = r.v;"
        );
        if ema {
            bindings.push_str(&format!(
                "@group(0) @binding({}) var<storage, read_write> E{j}: array<vec4<f32>>;\n",
                b + 4
            ));
            case.push_str(&format!(" E{j}[i] = P.ema_a * E{j}[i] + P.ema_b * r.w;"));
        }
        case.push_str(" }\n");
        cases.push_str(&case);
    }
    generate(
        include_str!("../../shaders/adam_multi.wgsl"),
        bindings,
        cases,
    )
}

/// sum_squares_multi.wgsl for `k` tensors per launch.
fn sum_squares_multi_source(k: usize) -> String {
    let mut bindings = String::new();
    let mut cases = String::new();
    for j in 0..k {
        bindings.push_str(&format!(
            "@group(0) @binding({}) var<storage, read> X{j}: array<vec4<f32>>;\n",
            2 + j
        ));
        cases.push_str(&format!(
            "            case {j}u: {{ s += sq(X{j}[q], q, n); }}\n"
        ));
    }
    generate(
        include_str!("../../shaders/sum_squares_multi.wgsl"),
        bindings,
        cases,
    )
}

/// Tensors per launch when each takes `per` storage buffers besides `fixed` shared ones.
fn tensors_per_launch(gpu: &Gpu, per: usize, fixed: usize, cap: usize) -> usize {
    let l = gpu.limits();
    let buffers = l.max_storage_buffers_per_shader_stage as usize;
    let bindings = l.max_bindings_per_bind_group as usize;
    let by_buffers = buffers.saturating_sub(fixed) / per;
    let by_bindings = bindings.saturating_sub(fixed + 1) / per;
    by_buffers.min(by_bindings).clamp(1, cap)
}

/// The binding slots of one launch: each tensor's buffers, the last tensor repeated into the
/// slots past the end (never read: their `tab` entries start at `UNUSED`).
fn slots(
    range: std::ops::Range<usize>,
    k: usize,
    mut of: impl FnMut(usize, &mut Vec<Binding>),
) -> Vec<Binding> {
    let mut out = Vec::new();
    for s in 0..k {
        of((range.start + s).min(range.end - 1), &mut out);
    }
    out
}

/// The uniform parameters of a multi-tensor launch: `header`, then `tab`.
fn params_with_tab(header: &[u8], tab: &[[u32; 4]]) -> Vec<u8> {
    let mut p = header.to_vec();
    p.extend_from_slice(bytemuck::cast_slice(tab));
    p
}

impl Adam {
    pub fn new(gpu: &Gpu, params: &[Tensor], config: AdamConfig) -> Adam {
        let partials: usize = params.iter().map(|p| sum_squares_groups(p.numel())).sum();
        Adam {
            config,
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            step: 0,
            sumsq: Tensor::zeros(gpu, &[partials.max(1)]),
            clip: Tensor::zeros(gpu, &[2]),
            tensors_per_launch: MAX_TENSORS_PER_LAUNCH,
        }
    }

    /// Caps the tensors per multi-tensor launch of both kernels (at least 1); for tests of
    /// launch boundaries.
    pub fn set_tensors_per_launch(&mut self, k: usize) {
        self.tensors_per_launch = k.clamp(1, MAX_TENSORS_PER_LAUNCH);
    }

    /// Records one update of every parameter in place.
    pub fn update(&mut self, params: &[Tensor], grads: &[Tensor], lr: f32, clip: GradClip) {
        self.update_with_ema(params, grads, lr, clip, None);
    }

    /// Records one update of every parameter in place and, with `ema` = (averages, decay), the
    /// moving average of the updated weights, `ema = decay * ema + (1 - decay) * w` (what
    /// [`ema_update`] does after the update), in the same launches.
    ///
    /// Launches: the sums of squares of all gradients (sum_squares_multi.wgsl, up to
    /// `MAX_SUM_SQUARES_PER_LAUNCH` tensors per launch), one clip_scale.wgsl, then adam_multi.wgsl
    /// (up to `MAX_TENSORS_PER_LAUNCH`).
    pub fn update_with_ema(
        &mut self,
        params: &[Tensor],
        grads: &[Tensor],
        lr: f32,
        clip: GradClip,
        ema: Option<(&[Tensor], f32)>,
    ) {
        assert_eq!(
            params.len(),
            self.m.len(),
            "optimizer built for {} tensors, got {}",
            self.m.len(),
            params.len()
        );
        assert_eq!(params.len(), grads.len());
        if let Some((e, _)) = ema {
            assert_eq!(e.len(), params.len(), "one average per parameter");
        }
        for (i, ((p, g), m)) in params.iter().zip(grads).zip(&self.m).enumerate() {
            assert_eq!(p.numel(), g.numel(), "gradient {i} has the wrong size");
            assert_eq!(p.numel(), m.numel(), "parameter {i} has the wrong size");
            if let Some((e, _)) = ema {
                assert_eq!(p.numel(), e[i].numel(), "average {i} has the wrong size");
            }
        }
        if params.is_empty() {
            return;
        }
        let gpu = params[0].gpu().clone();
        let lens: Vec<usize> = params.iter().map(|p| p.numel()).collect();

        // 1. Partial sums of squares of every gradient.
        let cap = if self.tensors_per_launch < MAX_TENSORS_PER_LAUNCH {
            self.tensors_per_launch
        } else {
            MAX_SUM_SQUARES_PER_LAUNCH
        };
        let k = tensors_per_launch(&gpu, 1, 1, cap);
        let pipeline = super::pipeline_of(&gpu, sum_squares_def(k));
        let mut offset = 0usize;
        for (range, tab, groups) in plan(&lens, k, sum_squares_groups) {
            let mut buffers = vec![self.sumsq.bind()];
            buffers.extend(slots(range, k, |i, out| out.push(grads[i].bind())));
            gpu.dispatch(Dispatch {
                pipeline: pipeline.clone(),
                params: params_with_tab(
                    &SumSquaresHeader {
                        out_offset: offset as u32,
                        ..Default::default()
                    }
                    .bytes(),
                    &tab,
                ),
                buffers,
                workgroups: gpu.grid_1d(groups.max(1) as u32),
            });
            offset += groups;
        }

        // 2. The clipping factor from their total.
        let pipeline = super::pipeline_of(&gpu, clip_scale_def());
        gpu.dispatch(Dispatch {
            pipeline,
            params: ClipScaleParams {
                count: offset as u32,
                max_norm: clip.max_norm,
                ..Default::default()
            }
            .bytes(),
            buffers: vec![self.sumsq.bind(), self.clip.bind()],
            workgroups: [1, 1, 1],
        });

        // 3. Adam (and the EMA) per tensor.
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let decay = ema.map_or(0.0, |(_, d)| d);
        let header = AdamHeader {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bc1: 1.0 - c.beta1.powi(t),
            bc2: 1.0 - c.beta2.powi(t),
            wd: c.weight_decay,
            ema_a: decay,
            ema_b: 1.0 - decay,
            ..Default::default()
        };
        let per = if ema.is_some() { 5 } else { 4 };
        let k = tensors_per_launch(&gpu, per, 1, self.tensors_per_launch);
        let with_ema = ema.is_some();
        let pipeline = super::pipeline_of(&gpu, adam_def(k, with_ema));
        let n4: Vec<usize> = lens.iter().map(|n| n.div_ceil(4)).collect();
        for (range, tab, groups) in plan(&n4, k, |n| n.div_ceil(256)) {
            let mut buffers = vec![self.clip.bind()];
            buffers.extend(slots(range, k, |i, out| {
                out.extend([
                    params[i].bind(),
                    grads[i].bind(),
                    self.m[i].bind(),
                    self.v[i].bind(),
                ]);
                if let Some((e, _)) = ema {
                    out.push(e[i].bind());
                }
            }));
            gpu.dispatch(Dispatch {
                pipeline: pipeline.clone(),
                params: params_with_tab(&header.bytes(), &tab),
                buffers,
                workgroups: gpu.grid_1d(groups.max(1) as u32),
            });
        }
    }
}

/// ema = decay * ema + (1 - decay) * w, for each pair.
pub fn ema_update(ema: &[Tensor], params: &[Tensor], decay: f32) {
    for (e, p) in ema.iter().zip(params) {
        e.axpby_inplace(decay, p, 1.0 - decay);
    }
}
