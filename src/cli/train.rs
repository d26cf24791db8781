//! `fewstep train`: Algorithm 1 on a data set, into a run directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{DataSpec, Dataset, Split};
use crate::diffusion::train_run::{RunOptions, TrainRun, MODEL_FILE};
use crate::diffusion::{Parameterization, TrainConfig, Weighting};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;
use crate::tensor::AdamConfig;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data: fashion-mnist[:DIR], mnist[:DIR], cifar10:DIR (the binary batches) or
    /// images:DIR (PNG/JPEG files, centre-cropped and resized to --image-size).
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Network size: tiny (~0.2M parameters, for CPUs and tests), small (~1.6M, the shipped
    /// Fashion-MNIST models), cifar (~36M, DDPM's CIFAR-10 net; a real GPU).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Directory of the run: model.safetensors, state.safetensors, metrics.jsonl, samples/.
    #[arg(long)]
    out: PathBuf,
    /// Total training updates (with --resume: continue up to this many).
    #[arg(long, default_value_t = 20_000)]
    steps: u64,
    /// Images per update.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate [default: 4e-4 for tiny, 2e-4 otherwise, as in the paper].
    #[arg(long)]
    lr: Option<f32>,
    /// Linear learning-rate warm-up, in updates [default: 200 for tiny, 1000 otherwise].
    #[arg(long)]
    warmup: Option<u64>,
    /// EMA decay of the weights used for sampling (early on min(decay, (1+n)/(10+n))).
    #[arg(long, default_value_t = 0.9999)]
    ema: f32,
    /// What the network predicts.
    #[arg(long, value_enum, default_value_t = Parameterization::V)]
    param: Parameterization,
    /// Weight of the x-space error per time t.
    #[arg(long, value_enum, default_value_t = Weighting::SnrTrunc)]
    weighting: Weighting,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f32,
    /// Dropout in the res blocks [default: the preset's: 0, or 0.1 for cifar].
    #[arg(long)]
    dropout: Option<f32>,
    /// Image size for images:DIR (other data sets have a fixed size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Seed of the initial weights and of every random choice during training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the run in --out from its last checkpoint (the stored settings are used).
    #[arg(long)]
    resume: bool,
    /// Updates between checkpoints (a killed run loses at most this many).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Updates between lines of metrics.jsonl.
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// Updates between sample grids in DIR/samples (0: none).
    #[arg(long, default_value_t = 2000)]
    sample_every: u64,
    /// Stop after this many minutes of wall time (a checkpoint is written; --resume continues).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// DDIM steps of those sample grids.
    #[arg(long, default_value_t = 64)]
    sample_steps: usize,
}

pub fn run(args: TrainArgs) -> Result<()> {
    check_args(&args)?;
    if let Some(w) = short_run_warning(&args) {
        eprintln!("{w}");
    }
    let gpu = super::open_gpu()?;
    let command = recorded_command(std::env::args());
    let mut run = open(&args, &gpu, command)?;
    let total = run.options.total_steps;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} updates  loss {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("template"),
    );
    bar.set_position(run.step());
    bar.set_message("-");
    let started = std::time::Instant::now();
    let limit = args.max_minutes.map(|m| m * 60.0);
    while !run.is_done() {
        if let Some(line) = run.advance()? {
            bar.set_message(format!("{:.4}  {:.1} img/s", line.loss, line.images_per_s));
            super::log_when_not_a_terminal(&format!(
                "update {}/{total}  loss {:.4}  {:.1} img/s",
                line.step, line.loss, line.images_per_s
            ));
        }
        bar.set_position(run.step());
        if limit.is_some_and(|l| started.elapsed().as_secs_f64() >= l) {
            run.checkpoint()?;
            bar.abandon();
            eprintln!(
                "stopped after {:.1} minutes at update {}; continue with --resume --out {}",
                started.elapsed().as_secs_f64() / 60.0,
                run.step(),
                args.out.display()
            );
            return Ok(());
        }
    }
    bar.finish();
    eprintln!(
        "done: {} updates in {:.0} s; sample with\n  fewstep sample --model {} --steps 64 --out grid.png",
        run.step(),
        run.wall_seconds(),
        args.out.join(MODEL_FILE).display()
    );
    Ok(())
}

/// The command line as model files record it: `fewstep` and the arguments, without the binary's
/// path and without `--out DIR` (where a run was written is not part of what it is, and two
/// identical runs in different directories must write identical files).
pub(crate) fn recorded_command(args: impl IntoIterator<Item = String>) -> String {
    let mut words = vec!["fewstep".to_string()];
    let mut args = args.into_iter().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" {
            args.next();
        } else if !a.starts_with("--out=") {
            words.push(a);
        }
    }
    words.join(" ")
}

