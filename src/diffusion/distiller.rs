//! Algorithm 2, one halving of progressive distillation: a student learns to take in one DDIM
//! step what its teacher takes in two.
//!
//! Per update: x from data; i ~ U{1 .. N/2}, t = i / (N/2); z_t = alpha_t x + sigma_t eps;
//! t' = t - 0.5/(N/2) and t'' = t - 1/(N/2) (t' lies between t and t''); the TEACHER takes DDIM
//! steps t -> t' -> t'' without clipping; the target is
//!     x_tilde = (z_t'' - (sigma_t''/sigma_t) z_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t),
//! the x that a single DDIM step t -> t'' would need to land on z_t'' (at t'' = 0 it is z_t'',
//! the teacher's own final x_hat); the student's loss is max(SNR_t, 1) ||x_tilde - x_hat||^2.
//! The teacher's two steps and the student's update are recorded into one submit.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::model::{per_sample, Denoiser};
use super::parameterization::Parameterization;
use super::parameterization::Weighting;
use super::schedule::Schedule;
use super::trainer::{batch_labels, step_rng};
use crate::data::{Batcher, Dataset};
use crate::gpu::{Gpu, GpuError};
use crate::nn::{NetCond, UNet};
use crate::tensor::{Adam, AdamConfig, GradClip, LossMeter, Tape, Tensor};

pub use super::guidance::{guided_x_hat, Teacher};

/// The half-step and full-step times of a student step at t for a student with `student_steps`.
pub fn substep_times(t: f64, student_steps: usize) -> (f64, f64) {
    let h = 1.0 / student_steps as f64;
    (t - 0.5 * h, (t - h).max(0.0))
}

/// x_tilde = a * z_t'' + b * z_t on the cosine schedule; returns (a, b). At t'' = 0: (1, 0).
pub fn target_coef(t: f64, t2: f64) -> (f64, f64) {
    target_coef_in(&Schedule::Cosine, t, t2)
}

/// [`target_coef`] on any schedule.
pub fn target_coef_in(schedule: &Schedule, t: f64, t2: f64) -> (f64, f64) {
    let (at, st) = schedule.alpha_sigma(t);
    let (a2, s2) = schedule.alpha_sigma(t2);
    let r = s2 / st;
    let denom = a2 - r * at;
    (1.0 / denom, -r / denom)
}

/// Per-sample DDIM steps t\[i\] -> s\[i\] of a batch on `schedule`, given x_hat (no clipping: the
/// paper's teacher steps).
pub fn ddim_step(schedule: &Schedule, z: &Tensor, x_hat: &Tensor, t: &[f64], s: &[f64]) -> Tensor {
    let gpu = z.gpu();
    let (cz, cx): (Vec<f64>, Vec<f64>) = t
        .iter()
        .zip(s)
        .map(|(&a, &b)| schedule.ddim_coef(a, b))
        .unzip();
    z.per_sample_axpby(&per_sample(gpu, &cz), Some((x_hat, &per_sample(gpu, &cx))))
}

/// The distillation target for z_t at per-sample times t (student grid of `student_steps`) on
/// the teacher's `schedule`. On a discrete schedule the times are grid points whose timesteps
/// are diffusers' trailing grids: a 4-step student at 999, 749, 499, 249, its 8-step teacher
/// also at 874, 624, 374, 124.
pub fn distill_target(
    teacher: &dyn Teacher,
    schedule: &Schedule,
    z_t: &Tensor,
    t: &[f64],
    cond: &NetCond,
    student_steps: usize,
) -> Tensor {
    let gpu = z_t.gpu();
    let (t1, t2): (Vec<f64>, Vec<f64>) =
        t.iter().map(|&ti| substep_times(ti, student_steps)).unzip();
    let x1 = guided_x_hat(teacher, z_t, t, cond);
    let z1 = ddim_step(schedule, z_t, &x1, t, &t1);
    let x2 = guided_x_hat(teacher, &z1, &t1, cond);
    let z2 = ddim_step(schedule, &z1, &x2, &t1, &t2);
    let (a, b): (Vec<f64>, Vec<f64>) = t
        .iter()
        .zip(&t2)
        .map(|(&ti, &t2i)| target_coef_in(schedule, ti, t2i))
        .unzip();
    z2.per_sample_axpby(&per_sample(gpu, &a), Some((z_t, &per_sample(gpu, &b))))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
    /// Sampling steps of the teacher of this halving (the student gets half).
    pub teacher_steps: usize,
    /// Updates of this halving.
    pub updates: u64,
    pub batch: usize,
    /// Initial learning rate, annealed linearly to 0 over `updates`.
    pub lr: f32,
    pub grad_clip: f32,
    pub seed: u64,
    pub adam: AdamConfig,
    /// Decay of an EMA of the student's weights (None: no EMA, the student itself is the
    /// result); early on min(decay, (1 + n) / (10 + n)) after n updates, as in training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f32>,
    /// Stage 1, before the halvings (no halving itself): the student learns the teacher's x_hat
    /// at continuous t in [0, 1] through a new parameterization (re-parameterisation of an eps
    /// teacher), with w as an input (guided distillation, Meng et al.: the guided teacher's
    /// x_hat_w), or both. `teacher_steps` is then the step count the stage-1 model is first
    /// halved from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guidance_stage: bool,
}

