//! What a training or distillation run is asked to do, independent of who asks: `fewstep train`
//! and `fewstep distill` convert their flags into a [`TrainSpec`] / [`DistillSpec`], the app's
//! Train tab builds one from its widgets. Checking a spec and opening (or resuming) the run it
//! describes lives here, once, below both.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::distill_plan::{ReparamPlan, REPARAM_DEFAULT};
use super::distill_run::{DistillPlan, DistillRun};
use super::model_file::{import_diffusers, parse_model, ModelMeta};
use super::train_run::{RunOptions, TrainRun};
use super::{Parameterization, TrainConfig, Weighting};
use crate::data::{DataSpec, Dataset, Split};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;
use crate::tensor::AdamConfig;

pub use super::trainer::{classes_of, DEFAULT_UNCOND_PROB};

/// A teacher training (Algorithm 1): the settings of `fewstep train`, with its defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSpec {
    /// fashion-mnist\[:DIR\], mnist\[:DIR\], cifar10:DIR or images:DIR.
    pub data: String,
    /// tiny, small or cifar.
    pub preset: String,
    pub out: PathBuf,
    /// Total updates (with `resume`: continue up to this many).
    pub steps: u64,
    pub batch: usize,
    /// Peak learning rate; None: 4e-4 for tiny, 2e-4 otherwise.
    pub lr: Option<f32>,
    /// Warm-up updates; None: 200 for tiny, 1000 otherwise.
    pub warmup: Option<u64>,
    pub ema: f32,
    pub param: Parameterization,
    pub weighting: Weighting,
    pub grad_clip: f32,
    /// None: the preset's.
    pub dropout: Option<f32>,
    /// Image size for images:DIR.
    pub image_size: Option<usize>,
    /// Class conditioning: None: unconditional; Some(0): as many classes as the data has;
    /// Some(n): n classes.
    pub classes: Option<usize>,
    /// Label dropout (classifier-free guidance); None: 0.1 with classes.
    pub uncond_prob: Option<f32>,
    pub seed: u64,
    pub resume: bool,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// 0: no sample grids.
    pub sample_every: u64,
    pub sample_steps: usize,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            data: "fashion-mnist".into(),
            preset: "tiny".into(),
            out: PathBuf::new(),
            steps: 20_000,
            batch: 64,
            lr: None,
            warmup: None,
            ema: super::trainer::DEFAULT_EMA,
            param: Parameterization::V,
            weighting: Weighting::SnrTrunc,
            grad_clip: super::trainer::DEFAULT_GRAD_CLIP,
            dropout: None,
            image_size: None,
            classes: None,
            uncond_prob: None,
            seed: 0,
            resume: false,
            checkpoint_every: 500,
            log_every: 50,
            sample_every: 2000,
            sample_steps: 64,
        }
    }
}

impl TrainSpec {
    fn warmup_or_default(&self) -> u64 {
        self.warmup
            .unwrap_or_else(|| super::trainer::default_warmup(&self.preset))
    }

