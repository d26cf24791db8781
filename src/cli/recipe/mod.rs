//! `fewstep recipe`: the whole recipe in one command. Trains a teacher, distills it down to one
//! step, evaluates every step count (distilled vs the teacher's plain DDIM), writes f16 copies and
//! a bundle folder with a manifest.json (what `bundled.rs` and the web page take as they are).
//!
//! ```text
//! DIR/recipe.json           settings, the commands, which stages are done, the eval rows
//! DIR/teacher/              the `fewstep train` run (model.safetensors, state, metrics)
//! DIR/distill/              the `fewstep distill` run (steps-N.safetensors, ...)
//! DIR/bundle/               NAME-teacher.f16.safetensors, NAME-steps-N.f16.safetensors,
//!                           manifest.json
//! ```
//!
//! Each stage records its completion in recipe.json; `--resume` continues where a run stopped
//! (the train and distill stages from their last checkpoint).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::bundled::{Figures, Manifest, ManifestEval, ManifestModel};
use crate::data::Dataset;
use crate::diffusion::distill_run::model_file_name;
use crate::diffusion::model_file::sha256_hex;
use crate::diffusion::run_dir::{RunDir, RunKind};
use crate::diffusion::train_run::MODEL_FILE;
use crate::diffusion::{
    DistillConfig, Distiller, Parameterization, SampleOptions, Sampler, SamplerKind, TrainConfig,
    Trainer, Weighting,
};
use crate::eval::metrics::{EvalRow, EvalSettings};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;
use crate::tensor::AdamConfig;

mod bundle;
mod commands;
mod estimate;
mod settings;
mod stages;

use bundle::{fill_seconds, write_bundle, write_manifest};
pub use commands::Commands;
use commands::{full, shown};
use estimate::human;
pub use estimate::Costs;
use settings::{name_for, save_state};
pub use settings::{read_state, utc_now, RecipeSettings, RecipeState};

pub const RECIPE_FILE: &str = "recipe.json";
pub const MANIFEST_FILE: &str = "manifest.json";
const STAGES: [&str; 4] = ["train", "distill", "eval", "bundle"];

#[derive(Args, Debug)]
pub struct RecipeArgs {
    /// Directory of the recipe: teacher/, distill/, bundle/ (the result) and recipe.json.
    #[arg(long)]
    out: PathBuf,
    /// quick: a tiny model in minutes, even on a CPU (tests, a first look); bundle: what made
    /// the bundled models (small teacher, 7,300 updates of batch 128; 64 -> 1, 400 updates of
    /// batch 64 per halving; eval on 500 images; a GPU: about 7 minutes on an H100).
    #[arg(long, default_value = "quick")]
    preset: String,
    /// Continue the recipe in --out where it stopped (its stored settings are used).
    #[arg(long)]
    resume: bool,
    /// Training data [default: fashion-mnist].
    #[arg(long)]
    data: Option<String>,
    /// Image size for images:DIR data (as `fewstep train --image-size`).
    #[arg(long)]
    image_size: Option<usize>,
    /// Teacher training updates [default: the preset's].
    #[arg(long)]
    train_steps: Option<u64>,
    /// Distillation updates per halving [default: the preset's].
    #[arg(long)]
    updates: Option<u64>,
    /// The teacher's sampling steps, where distillation starts [default: the preset's].
    #[arg(long)]
    from_steps: Option<usize>,
    /// Images per eval row for the distance [default: the preset's].
    #[arg(long)]
    samples: Option<usize>,
    /// Student EMA decay during distillation (`fewstep distill --ema`) [default: none].
    #[arg(long)]
    ema: Option<f32>,
    /// The evaluation classifier [default: assets/fmnist-classifier.safetensors for
    /// Fashion-MNIST, if present]; without one the eval has no distance.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Name prefix of the bundled files [default: from the data set, fmnist for Fashion-MNIST].
    #[arg(long)]
    name: Option<String>,
    /// One seed for every stage [default: the preset's, 0 for both]; 0 is a seed like any other.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this stage (train, distill or eval); --resume continues.
    #[arg(long)]
    stop_after: Option<String>,
    /// The guided family (docs/guidance.md): a class-conditional teacher trained
    /// with label dropout (`train --classes --uncond-prob 0.1`; labelled data), `distill
    /// --guided` (stage 1, then the halvings with w as an input), eval at w = 0, 1, 2, 4 (the
    /// manifest shows w = 2).
    #[arg(long)]
    guided: bool,
    /// The flags typed on the command line (filled after parsing): with --resume each must
    /// agree with the stored recipe.
    #[arg(skip)]
    pub given: Vec<String>,
}