impl DistillConfig {
    pub fn student_steps(&self) -> usize {
        self.teacher_steps / 2
    }
    /// The student's step count, 0 in stage 1 (what metrics lines,
    /// costs and the in-memory students record).
    pub fn phase(&self) -> usize {
        if self.guidance_stage {
            0
        } else {
            self.student_steps()
        }
    }
    pub fn lr_at(&self, update: u64) -> f32 {
        self.lr * (1.0 - update as f32 / self.updates.max(1) as f32).max(0.0)
    }
    /// The EMA's decay after `n` updates (None without an EMA).
    pub fn ema_decay_at(&self, n: u64) -> Option<f32> {
        self.ema_decay
            .map(|d| d.min((1.0 + n as f32) / (10.0 + n as f32)))
    }
}

/// Noise streams of distillation, apart from the teacher training's.
const DISTILL_STREAMS: u64 = 1 << 48;
/// Streams of stage 1 (guidance, re-parameterisation), apart from every halving's.
const GUIDANCE_STAGE_STREAMS: u64 = 1 << 47;

/// A w-conditioned student for stage 1 of guided distillation: the teacher's weights, plus the
/// guidance embedding's fresh ones (its last layer zero, so it starts as the teacher's
/// conditional model for every w).
pub fn guidance_student(
    gpu: &Gpu,
    teacher: &Denoiser,
    range: crate::nn::GuidanceRange,
    seed: u64,
) -> Denoiser {
    stage1_student(gpu, teacher, Some(range), teacher.param, seed)
}

/// Stage 1's student: the teacher's weights read through `param` (the network outputs as many
/// channels for v, eps and x, so the weights carry over; its first outputs are the teacher's
/// read the new way, which stage 1 corrects), taking w as an input in `guidance` (fresh
/// weights for the guidance embedding, its last layer zero).
pub fn stage1_student(
    gpu: &Gpu,
    teacher: &Denoiser,
    guidance: Option<crate::nn::GuidanceRange>,
    param: Parameterization,
    seed: u64,
) -> Denoiser {
    assert_eq!(
        param.heads(),
        teacher.param.heads(),
        "a re-parameterisation keeps the network's outputs"
    );
    let mut arch = teacher.net.config.clone();
    if guidance.is_some() {
        arch.guidance = guidance;
    }
    let fresh = UNet::new(gpu, arch.clone(), seed ^ 0x6775_6964_6564).expect("teacher's config");
    let t = &teacher.net;
    let params = fresh
        .layout
        .specs
        .iter()
        .zip(fresh.params)
        .map(
            |(spec, p)| match t.layout.specs.iter().position(|s| s.name == spec.name) {
                Some(i) => t.params[i].deep_clone(),
                None => p,
            },
        )
        .collect();
    Denoiser {
        net: UNet::from_params(arch, params).expect("teacher's config"),
        param,
    }
}

/// One update's inputs and target (what [`Distiller::step`] trains the student on).
pub struct DistillBatch {
    pub z: Tensor,
    pub t: Vec<f64>,
    pub cond: NetCond,
    pub target: Tensor,
}

