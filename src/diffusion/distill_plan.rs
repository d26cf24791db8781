//! What a progressive distillation is asked to do (`DistillPlan`: step counts, updates, batch,
//! learning rate, seed) and the pieces of a halving that the file-based run (distill_run.rs) and
//! the in-memory one (distill_memory.rs, the web page's) share, so the two cannot drift apart.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::distiller::{DistillConfig, Distiller};
use super::model::Denoiser;
use super::model_file::ModelMeta;
use super::parameterization::Parameterization;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::nn::GuidanceRange;

pub fn model_file_name(steps: usize) -> String {
    format!("steps-{steps}.safetensors")
}

/// The w-conditioned model stage 1 of guided distillation writes (the halvings' first teacher).
pub const GUIDED_FILE: &str = "guided-teacher.safetensors";
/// The re-parameterised model stage 1 of an unguided distillation writes (the halvings' first
/// teacher).
pub const REPARAM_FILE: &str = "reparam-teacher.safetensors";

/// Re-parameterisation before the halvings: stage 1 gives the student, initialised from the
/// teacher, a parameterization a few-step sampler can use (an eps teacher's
/// x = (z - sigma eps) / alpha is undefined at alpha = 0, the paper's section 4). With
/// `--guided` the same stage also makes w an input, and its length is `--guidance-updates`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReparamPlan {
    /// What the students predict: v or x.
    pub param: Parameterization,
    /// Updates of stage 1 when it is not also guided distillation's.
    pub updates: u64,
}

/// Whether a teacher must be re-parameterised before any halving: it predicts eps on a discrete
/// (diffusers) schedule. `fewstep distill` and the web page's Train tab then add a stage 1 of
/// [`REPARAM_DEFAULT`] with as many updates as a halving unless told otherwise.
pub fn needs_reparam(teacher: &ModelMeta) -> bool {
    teacher.arch.noise_schedule.is_some()
        && matches!(teacher.parameterization, Parameterization::Eps)
}

/// The student parameterization fewstep chooses for an eps teacher (v: docs/diffusers.md,
/// "Why v and not x", has the figures).
pub const REPARAM_DEFAULT: Parameterization = Parameterization::V;

/// Guided distillation (Meng et al. 2023): stage 1 makes a w-conditioned student of a
/// classifier-free guided teacher, w ~ U[w_min, w_max]; the halvings then keep w as an input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuidedPlan {
    pub w_min: f32,
    pub w_max: f32,
    /// Updates of stage 1.
    pub updates: u64,
}

