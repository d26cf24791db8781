//! A training run on disk: the directory layout, checkpoints, metrics and sample grids around a
//! [`Trainer`]. The CLI and the desktop app drive the same `TrainRun`.
//!
//! ```text
//! DIR/model.safetensors    EMA weights: the model to sample (written at every checkpoint)
//! DIR/state.safetensors    weights, Adam moments, EMA, with the step and configuration
//! DIR/metrics.jsonl        one JSON object per logged step
//! DIR/samples/step_N.png   DDIM sample grids from the EMA weights
//! ```
//!
//! Every file is written atomically; a run killed at any moment resumes from its last
//! checkpoint exactly as if never stopped (metrics logged after that checkpoint are dropped).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::model_file::{save_model, ModelMeta, FORMAT_VERSION};
use super::run_dir::RunKind;
use super::sampler::{SampleOptions, Sampler, SamplerKind};
use super::trainer::{TrainConfig, Trainer};
use crate::data::Dataset;
use crate::gpu::{Gpu, Precision};
use crate::nn::{tensor_file, StoreAs, UNetConfig};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "state.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
const STATE_KEY: &str = "fewstep_state";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunOptions {
    pub total_steps: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// 0: no sample grids during training.
    pub sample_every: u64,
    pub sample_steps: usize,
    /// The `--data` argument, so `--resume` reloads the same data.
    pub dataset: String,
    /// The command line that started the run.
    pub command: String,
}

/// What the state file's metadata holds besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    format_version: u32,
    arch: UNetConfig,
    train: TrainConfig,
    options: RunOptions,
    step: u64,
    wall_seconds: f64,
    /// What the run computes in (absent: f32, as every run before `--precision` existed).
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    precision: Precision,
    /// The GEMM kernel each problem bucket ran on (tensor/tuner), so a resumed run launches
    /// the same ones whatever the plan cache says by then; absent: the fixed rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel_plan: Option<std::collections::BTreeMap<String, String>>,
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricLine {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub images_per_s: f64,
    pub wall_s: f64,
}

pub struct TrainRun {
    pub trainer: Trainer,
    pub options: RunOptions,
    pub dir: PathBuf,
    data: Dataset,
    wall_before: f64,
    started: Instant,
    window: (Instant, u64),
    /// The folder, locked for this run while it lives.
    claim: super::run_dir::RunDir,
}

impl TrainRun {
    /// Starts a new run in `dir`, which must not already hold one.
    pub fn create(
        gpu: &Gpu,
        dir: &Path,
        data: Dataset,
        arch: UNetConfig,
        train: TrainConfig,
        options: RunOptions,
    ) -> Result<TrainRun> {
        // Checked before the lock (what the folder holds says more than "in use") and again
        // under it (another run may have started there since).
        Self::check_dir(dir, false)?;
        let claim = super::run_dir::RunDir::claim(dir, RunKind::Train, &options.command)?;
        Self::check_dir(dir, false)?;
        let trainer = Trainer::new(gpu, arch, train)?;
        super::sampler::check_batch(&trainer.model, trainer.cfg.batch, "--batch")
            .map_err(anyhow::Error::msg)?;
        // A fresh run starts a fresh metrics file. The directory itself is made by the first
        // write, so a start that fails before it leaves nothing behind.
        let _ = std::fs::remove_file(dir.join(METRICS_FILE));
        super::run_files::remove_stale_temps(dir);
        Ok(Self::wrap(trainer, options, dir, data, 0.0, claim))
    }

    /// Whether `dir` suits a new run (`resume` false: it holds no run and no model) or a resumed
    /// one (it holds a training state), with the same words whichever is asked; cheap, so
    /// commands check before loading data or opening the GPU.
    pub fn check_dir(dir: &Path, resume: bool) -> Result<()> {
        super::run_dir::check_kind(dir, RunKind::Train)?;
        let state = dir.join(STATE_FILE).exists();
        let model = dir.join(MODEL_FILE).exists();
        if !state && model {
            bail!("{}", model_without_state(dir));
        }
        if resume && !state {
            bail!(
                "{} holds no training state ({STATE_FILE} is missing); start a run there without --resume",
                dir.display()
            );
        }
        if !resume && state {
            bail!(
                "{} already holds a training run; pass --resume to continue it, or choose another --out",
                dir.display()
            );
        }
        Ok(())
    }

