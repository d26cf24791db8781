//! The variance-preserving cosine schedule, continuous time (ARCHITECTURE.md, Formulas), in f64 on
//! the CPU: per-sample coefficients are computed here and uploaded as small \[N\] vectors.

use std::f64::consts::FRAC_PI_2;

use crate::nn::noise_schedule::DiscreteSchedule;
use crate::nn::UNetConfig;

/// logsnr is clamped to this range wherever it feeds a loss weight.
pub const LOGSNR_MAX: f64 = 20.0;

/// (alpha_t, sigma_t), exact at both ends: (1, 0) at t = 0 and (0, 1) at t = 1.
pub fn alpha_sigma(t: f64) -> (f64, f64) {
    if t <= 0.0 {
        (1.0, 0.0)
    } else if t >= 1.0 {
        (0.0, 1.0)
    } else {
        ((FRAC_PI_2 * t).cos(), (FRAC_PI_2 * t).sin())
    }
}

/// log(alpha^2 / sigma^2) = -2 log tan(pi t / 2), clamped to [-LOGSNR_MAX, LOGSNR_MAX] so both
/// ends are finite.
pub fn logsnr(t: f64) -> f64 {
    logsnr_of(alpha_sigma(t))
}

/// log(alpha^2 / sigma^2) of an (alpha, sigma) pair of any schedule, clamped as [`logsnr`].
fn logsnr_of((a, s): (f64, f64)) -> f64 {
    if s == 0.0 {
        return LOGSNR_MAX;
    }
    if a == 0.0 {
        return -LOGSNR_MAX;
    }
    (2.0 * (a / s).ln()).clamp(-LOGSNR_MAX, LOGSNR_MAX)
}

/// The time of a (clamped) logsnr value: arctan(exp(-logsnr / 2)) / (pi / 2).
pub fn time_of_logsnr(l: f64) -> f64 {
    (-l / 2.0).exp().atan() / FRAC_PI_2
}

/// The N-step sampling grid t_i = i / N, i = N .. 0.
pub fn grid(steps: usize) -> Vec<f64> {
    (0..=steps).rev().map(|i| i as f64 / steps as f64).collect()
}

/// The noise schedule a model is trained, distilled and sampled on: fewstep's continuous cosine
/// schedule, or an imported model's discrete one (with its `alphas_cumprod` table, made once).
/// On the cosine schedule every method gives exactly what the free functions above give.
#[derive(Clone, Debug)]
pub enum Schedule {
    Cosine,
    Discrete {
        schedule: DiscreteSchedule,
        acp: Vec<f32>,
    },
}

impl Schedule {
    /// The schedule of a network's architecture.
    pub fn of(arch: &UNetConfig) -> Schedule {
        match &arch.noise_schedule {
            None => Schedule::Cosine,
            Some(d) => Schedule::Discrete {
                acp: d.alphas_cumprod(),
                schedule: d.clone(),
            },
        }
    }

    pub fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        match self {
            Schedule::Cosine => alpha_sigma(t),
            Schedule::Discrete { schedule, acp } => schedule.alpha_sigma_in(acp, t),
        }
    }

    /// log(alpha^2 / sigma^2), clamped to [-LOGSNR_MAX, LOGSNR_MAX] as [`logsnr`] is.
    pub fn logsnr(&self, t: f64) -> f64 {
        logsnr_of(self.alpha_sigma(t))
    }

    /// DDIM from t to s without clipping: (coefficient on z_t, coefficient on x_hat), as
    /// [`ddim_coef`](super::sampler::ddim_coef). Needs sigma_t > 0.
    pub fn ddim_coef(&self, t: f64, s: f64) -> (f64, f64) {
        let (at, st) = self.alpha_sigma(t);
        let (as_, ss) = self.alpha_sigma(s);
        (ss / st, as_ - ss * at / st)
    }

    /// The range a sampler clips x_hat to: an imported model's `clip_sample_range`, None when its
    /// scheduler does not clip (fewstep's own models clip to 1 when asked: `--clip`).
    pub fn clip(&self) -> Option<f32> {
        match self {
            Schedule::Cosine => None,
            Schedule::Discrete { schedule, .. } => schedule.clip,
        }
    }
}
