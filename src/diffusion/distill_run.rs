//! A progressive distillation on disk: halvings from `from_steps` down to `to_steps`, one model
//! file per step count, and a resumable state for the halving in progress.
//!
//! ```text
//! DIR/steps-N.safetensors        the N-step student (metadata: steps, lineage)
//! DIR/distill-state.safetensors  the current halving's student and Adam moments
//! DIR/metrics.jsonl              one JSON object per logged update
//! ```
//!
//! Finished model files are never rewritten; a crash loses at most the updates since the last
//! checkpoint of the halving in progress.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::distill_plan::{check_shape, finished, first_distiller, halving_config};
pub use super::distill_plan::{model_file_name, DistillPlan, GUIDED_FILE, REPARAM_FILE};
use super::distiller::Distiller;
use super::model::Denoiser;
use super::model_file::{save_model, sha256_hex, ModelMeta};
use super::run_dir::RunKind;
use crate::data::Dataset;
use crate::gpu::{Gpu, Precision};
use crate::nn::{self, tensor_file, StoreAs};

pub const STATE_FILE: &str = "distill-state.safetensors";
pub use super::run_dir::IMPORTED_FILE;
pub const METRICS_FILE: &str = "metrics.jsonl";
const STATE_KEY: &str = "fewstep_distill_state";

/// The steps-N.safetensors files already in `dir`, named in one line; None when there are none.
fn finished_models(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            (n.starts_with("steps-") && n.ends_with(".safetensors"))
                || n == GUIDED_FILE
                || n == REPARAM_FILE
        })
        .collect();
    names.sort();
    (!names.is_empty()).then(|| names.join(", "))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    plan: DistillPlan,
    /// SHA-256 of the original teacher's file, to check a `--teacher` given with `--resume`
    /// (absent in states written before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    teacher_sha256: Option<String>,
    teacher_steps: usize,
    /// In stage 1 (guidance, re-parameterisation: the teacher is the original; `teacher_steps`
    /// is the first halving's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    guidance_stage: bool,
    update: u64,
    wall_seconds: f64,
    /// What the run computes in (absent: f32, as every run before `--precision` existed).
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    precision: Precision,
    /// The GEMM kernel each problem bucket ran on (tensor/tuner), so a resumed run launches
    /// the same ones whatever the plan cache says by then; absent: the fixed rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel_plan: Option<std::collections::BTreeMap<String, String>>,
}