    fn wrap(
        trainer: Trainer,
        options: RunOptions,
        dir: &Path,
        data: Dataset,
        wall: f64,
        claim: super::run_dir::RunDir,
    ) -> Self {
        let now = Instant::now();
        TrainRun {
            claim,
            window: (now, trainer.step),
            trainer,
            options,
            dir: dir.to_path_buf(),
            data,
            wall_before: wall,
            started: now,
        }
    }

    /// Reads the run configuration stored in `dir` (to know which data to load before resuming).
    pub fn stored_options(dir: &Path) -> Result<(RunOptions, UNetConfig, TrainConfig, u64)> {
        let (state, _) = read_state(dir)?;
        Ok((state.options, state.arch, state.train, state.step))
    }

    /// Continues the run in `dir` from its last checkpoint; `total_steps` may extend it.
    pub fn resume(gpu: &Gpu, dir: &Path, data: Dataset, total_steps: Option<u64>) -> Result<Self> {
        Self::check_dir(dir, true)?;
        let (state, _) = read_state(dir)?;
        let claim = super::run_dir::RunDir::claim(dir, RunKind::Train, &state.options.command)?;
        // Read again under the lock: the checkpoint the run continues from.
        let (state, file) = read_state(dir)?;
        super::run_precision::continue_run(
            state.precision,
            state.kernel_plan.as_ref(),
            gpu,
            &dir.join(STATE_FILE),
        )?;
        let trainer = Trainer::restore(gpu, state.arch.clone(), state.train, state.step, &file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(STATE_FILE).display()))?;
        // The run may continue on another adapter than the one it started on.
        super::sampler::check_batch(&trainer.model, trainer.cfg.batch, "the run's --batch")
            .map_err(anyhow::Error::msg)?;
        let mut options = state.options;
        if let Some(t) = total_steps {
            options.total_steps = t;
        }
        truncate_metrics(&dir.join(METRICS_FILE), state.step)?;
        super::run_files::remove_stale_temps(dir);
        let run = Self::wrap(trainer, options, dir, data, state.wall_seconds, claim);
        if run.is_done() {
            // A kill between the last state and its model left the model one checkpoint behind
            // (or missing); nothing else would write it again.
            run.write_model()?;
        }
        Ok(run)
    }

    pub fn step(&self) -> u64 {
        self.trainer.step
    }
    /// The folder's recorded identity (a recipe records its stages' to recognise them).
    pub fn identity(&self) -> &super::run_dir::RunIdentity {
        self.claim.identity()
    }
    pub fn is_done(&self) -> bool {
        self.trainer.step >= self.options.total_steps
    }
    pub fn wall_seconds(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }

    /// One update, plus whatever logging, checkpointing and sampling falls due after it.
    /// Returns the metrics line when one was logged.
    pub fn advance(&mut self) -> Result<Option<MetricLine>> {
        self.trainer.step(&self.data);
        let s = self.trainer.step;
        if lose_device_at() == Some(s) {
            // Test hook (tests/suite/gpu_errors.rs): the device lost right after update `s`.
            self.trainer.gpu().destroy_device();
        }
        let o = self.options.clone();
        let due = |every: u64| every > 0 && s.is_multiple_of(every);
        let last = s >= o.total_steps;
        let mut line = None;
        if due(o.log_every) || last {
            line = Some(self.log()?);
        }
        if due(o.checkpoint_every) || last {
            self.checkpoint()?;
        }
        if due(o.sample_every) {
            self.sample_grid()?;
        }
        Ok(line)
    }

    fn log(&mut self) -> Result<MetricLine> {
        let loss = pollster::block_on(self.trainer.take_mean_loss())?.unwrap_or(f32::NAN);
        let s = self.trainer.step;
        if !loss.is_finite() {
            if self.dir.join(STATE_FILE).exists() {
                bail!(
                    "the loss became {loss} by step {s}; the last checkpoint in {} is intact. \
                     Lower --lr or raise --warmup, then start again or --resume",
                    self.dir.display()
                );
            }
            bail!(
                "the loss became {loss} by step {s}, before the first checkpoint, so nothing \
                 was saved in {}. Lower --lr or raise --warmup and start again",
                self.dir.display()
            );
        }
        let elapsed = self.window.0.elapsed().as_secs_f64();
        let images = (s - self.window.1) * self.trainer.cfg.batch as u64;
        self.window = (Instant::now(), s);
        let line = MetricLine {
            step: s,
            loss,
            lr: self.trainer.cfg.lr_at(s.saturating_sub(1)),
            images_per_s: images as f64 / elapsed.max(1e-9),
            wall_s: self.wall_seconds(),
        };
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        super::run_files::append_jsonl(&self.dir.join(METRICS_FILE), &line)?;
        Ok(line)
    }

    /// The EMA model's description, for the model file.
    pub fn model_meta(&self) -> ModelMeta {
        self.trainer
            .model_meta(&self.options.dataset, &self.options.command)
    }

    /// Writes state.safetensors, then model.safetensors (each atomically). The state goes
    /// first, so a run stopped between the two can always be resumed (the next checkpoint
    /// rewrites the model), and a model file without a state is never a run's leftover.
    pub fn checkpoint(&mut self) -> Result<()> {
        let tr = &self.trainer;
        let state = RunState {
            format_version: FORMAT_VERSION,
            arch: tr.model.net.config.clone(),
            train: tr.cfg.clone(),
            options: self.options.clone(),
            step: tr.step,
            wall_seconds: self.wall_seconds(),
            precision: tr.gpu().precision(),
            kernel_plan: crate::tensor::tuner::recorded(tr.gpu()),
        };
        let mut md = std::collections::HashMap::new();
        md.insert(STATE_KEY.to_string(), serde_json::to_string(&state)?);
        let tensors = pollster::block_on(tr.state_tensors())?;
        tensor_file::write(&self.dir.join(STATE_FILE), &tensors, md, StoreAs::F32)?;
        self.write_model()
    }

    /// model.safetensors from the EMA weights at the current update.
    fn write_model(&self) -> Result<()> {
        let ema = pollster::block_on(self.trainer.ema_tensors())?;
        save_model(
            &self.dir.join(MODEL_FILE),
            &self.model_meta(),
            &ema,
            StoreAs::F32,
        )?;
        Ok(())
    }

    /// A 4x4 grid of DDIM samples from the EMA weights, to samples/step_N.png; for a
    /// class-conditional model a row of 4 per class (the conditional model, no guidance).
    pub fn sample_grid(&self) -> Result<PathBuf> {
        let model = self.trainer.ema_model();
        let classes = model.net.config.classes;
        let count = if classes > 0 { 4 * classes } else { 16 };
        let opts = SampleOptions {
            steps: self.options.sample_steps.max(1),
            count,
            seed: 0,
            kind: SamplerKind::Ddim,
            clip: true,
        };
        let cond = crate::nn::NetCond {
            labels: (0..count)
                .filter(|_| classes > 0)
                .map(|i| Some((i / 4) as u32))
                .collect(),
            w: Vec::new(),
        };
        let x = Sampler::new(&model, opts).with_cond(cond).run(&model);
        let data = x.to_vec_blocking()?;
        let [c, h, w] = model.image_shape();
        let img = crate::image::image_grid(&data, count, c, h, w, 4, 2, 2);
        let path = self
            .dir
            .join("samples")
            .join(format!("step_{:08}.png", self.trainer.step));
        crate::image::save_png(&img, &path)?;
        Ok(path)
    }
}