impl GuidedPlan {
    pub fn range(&self) -> GuidanceRange {
        GuidanceRange {
            w_min: self.w_min,
            w_max: self.w_max,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillPlan {
    pub teacher: PathBuf,
    pub from_steps: usize,
    pub to_steps: usize,
    /// Updates of each halving, and of the last two (students of 2 and 1 steps).
    pub updates: u64,
    pub final_updates: u64,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub dataset: String,
    pub command: String,
    /// Decay of the student EMA (`--ema`); None: none, each file holds the student itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f32>,
    /// Guided distillation (`--guided`): stage 1 first, then the halvings with w as an input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided: Option<GuidedPlan>,
    /// Re-parameterisation (`--reparam-updates`, `--student-param`): stage 1 first (with
    /// `guided`, one stage does both), then the halvings in the new parameterization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reparam: Option<ReparamPlan>,
}

impl DistillPlan {
    /// Checks the step counts against each other and the teacher's description.
    pub fn validate(&self, teacher: &ModelMeta) -> Result<()> {
        let (f, t) = (self.from_steps, self.to_steps);
        if let Some(d) = &teacher.arch.noise_schedule {
            if f > d.timesteps {
                bail!(
                    "--from-steps {f} is more than the teacher's {} timesteps (a diffusers \
                     model's discrete schedule): choose a power of 2 up to {}",
                    d.timesteps,
                    1usize << d.timesteps.ilog2()
                );
            }
        }
        if let Some(r) = self.reparam {
            if !matches!(r.param, Parameterization::V | Parameterization::X) {
                bail!(
                    "--student-param {}: students predict v or x (what diffusers samples as \
                     v_prediction or sample)",
                    r.param
                );
            }
            if self.guided.is_none() && r.updates == 0 {
                bail!(
                    "--reparam-updates 0: stage 1 needs at least 1 update (a useful one, hundreds)"
                );
            }
            if teacher.steps.is_some() {
                bail!(
                    "{} is a distilled student, which already predicts {}: the \
                     re-parameterisation stage starts from a teacher",
                    self.teacher.display(),
                    teacher.parameterization
                );
            }
            if teacher.parameterization.heads() != r.param.heads() {
                bail!(
                    "the teacher predicts {} (two outputs per channel); --student-param {} needs \
                     one: re-parameterise a v, eps or x teacher",
                    teacher.parameterization,
                    r.param
                );
            }
        }
        if !f.is_power_of_two() || f < 2 {
            bail!(
                "--from-steps {f} is not a power of 2 (>= 2): halvings need 1024, 256, 64, 8, ..."
            );
        }
        if !t.is_power_of_two() {
            bail!("--to-steps {t} is not a power of 2: choose 1, 2, 4, 8, ...");
        }
        if t >= f {
            bail!("--to-steps {t} must be below --from-steps {f}");
        }
        if self.updates == 0 || self.final_updates == 0 {
            bail!(
                "--updates {} / --final-updates {}: every halving needs at least 1 update (a \
                 useful one takes hundreds)",
                self.updates,
                self.final_updates
            );
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "--lr {} is not a usable learning rate: give a positive number such as 1e-4",
                self.lr
            );
        }
        if let Some(e) = self.ema {
            if !(e.is_finite() && (0.0..1.0).contains(&e)) {
                bail!("--ema {e} is out of range: give a decay in [0, 1) such as 0.999");
            }
        }
        // fewstep's own eps teachers distill as they always have (x_hat's division clamped at
        // EPS_ALPHA_MIN on the cosine schedule); an imported one is re-parameterised first.
        let param = self.reparam.map_or(teacher.parameterization, |r| r.param);
        if teacher.arch.noise_schedule.is_some()
            && matches!(param, Parameterization::Eps | Parameterization::Both)
        {
            bail!(
                "the teacher predicts {} (diffusers' `epsilon`), which no few-step student can \
                 use: at alpha -> 0, x = (z - sigma eps) / alpha is undefined (the paper, section \
                 4). Add --reparam-updates N (a first stage in which the student learns to predict \
                 v, or x with --student-param x); `fewstep distill` adds it itself for a diffusers \
                 teacher",
                teacher.parameterization
            );
        }
        if let Some(g) = self.guided {
            let a = &teacher.arch;
            if a.classes == 0 {
                bail!(
                    "--guided distills classifier-free guidance, which needs a class-conditional \
                     teacher: {} is unconditional; train one with `fewstep train --classes`",
                    self.teacher.display()
                );
            }
            if a.guidance.is_some() {
                bail!(
                    "{} already takes the guidance weight as an input (a guided-distillation \
                     model): distill it without --guided and its halvings keep w as an input",
                    self.teacher.display()
                );
            }
            if teacher.steps.is_some() {
                bail!(
                    "--guided starts from a teacher, and {} is a distilled student: pass the \
                     teacher it came from",
                    self.teacher.display()
                );
            }
            let max = crate::nn::config::limits::GUIDANCE;
            if !(g.w_min.is_finite()
                && g.w_max.is_finite()
                && 0.0 <= g.w_min
                && g.w_min <= g.w_max
                && g.w_max <= max)
            {
                bail!(
                    "--guidance-range {},{} is not usable: give MIN,MAX with 0 <= MIN <= MAX <= \
                     {max} (Meng et al. used 0,4)",
                    g.w_min,
                    g.w_max
                );
            }
            if g.updates == 0 {
                bail!("--guidance-updates 0: stage 1 needs at least 1 update (a useful one, thousands)");
            }
        }
        if let Some(s) = teacher.steps {
            if s as usize != f {
                bail!(
                    "{} is a distilled {s}-step student, not a teacher; pass the teacher it came \
                     from, or use it with --from-steps {s} to continue halving",
                    self.teacher.display()
                );
            }
        }
        Ok(())
    }

    /// The students' step counts, in order: from_steps / 2 down to to_steps.
    pub fn halvings(&self) -> Vec<usize> {
        let mut v = vec![];
        let mut s = self.from_steps / 2;
        while s >= self.to_steps.max(1) {
            v.push(s);
            s /= 2;
        }
        v
    }

    /// Updates of every halving together (and of guided distillation's stage 1).
    pub fn total_updates(&self) -> u64 {
        self.stage1_updates()
            + self
                .halvings()
                .iter()
                .map(|&s| self.updates_for(s))
                .sum::<u64>()
    }

    /// Updates of stage 1 (0 without one).
    pub fn stage1_updates(&self) -> u64 {
        match (self.guided, self.reparam) {
            (Some(g), _) => g.updates,
            (None, Some(r)) => r.updates,
            (None, None) => 0,
        }
    }

    /// Whether a stage 1 (guidance, re-parameterisation or both) comes before the halvings.
    pub fn has_stage1(&self) -> bool {
        self.guided.is_some() || self.reparam.is_some()
    }

    /// What stage 1 does, in words (progress lines, costs).
    pub fn stage1_name(&self, teacher: Parameterization) -> String {
        let reparam = self
            .reparam
            .filter(|r| r.param != teacher)
            .map(|r| format!("{teacher} -> {}", r.param));
        match (self.guided.is_some(), reparam) {
            (true, Some(r)) => format!("stage 1 (w as an input, {r})"),
            (true, None) => "stage 1 (w as an input)".into(),
            (false, Some(r)) => format!("stage 1 ({r})"),
            (false, None) => "stage 1".into(),
        }
    }

    /// The file stage 1 writes: the halvings' first teacher.
    pub fn stage1_file(&self) -> &'static str {
        if self.guided.is_some() {
            GUIDED_FILE
        } else {
            REPARAM_FILE
        }
    }

    /// Updates of the halvings (and stage 1) finished before the one making a `student_steps`
    /// student.
    pub fn updates_before(&self, student_steps: usize) -> u64 {
        self.stage1_updates()
            + self
                .halvings()
                .iter()
                .take_while(|&&s| s > student_steps)
                .map(|&s| self.updates_for(s))
                .sum::<u64>()
    }

    /// Updates finished before the stage `phase` names (`DistillConfig::phase`: 0 is stage 1).
    pub fn updates_before_phase(&self, phase: usize) -> u64 {
        if phase == 0 {
            0
        } else {
            self.updates_before(phase)
        }
    }

    pub fn updates_for(&self, student_steps: usize) -> u64 {
        if student_steps <= 2 {
            self.final_updates
        } else {
            self.updates
        }
    }
}

/// The description of a finished `steps`-step student of the teacher described by
/// `teacher_meta` (whose file has SHA-256 `teacher_hash`).
pub(crate) fn student_meta(
    teacher_meta: &ModelMeta,
    teacher_hash: &str,
    plan: &DistillPlan,
    steps: usize,
) -> ModelMeta {
    let mut meta = teacher_meta.clone();
    meta.steps = Some(steps as u32);
    meta.lineage.parent_sha256 = Some(teacher_hash.to_string());
    meta.lineage.halvings += 1;
    if meta.lineage.steps_path.is_empty() {
        meta.lineage.steps_path.push(plan.from_steps as u32);
    }
    meta.lineage.steps_path.push(steps as u32);
    meta.command = plan.command.clone();
    meta
}

/// The description of the model stage 1 makes from the teacher described by `teacher_meta`
/// (file hash `teacher_hash`): w as an input in `range`, predicting `param`.
pub(crate) fn stage1_meta(
    teacher_meta: &ModelMeta,
    teacher_hash: &str,
    plan: &DistillPlan,
    range: Option<GuidanceRange>,
    param: Parameterization,
) -> ModelMeta {
    let mut meta = teacher_meta.clone();
    if range.is_some() {
        meta.arch.guidance = range;
    }
    meta.parameterization = param;
    meta.lineage.parent_sha256 = Some(teacher_hash.to_string());
    meta.command = plan.command.clone();
    meta
}

/// The distiller a plan starts with: stage 1 when it has one, else the first halving.
pub(crate) fn first_distiller(gpu: &Gpu, teacher: Denoiser, plan: &DistillPlan) -> Distiller {
    if plan.has_stage1() {
        let param = plan.reparam.map_or(teacher.param, |r| r.param);
        let range = plan.guided.map(|g| g.range());
        Distiller::first_stage(gpu, teacher, range, param, guidance_config(plan))
    } else {
        Distiller::new(gpu, teacher, halving_config(plan, plan.from_steps))
    }
}

/// Stage 1's configuration: the first halving's, with its own update count.
pub(crate) fn guidance_config(plan: &DistillPlan) -> DistillConfig {
    DistillConfig {
        updates: plan.stage1_updates(),
        guidance_stage: true,
        ..halving_config(plan, plan.from_steps)
    }
}

/// What the distiller in progress finishes into: the file's name and description, whether it
/// is the last, and (if not) the next halving's teacher step count.
pub(crate) fn finished(
    d: &Distiller,
    teacher_meta: &ModelMeta,
    teacher_hash: &str,
    plan: &DistillPlan,
) -> (String, ModelMeta, Option<usize>) {
    if d.cfg.guidance_stage {
        let range = d
            .student
            .net
            .config
            .guidance
            .filter(|_| plan.guided.is_some());
        let mut meta = stage1_meta(teacher_meta, teacher_hash, plan, range, d.student.param);
        meta.precision = d.gpu().precision();
        meta.kernel_plan = crate::tensor::tuner::recorded(d.gpu());
        return (plan.stage1_file().to_string(), meta, Some(plan.from_steps));
    }
    let steps = d.cfg.student_steps();
    let mut meta = student_meta(teacher_meta, teacher_hash, plan, steps);
    // This file was computed by this device, whatever its teacher was made in.
    meta.precision = d.gpu().precision();
    meta.kernel_plan = crate::tensor::tuner::recorded(d.gpu());
    let next = (steps > plan.to_steps).then_some(steps);
    (model_file_name(steps), meta, next)
}

pub(crate) fn halving_config(plan: &DistillPlan, teacher_steps: usize) -> DistillConfig {
    DistillConfig {
        teacher_steps,
        updates: plan.updates_for(teacher_steps / 2),
        batch: plan.batch,
        lr: plan.lr,
        grad_clip: 1.0,
        seed: plan.seed,
        adam: crate::tensor::AdamConfig::default(),
        ema_decay: plan.ema,
        guidance_stage: false,
    }
}

/// A class-conditional teacher needs the labels of its data, within its classes.
pub(crate) fn check_labels(teacher: &Denoiser, data: &Dataset) -> Result<()> {
    let classes = teacher.net.config.classes;
    if classes == 0 {
        return Ok(());
    }
    let Some(labels) = &data.labels else {
        bail!(
            "the teacher is class-conditional ({classes} classes) but the data set `{}` has no \
             labels: pass the labelled data it was trained on with --data",
            data.name
        );
    };
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
        bail!(
            "the data set `{}` has label {l}, but the teacher knows {classes} classes (0-{}): \
             pass the data it was trained on with --data",
            data.name,
            classes - 1
        );
    }
    Ok(())
}

pub(crate) fn check_shape(teacher: &Denoiser, data: &Dataset) -> Result<()> {
    check_labels(teacher, data)?;
    let want = teacher.image_shape();
    let got = [data.channels, data.height, data.width];
    if want != got {
        bail!(
            "the teacher works on {}x{}x{} images but the data set has {}x{}x{}: pass the data it \
             was trained on with --data",
            want[0],
            want[1],
            want[2],
            got[0],
            got[1],
            got[2]
        );
    }
    Ok(())
}