pub struct Distiller {
    pub cfg: DistillConfig,
    pub teacher: Box<dyn Teacher>,
    pub student: Denoiser,
    /// The teacher's and student's noise schedule.
    pub schedule: Schedule,
    pub opt: Adam,
    /// The EMA of the student's weights (with `cfg.ema_decay`): what the halving gives.
    pub ema: Option<Vec<Tensor>>,
    pub update: u64,
    batcher: Batcher,
    host: Vec<f32>,
    loss: LossMeter,
}

impl Distiller {
    /// The student starts as a copy of the teacher's weights; the optimizer is fresh.
    pub fn new(gpu: &Gpu, teacher: Denoiser, cfg: DistillConfig) -> Distiller {
        assert!(
            cfg.teacher_steps >= 2 && cfg.teacher_steps.is_power_of_two(),
            "the teacher's step count must be a power of 2, at least 2"
        );
        assert!(
            !cfg.guidance_stage,
            "stage 1 starts with Distiller::first_stage"
        );
        let params: Vec<Tensor> = teacher.net.params.iter().map(|p| p.deep_clone()).collect();
        let student = Denoiser {
            net: UNet::from_params(teacher.net.config.clone(), params).expect("teacher's config"),
            param: teacher.param,
        };
        Self::with_student(gpu, teacher, student, cfg, 0)
    }

    /// Stage 1 of guided distillation: a w-conditioned student of the class-conditional
    /// `teacher`, for w in `range`.
    pub fn guidance_stage(
        gpu: &Gpu,
        teacher: Denoiser,
        range: crate::nn::GuidanceRange,
        cfg: DistillConfig,
    ) -> Distiller {
        let param = teacher.param;
        Self::first_stage(gpu, teacher, Some(range), param, cfg)
    }

    /// Stage 1: a student of `teacher` that predicts `param` and, with `guidance`, takes w in
    /// that range as an input (the teacher class-conditional).
    pub fn first_stage(
        gpu: &Gpu,
        teacher: Denoiser,
        guidance: Option<crate::nn::GuidanceRange>,
        param: Parameterization,
        cfg: DistillConfig,
    ) -> Distiller {
        assert!(cfg.guidance_stage, "a stage-1 configuration");
        if guidance.is_some() {
            assert!(teacher.is_conditional() && !teacher.takes_guidance());
        }
        let student = stage1_student(gpu, &teacher, guidance, param, cfg.seed);
        Self::with_student(gpu, teacher, student, cfg, 0)
    }

    /// Any teacher (a stand-in in tests) with a given student.
    pub fn with_teacher(
        gpu: &Gpu,
        teacher: Box<dyn Teacher>,
        student: Denoiser,
        cfg: DistillConfig,
        update: u64,
    ) -> Distiller {
        let opt = Adam::new(gpu, &student.net.params, cfg.adam);
        let ema = cfg
            .ema_decay
            .map(|_| student.net.params.iter().map(|p| p.deep_clone()).collect());
        Distiller {
            ema,
            schedule: Schedule::of(&student.net.config),
            batcher: Batcher::new(cfg.seed ^ ((cfg.teacher_steps as u64) << 32), cfg.batch),
            cfg,
            teacher,
            student,
            opt,
            update,
            host: Vec::new(),
            loss: LossMeter::new(gpu),
        }
    }

    /// Continues a halving from a student and its update count (the Adam moments, and the EMA
    /// when there is one, are set by the caller when resuming; a new EMA starts as the student).
    pub fn with_student(
        gpu: &Gpu,
        teacher: Denoiser,
        student: Denoiser,
        cfg: DistillConfig,
        update: u64,
    ) -> Distiller {
        Self::with_teacher(gpu, Box::new(teacher), student, cfg, update)
    }

    pub fn gpu(&self) -> &Gpu {
        self.student.net.gpu()
    }

    pub fn is_done(&self) -> bool {
        self.update >= self.cfg.updates
    }

