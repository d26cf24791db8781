//! A teacher training held in memory (Algorithm 1 without a run folder): the web page's Train
//! tab. The same `Trainer` updates as `fewstep train`; the result is the bytes of the model file
//! `fewstep train` would write (EMA weights, F32, `Trainer::model_meta`), and nothing is
//! checkpointed (tests/suite/distill_memory.rs compares the files byte for byte).

use anyhow::{bail, Result};

use super::model_file::model_bytes;
use super::parameterization::{Parameterization, Weighting};
use super::trainer::{
    default_lr, default_warmup, TrainConfig, Trainer, DEFAULT_EMA, DEFAULT_GRAD_CLIP,
};
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::nn::{StoreAs, UNetConfig};
use crate::tensor::AdamConfig;

/// What a training is asked for; unset values take `fewstep train`'s defaults.
#[derive(Clone, Debug, PartialEq)]
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
        let arch = UNetConfig::preset(
            &plan.preset,
            data.channels,
            data.height,
            data.width,
            param.heads(),
        )?;
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
            uncond_prob: 0.0,
        };
        let trainer = Trainer::new(gpu, arch, cfg)?;
        Ok(MemoryTrain {
            plan,
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