    /// Refuses settings that would train nothing or train on NaN, before anything is opened or
    /// written.
    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            self.steps >= 1,
            "--steps {}: a run needs at least 1 update (a useful tiny run takes thousands)",
            self.steps
        );
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        if let Some(lr) = self.lr {
            anyhow::ensure!(
                lr.is_finite() && lr > 0.0,
                "--lr {lr} is not a usable learning rate: give a positive number such as 2e-4"
            );
        }
        anyhow::ensure!(
            self.ema.is_finite() && (0.0..1.0).contains(&self.ema),
            "--ema {} is out of range: give a decay in [0, 1) such as 0.9999",
            self.ema
        );
        anyhow::ensure!(
            self.grad_clip.is_finite() && self.grad_clip >= 0.0,
            "--grad-clip {} is not usable: give a norm >= 0 (0 disables clipping)",
            self.grad_clip
        );
        if let Some(p) = self.uncond_prob {
            anyhow::ensure!(
                p.is_finite() && (0.0..1.0).contains(&p),
                "--uncond-prob {p} is out of range: give a probability in [0, 1) such as 0.1"
            );
            anyhow::ensure!(
                self.classes.is_some() || self.resume,
                "--uncond-prob drops class labels, but the model is unconditional: add --classes"
            );
        }
        if let Some(n) = self.classes {
            let max = crate::nn::config::limits::CLASSES.1;
            anyhow::ensure!(
                n <= max,
                "--classes {n}: fewstep conditions on at most {max} classes"
            );
        }
        let max = super::sampler::MAX_STEPS;
        anyhow::ensure!(
            (1..=max).contains(&self.sample_steps),
            "--sample-steps {} is out of range: give 1 to {max}",
            self.sample_steps
        );
        TrainRun::check_dir(&self.out, self.resume)
    }

    /// A warning for a new run far too short to learn anything (shorter than its warm-up).
    pub fn short_run_warning(&self) -> Option<String> {
        let warmup = self.warmup_or_default();
        (!self.resume && self.steps < warmup).then(|| {
            format!(
                "warning: --steps {} is shorter than the {warmup}-update learning-rate warm-up, \
                 so the model will sample noise; a tiny model needs a few thousand updates \
                 (--steps 3000 or more) to draw recognisable images",
                self.steps
            )
        })
    }

    /// Creates the run, or resumes it; `command` is what model files record as its origin.
    pub fn open(&self, gpu: &Gpu, command: String) -> Result<TrainRun> {
        self.check()?;
        if self.resume {
            let (opts, arch, _, step) = TrainRun::stored_options(&self.out)?;
            let data = load_data(&opts.dataset, arch.width.max(arch.height))?;
            eprintln!(
                "resuming {} at update {step} of {} ({} parameters, {} preset)",
                self.out.display(),
                self.steps,
                crate::nn::Layout::new(&arch)?.param_count(),
                arch.preset
            );
            return TrainRun::resume(gpu, &self.out, data, Some(self.steps));
        }
        anyhow::ensure!(
            crate::nn::PRESETS.contains(&self.preset.as_str()),
            "unknown preset `{}`: choose one of tiny, small, cifar",
            self.preset
        );
        let data = load_data(&self.data, self.image_size.unwrap_or(32))?;
        let mut arch = UNetConfig::preset(
            &self.preset,
            data.channels,
            data.height,
            data.width,
            self.param.heads(),
        )?;
        if let Some(d) = self.dropout {
            arch.dropout = d;
        }
        if let Some(n) = self.classes {
            let (classes, names) = classes_of(&data, n, &self.data)?;
            arch.classes = classes;
            arch.class_names = names;
        }
        arch.validate()?;
        let train = TrainConfig {
            param: self.param,
            weighting: self.weighting,
            batch: self.batch,
            lr: self.lr.unwrap_or(super::trainer::default_lr(&self.preset)),
            warmup: self.warmup_or_default(),
            ema_decay: self.ema,
            grad_clip: self.grad_clip,
            seed: self.seed,
            adam: AdamConfig::default(),
            uncond_prob: if self.classes.is_some() {
                self.uncond_prob.unwrap_or(DEFAULT_UNCOND_PROB)
            } else {
                0.0
            },
        };
        let options = RunOptions {
            total_steps: self.steps,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every.max(1),
            sample_every: self.sample_every,
            sample_steps: self.sample_steps,
            dataset: self.data.clone(),
            command,
        };
        let params = crate::nn::Layout::new(&arch)?.param_count();
        eprintln!(
            "training a {} U-Net ({params} parameters) on {} ({} images of {}x{}x{}), batch {}, \
             lr {} with {} warm-up updates, {} parameterization, on {}",
            arch.preset,
            self.data,
            data.len(),
            data.channels,
            data.height,
            data.width,
            train.batch,
            train.lr,
            train.warmup,
            train.param,
            gpu.info().name
        );
        TrainRun::create(gpu, &self.out, data, arch, train, options)
    }
}

