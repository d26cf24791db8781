//! What the network predicts, and the loss weightings (ARCHITECTURE.md, Formulas).
//!
//! Every parameterization's x_hat is written as one linear combination
//! `x_hat = cz * z + c0 * head0 + c1 * head1` with finite coefficients at both ends of the
//! schedule, so training and sampling share one GPU path.

use serde::{Deserialize, Serialize};

use super::schedule::{alpha_sigma, logsnr};

/// Below this, eps-prediction's division by alpha is clamped (it is unstable near t = 1, where
/// samplers clip x_hat).
pub const EPS_ALPHA_MIN: f64 = 1e-4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parameterization {
    /// v = alpha * eps - sigma * x (the paper's choice; stable at both ends).
    #[default]
    V,
    /// The noise eps (classic DDPM).
    Eps,
    /// The clean image x.
    X,
    /// Two heads, x and eps, blended with weight sigma^2 on x.
    Both,
}

/// x_hat = cz * z + c0 * head0 + c1 * head1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XHatCoef {
    pub cz: f64,
    pub c0: f64,
    pub c1: f64,
}

impl Parameterization {
    /// Output channels per image channel.
    pub fn heads(self) -> usize {
        match self {
            Parameterization::Both => 2,
            _ => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Parameterization::V => "v",
            Parameterization::Eps => "eps",
            Parameterization::X => "x",
            Parameterization::Both => "both",
        }
    }

    pub fn x_hat_coef(self, t: f64) -> XHatCoef {
        let (a, s) = alpha_sigma(t);
        self.x_hat_coef_ab(a, s)
    }

    /// [`x_hat_coef`](Self::x_hat_coef) at a given (alpha, sigma) (any schedule's).
    pub fn x_hat_coef_ab(self, a: f64, s: f64) -> XHatCoef {
        match self {
            // x = alpha z - sigma v
            Parameterization::V => XHatCoef {
                cz: a,
                c0: -s,
                c1: 0.0,
            },
            // x = (z - sigma eps) / alpha
            Parameterization::Eps => {
                let a = a.max(EPS_ALPHA_MIN);
                XHatCoef {
                    cz: 1.0 / a,
                    c0: -s / a,
                    c1: 0.0,
                }
            }
            Parameterization::X => XHatCoef {
                cz: 0.0,
                c0: 1.0,
                c1: 0.0,
            },
            // w x_head + (1 - w)(z - sigma eps_head) / alpha with w = sigma^2, 1 - w = alpha^2:
            // = sigma^2 x_head + alpha z - alpha sigma eps_head (finite everywhere).
            Parameterization::Both => XHatCoef {
                cz: a,
                c0: s * s,
                c1: -a * s,
            },
        }
    }

    /// What a perfect network outputs for data x and noise eps at time t (one or two heads);
    /// the inverse of `x_hat_coef`, used by tests and by stand-in teachers.
    pub fn ideal_output(self, t: f64, x: f64, eps: f64) -> [f64; 2] {
        let (a, s) = alpha_sigma(t);
        match self {
            Parameterization::V => [a * eps - s * x, 0.0],
            Parameterization::Eps => [eps, 0.0],
            Parameterization::X => [x, 0.0],
            Parameterization::Both => [x, eps],
        }
    }
}

impl std::fmt::Display for Parameterization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Parameterization {
    /// Every choice, by the name the command line and model files use.
    pub const NAMES: [&'static str; 4] = ["v", "eps", "x", "both"];
}

impl std::str::FromStr for Parameterization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Parameterization::V,
            Parameterization::Eps,
            Parameterization::X,
            Parameterization::Both,
        ]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("unknown parameterization `{s}`: choose v, eps, x or both"))
    }
}

/// Weight on the x-space error ||x - x_hat||^2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// max(SNR, 1): the paper's truncated SNR.
    #[default]
    SnrTrunc,
    /// SNR + 1: the MSE on v.
    VMse,
    /// SNR: the MSE on eps (classic DDPM).
    Snr,
    /// 1: the MSE on x.
    Constant,
}

impl Weighting {
    /// Every choice, by the name the command line and run files use.
    pub const NAMES: [&'static str; 4] = ["snr_trunc", "v_mse", "snr", "constant"];

    pub fn name(self) -> &'static str {
        match self {
            Weighting::SnrTrunc => "snr_trunc",
            Weighting::VMse => "v_mse",
            Weighting::Snr => "snr",
            Weighting::Constant => "constant",
        }
    }

    /// The weight at time t, from the clamped logsnr (finite at t = 0 and t = 1).
    pub fn weight(self, t: f64) -> f64 {
        self.weight_at_logsnr(logsnr(t))
    }

    /// The weight at a (clamped) logsnr, of any schedule.
    pub fn weight_at_logsnr(self, logsnr: f64) -> f64 {
        let snr = logsnr.exp();
        match self {
            Weighting::SnrTrunc => snr.max(1.0),
            Weighting::VMse => snr + 1.0,
            Weighting::Snr => snr,
            Weighting::Constant => 1.0,
        }
    }
}

impl std::fmt::Display for Weighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Weighting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Weighting::SnrTrunc,
            Weighting::VMse,
            Weighting::Snr,
            Weighting::Constant,
        ]
        .into_iter()
        .find(|w| w.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown weighting `{s}`: choose {}",
                Weighting::NAMES.join(", ")
            )
        })
    }
}