fn settings_from(args: &RecipeArgs) -> Result<RecipeSettings> {
    let mut s = RecipeSettings::preset(&args.preset)?;
    if let Some(d) = &args.data {
        s.data = d.clone();
        s.name = name_for(d);
    }
    s.image_size = args.image_size;
    if let Some(n) = &args.name {
        anyhow::ensure!(
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "--name {n}: use letters, digits, - and _"
        );
        s.name = n.clone();
    }
    if let Some(n) = args.train_steps {
        s.train_steps = n;
    }
    if let Some(n) = args.updates {
        s.updates = n;
        s.final_updates = n;
    }
    if let Some(n) = args.from_steps {
        anyhow::ensure!(
            n >= 2 && n.is_power_of_two(),
            "--from-steps {n} is not a power of 2 (>= 2)"
        );
        s.from_steps = n;
        s.teacher_distance_steps = s.teacher_distance_steps.max(n);
    }
    if let Some(n) = args.samples {
        anyhow::ensure!(n >= 2, "--samples must be at least 2");
        s.eval_samples = n;
        s.psnr_samples = s.psnr_samples.min(n);
    }
    if let Some(e) = args.ema {
        anyhow::ensure!(
            e.is_finite() && (0.0..1.0).contains(&e),
            "--ema {e} is out of range: give a decay in [0, 1) such as 0.999"
        );
        s.distill_ema = Some(e);
    }
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    s.guided = args.guided;
    s.classifier = match &args.classifier {
        Some(c) => Some(c.display().to_string()),
        // The bundled classifier (compiled in: found from any folder).
        None => s
            .data
            .starts_with("fashion-mnist")
            .then(|| "assets/fmnist-classifier.safetensors".to_string()),
    };
    Ok(s)
}

pub fn run(args: RecipeArgs) -> Result<()> {
    let dir = args.out.clone();
    let fresh = check_args(&args)?;
    let gpu = super::open_gpu()?;
    let adapter = format!("{} ({:?})", gpu.info().name, gpu.info().backend);
    let _claim = RunDir::claim(&dir, RunKind::Recipe, "fewstep recipe")?;
    let fresh_settings = fresh.as_ref().map(|(s, _)| s.clone());
    let mut state = open_state(&dir, fresh_settings, &adapter)?;
    let commands = Commands::new(&state.settings, &dir);
    stages::print_plan(&gpu, &adapter, &dir, &state, fresh.map(|(_, d)| d))?;

    // Each stage not yet done runs, records its seconds, and may be where `--stop-after` ends.
    if !state.done.contains_key("train") {
        let seconds = stages::train(&gpu, &dir, &mut state, &commands)?;
        if finish_stage(&args, &dir, &mut state, "train", seconds)? {
            return Ok(());
        }
    }
    if !state.done.contains_key("distill") {
        let seconds = stages::distill(&gpu, &dir, &mut state, &commands)?;
        if finish_stage(&args, &dir, &mut state, "distill", seconds)? {
            return Ok(());
        }
    }
    if !state.done.contains_key("eval") {
        let started = Instant::now();
        state.eval_rows = stages::eval(&gpu, &dir, &state.settings)?;
        let seconds = started.elapsed().as_secs_f64();
        if finish_stage(&args, &dir, &mut state, "eval", seconds)? {
            return Ok(());
        }
    }
    if !state.done.contains_key("bundle") {
        stages::bundle(&dir, &mut state, &commands, &adapter)?;
    }
    print_done(&dir, &state);
    Ok(())
}

