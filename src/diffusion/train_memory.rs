//! A teacher training held in memory (Algorithm 1 without a run folder): the web page's Train
//! tab. The same `Trainer` updates as `fewstep train`; the result is the bytes of the model file
//! `fewstep train` would write (EMA weights, F32, `Trainer::model_meta`). A checkpoint is bytes
//! (the tensors `fewstep train` keeps in state.safetensors, and the plan), which the tab keeps in
//! the browser's storage; [`MemoryTrain::restore`] continues from them as if never stopped
//! (tests/suite/distill_memory.rs compares the files byte for byte).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::model_file::model_bytes;
use super::parameterization::{Parameterization, Weighting};
use super::trainer::{
    classes_of, default_lr, default_warmup, TrainConfig, Trainer, DEFAULT_EMA, DEFAULT_GRAD_CLIP,
    DEFAULT_UNCOND_PROB,
};
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::nn::{tensor_file, StoreAs, UNetConfig};
use crate::tensor::AdamConfig;

const STATE_KEY: &str = "fewstep_memory_train";

/// What a training is asked for; unset values take `fewstep train`'s defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub preset: String,
    pub updates: u64,
    pub batch: usize,
    pub lr: Option<f32>,
    pub warmup: Option<u64>,
    pub seed: u64,
    /// A loss is read back every this many updates (and after the last): each read waits for
    /// the GPU, so reading fewer keeps its queue full.
    pub log_every: u64,
    /// Recorded in the model file (the `--data` argument natively).
    pub dataset: String,
    pub command: String,
    /// Class-conditional on the data's classes (`--classes`), with this label dropout
    /// (`--uncond-prob`; None: 0.1).
    #[serde(default)]
    pub classes: bool,
    #[serde(default)]
    pub uncond_prob: Option<f32>,
}

/// What a checkpoint's metadata holds besides the tensors.
#[derive(Serialize, Deserialize)]
struct State {
    plan: TrainPlan,
    arch: UNetConfig,
    train: TrainConfig,
    step: u64,
}

pub struct MemoryTrain {
    pub plan: TrainPlan,
    pub trainer: Trainer,
    data: Dataset,
}

impl MemoryTrain {
    pub fn new(gpu: &Gpu, plan: TrainPlan, data: Dataset) -> Result<MemoryTrain> {
        if plan.updates == 0 || plan.batch == 0 {
            bail!("a training needs at least 1 update of at least 1 image");
        }
        let param = Parameterization::V;
        let mut arch = UNetConfig::preset(
            &plan.preset,
            data.channels,
            data.height,
            data.width,
            param.heads(),
        )?;
        if plan.classes {
            let (classes, names) = classes_of(&data, 0, &plan.dataset)?;
            arch.classes = classes;
            arch.class_names = names;
        }
        if let Some(p) = plan.uncond_prob {
            if !(0.0..1.0).contains(&p) || !plan.classes {
                bail!(
                    "a label dropout of {p} needs a class-conditional model and a probability \
                     in [0, 1), such as 0.1"
                );
            }
        }
        arch.validate()?;
        let cfg = TrainConfig {
            param,
            weighting: Weighting::SnrTrunc,
            batch: plan.batch,
            lr: plan.lr.unwrap_or_else(|| default_lr(&plan.preset)),
            warmup: plan.warmup.unwrap_or_else(|| default_warmup(&plan.preset)),
            ema_decay: DEFAULT_EMA,
            grad_clip: DEFAULT_GRAD_CLIP,
            seed: plan.seed,
            adam: AdamConfig::default(),
            uncond_prob: if plan.classes {
                plan.uncond_prob.unwrap_or(DEFAULT_UNCOND_PROB)
            } else {
                0.0
            },
        };
        let trainer = Trainer::new(gpu, arch, cfg)?;
        Ok(MemoryTrain {
            plan,
            trainer,
            data,
        })
    }

    /// The training so far as bytes (safetensors: weights, Adam moments and EMA, as
    /// `fewstep train`'s state.safetensors, with the plan and the step).
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        let tr = &self.trainer;
        let state = State {
            plan: self.plan.clone(),
            arch: tr.model.net.config.clone(),
            train: tr.cfg.clone(),
            step: tr.step,
        };
        let mut md = std::collections::HashMap::new();
        md.insert(STATE_KEY.to_string(), serde_json::to_string(&state)?);
        let tensors = tr.state_tensors().await?;
        Ok(tensor_file::encode(
            std::path::Path::new("checkpoint"),
            &tensors,
            md,
            StoreAs::F32,
        )?)
    }

    /// Continues the training a [`Self::checkpoint`] saved, on the same data.
    pub fn restore(gpu: &Gpu, checkpoint: &[u8], data: Dataset) -> Result<MemoryTrain> {
        let path = std::path::Path::new("the training's checkpoint");
        let file = tensor_file::parse(path, checkpoint)?;
        let json = file
            .metadata
            .get(STATE_KEY)
            .context("the checkpoint is not an in-tab training's")?;
        let state: State = serde_json::from_str(json).context("unreadable training checkpoint")?;
        let trainer = Trainer::restore(gpu, state.arch, state.train, state.step, &file)
            .map_err(|e| anyhow::anyhow!("the training's checkpoint: {e}"))?;
        Ok(MemoryTrain {
            plan: state.plan,
            trainer,
            data,
        })
    }

    pub fn is_done(&self) -> bool {
        self.trainer.step >= self.plan.updates
    }

    /// One update; on every `log_every`-th (and the last) it awaits the GPU for the mean loss
    /// of the updates since the last one read.
    pub async fn advance(&mut self) -> Result<Option<f32>> {
        self.trainer.step(&self.data);
        if !(self.trainer.step.is_multiple_of(self.plan.log_every.max(1)) || self.is_done()) {
            return Ok(None);
        }
        let loss = self.trainer.take_mean_loss().await?.unwrap_or(f32::NAN);
        if !loss.is_finite() {
            bail!(
                "the loss became {loss} at update {}: lower the learning rate and start again",
                self.trainer.step
            );
        }
        Ok(Some(loss))
    }

    /// The model file of the EMA weights so far (what `fewstep train` writes as model.safetensors).
    pub async fn model_file(&self) -> Result<Vec<u8>> {
        let ema = self.trainer.ema_tensors().await?;
        let meta = self
            .trainer
            .model_meta(&self.plan.dataset, &self.plan.command);
        Ok(model_bytes("model.safetensors", &meta, &ema, StoreAs::F32)?)
    }
}
