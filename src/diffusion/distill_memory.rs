//! A progressive distillation held in memory: the same halvings, updates and model files as
//! `fewstep distill` (distill_run.rs), without a folder, checkpoints or blocking waits. The web
//! page distills with it (a tab cannot write files, and must not block its event loop); the
//! students come out as the bytes of the model files `fewstep distill` would write.
//!
//! Equal to the file-based run by construction: the same `DistillPlan`, `halving_config`,
//! `Distiller` updates, student description (`student_meta`), F32 files, and each finished
//! student reloaded from its file bytes as the next teacher (tests/suite/distill_memory.rs compares
//! the files byte for byte).

use anyhow::{bail, Result};
use web_time::Instant;

use super::distill_plan::{check_shape, finished, first_distiller, halving_config, DistillPlan};
use super::distiller::Distiller;
use super::model_file::{load_model_bytes, model_bytes, sha256_hex, ModelMeta};
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::nn::{self, StoreAs};

/// A finished student: its step count (0 for guided distillation's stage-1 model, which is
/// sampled like a teacher), its file name and the bytes of its model file.
pub struct Student {
    pub steps: usize,
    pub name: String,
    pub file: Vec<u8>,
}

/// What one call to [`MemoryDistill::advance`] did.
pub enum Advanced {
    /// One update of the halving in progress; `loss`: the mean since the last logged one, when
    /// this update was logged (every `plan.log_every`, and each halving's last).
    Update { loss: Option<f32> },
    /// A halving finished: its student (the last one when `done`).
    Halving { student: Student, done: bool },
}

pub struct MemoryDistill {
    pub plan: DistillPlan,
    pub distiller: Distiller,
    teacher_meta: ModelMeta,
    teacher_hash: String,
    data: Dataset,
    started: Instant,
}

impl MemoryDistill {
    /// Starts at the teacher whose file bytes are `teacher_file` (`plan.teacher` only names it).
    pub fn new(
        gpu: &Gpu,
        mut plan: DistillPlan,
        teacher_file: &[u8],
        data: Dataset,
    ) -> Result<MemoryDistill> {
        let (teacher, meta) = load_model_bytes(gpu, &plan.teacher, teacher_file)?;
        if plan.reparam.is_none() && super::distill_plan::needs_reparam(&meta) {
            // As `fewstep distill` does for a diffusers eps teacher (a converted file).
            plan.reparam = Some(super::distill_plan::ReparamPlan {
                param: super::distill_plan::REPARAM_DEFAULT,
                updates: plan.updates,
            });
        }
        plan.validate(&meta)?;
        check_shape(&teacher, &data)?;
        let distiller = first_distiller(gpu, teacher, &plan);
        Ok(MemoryDistill {
            plan,
            distiller,
            teacher_meta: meta,
            teacher_hash: sha256_hex(teacher_file),
            data,
            started: Instant::now(),
        })
    }

    /// The step count of the student being trained.
    pub fn student_steps(&self) -> usize {
        self.distiller.cfg.student_steps()
    }

    /// Updates done over all halvings, and in all.
    pub fn progress(&self) -> (u64, u64) {
        let before = self.plan.updates_before_phase(self.distiller.cfg.phase());
        let done = before + self.distiller.update;
        (done, self.plan.total_updates())
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One update, or the end of a halving (its student, then the next halving's start).
    /// Awaits the GPU only where a value is read back (a logged loss, a finished student).
    pub async fn advance(&mut self) -> Result<Advanced> {
        if self.distiller.is_done() {
            return self.finish_halving().await;
        }
        self.distiller.step(&self.data);
        let u = self.distiller.update;
        if !(u.is_multiple_of(self.plan.log_every.max(1)) || self.distiller.is_done()) {
            return Ok(Advanced::Update { loss: None });
        }
        let loss = self.distiller.take_mean_loss().await?.unwrap_or(f32::NAN);
        if !loss.is_finite() {
            bail!(
                "the distillation loss became {loss} at update {u} of the {}-step student; lower \
                 the learning rate and start again",
                self.student_steps()
            );
        }
        Ok(Advanced::Update { loss: Some(loss) })
    }

    /// Reads back the finished student, describes it, and makes it the next teacher.
    async fn finish_halving(&mut self) -> Result<Advanced> {
        let d = &self.distiller;
        let steps = d.cfg.phase();
        let weights = nn::read_tensors(&d.student.net.layout.specs, d.result_params(), "").await?;
        let (name, meta, next) = finished(d, &self.teacher_meta, &self.teacher_hash, &self.plan);
        let file = model_bytes(&name, &meta, &weights, StoreAs::F32)?;
        if let Some(next) = next {
            let gpu = self.distiller.gpu().clone();
            let (teacher, meta) = load_model_bytes(&gpu, std::path::Path::new(&name), &file)?;
            self.teacher_meta = meta;
            self.teacher_hash = sha256_hex(&file);
            self.distiller = Distiller::new(&gpu, teacher, halving_config(&self.plan, next));
        }
        Ok(Advanced::Halving {
            student: Student { steps, name, file },
            done: next.is_none(),
        })
    }
}
