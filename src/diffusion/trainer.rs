//! Algorithm 1: training the teacher. One `step` records the forward pass, the backward pass,
//! Adam (with warm-up and global grad-norm clipping) and the EMA update, and submits them as one
//! batch; nothing is read back until the caller asks for the loss.
//!
//! Every random choice of step n (batch order, flips, t, eps, dropout masks) is derived from
//! (seed, n) alone, so a run resumed from a checkpoint continues exactly as if never stopped.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use super::model::{per_sample, Denoiser};
use super::parameterization::{Parameterization, Weighting};
use super::schedule::alpha_sigma;
use crate::data::{Batcher, Dataset};
use crate::gpu::{Gpu, GpuError};
use crate::nn::{self, DropoutNoise, HostTensor, NetCond, UNet, UNetConfig};
use crate::tensor::{Adam, AdamConfig, GradClip, LossMeter, Tape, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub param: Parameterization,
    pub weighting: Weighting,
    pub batch: usize,
    pub lr: f32,
    pub warmup: u64,
    /// The EMA's final decay; early on it is min(decay, (1 + n) / (10 + n)).
    pub ema_decay: f32,
    pub grad_clip: f32,
    pub seed: u64,
    pub adam: AdamConfig,
    /// Label dropout for classifier-free guidance: each sample's class is replaced by "no class"
    /// with this probability (Ho & Salimans used 0.1-0.2); ignored by unconditional models.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncond_prob: f32,
}

fn is_zero(p: &f32) -> bool {
    *p == 0.0
}

impl TrainConfig {
    pub fn lr_at(&self, step: u64) -> f32 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * ((step + 1) as f32 / self.warmup as f32).min(1.0)
        }
    }
    /// EMA decay after `n` updates.
    pub fn ema_decay_at(&self, n: u64) -> f32 {
        self.ema_decay.min((1.0 + n as f32) / (10.0 + n as f32))
    }
}

/// The label-dropout probability `--classes` trains with unless told (Ho & Salimans: 0.1-0.2).
pub const DEFAULT_UNCOND_PROB: f32 = 0.1;

/// The class count (`asked`, or the data's when 0) and names a class-conditional model of
/// `data` gets; refuses unlabelled data and a count below the labels' range.
pub fn classes_of(
    data: &Dataset,
    asked: usize,
    spec: &str,
) -> anyhow::Result<(usize, Vec<String>)> {
    anyhow::ensure!(
        data.labels.is_some(),
        "--classes needs labelled data, and --data {spec} has no labels: use fashion-mnist, \
         mnist, cifar10:DIR, or images:DIR with one subfolder per class (the folder names \
         become the class names)"
    );
    let have = data.class_count();
    let n = if asked == 0 { have } else { asked };
    anyhow::ensure!(
        n >= have,
        "--classes {n} is fewer than the {have} classes of --data {spec} (its labels go up to \
         {}): give --classes {have} or more, or --classes alone",
        have - 1
    );
    // The data's names, and for classes beyond the data's (room for labels added later) the
    // names `class N`, so that no name is dropped.
    let names = if data.class_names.len() == have {
        let mut names = data.class_names.clone();
        names.extend((have..n).map(|i| format!("class {i}")));
        names
    } else {
        Vec::new()
    };
    Ok((n, names))
}

/// `fewstep train`'s defaults (the CLI, the native Train tab and the web one share them).
pub const DEFAULT_EMA: f32 = 0.9999;
pub const DEFAULT_GRAD_CLIP: f32 = 1.0;
/// Peak learning rate by preset: 4e-4 for tiny, 2e-4 otherwise.
pub fn default_lr(preset: &str) -> f32 {
    if preset == "tiny" {
        4e-4
    } else {
        2e-4
    }
}
/// Warm-up updates by preset: 200 for tiny, 1000 otherwise.
pub fn default_warmup(preset: &str) -> u64 {
    if preset == "tiny" {
        200
    } else {
        1000
    }
}