/// The one answer, for both a new run and --resume, to a directory holding a model file but no
/// training state (a model copied there; checkpoints write the state first).
fn model_without_state(dir: &Path) -> String {
    format!(
        "{} holds {MODEL_FILE} but no training state ({STATE_FILE}), so it is not a run that \
         can be resumed, and starting a new run there would overwrite that model: move \
         {MODEL_FILE} elsewhere, or choose another --out",
        dir.display()
    )
}

/// Before `--resume` opens its device: continue in the precision the run in `dir` was made in
/// (see [`super::run_precision`]).
pub fn apply_recorded_precision(dir: &Path) {
    super::run_precision::apply_recorded(&dir.join(STATE_FILE), STATE_KEY);
}

fn read_state(dir: &Path) -> Result<(RunState, tensor_file::LoadedFile)> {
    let path = dir.join(STATE_FILE);
    TrainRun::check_dir(dir, true)?;
    let file = tensor_file::read(&path)?;
    let json = file
        .metadata
        .get(STATE_KEY)
        .with_context(|| format!("{} is not a fewstep training state", path.display()))?;
    let state: RunState = serde_json::from_str(json)
        .with_context(|| format!("{}: unreadable run description", path.display()))?;
    Ok((state, file))
}

/// Drops metric lines logged after `step` (they will be logged again by the resumed run).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    super::run_files::keep_jsonl(path, |m: &MetricLine| m.step <= step)
}

/// FEWSTEP_TEST_LOSE_DEVICE_AT=N: a test hook that destroys the device after update N of a
/// training run, a stand-in for a device the driver lost (wgpu's `Device::destroy`).
fn lose_device_at() -> Option<u64> {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var("FEWSTEP_TEST_LOSE_DEVICE_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}