    /// The next update's inputs and target: x from the data, t (on the student's grid; stage
    /// 1: continuous in [0, 1]), classes from the data, w ~ U[w_min, w_max] for a
    /// w-conditioned student, z_t, and the teacher's target. Recorded on the GPU, not run.
    pub fn batch(&mut self, data: &Dataset) -> DistillBatch {
        let gpu = self.gpu().clone();
        let [c, h, w] = self.student.image_shape();
        let b = self.cfg.batch;
        let n_student = self.cfg.student_steps();
        let stage1 = self.cfg.guidance_stage;
        let base = if stage1 {
            GUIDANCE_STAGE_STREAMS
        } else {
            DISTILL_STREAMS
        };
        let stream = base + ((self.cfg.teacher_steps as u64) << 32) + self.update;
        let indices = self.batcher.fill(data, self.update, &mut self.host);
        let x = Tensor::from_slice(&gpu, &[b, c, h, w], &self.host);
        let mut rng = step_rng(self.cfg.seed, stream, 2);
        let t: Vec<f64> = if stage1 {
            (0..b).map(|_| rng.random::<f64>()).collect()
        } else {
            (0..b)
                .map(|_| rng.random_range(1..=n_student) as f64 / n_student as f64)
                .collect()
        };
        // Classes from the data; w ~ U[w_min, w_max] per sample for a w-conditioned student
        // (its own draws, so an unguided halving's draws are what they always were).
        let cond = NetCond {
            labels: batch_labels(data, &indices, self.student.net.config.classes),
            w: match self.student.net.config.guidance {
                Some(g) => {
                    let mut wr = step_rng(self.cfg.seed, stream, 4);
                    (0..b)
                        .map(|_| g.w_min + (g.w_max - g.w_min) * wr.random::<f32>())
                        .collect()
                }
                None => Vec::new(),
            },
        };
        let (alpha, sigma): (Vec<f64>, Vec<f64>) =
            t.iter().map(|&ti| self.schedule.alpha_sigma(ti)).unzip();
        let eps = Tensor::randn(&gpu, &[b, c, h, w], self.cfg.seed, stream);
        let z = x.per_sample_axpby(
            &per_sample(&gpu, &alpha),
            Some((&eps, &per_sample(&gpu, &sigma))),
        );
        let target = if stage1 {
            // Stage 1's target: the (guided) teacher's x_hat(_w), two evaluations of the teacher
            // with guidance. An imported teacher's x_hat is clipped as its sampler clips it: an
            // eps teacher's x_hat = (z - sigma eps) / alpha near alpha = 0 magnifies its error
            // (1 / alpha = 157 at timestep 999 of DDPM's linear betas) where its DDIM would clip.
            let x = guided_x_hat(self.teacher.as_ref(), &z, &t, &cond);
            match self.schedule.clip() {
                Some(r) => x.clamp(-r, r),
                None => x,
            }
        } else {
            distill_target(
                self.teacher.as_ref(),
                &self.schedule,
                &z,
                &t,
                &cond,
                n_student,
            )
        };
        DistillBatch { z, t, cond, target }
    }

    /// Records and submits one update.
    pub fn step(&mut self, data: &Dataset) {
        let gpu = self.gpu().clone();
        let DistillBatch { z, t, cond, target } = self.batch(data);
        let weight: Vec<f64> = t
            .iter()
            .map(|&ti| Weighting::SnrTrunc.weight_at_logsnr(self.schedule.logsnr(ti)))
            .collect();
        let tape = Tape::new();
        let p = self.student.net.vars(&tape, true);
        let x_hat = self.student.x_hat(&tape, &p, &z, &t, &cond, None);
        let loss = tape.mean_all(&tape.weighted_mse(&x_hat, &target, &per_sample(&gpu, &weight)));
        let (grads, _) = tape.backward(&loss, None);
        let params = &self.student.net.params;
        // The EMA (if any) uses the update count after this update.
        let ema = match (&self.ema, self.cfg.ema_decay_at(self.update + 1)) {
            (Some(ema), Some(decay)) => Some((ema.as_slice(), decay)),
            _ => None,
        };
        self.opt.update_with_ema(
            params,
            &grads.dense(params),
            self.cfg.lr_at(self.update),
            GradClip {
                max_norm: self.cfg.grad_clip,
            },
            ema,
        );
        self.update += 1;
        self.loss.add(&loss.value);
        gpu.flush();
    }

    /// The weights the halving gives: the EMA when there is one, else the student's own.
    pub fn result_params(&self) -> &[Tensor] {
        self.ema.as_deref().unwrap_or(&self.student.net.params)
    }

    /// Mean loss since the last call (waits for the GPU).
    pub async fn take_mean_loss(&mut self) -> Result<Option<f32>, GpuError> {
        self.loss.take_mean().await
    }
}