/// The checks that need no GPU, before anything is written: a recipe that cannot start leaves
/// no folder behind. A new recipe's settings and data come back; a resumed one reads its own.
fn check_args(args: &RecipeArgs) -> Result<Option<(RecipeSettings, Dataset)>> {
    if let Some(st) = &args.stop_after {
        anyhow::ensure!(
            ["train", "distill", "eval"].contains(&st.as_str()),
            "--stop-after {st}: give train, distill or eval"
        );
    }
    let dir = &args.out;
    crate::diffusion::run_dir::check_kind(dir, RunKind::Recipe)?;
    if args.resume {
        let stored = read_state(dir)?;
        refuse_changed_on_resume(args, &stored.settings)?;
        check_stage_folders(dir, &stored)?;
        return Ok(None);
    }
    if dir.join(RECIPE_FILE).exists() {
        bail!(
            "{} already holds a recipe; pass --resume to continue it, or choose another --out",
            dir.display()
        );
    }
    let s = settings_from(args)?;
    let data = crate::diffusion::run_spec::load_data(&s.data, s.image_size.unwrap_or(32))?;
    Ok(Some((s, data)))
}

/// Under the folder's lock: the stored recipe (checked again), or a new one written.
fn open_state(dir: &Path, fresh: Option<RecipeSettings>, adapter: &str) -> Result<RecipeState> {
    let Some(settings) = fresh else {
        let st = read_state(dir)?;
        check_stage_folders(dir, &st)?;
        let done: Vec<&str> = STAGES
            .iter()
            .filter(|k| st.done.contains_key(**k))
            .copied()
            .collect();
        eprintln!(
            "resuming the `{}` recipe in {} (done: {})",
            st.settings.preset,
            dir.display(),
            if done.is_empty() {
                "nothing yet".to_string()
            } else {
                done.join(", ")
            }
        );
        return Ok(st);
    };
    let st = RecipeState {
        settings,
        adapter: adapter.to_string(),
        started: utc_now(),
        done: BTreeMap::new(),
        eval_rows: vec![],
        stage_ids: BTreeMap::new(),
    };
    save_state(dir, &st)?;
    Ok(st)
}

/// Records a finished stage; true when `--stop-after` names it (the run ends there).
fn finish_stage(
    args: &RecipeArgs,
    dir: &Path,
    state: &mut RecipeState,
    stage: &str,
    seconds: f64,
) -> Result<bool> {
    state.done.insert(stage.into(), seconds);
    save_state(dir, state)?;
    let stop = args.stop_after.as_deref() == Some(stage);
    if stop {
        eprintln!(
            "stopped after {stage}, as asked; continue with: fewstep recipe --resume --out {}",
            dir.display()
        );
    }
    Ok(stop)
}

fn print_done(dir: &Path, state: &RecipeState) {
    let total: f64 = state.done.values().sum();
    eprintln!(
        "done in {} (stage times: {}); the bundle: {}",
        human(total),
        state
            .done
            .iter()
            .map(|(k, v)| format!("{k} {}", human(*v)))
            .collect::<Vec<_>>()
            .join(", "),
        dir.join("bundle").join(MANIFEST_FILE).display()
    );
}

/// Records the identity of a stage folder the recipe made (the first time it opens it).
fn record_stage(dir: &Path, state: &mut RecipeState, folder: &str, id: &str) -> Result<()> {
    if state.stage_ids.get(folder).map(String::as_str) != Some(id) {
        state.stage_ids.insert(folder.to_string(), id.to_string());
        save_state(dir, state)?;
    }
    Ok(())
}