/// A progressive distillation (Algorithm 2): the settings of `fewstep distill`. Every setting
/// but `teacher`, `out` and `resume` is optional so that a resume can tell a setting given again
/// from a default: one that differs from the stored run is refused instead of silently ignored.
/// The defaults are applied in [`DistillSpec::plan`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistillSpec {
    /// The teacher's model file (with `resume`: where it is now, if it moved).
    pub teacher: Option<PathBuf>,
    /// Default 1024.
    pub from_steps: Option<usize>,
    /// Default 1.
    pub to_steps: Option<usize>,
    /// Updates per halving; default 2000.
    pub updates: Option<u64>,
    /// Updates of the last two halvings; default 2 x updates.
    pub final_updates: Option<u64>,
    /// Default 64.
    pub batch: Option<usize>,
    /// Default 2e-4 for tiny, 1e-4 otherwise.
    pub lr: Option<f32>,
    /// Default: the data set named in the teacher's file.
    pub data: Option<String>,
    pub out: PathBuf,
    pub resume: bool,
    /// Default 0.
    pub seed: Option<u64>,
    /// Default 500.
    pub checkpoint_every: Option<u64>,
    /// Default 50.
    pub log_every: Option<u64>,
    /// Student EMA decay; None: no EMA.
    pub ema: Option<f32>,
    /// Guided distillation (stage 1, then halvings with w as an input).
    pub guided: bool,
    /// Guided: the w range [min, max]; default [0, 4] (Meng et al.'s for ImageNet 64x64).
    pub guidance_range: Option<[f32; 2]>,
    /// Guided: updates of stage 1; default: as many as a halving's.
    pub guidance_updates: Option<u64>,
    /// Updates of the re-parameterisation stage; default: as many as a halving's, for a
    /// teacher that predicts eps on a discrete (diffusers) schedule; none otherwise.
    pub reparam_updates: Option<u64>,
    /// What the students predict after re-parameterisation: v (default) or x.
    pub student_param: Option<Parameterization>,
}

impl DistillSpec {
    /// The plan of a new distillation: the settings given, the defaults for the rest.
    pub fn plan(
        &self,
        teacher: PathBuf,
        teacher_data: &str,
        preset: &str,
        command: String,
    ) -> DistillPlan {
        let updates = self.updates.unwrap_or(2000);
        DistillPlan {
            teacher,
            from_steps: self.from_steps.unwrap_or(1024),
            to_steps: self.to_steps.unwrap_or(1),
            updates,
            final_updates: self.final_updates.unwrap_or(2 * updates),
            batch: self.batch.unwrap_or(64),
            lr: self
                .lr
                .unwrap_or(if preset == "tiny" { 2e-4 } else { 1e-4 }),
            seed: self.seed.unwrap_or(0),
            checkpoint_every: self.checkpoint_every.unwrap_or(500),
            log_every: self.log_every.unwrap_or(50),
            dataset: self
                .data
                .clone()
                .unwrap_or_else(|| teacher_data.to_string()),
            command,
            ema: self.ema,
            guided: self.guided.then(|| {
                let [w_min, w_max] = self.guidance_range.unwrap_or([0.0, 4.0]);
                super::distill_plan::GuidedPlan {
                    w_min,
                    w_max,
                    updates: self.guidance_updates.unwrap_or(updates),
                }
            }),
            reparam: None,
        }
    }

    /// The re-parameterisation stage these settings ask for, or the teacher needs: an eps
    /// teacher on a discrete (diffusers) schedule gets one unless told otherwise.
    pub fn reparam_plan(&self, teacher: &ModelMeta, updates: u64) -> Option<ReparamPlan> {
        let needed = super::distill_plan::needs_reparam(teacher);
        (needed || self.reparam_updates.is_some() || self.student_param.is_some()).then(|| {
            ReparamPlan {
                param: self.student_param.unwrap_or(REPARAM_DEFAULT),
                updates: self.reparam_updates.unwrap_or(updates),
            }
        })
    }

    /// The plan of a new distillation of the teacher `meta` describes.
    fn plan_for(&self, teacher: PathBuf, meta: &ModelMeta, command: String) -> Result<DistillPlan> {
        if self.data.is_none() && meta.dataset.starts_with("diffusers:") {
            anyhow::bail!(
                "{} is a diffusers model, which names no data set: pass the data it was trained \
                 on with --data (fashion-mnist, mnist, cifar10:DIR or images:DIR)",
                teacher.display()
            );
        }
        let mut plan = self.plan(teacher, &meta.dataset, &meta.arch.preset, command);
        plan.reparam = self.reparam_plan(meta, plan.updates);
        if self.guided && self.reparam_updates.is_some() {
            anyhow::bail!(
                "--reparam-updates with --guided: one stage 1 both makes w an input and \
                 re-parameterises, and its length is --guidance-updates; drop --reparam-updates"
            );
        }
        plan.validate(meta)?;
        Ok(plan)
    }

    /// Refuses settings that would distill nothing, or a directory that would lose finished
    /// work, before the GPU is opened or anything is written.
    pub fn check(&self) -> Result<()> {
        if self.resume {
            DistillRun::check_kind(&self.out)?;
            let stored = DistillRun::stored(&self.out, self.teacher.as_deref())?;
            return self.refuse_changed_settings(&stored.plan);
        }
        self.refuse_guidance_flags_without_guided()?;
        let Some(teacher) = self.teacher.clone() else {
            anyhow::bail!("--teacher FILE is required (a model file from `fewstep train`)");
        };
        let meta = read_teacher(&teacher)?;
        self.plan_for(teacher, &meta, String::new())?;
        DistillRun::check_dir(&self.out)
    }

