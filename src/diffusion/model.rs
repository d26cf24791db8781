//! A diffusion model: the U-Net plus what its output means, and how x_hat is formed from it on
//! the GPU.

use super::parameterization::Parameterization;
use crate::nn::{DropoutNoise, NetCond, UNet};
use crate::tensor::{Tape, Tensor, Var};

pub struct Denoiser {
    pub net: UNet,
    pub param: Parameterization,
}

/// Per-sample values uploaded as \[N\] vectors.
pub fn per_sample(gpu: &crate::gpu::Gpu, v: &[f64]) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(gpu, &[f.len()], &f)
}

impl Denoiser {
    /// The image shape [C, H, W] the model works on.
    pub fn image_shape(&self) -> [usize; 3] {
        let c = &self.net.config;
        [c.in_channels, c.height, c.width]
    }

    /// x_hat(z, t, cond) of one network evaluation on the tape, with the parameters `p` (tape
    /// params when training the model, constants otherwise). `t` holds one time per sample.
    pub fn x_hat(
        &self,
        tape: &Tape,
        p: &[Var],
        z: &Tensor,
        t: &[f64],
        cond: &NetCond,
        dropout: Option<DropoutNoise>,
    ) -> Var {
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let out = self.net.forward(tape, p, z, &tf, cond, dropout);
        self.combine(tape, &out, z, t)
    }

    /// (alpha_t, sigma_t) of each time under the model's schedule: the cosine schedule, or an
    /// imported model's discrete one.
    pub fn alpha_sigma(&self, t: &[f64]) -> Vec<(f64, f64)> {
        let schedule = super::schedule::Schedule::of(&self.net.config);
        t.iter().map(|&ti| schedule.alpha_sigma(ti)).collect()
    }

    /// x_hat from a network output: cz * z + c0 * head0 (+ c1 * head1).
    pub fn combine(&self, tape: &Tape, out: &Var, z: &Tensor, t: &[f64]) -> Var {
        let gpu = z.gpu();
        let coef: Vec<_> = self
            .alpha_sigma(t)
            .into_iter()
            .map(|(a, s)| self.param.x_hat_coef_ab(a, s))
            .collect();
        let c = self.image_shape()[0];
        let cz = per_sample(gpu, &coef.iter().map(|k| k.cz).collect::<Vec<_>>());
        let c0 = per_sample(gpu, &coef.iter().map(|k| k.c0).collect::<Vec<_>>());
        let zc = coef.iter().any(|k| k.cz != 0.0);
        let head = |i: usize| {
            if self.param.heads() == 1 {
                out.clone()
            } else {
                tape.slice_channels(out, i * c, c)
            }
        };
        let mut x = tape.per_sample_scale(&head(0), &c0);
        if self.param.heads() == 2 {
            let c1 = per_sample(gpu, &coef.iter().map(|k| k.c1).collect::<Vec<_>>());
            x = tape.add(&x, &tape.per_sample_scale(&head(1), &c1));
        }
        if zc {
            x = tape.add(&x, &Var::constant(z.per_sample_axpby(&cz, None)));
        }
        x
    }

    /// x_hat without gradients and without a class (sampling, teachers).
    pub fn predict(&self, z: &Tensor, t: &[f64]) -> Tensor {
        self.predict_cond(z, t, &NetCond::NONE)
    }

    /// One network evaluation's x_hat without gradients, conditioned on `cond` as given.
    pub fn predict_cond(&self, z: &Tensor, t: &[f64], cond: &NetCond) -> Tensor {
        let tape = Tape::new();
        let p = self.net.vars(&tape, false);
        self.x_hat(&tape, &p, z, t, cond, None).value
    }

    /// Whether the network takes classes.
    pub fn is_conditional(&self) -> bool {
        self.net.config.classes > 0
    }

    /// Whether the network takes the guidance weight w as an input (a guided-distillation
    /// student): then guidance costs one evaluation instead of two.
    pub fn takes_guidance(&self) -> bool {
        self.net.config.guidance.is_some()
    }
}