/// A resumed recipe works on its own stage folders only: one whose recorded identity is not the
/// one this recipe made (a copy of another recipe's, or a folder put there by hand) is refused
/// before anything is read from it.
fn check_stage_folders(dir: &Path, state: &RecipeState) -> Result<()> {
    for (folder, kind) in [("teacher", RunKind::Train), ("distill", RunKind::Distill)] {
        let sub = dir.join(folder);
        crate::diffusion::run_dir::check_kind(&sub, kind)?;
        let Some(want) = state.stage_ids.get(folder) else {
            continue;
        };
        let found = crate::diffusion::run_dir::identity(&sub)?;
        if found.as_ref().map(|i| &i.id) != Some(want) {
            bail!(
                "{} is not the {folder} folder this recipe made (it records {}, the recipe \
                 recorded run {want} in {}): it was replaced or copied from elsewhere. Put the \
                 recipe's own folder back, or start a new recipe in another --out",
                sub.display(),
                found
                    .map(|i| format!("run {}", i.id))
                    .unwrap_or_else(|| "no run identity".into()),
                dir.join(RECIPE_FILE).display()
            );
        }
    }
    Ok(())
}

/// On `--resume` the stored settings run; a typed flag that differs from them is refused, naming
/// the flag and both values. `--stop-after` applies.
fn refuse_changed_on_resume(args: &RecipeArgs, s: &RecipeSettings) -> Result<()> {
    fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    }
    let mut changed = Vec::new();
    for id in &args.given {
        let (given, stored): (String, String) = match id.as_str() {
            "out" | "resume" | "stop_after" | "precision" => continue,
            "preset" => (args.preset.clone(), s.preset.clone()),
            "data" => (opt(&args.data), s.data.clone()),
            "image_size" => (opt(&args.image_size), opt(&s.image_size)),
            "train_steps" => (opt(&args.train_steps), s.train_steps.to_string()),
            "updates" => (opt(&args.updates), s.updates.to_string()),
            "from_steps" => (opt(&args.from_steps), s.from_steps.to_string()),
            "samples" => (opt(&args.samples), s.eval_samples.to_string()),
            "ema" => (opt(&args.ema), opt(&s.distill_ema)),
            "classifier" => (
                opt(&args.classifier.as_ref().map(|c| c.display().to_string())),
                opt(&s.classifier),
            ),
            "name" => (opt(&args.name), s.name.clone()),
            "seed" => (opt(&args.seed), s.seed.to_string()),
            "guided" => (args.guided.to_string(), s.guided.to_string()),
            other => bail!(
                "--{} cannot be checked against the stored recipe on --resume; drop it",
                other.replace('_', "-")
            ),
        };
        if given != stored {
            let flag = format!("--{}", id.replace('_', "-"));
            changed.push(if flag == "--guided" {
                "--guided (the recipe started without it)".to_string()
            } else {
                format!("{flag} {given} (the recipe started with {flag} {stored})")
            });
        }
    }
    crate::diffusion::run_spec::refuse_changed(&args.out, "recipe", &changed)
}

fn bar(len: u64, prefix: &str) -> ProgressBar {
    let b = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len}  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("template"),
    );
    b.set_prefix(prefix.to_string());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RecipeArgs,
    }

    fn settings(words: &[&str]) -> RecipeSettings {
        let cli = Cli::parse_from(["recipe", "--out", "unused"].iter().chain(words));
        settings_from(&cli.args).unwrap()
    }

    /// `--seed 0` was once taken for "no seed given", leaving the bundle preset's seed 1.
    #[test]
    fn seed_zero_is_a_seed_like_any_other() {
        assert_eq!(settings(&["--preset", "bundle"]).seed, 1);
        assert_eq!(settings(&["--preset", "bundle", "--seed", "0"]).seed, 0);
        assert_eq!(settings(&["--preset", "quick", "--seed", "7"]).seed, 7);
    }
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn utc_now_is_rfc3339_to_the_second() {
        let t = super::utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
