//! The variance-preserving cosine schedule, continuous time (ARCHITECTURE.md, Formulas), in f64 on
//! the CPU: per-sample coefficients are computed here and uploaded as small [N] vectors.

use std::f64::consts::FRAC_PI_2;

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
    let (a, s) = alpha_sigma(t);
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
