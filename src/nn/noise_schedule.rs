//! A discrete noise schedule (DDPM's: betas over integer timesteps), for networks imported from
//! diffusers. Stored with the architecture (`UNetConfig::noise_schedule`) so that every student
//! made from such a teacher, and every file written from it, keeps the schedule; fewstep's own
//! networks have none and use the continuous cosine schedule.
//!
//! fewstep's time t in [0, 1] is the timestep T = round(t * timesteps) - 1 (t = 0: the clean end,
//! alpha = 1, as diffusers' DDIM with `set_alpha_to_one`), so the N-step grid t = i / N is exactly
//! diffusers' "trailing" timestep grid (N = 4: 999, 749, 499, 249).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BetaSchedule {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredcosCapV2,
    Trained { betas: Vec<f32> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscreteSchedule {
    /// `num_train_timesteps`.
    pub timesteps: usize,
    pub betas: BetaSchedule,
    /// `rescale_betas_zero_snr`: alpha = 0 at the last timestep.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rescale_zero_snr: bool,
    /// Clipping of x̂ while sampling (`clip_sample_range`); None: `clip_sample` false.
    pub clip: Option<f32>,
}

impl DiscreteSchedule {
    /// The betas in f32, as diffusers makes them.
    pub fn betas(&self) -> Vec<f32> {
        let n = self.timesteps;
        // torch.linspace(a, b, n) in f32: computed here in f64 and rounded.
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            (0..n)
                .map(|i| a + (b - a) * i as f64 / (n - 1).max(1) as f64)
                .collect()
        };
        let betas: Vec<f32> = match &self.betas {
            BetaSchedule::Linear { start, end } => {
                linspace(*start, *end).iter().map(|&b| b as f32).collect()
            }
            BetaSchedule::ScaledLinear { start, end } => linspace(start.sqrt(), end.sqrt())
                .iter()
                .map(|&b| {
                    let r = b as f32;
                    r * r
                })
                .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - bar(t2) / bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
            BetaSchedule::Trained { betas } => betas.clone(),
        };
        if self.rescale_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }

    /// The cumulative products of 1 - beta (f32, sequential, as `torch.cumprod`).
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let mut acc = 1.0f32;
        self.betas()
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }

    /// The integer timestep of time t in (0, 1] (see the module documentation); numpy's
    /// round-half-to-even, as diffusers' grids are made.
    pub fn timestep(&self, t: f64) -> usize {
        let n = self.timesteps;
        ((t * n as f64).round_ties_even() as i64 - 1).clamp(0, n as i64 - 1) as usize
    }

    /// (alpha, sigma) at time t from a table of `alphas_cumprod`; (1, 0) at t <= 0.
    pub fn alpha_sigma_in(&self, acp: &[f32], t: f64) -> (f64, f64) {
        if t <= 0.0 {
            return (1.0, 0.0);
        }
        let a = acp[self.timestep(t)];
        ((a as f64).sqrt(), ((1.0 - a) as f64).sqrt())
    }

    /// (alpha, sigma) at the timestep diffusers' DDIM steps to from time t in an N-step run:
    /// T - timesteps / N (integer division), where the next grid time may round elsewhere
    /// when N does not divide the timesteps; (1, 0) below 0.
    pub fn ddim_target_in(&self, acp: &[f32], t: f64, steps: usize) -> (f64, f64) {
        let prev = self.timestep(t) as i64 - (self.timesteps / steps.max(1)) as i64;
        if prev < 0 {
            return (1.0, 0.0);
        }
        let a = acp[prev as usize];
        ((a as f64).sqrt(), ((1.0 - a) as f64).sqrt())
    }

    /// The schedule in words (`fewstep info`).
    pub fn describe(&self) -> String {
        let betas = match &self.betas {
            BetaSchedule::Linear { start, end } => format!("linear betas {start} to {end}"),
            BetaSchedule::ScaledLinear { start, end } => {
                format!("scaled_linear betas {start} to {end}")
            }
            BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2 betas".into(),
            BetaSchedule::Trained { .. } => "trained betas".into(),
        };
        format!(
            "discrete, {} timesteps of {betas}{}, {}",
            self.timesteps,
            if self.rescale_zero_snr {
                " rescaled to zero terminal SNR"
            } else {
                ""
            },
            match self.clip {
                Some(r) => format!("x̂ clipped to ±{r} while sampling"),
                None => "no clipping".into(),
            }
        )
    }

    /// Checks a stored schedule (a model file's description is untrusted input).
    pub fn check(&self) -> Result<(), String> {
        if !(2..=100_000).contains(&self.timesteps) {
            return Err(format!("{} timesteps, outside 2..=100000", self.timesteps));
        }
        if let BetaSchedule::Trained { betas } = &self.betas {
            if betas.len() != self.timesteps {
                return Err(format!(
                    "{} trained betas for {} timesteps",
                    betas.len(),
                    self.timesteps
                ));
            }
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("clip range {c} is not a positive number"));
            }
        }
        let acp = self.alphas_cumprod();
        if acp
            .iter()
            .any(|a| !(a.is_finite() && (0.0..=1.0).contains(a)))
        {
            return Err("its betas do not give a schedule in [0, 1]".into());
        }
        Ok(())
    }
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023), in f32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f32;
    let sqrt_bar: Vec<f32> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let bar: Vec<f32> = sqrt_bar
        .iter()
        .map(|s| {
            let s = (s - last) * (first / (first - last));
            s * s
        })
        .collect();
    let mut alphas = Vec::with_capacity(bar.len());
    alphas.push(bar[0]);
    for i in 1..bar.len() {
        alphas.push(bar[i] / bar[i - 1]);
    }
    alphas.iter().map(|a| 1.0 - a).collect()
}