/// A per-step random generator independent of every other step's.
pub fn step_rng(seed: u64, step: u64, purpose: u64) -> Pcg64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(step.wrapping_add(1));
    h ^= purpose.wrapping_mul(0xD1B5_4A32_D192_ED03);
    Pcg64::seed_from_u64(h)
}

/// Noise stream layout: eps of step n is stream n; dropout of step n uses streams
/// DROPOUT_STREAMS + n * 1024 + block.
const DROPOUT_STREAMS: u64 = 1 << 40;

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Denoiser,
    pub ema: Vec<Tensor>,
    pub opt: Adam,
    /// Updates done.
    pub step: u64,
    batcher: Batcher,
    host: Vec<f32>,
    loss: LossMeter,
}

impl Trainer {
    pub fn new(gpu: &Gpu, arch: UNetConfig, cfg: TrainConfig) -> Result<Trainer, nn::ConfigError> {
        let net = UNet::new(gpu, arch, cfg.seed)?;
        let ema = net.params.iter().map(|p| p.deep_clone()).collect();
        Ok(Self::assemble(gpu, net, ema, cfg, 0))
    }

    fn assemble(gpu: &Gpu, net: UNet, ema: Vec<Tensor>, cfg: TrainConfig, step: u64) -> Trainer {
        let opt = Adam::new(gpu, &net.params, cfg.adam);
        let batcher = Batcher::new(cfg.seed, cfg.batch);
        Trainer {
            model: Denoiser {
                net,
                param: cfg.param,
            },
            ema,
            opt,
            step,
            batcher,
            host: Vec::new(),
            loss: LossMeter::new(gpu),
            cfg,
        }
    }

    pub fn gpu(&self) -> &Gpu {
        self.model.net.gpu()
    }

    /// Records and submits one training update on a batch of `data`.
    pub fn step(&mut self, data: &Dataset) {
        let gpu = self.gpu().clone();
        let [c, h, w] = self.model.image_shape();
        assert_eq!(
            [data.channels, data.height, data.width],
            [c, h, w],
            "data shape differs from the model's"
        );
        let b = self.cfg.batch;
        let indices = self.batcher.fill(data, self.step, &mut self.host);
        let x = Tensor::from_slice(&gpu, &[b, c, h, w], &self.host);
        let classes = self.model.net.config.classes;
        let mut labels = batch_labels(data, &indices, classes);
        if !labels.is_empty() && self.cfg.uncond_prob > 0.0 {
            // Its own per-step generator: t and eps draws are what they are without dropout.
            let mut drop = step_rng(self.cfg.seed, self.step, 3);
            for l in &mut labels {
                if drop.random::<f32>() < self.cfg.uncond_prob {
                    *l = None;
                }
            }
        }
        let cond = NetCond {
            labels,
            w: Vec::new(),
        };
        let mut rng = step_rng(self.cfg.seed, self.step, 1);
        let t: Vec<f64> = (0..b).map(|_| rng.random::<f64>()).collect();
        let (alpha, sigma): (Vec<f64>, Vec<f64>) = t.iter().map(|&ti| alpha_sigma(ti)).unzip();
        let weight: Vec<f64> = t.iter().map(|&ti| self.cfg.weighting.weight(ti)).collect();
        let eps = Tensor::randn(&gpu, &[b, c, h, w], self.cfg.seed, self.step);
        let z = x.per_sample_axpby(
            &per_sample(&gpu, &alpha),
            Some((&eps, &per_sample(&gpu, &sigma))),
        );
        let tape = Tape::new();
        let p = self.model.net.vars(&tape, true);
        let dropout = DropoutNoise {
            seed: self.cfg.seed,
            stream: DROPOUT_STREAMS + self.step * 1024,
        };
        let x_hat = self.model.x_hat(&tape, &p, &z, &t, &cond, Some(dropout));
        let per = tape.weighted_mse(&x_hat, &x, &per_sample(&gpu, &weight));
        let loss = tape.mean_all(&per);
        let (grads, _) = tape.backward(&loss, None);
        let params = &self.model.net.params;
        // The EMA uses the update count after this update, as `ema_update` after it would.
        self.opt.update_with_ema(
            params,
            &grads.dense(params),
            self.cfg.lr_at(self.step),
            GradClip {
                max_norm: self.cfg.grad_clip,
            },
            Some((&self.ema, self.cfg.ema_decay_at(self.step + 1))),
        );
        self.step += 1;
        self.loss.add(&loss.value);
        gpu.flush();
    }