impl State {
    /// Whether the original teacher teaches the stage in progress: stage 1 when the plan has
    /// one, else the first halving.
    fn original_teaches(&self) -> bool {
        if self.plan.has_stage1() {
            self.guidance_stage
        } else {
            self.teacher_steps == self.plan.from_steps
        }
    }
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DistillLine {
    pub student_steps: usize,
    pub update: u64,
    pub loss: f32,
    pub lr: f32,
    pub images_per_s: f64,
    pub wall_s: f64,
}

/// What a finished halving cost.
#[derive(Clone, Debug, Serialize)]
pub struct HalvingCost {
    pub student_steps: usize,
    pub updates: u64,
    pub seconds: f64,
}

pub struct DistillRun {
    pub plan: DistillPlan,
    pub dir: PathBuf,
    pub distiller: Distiller,
    teacher_meta: ModelMeta,
    teacher_hash: String,
    /// The hash of the original teacher (`plan.teacher`), when known.
    origin_hash: Option<String>,
    data: Dataset,
    halving_start: Instant,
    window: (Instant, u64),
    wall_before: f64,
    started: Instant,
    pub costs: Vec<HalvingCost>,
    /// The folder, locked for this run while it lives.
    claim: super::run_dir::RunDir,
}

fn load_teacher(gpu: &Gpu, path: &Path) -> Result<(Denoiser, ModelMeta, String)> {
    let bytes = crate::input_file::read_model(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (model, meta) = super::model_file::load_model_bytes(gpu, path, &bytes)?;
    Ok((model, meta, sha256_hex(&bytes)))
}

/// What a distillation directory holds in progress (read before resuming, to load the right data).
pub struct StoredDistill {
    pub plan: DistillPlan,
    /// The teacher of the halving in progress (its student has half as many steps).
    pub teacher_steps: usize,
    pub update: u64,
    /// The teacher's image width (the size image-folder data is loaded at).
    pub image_size: usize,
}

impl DistillRun {
    /// Refuses a folder that is not a distillation's (a training run, a recipe, a file).
    pub fn check_kind(dir: &Path) -> Result<()> {
        super::run_dir::check_kind(dir, RunKind::Distill)
    }

    /// Whether `dir` suits a new distillation: no run in progress, no finished students.
    pub fn check_dir(dir: &Path) -> Result<()> {
        super::run_dir::check_kind(dir, RunKind::Distill)?;
        if dir.join(STATE_FILE).exists() {
            bail!(
                "{} holds a distillation in progress; pass --resume to continue it, or choose another --out",
                dir.display()
            );
        }
        // Finished students are the user's work: a new distillation never replaces them.
        if let Some(found) = finished_models(dir) {
            bail!(
                "{} already holds finished students ({found}); fewstep does not replace them: \
                 choose another --out, or move those files away first",
                dir.display()
            );
        }
        Ok(())
    }

    pub fn create(
        gpu: &Gpu,
        dir: &Path,
        mut plan: DistillPlan,
        data: Dataset,
    ) -> Result<DistillRun> {
        // Checked before the lock (what the folder holds says more than "in use") and again
        // under it (another run may have started there since).
        Self::check_dir(dir)?;
        let claim = super::run_dir::RunDir::claim(dir, RunKind::Distill, &plan.command)?;
        Self::check_dir(dir)?;
        if plan.teacher.is_dir() {
            // A diffusers folder: its import, written once into the run, is the teacher from
            // here on (hashed, resumed from, and independent of later edits to the folder).
            let (mut meta, tensors) = super::model_file::import_diffusers(&plan.teacher)?;
            meta.dataset = plan.dataset.clone();
            let copy = dir.join(IMPORTED_FILE);
            save_model(&copy, &meta, &tensors, StoreAs::F32)?;
            plan.teacher = std::fs::canonicalize(&copy).unwrap_or(copy);
        }
        let (teacher, meta, hash) = load_teacher(gpu, &plan.teacher)?;
        plan.validate(&meta)?;
        check_shape(&teacher, &data)?;
        super::sampler::check_batch(&teacher, plan.batch, "--batch").map_err(anyhow::Error::msg)?;
        let _ = std::fs::remove_file(dir.join(METRICS_FILE));
        super::run_files::remove_stale_temps(dir);
        let distiller = first_distiller(gpu, teacher, &plan);
        let origin = Some(hash.clone());
        Ok(Self::wrap(
            plan,
            dir,
            distiller,
            (meta, hash, origin),
            data,
            0.0,
            claim,
        ))
    }

    fn wrap(
        plan: DistillPlan,
        dir: &Path,
        distiller: Distiller,
        (teacher_meta, teacher_hash, origin_hash): (ModelMeta, String, Option<String>),
        data: Dataset,
        wall: f64,
        claim: super::run_dir::RunDir,
    ) -> DistillRun {
        let now = Instant::now();
        DistillRun {
            claim,
            window: (now, distiller.update),
            plan,
            dir: dir.to_path_buf(),
            distiller,
            teacher_meta,
            teacher_hash,
            origin_hash,
            data,
            halving_start: now,
            wall_before: wall,
            started: now,
            costs: Vec::new(),
        }
    }

    /// The plan stored in a directory (to load the right data before resuming).
    pub fn stored_plan(dir: &Path) -> Result<DistillPlan> {
        Ok(read_state(dir)?.0.plan)
    }

    /// What `dir` holds in progress, with the teacher found where `teacher` says (when given)
    /// or where the run started.
    pub fn stored(dir: &Path, teacher: Option<&Path>) -> Result<StoredDistill> {
        let (state, _) = read_state(dir)?;
        let path = halving_teacher(dir, &state, teacher);
        let bytes = crate::input_file::read_model(&path)
            .map_err(|e| unreadable_teacher(&path, &state, e))?;
        let (meta, _) = super::model_file::parse_model(&path, &bytes)?;
        Ok(StoredDistill {
            image_size: meta.arch.width,
            plan: state.plan,
            teacher_steps: state.teacher_steps,
            update: state.update,
        })
    }

    pub fn resume(gpu: &Gpu, dir: &Path, data: Dataset) -> Result<DistillRun> {
        Self::resume_with_teacher(gpu, dir, data, None)
    }

    /// Continues the distillation in `dir`; `teacher` says where the original teacher is now
    /// (it must be the same file: its hash is checked), else the stored path is used.
    pub fn resume_with_teacher(
        gpu: &Gpu,
        dir: &Path,
        data: Dataset,
        teacher: Option<&Path>,
    ) -> Result<DistillRun> {
        super::run_dir::check_kind(dir, RunKind::Distill)?;
        let (state, _) = read_state(dir)?;
        let claim = super::run_dir::RunDir::claim(dir, RunKind::Distill, &state.plan.command)?;
        // Read again under the lock: the checkpoint the run continues from.
        let (state, file) = read_state(dir)?;
        super::run_precision::continue_run(
            state.precision,
            state.kernel_plan.as_ref(),
            gpu,
            &dir.join(STATE_FILE),
        )?;
        let teacher_path = halving_teacher(dir, &state, teacher);
        let mut plan = state.plan.clone();
        let bytes = crate::input_file::read_model(&teacher_path)
            .map_err(|e| unreadable_teacher(&teacher_path, &state, e))?;
        let hash = sha256_hex(&bytes);
        // Whether the original teacher teaches now (stage 1 of a guided run, else the first
        // halving).
        let first_halving = state.original_teaches();
        if first_halving {
            if let Some(want) = &state.teacher_sha256 {
                if hash != *want {
                    bail!(
                        "{} is not the teacher this distillation started from (its SHA-256 \
                         differs from the one stored in {}): pass the original teacher file",
                        teacher_path.display(),
                        dir.join(STATE_FILE).display()
                    );
                }
            }
        }
        let origin = if first_halving {
            Some(hash.clone())
        } else {
            state.teacher_sha256.clone()
        };
        if let Some(moved) = teacher.filter(|_| first_halving) {
            // Later checkpoints remember where the teacher is now.
            plan.teacher = std::fs::canonicalize(moved).unwrap_or_else(|_| moved.to_path_buf());
        }
        let (teacher, meta) = super::model_file::load_model_bytes(gpu, &teacher_path, &bytes)?;
        check_shape(&teacher, &data)?;
        let at = super::distill_state::Position {
            teacher_steps: state.teacher_steps,
            guidance_stage: state.guidance_stage,
            update: state.update,
        };
        let d = super::distill_state::restore_distiller(gpu, teacher, &plan, at, &file)?;
        truncate_metrics(
            &dir.join(METRICS_FILE),
            if state.guidance_stage {
                0
            } else {
                state.teacher_steps / 2
            },
            state.update,
        )?;
        super::run_files::remove_stale_temps(dir);
        Ok(Self::wrap(
            plan,
            dir,
            d,
            (meta, hash, origin),
            data,
            state.wall_seconds,
            claim,
        ))
    }

    /// What the teacher of the stage in progress predicts.
    pub fn teacher_parameterization(&self) -> super::Parameterization {
        self.teacher_meta.parameterization
    }

    pub fn wall_seconds(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }
    /// The folder's recorded identity (a recipe records its stages' to recognise them).
    pub fn identity(&self) -> &super::run_dir::RunIdentity {
        self.claim.identity()
    }
    /// The step count of the student being trained (in stage 1 of a guided run: the first
    /// halving's).
    pub fn student_steps(&self) -> usize {
        self.distiller.cfg.student_steps()
    }
    /// Whether stage 1 of guided distillation is in progress.
    pub fn in_guidance_stage(&self) -> bool {
        self.distiller.cfg.guidance_stage
    }
    /// The student's step count, 0 in stage 1 (what metrics lines and costs record).
    pub fn phase(&self) -> usize {
        self.distiller.cfg.phase()
    }
    pub fn is_done(&self) -> bool {
        self.distiller.is_done()
            && !self.in_guidance_stage()
            && self.student_steps() <= self.plan.to_steps
    }
    /// Updates finished before the stage or halving in progress.
    pub fn updates_before(&self) -> u64 {
        self.plan.updates_before_phase(self.phase())
    }

    /// One update (or, at the end of a halving, writing the student and starting the next).
    /// Returns a metrics line when one was logged.
    pub fn advance(&mut self) -> Result<Option<DistillLine>> {
        if self.distiller.is_done() {
            self.finish_halving()?;
            return Ok(None);
        }
        self.distiller.step(&self.data);
        let u = self.distiller.update;
        let last = self.distiller.is_done();
        let mut line = None;
        if u.is_multiple_of(self.plan.log_every.max(1)) || last {
            line = Some(self.log()?);
        }
        if last {
            self.finish_halving()?;
        } else if self.plan.checkpoint_every > 0 && u.is_multiple_of(self.plan.checkpoint_every) {
            self.checkpoint()?;
        }
        Ok(line)
    }

    fn log(&mut self) -> Result<DistillLine> {
        let loss = pollster::block_on(self.distiller.take_mean_loss())?.unwrap_or(f32::NAN);
        let u = self.distiller.update;
        if !loss.is_finite() {
            bail!(
                "the distillation loss became {loss} at update {u} of the {}-step student; finished \
                 model files in {} are intact. Lower --lr and run again",
                self.student_steps(),
                self.dir.display()
            );
        }
        let elapsed = self.window.0.elapsed().as_secs_f64();
        let images = u.saturating_sub(self.window.1) * self.plan.batch as u64;
        self.window = (Instant::now(), u);
        let line = DistillLine {
            student_steps: self.phase(),
            update: u,
            loss,
            lr: self.distiller.cfg.lr_at(u.saturating_sub(1)),
            images_per_s: images as f64 / elapsed.max(1e-9),
            wall_s: self.wall_seconds(),
        };
        super::run_files::append_jsonl(&self.dir.join(METRICS_FILE), &line)?;
        Ok(line)
    }

    /// Saves the halving in progress (what `--resume` reads).
    pub fn checkpoint(&self) -> Result<()> {
        let d = &self.distiller;
        let tensors = pollster::block_on(super::distill_state::halving_tensors(d))?;
        let state = State {
            plan: self.plan.clone(),
            teacher_sha256: self.origin_hash.clone(),
            teacher_steps: d.cfg.teacher_steps,
            guidance_stage: d.cfg.guidance_stage,
            update: d.update,
            wall_seconds: self.wall_seconds(),
            precision: d.gpu().precision(),
            kernel_plan: crate::tensor::tuner::recorded(d.gpu()),
        };
        let mut md = std::collections::HashMap::new();
        md.insert(STATE_KEY.to_string(), serde_json::to_string(&state)?);
        tensor_file::write(&self.dir.join(STATE_FILE), &tensors, md, StoreAs::F32)?;
        Ok(())
    }

    /// Writes the finished student (its EMA, with `--ema`), then makes it the next halving's
    /// teacher.
    fn finish_halving(&mut self) -> Result<()> {
        let phase = self.phase();
        let d = &self.distiller;
        let weights = pollster::block_on(nn::read_tensors(
            &d.student.net.layout.specs,
            d.result_params(),
            "",
        ))?;
        let (name, meta, next) = finished(d, &self.teacher_meta, &self.teacher_hash, &self.plan);
        let path = self.dir.join(name);
        save_model(&path, &meta, &weights, StoreAs::F32)?;
        self.costs.push(HalvingCost {
            student_steps: phase,
            updates: d.cfg.updates,
            seconds: self.halving_start.elapsed().as_secs_f64(),
        });
        let Some(steps) = next else {
            let _ = std::fs::remove_file(self.dir.join(STATE_FILE));
            return Ok(());
        };
        // The next halving: this student is the teacher; a fresh student and optimizer.
        let gpu = self.distiller.gpu().clone();
        let (teacher, meta, hash) = load_teacher(&gpu, &path)?;
        self.teacher_meta = meta;
        self.teacher_hash = hash;
        self.distiller = Distiller::new(&gpu, teacher, halving_config(&self.plan, steps));
        self.halving_start = Instant::now();
        self.window = (Instant::now(), 0);
        self.checkpoint()
    }
}

/// The teacher of the halving in progress: the original (moved to `teacher`, when given), or
/// the previous student in `dir`.
fn halving_teacher(dir: &Path, state: &State, teacher: Option<&Path>) -> PathBuf {
    let original = state.original_teaches();
    if state.plan.has_stage1() && !original && state.teacher_steps == state.plan.from_steps {
        dir.join(state.plan.stage1_file())
    } else if original {
        teacher.map_or_else(|| state.plan.teacher.clone(), Path::to_path_buf)
    } else {
        dir.join(model_file_name(state.teacher_steps))
    }
}

fn unreadable_teacher(path: &Path, state: &State, e: std::io::Error) -> anyhow::Error {
    if state.original_teaches() {
        anyhow::anyhow!(
            "cannot read the teacher {}: {e}; if it has moved, pass --teacher FILE with --resume",
            path.display()
        )
    } else {
        anyhow::anyhow!(
            "cannot read {} (the teacher of the halving in progress): {e}",
            path.display()
        )
    }
}

/// Before `--resume` opens its device: continue in the precision the run in `dir` was made in
/// (see [`super::run_precision`]).
pub fn apply_recorded_precision(dir: &Path) {
    super::run_precision::apply_recorded(&dir.join(STATE_FILE), STATE_KEY);
}

fn read_state(dir: &Path) -> Result<(State, tensor_file::LoadedFile)> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        bail!(
            "{} holds no distillation in progress ({STATE_FILE} is missing): it finished, or never \
             started; run without --resume",
            dir.display()
        );
    }
    let file = tensor_file::read(&path)?;
    let json = file
        .metadata
        .get(STATE_KEY)
        .with_context(|| format!("{} is not a fewstep distillation state", path.display()))?;
    let state: State = serde_json::from_str(json)
        .with_context(|| format!("{}: unreadable distillation state", path.display()))?;
    Ok((state, file))
}

/// Drops lines of the halving in progress logged after `update`.
fn truncate_metrics(path: &Path, student_steps: usize, update: u64) -> Result<()> {
    super::run_files::keep_jsonl(path, |m: &DistillLine| {
        m.student_steps != student_steps || m.update <= update
    })
}
