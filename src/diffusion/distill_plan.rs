//! What a progressive distillation is asked to do (`DistillPlan`: step counts, updates, batch,
//! learning rate, seed) and the pieces of a halving that the file-based run (distill_run.rs) and
//! the in-memory one (distill_memory.rs, the web page's) share, so the two cannot drift apart.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::distiller::DistillConfig;
use super::model::Denoiser;
use super::model_file::ModelMeta;
use crate::data::Dataset;

pub fn model_file_name(steps: usize) -> String {
    format!("steps-{steps}.safetensors")
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
}

impl DistillPlan {
    /// Checks the step counts against each other and the teacher's description.
    pub fn validate(&self, teacher: &ModelMeta) -> Result<()> {
        let (f, t) = (self.from_steps, self.to_steps);
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

    /// Updates of every halving together.
    pub fn total_updates(&self) -> u64 {
        self.halvings().iter().map(|&s| self.updates_for(s)).sum()
    }

    /// Updates of the halvings finished before the one making a `student_steps` student.
    pub fn updates_before(&self, student_steps: usize) -> u64 {
        self.halvings()
            .iter()
            .take_while(|&&s| s > student_steps)
            .map(|&s| self.updates_for(s))
            .sum()
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
    }
}

pub(crate) fn check_shape(teacher: &Denoiser, data: &Dataset) -> Result<()> {
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