    /// Creates the distillation, or resumes it; `command` is what model files record.
    pub fn open(&self, gpu: &Gpu, command: String) -> Result<DistillRun> {
        if self.resume {
            let stored = DistillRun::stored(&self.out, self.teacher.as_deref())?;
            self.refuse_changed_settings(&stored.plan)?;
            let data = load_data(&stored.plan.dataset, stored.image_size)?;
            eprintln!(
                "resuming the distillation in {} at update {} of the {}-step student",
                self.out.display(),
                stored.update,
                stored.teacher_steps / 2
            );
            return DistillRun::resume_with_teacher(gpu, &self.out, data, self.teacher.as_deref());
        }
        self.refuse_guidance_flags_without_guided()?;
        let Some(teacher) = self.teacher.clone() else {
            anyhow::bail!("--teacher FILE is required (a model file from `fewstep train`)");
        };
        let meta = read_teacher(&teacher)?;
        // Stored absolute, so that a resume works from any working directory.
        let teacher = std::fs::canonicalize(&teacher).unwrap_or(teacher);
        let plan = self.plan_for(teacher, &meta, command)?;
        DistillRun::check_dir(&self.out)?;
        let data = load_data(&plan.dataset, meta.arch.width)?;
        eprintln!(
            "distilling {} ({}) from {} to {} steps: {} halvings on {}",
            plan.teacher.display(),
            meta.describe(),
            plan.from_steps,
            plan.to_steps,
            (plan.from_steps / plan.to_steps).trailing_zeros(),
            gpu.info().name
        );
        DistillRun::create(gpu, &self.out, plan, data)
    }

    /// `--guidance-range` and `--guidance-updates` shape guided distillation only: without
    /// `--guided` they would be silently ignored, so they are refused.
    fn refuse_guidance_flags_without_guided(&self) -> Result<()> {
        if self.guided {
            return Ok(());
        }
        for (flag, given) in [
            ("--guidance-range", self.guidance_range.is_some()),
            ("--guidance-updates", self.guidance_updates.is_some()),
        ] {
            anyhow::ensure!(
                !given,
                "{flag} applies to guided distillation only: add --guided (a class-conditional \
                 teacher), or drop {flag}"
            );
        }
        Ok(())
    }

