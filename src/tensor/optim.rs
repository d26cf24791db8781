//! Adam / AdamW with global gradient-norm clipping, all on the GPU: the squared norm of every
//! gradient goes into one buffer (reduce.wgsl), clip_scale.wgsl turns it into a factor, and each
//! parameter's update (adam.wgsl) reads that factor. No readback, so a training step stays one submit.

use bytemuck::{Pod, Zeroable};

use super::{groups_for, Tensor};
use crate::gpu::{Dispatch, Gpu, KernelKey, KernelSource};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamParams {
    n4: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
    wd: f32,
}

/// Optimizer state for a fixed list of parameter tensors.
pub struct Adam {
    pub config: AdamConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Updates done so far (bias correction uses it).
    pub step: u64,
    sumsq: Tensor,
    /// [clip factor, gradient norm] of the last step, on the GPU.
    pub clip: Tensor,
}

impl Adam {
    pub fn new(gpu: &Gpu, params: &[Tensor], config: AdamConfig) -> Adam {
        Adam {
            config,
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            step: 0,
            sumsq: Tensor::zeros(gpu, &[params.len().max(1)]),
            clip: Tensor::zeros(gpu, &[2]),
        }
    }

    /// Records one update of every parameter in place.
    pub fn update(&mut self, params: &[Tensor], grads: &[Tensor], lr: f32, clip: GradClip) {
        assert_eq!(
            params.len(),
            self.m.len(),
            "optimizer built for {} tensors, got {}",
            self.m.len(),
            params.len()
        );
        assert_eq!(params.len(), grads.len());
        let gpu = params[0].gpu().clone();
        for (i, g) in grads.iter().enumerate() {
            g.sum_squares_into(&self.sumsq, i);
        }
        let pipeline = super::pipeline(&gpu, &KernelKey::new("clip_scale"), || {
            KernelSource::one(include_str!("../../shaders/clip_scale.wgsl"))
        });
        gpu.dispatch(Dispatch {
            pipeline,
            params: bytemuck::cast_slice(&[grads.len() as u32, clip.max_norm.to_bits(), 0, 0])
                .to_vec(),
            buffers: vec![self.sumsq.bind(), self.clip.bind()],
            workgroups: [1, 1, 1],
        });
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let pipeline = super::pipeline(&gpu, &KernelKey::new("adam"), || {
            KernelSource::one(include_str!("../../shaders/adam.wgsl"))
        });
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            assert_eq!(p.numel(), g.numel(), "gradient {i} has the wrong size");
            let n4 = p.numel().div_ceil(4);
            let ap = AdamParams {
                n4: n4 as u32,
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                bc1: 1.0 - c.beta1.powi(t),
                bc2: 1.0 - c.beta2.powi(t),
                wd: c.weight_decay,
            };
            gpu.dispatch(Dispatch {
                pipeline: pipeline.clone(),
                params: bytemuck::bytes_of(&ap).to_vec(),
                buffers: vec![
                    p.bind(),
                    g.bind(),
                    self.m[i].bind(),
                    self.v[i].bind(),
                    self.clip.bind(),
                ],
                workgroups: groups_for(&gpu, n4),
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
