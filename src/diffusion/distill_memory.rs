//! A progressive distillation held in memory: the same halvings, updates and model files as
//! `fewstep distill` (distill_run.rs), without a folder or blocking waits. The web page distills
//! with it (a tab cannot write files, and must not block its event loop); the students come out
//! as the bytes of the model files `fewstep distill` would write. A checkpoint is bytes too (the
//! halving's tensors, as distill-state.safetensors holds them, and where it stood) plus the
//! halving's teacher file; the tab keeps both in the browser's storage, and
//! [`MemoryDistill::restore`] continues from them as if never stopped.
//!
//! Equal to the file-based run by construction: the same `DistillPlan`, `halving_config`,
//! `Distiller` updates, student description (`student_meta`), F32 files, and each finished
//! student reloaded from its file bytes as the next teacher (tests/suite/distill_memory.rs compares
//! the files byte for byte).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use web_time::Instant;

use super::distill_plan::{check_shape, finished, first_distiller, halving_config, DistillPlan};
use super::distill_state::{halving_tensors, restore_distiller, Position};
use super::distiller::Distiller;
use super::model_file::{load_model_bytes, model_bytes, sha256_hex, ModelMeta};
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::nn::{self, tensor_file, StoreAs};

const STATE_KEY: &str = "fewstep_memory_distill";

/// What a checkpoint's metadata holds besides the tensors.
#[derive(Serialize, Deserialize)]
struct State {
    plan: DistillPlan,
    teacher_steps: usize,
    guidance_stage: bool,
    update: u64,
    /// SHA-256 of the halving's teacher file (kept beside the checkpoint).
    teacher_sha256: String,
    seconds: f64,
}

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
    /// The halving's teacher file (what a checkpoint needs beside its own bytes).
    teacher_file: Vec<u8>,
    data: Dataset,
    started: Instant,
    seconds_before: f64,
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
            teacher_file: teacher_file.to_vec(),
            data,
            started: Instant::now(),
            seconds_before: 0.0,
        })
    }

    /// The halving in progress as bytes (safetensors: the student, Adam's moments and the EMA,
    /// with the plan and where it stands); it needs [`Self::teacher_file`] beside it, whose
    /// SHA-256 is [`Self::teacher_sha256`].
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        let d = &self.distiller;
        let state = State {
            plan: self.plan.clone(),
            teacher_steps: d.cfg.teacher_steps,
            guidance_stage: d.cfg.guidance_stage,
            update: d.update,
            teacher_sha256: self.teacher_hash.clone(),
            seconds: self.seconds(),
        };
        let mut md = std::collections::HashMap::new();
        md.insert(STATE_KEY.to_string(), serde_json::to_string(&state)?);
        let tensors = halving_tensors(d).await?;
        Ok(tensor_file::encode(
            std::path::Path::new("checkpoint"),
            &tensors,
            md,
            StoreAs::F32,
        )?)
    }

    /// The teacher of the halving in progress (the original teacher, or the last student).
    pub fn teacher_file(&self) -> &[u8] {
        &self.teacher_file
    }

    pub fn teacher_sha256(&self) -> &str {
        &self.teacher_hash
    }

    /// The teacher file a checkpoint needs: its SHA-256.
    pub fn checkpoint_teacher(checkpoint: &[u8]) -> Result<String> {
        Ok(read_state(checkpoint)?.0.teacher_sha256)
    }

    /// Continues the distillation a [`Self::checkpoint`] saved, with its halving's teacher file
    /// and the same data.
    pub fn restore(
        gpu: &Gpu,
        checkpoint: &[u8],
        teacher_file: &[u8],
        data: Dataset,
    ) -> Result<MemoryDistill> {
        let (state, file) = read_state(checkpoint)?;
        let hash = sha256_hex(teacher_file);
        if hash != state.teacher_sha256 {
            bail!(
                "the teacher kept with the checkpoint is not the one it was made with (SHA-256                  {hash}, the checkpoint names {}): the run cannot continue; start it again",
                state.teacher_sha256
            );
        }
        let (teacher, meta) = load_model_bytes(gpu, &state.plan.teacher, teacher_file)?;
        check_shape(&teacher, &data)?;
        let at = Position {
            teacher_steps: state.teacher_steps,
            guidance_stage: state.guidance_stage,
            update: state.update,
        };
        let distiller = restore_distiller(gpu, teacher, &state.plan, at, &file)?;
        Ok(MemoryDistill {
            plan: state.plan,
            distiller,
            teacher_meta: meta,
            teacher_hash: hash,
            teacher_file: teacher_file.to_vec(),
            data,
            started: Instant::now(),
            seconds_before: state.seconds,
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

    /// Seconds spent on the run, before and since a restore.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
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
            self.teacher_file = file.clone();
            self.distiller = Distiller::new(&gpu, teacher, halving_config(&self.plan, next));
        }
        Ok(Advanced::Halving {
            student: Student { steps, name, file },
            done: next.is_none(),
        })
    }
}

fn read_state(checkpoint: &[u8]) -> Result<(State, tensor_file::LoadedFile)> {
    let file = tensor_file::parse(
        std::path::Path::new("the distillation's checkpoint"),
        checkpoint,
    )?;
    let json = file
        .metadata
        .get(STATE_KEY)
        .context("the checkpoint is not an in-tab distillation's")?;
    let state: State = serde_json::from_str(json).context("unreadable distillation checkpoint")?;
    Ok((state, file))
}