    /// With `resume` the stored plan is what runs; a setting given with a different value would
    /// be silently ignored, so it is refused, naming the flag and the value the run started with.
    fn refuse_changed_settings(&self, stored: &DistillPlan) -> Result<()> {
        fn differs<T: PartialEq + std::fmt::Display>(
            flag: &str,
            given: Option<T>,
            stored: T,
        ) -> Option<String> {
            given
                .filter(|g| *g != stored)
                .map(|g| format!("{flag} {g} (the run started with {flag} {stored})"))
        }
        // --guided is a switch: given with --resume it must match; left out, the stored plan runs.
        let unguided = |flag: &str| {
            anyhow::anyhow!(
                "{flag}: the run in {} was started without --guided (an unguided \
                 distillation); resume it without {flag}",
                self.out.display()
            )
        };
        if stored.guided.is_none() {
            if self.guided {
                return Err(unguided("--guided"));
            }
            if self.guidance_range.is_some() {
                return Err(unguided("--guidance-range"));
            }
            if self.guidance_updates.is_some() {
                return Err(unguided("--guidance-updates"));
            }
        }
        if let (Some(g), Some(given)) = (stored.guided, self.guidance_range) {
            anyhow::ensure!(
                given == [g.w_min, g.w_max],
                "--resume continues {} with the settings it started with, but \
                 --guidance-range {},{} was given (the run started with --guidance-range {},{}): \
                 drop that flag to resume, or start a new distillation in another --out",
                self.out.display(),
                given[0],
                given[1],
                g.w_min,
                g.w_max
            );
        }
        let ema_given = self.ema.map(|e| e.to_string());
        let ema_stored = stored
            .ema
            .map_or_else(|| "none".to_string(), |e| e.to_string());
        let changed: Vec<String> = [
            differs("--from-steps", self.from_steps, stored.from_steps),
            differs("--to-steps", self.to_steps, stored.to_steps),
            differs("--updates", self.updates, stored.updates),
            differs("--final-updates", self.final_updates, stored.final_updates),
            differs("--batch", self.batch, stored.batch),
            differs("--lr", self.lr, stored.lr),
            differs("--data", self.data.as_deref(), stored.dataset.as_str()),
            differs("--seed", self.seed, stored.seed),
            differs(
                "--checkpoint-every",
                self.checkpoint_every,
                stored.checkpoint_every,
            ),
            differs("--log-every", self.log_every, stored.log_every),
            differs("--ema", ema_given.as_deref(), ema_stored.as_str()),
            differs(
                "--guidance-updates",
                self.guidance_updates,
                stored.guided.map_or(0, |g| g.updates),
            ),
            differs(
                "--reparam-updates",
                self.reparam_updates,
                stored.reparam.map_or(0, |r| r.updates),
            ),
            differs(
                "--student-param",
                self.student_param.map(|p| p.to_string()).as_deref(),
                stored
                    .reparam
                    .map_or("(none: no re-parameterisation)", |r| r.param.name()),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        refuse_changed(&self.out, "distillation", &changed)
    }
}

/// The one refusal of a `--resume` given flags whose values differ from the stored run's:
/// `changed` names each flag with both values; `what` is the kind of run (for "start a new
/// WHAT in another --out").
pub fn refuse_changed(out: &std::path::Path, what: &str, changed: &[String]) -> Result<()> {
    anyhow::ensure!(
        changed.is_empty(),
        "--resume continues {} with the settings it started with, but {} {} given: drop {} to \
         resume, or start a new {what} in another --out",
        out.display(),
        changed.join(", "),
        if changed.len() == 1 { "was" } else { "were" },
        if changed.len() == 1 {
            "that flag"
        } else {
            "those flags"
        },
    );
    Ok(())
}

/// A `--teacher` that is neither a file nor a bundled model's name, refused with the names.
/// The description of `--teacher`: a model file, a bundled model's name, or a diffusers folder.
fn read_teacher(teacher: &std::path::Path) -> Result<ModelMeta> {
    if teacher.is_dir() {
        return Ok(import_diffusers(teacher)?.0);
    }
    crate::input_file::check_model_exists("--teacher", teacher).map_err(anyhow::Error::msg)?;
    let bytes = crate::input_file::read_model(teacher)
        .map_err(|e| anyhow::anyhow!("cannot read --teacher {}: {e}", teacher.display()))?;
    Ok(parse_model(teacher, &bytes)?.0)
}

/// Loads the training split of a `--data` argument (`image_size` applies to images:DIR).
pub fn load_data(spec: &str, image_size: usize) -> Result<Dataset> {
    let parsed: DataSpec = spec.parse()?;
    let size = matches!(parsed, DataSpec::Images(_)).then_some(image_size);
    Dataset::load(&parsed, Split::Train, size).with_context(|| format!("loading --data {spec}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 37: on --resume of a guided distillation, a changed --guidance-updates was ignored.
    #[test]
    fn a_resume_refuses_changed_guidance_settings() {
        let started = DistillSpec {
            guided: true,
            guidance_updates: Some(5),
            guidance_range: Some([0.0, 2.0]),
            ..Default::default()
        };
        let stored = started.plan("t".into(), "fashion-mnist", "tiny", String::new());
        let again = |edit: fn(&mut DistillSpec)| {
            let mut spec = DistillSpec {
                resume: true,
                ..Default::default()
            };
            edit(&mut spec);
            spec.refuse_changed_settings(&stored)
        };
        assert!(again(|_| {}).is_ok());
        assert!(again(|s| s.guidance_updates = Some(5)).is_ok());
        let e = again(|s| s.guidance_updates = Some(7))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--guidance-updates 7 (the run started with --guidance-updates 5)"),
            "{e}"
        );
        let e = again(|s| s.guidance_range = Some([0.0, 4.0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--guidance-range 0,4"), "{e}");
        // An unguided run refuses every guided flag.
        let plain = DistillSpec::default().plan("t".into(), "fashion-mnist", "tiny", String::new());
        let mut spec = DistillSpec {
            resume: true,
            guidance_updates: Some(5),
            ..Default::default()
        };
        let e = spec
            .refuse_changed_settings(&plain)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resume it without --guidance-updates"), "{e}");
        spec.guidance_updates = None;
        spec.guided = true;
        assert!(spec.refuse_changed_settings(&plain).is_err());
    }
}