    /// Mean loss over the steps since the last call (waits for the GPU), or None if no step ran.
    pub async fn take_mean_loss(&mut self) -> Result<Option<f32>, GpuError> {
        self.loss.take_mean().await
    }

    /// The description of the EMA model after the updates done so far (its model file's).
    pub fn model_meta(&self, dataset: &str, command: &str) -> super::ModelMeta {
        let a = &self.model.net.config;
        super::ModelMeta {
            format_version: super::model_file::FORMAT_VERSION,
            arch: a.clone(),
            image: [a.in_channels, a.height, a.width],
            parameterization: self.cfg.param,
            schedule: "cosine".into(),
            steps: None,
            lineage: super::model_file::Lineage::default(),
            dataset: dataset.to_string(),
            training_steps: self.step,
            command: command.to_string(),
            precision: self.gpu().precision(),
            kernel_plan: crate::tensor::tuner::recorded(self.gpu()),
        }
    }

    /// A model that samples with the EMA weights (shares their buffers).
    pub fn ema_model(&self) -> Denoiser {
        let net = UNet::from_params(self.model.net.config.clone(), self.ema.clone())
            .expect("the training config is valid");
        Denoiser {
            net,
            param: self.cfg.param,
        }
    }

    /// Everything `--resume` needs, as named host tensors: weights, Adam moments, EMA.
    pub async fn state_tensors(&self) -> Result<Vec<HostTensor>, GpuError> {
        let specs = &self.model.net.layout.specs;
        let mut out = nn::read_tensors(specs, &self.model.net.params, "param.").await?;
        out.extend(nn::read_tensors(specs, &self.opt.m, "adam_m.").await?);
        out.extend(nn::read_tensors(specs, &self.opt.v, "adam_v.").await?);
        out.extend(nn::read_tensors(specs, &self.ema, "ema.").await?);
        Ok(out)
    }

    /// The EMA weights under their plain names (for the model file).
    pub async fn ema_tensors(&self) -> Result<Vec<HostTensor>, GpuError> {
        nn::read_tensors(&self.model.net.layout.specs, &self.ema, "").await
    }

    /// Rebuilds a trainer from `state_tensors` output and the step it was taken at.
    pub fn restore(
        gpu: &Gpu,
        arch: UNetConfig,
        cfg: TrainConfig,
        step: u64,
        file: &nn::LoadedFile,
    ) -> Result<Trainer, String> {
        let layout = nn::Layout::new(&arch).map_err(|e| e.to_string())?;
        let part = |prefix: &str| -> Result<Vec<Tensor>, String> {
            let found = nn::check_tensors(&layout.specs, prefix, |n| file.get(n))?;
            Ok(nn::upload_tensors(gpu, &found))
        };
        let net = UNet::from_params(arch, part("param.")?).map_err(|e| e.to_string())?;
        let ema = part("ema.")?;
        let m = part("adam_m.")?;
        let v = part("adam_v.")?;
        let mut tr = Self::assemble(gpu, net, ema, cfg, step);
        tr.opt.m = m;
        tr.opt.v = v;
        tr.opt.step = step;
        Ok(tr)
    }
}

/// The labels of the data set images `indices` (`None` for every one when the model is
/// unconditional). The caller checked that a conditional model's data has labels in range.
pub fn batch_labels(data: &Dataset, indices: &[usize], classes: usize) -> Vec<Option<u32>> {
    if classes == 0 {
        return Vec::new();
    }
    let labels = data
        .labels
        .as_ref()
        .expect("a class-conditional model's data set has labels (checked when the run opened)");
    indices.iter().map(|&i| Some(labels[i] as u32)).collect()
}