/// Loads the training split of a `--data` argument.
pub fn load_data(spec: &str, image_size: usize) -> Result<Dataset> {
    let parsed: DataSpec = spec.parse()?;
    let size = matches!(parsed, DataSpec::Images(_)).then_some(image_size);
    Dataset::load(&parsed, Split::Train, size).with_context(|| format!("loading --data {spec}"))
}

/// Refuses settings that would train nothing or train on NaN, before anything is opened or
/// written; warns about a run far too short to learn anything.
pub fn check_args(args: &TrainArgs) -> Result<()> {
    anyhow::ensure!(
        args.steps >= 1,
        "--steps {}: a run needs at least 1 update (a useful tiny run takes thousands)",
        args.steps
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    if let Some(lr) = args.lr {
        anyhow::ensure!(
            lr.is_finite() && lr > 0.0,
            "--lr {lr} is not a usable learning rate: give a positive number such as 2e-4"
        );
    }
    anyhow::ensure!(
        args.ema.is_finite() && (0.0..1.0).contains(&args.ema),
        "--ema {} is out of range: give a decay in [0, 1) such as 0.9999",
        args.ema
    );
    anyhow::ensure!(
        args.grad_clip.is_finite() && args.grad_clip >= 0.0,
        "--grad-clip {} is not usable: give a norm >= 0 (0 disables clipping)",
        args.grad_clip
    );
    if let Some(m) = args.max_minutes {
        anyhow::ensure!(
            m.is_finite() && m > 0.0,
            "--max-minutes {m} is not usable: give a positive number of minutes"
        );
    }
    let max = crate::diffusion::sampler::MAX_STEPS;
    anyhow::ensure!(
        (1..=max).contains(&args.sample_steps),
        "--sample-steps {} is out of range: give 1 to {max}",
        args.sample_steps
    );
    TrainRun::check_dir(&args.out, args.resume)
}

/// A warning for a new run far too short to learn anything (shorter than its warm-up).
pub fn short_run_warning(args: &TrainArgs) -> Option<String> {
    let warmup = args
        .warmup
        .unwrap_or(if args.preset == "tiny" { 200 } else { 1000 });
    (!args.resume && args.steps < warmup).then(|| {
        format!(
            "warning: --steps {} is shorter than the {warmup}-update learning-rate warm-up, so \
             the model will sample noise; a tiny model needs a few thousand updates (--steps 3000 \
             or more) to draw recognisable images",
            args.steps
        )
    })
}

/// Creates the run `args` describe, or resumes it (shared by the CLI and the app's Train tab).
pub fn open(args: &TrainArgs, gpu: &Gpu, command: String) -> Result<TrainRun> {
    check_args(args)?;
    let run = if args.resume {
        let (opts, arch, train, step) = TrainRun::stored_options(&args.out)?;
        let data = load_data(&opts.dataset, arch.width.max(arch.height))?;
        eprintln!(
            "resuming {} at update {step} of {} ({} parameters, {} preset)",
            args.out.display(),
            args.steps,
            crate::nn::Layout::new(&arch)?.param_count(),
            arch.preset
        );
        let _ = train;
        TrainRun::resume(gpu, &args.out, data, Some(args.steps))?
    } else {
        anyhow::ensure!(
            crate::nn::PRESETS.contains(&args.preset.as_str()),
            "unknown preset `{}`: choose one of tiny, small, cifar",
            args.preset
        );
        let data = load_data(&args.data, args.image_size.unwrap_or(32))?;
        let mut arch = UNetConfig::preset(
            &args.preset,
            data.channels,
            data.height,
            data.width,
            args.param.heads(),
        )?;
        if let Some(d) = args.dropout {
            arch.dropout = d;
            arch.validate()?;
        }
        let tiny = args.preset == "tiny";
        let train = TrainConfig {
            param: args.param,
            weighting: args.weighting,
            batch: args.batch,
            lr: args.lr.unwrap_or(if tiny { 4e-4 } else { 2e-4 }),
            warmup: args.warmup.unwrap_or(if tiny { 200 } else { 1000 }),
            ema_decay: args.ema,
            grad_clip: args.grad_clip,
            seed: args.seed,
            adam: AdamConfig::default(),
        };
        let options = RunOptions {
            total_steps: args.steps,
            checkpoint_every: args.checkpoint_every,
            log_every: args.log_every.max(1),
            sample_every: args.sample_every,
            sample_steps: args.sample_steps,
            dataset: args.data.clone(),
            command,
        };
        let params = crate::nn::Layout::new(&arch)?.param_count();
        eprintln!(
            "training a {} U-Net ({params} parameters) on {} ({} images of {}x{}x{}), batch {}, \
             lr {} with {} warm-up updates, {} parameterization, on {}",
            arch.preset,
            args.data,
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
        TrainRun::create(gpu, &args.out, data, arch, train, options)?
    };
    Ok(run)
}
