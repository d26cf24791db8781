//! A diffusers scheduler config (`scheduler/scheduler_config.json`): the discrete noise schedule
//! a model was trained on (betas, computed in f32 as diffusers computes them), its prediction
//! type and clipping. Sampler settings (spacing, offsets, variance) are not part of the model and
//! are not read: fewstep samples with trailing DDIM.

use serde_json::Value;

use super::ImportError;
use crate::nn::noise_schedule::{BetaSchedule, DiscreteSchedule};

/// What the network predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// `epsilon`: the noise.
    Epsilon,
    /// `v_prediction`: v = alpha eps - sigma x.
    V,
    /// `sample`: the clean image x.
    Sample,
}

/// A scheduler config in fewstep's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The scheduler class that wrote it (`DDPMScheduler`, ...), as recorded.
    pub class_name: String,
    pub schedule: DiscreteSchedule,
    pub prediction: Prediction,
}

fn refuse(field: &str, v: &Value, supported: &str) -> ImportError {
    ImportError::Unsupported {
        field: field.to_string(),
        value: v.to_string(),
        supported: supported.to_string(),
    }
}

impl SchedulerConfig {
    pub fn parse(text: &str) -> Result<SchedulerConfig, ImportError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Json {
            file: "scheduler/scheduler_config.json".into(),
            detail: e.to_string(),
        })?;
        let get = |k: &str| value.get(k).filter(|v| !v.is_null());
        let num = |k: &str, default: f64| -> Result<f64, ImportError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| refuse(k, v, "a number")),
            }
        };
        let flag = |k: &str, default: bool| -> Result<bool, ImportError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| refuse(k, v, "true or false")),
            }
        };
        let steps = match get("num_train_timesteps") {
            None => 1000,
            Some(v) => v
                .as_u64()
                .filter(|n| (2..=100_000).contains(n))
                .ok_or_else(|| refuse("num_train_timesteps", v, "2 to 100000"))?
                as usize,
        };
        let (start, end) = (num("beta_start", 0.0001)?, num("beta_end", 0.02)?);
        let betas = if let Some(v) = get("trained_betas") {
            let list: Option<Vec<f32>> = v
                .as_array()
                .and_then(|a| a.iter().map(|b| b.as_f64().map(|b| b as f32)).collect());
            match list {
                Some(l) if l.len() == steps && l.iter().all(|b| *b > 0.0 && *b < 1.0) => {
                    BetaSchedule::Trained { betas: l }
                }
                _ => {
                    return Err(refuse(
                        "trained_betas",
                        &Value::from("(a list)"),
                        "num_train_timesteps betas in (0, 1)",
                    ))
                }
            }
        } else {
            match get("beta_schedule")
                .and_then(Value::as_str)
                .unwrap_or("linear")
            {
                "linear" => BetaSchedule::Linear { start, end },
                "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
                "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
                _ => {
                    return Err(refuse(
                        "beta_schedule",
                        get("beta_schedule").unwrap_or(&Value::Null),
                        "linear, scaled_linear, squaredcos_cap_v2, or trained_betas",
                    ))
                }
            }
        };
        let prediction = match get("prediction_type")
            .and_then(Value::as_str)
            .unwrap_or("epsilon")
        {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            _ => {
                return Err(refuse(
                    "prediction_type",
                    get("prediction_type").unwrap_or(&Value::Null),
                    "epsilon, v_prediction or sample",
                ))
            }
        };
        if flag("thresholding", false)? {
            return Err(refuse(
                "thresholding",
                &Value::Bool(true),
                "false (dynamic thresholding is not supported; clip_sample is)",
            ));
        }
        let clip = if flag("clip_sample", true)? {
            let r = num("clip_sample_range", 1.0)?;
            if r <= 0.0 {
                return Err(refuse(
                    "clip_sample_range",
                    &Value::from(r),
                    "a positive range",
                ));
            }
            Some(r as f32)
        } else {
            None
        };
        let schedule = DiscreteSchedule {
            timesteps: steps,
            betas,
            rescale_zero_snr: flag("rescale_betas_zero_snr", false)?,
            clip,
        };
        schedule.check().map_err(|detail| {
            refuse(
                "beta_schedule",
                get("beta_schedule").unwrap_or(&Value::Null),
                &format!("betas that give a schedule in [0, 1] ({detail})"),
            )
        })?;
        Ok(SchedulerConfig {
            class_name: value
                .get("_class_name")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            schedule,
            prediction,
        })
    }

    /// The cumulative products of 1 - beta (f32), as diffusers' scheduler holds them.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        self.schedule.alphas_cumprod()
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.schedule.timesteps
    }

    /// The schedule and prediction in words (for `fewstep info`).
    pub fn describe(&self) -> String {
        format!(
            "{}, predicts {}",
            self.schedule.describe(),
            match self.prediction {
                Prediction::Epsilon => "epsilon",
                Prediction::V => "v",
                Prediction::Sample => "x (sample)",
            }
        )
    }
}
