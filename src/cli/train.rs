//! `fewstep train`: Algorithm 1 on a data set, into a run directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::diffusion::run_spec::TrainSpec;
use crate::diffusion::train_run::MODEL_FILE;
use crate::diffusion::{Parameterization, Weighting};

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
    /// What the network predicts: v (alpha eps - sigma x, the paper's), eps, x, or both (x and
    /// eps from two output heads).
    #[arg(long, default_value_t = Parameterization::V,
          value_parser = super::choice::<Parameterization>(&Parameterization::NAMES))]
    param: Parameterization,
    /// Weight of the x-space error per time t: snr_trunc (max(SNR, 1), the paper's), v_mse
    /// (SNR + 1), snr (the MSE on eps) or constant (the MSE on x).
    #[arg(long, default_value_t = Weighting::SnrTrunc,
          value_parser = super::choice::<Weighting>(&Weighting::NAMES))]
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
    /// Train a class-conditional model: `--classes` alone takes the class count from the data
    /// (10 for Fashion-MNIST, MNIST and CIFAR-10; one class per subfolder of images:DIR, named
    /// after it); `--classes N` sets it (at least the data's). Without it the model is
    /// unconditional, as before.
    #[arg(long, num_args = 0..=1, value_name = "N")]
    classes: Option<Option<usize>>,
    /// Label dropout for classifier-free guidance: the probability that an image is trained
    /// as "no class" (Ho & Salimans used 0.1-0.2) [default with --classes: 0.1].
    #[arg(long, value_name = "P")]
    uncond_prob: Option<f32>,
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
    /// The flags typed on the command line (filled after parsing): with --resume each must
    /// agree with the stored run, since the stored settings are what runs.
    #[arg(skip)]
    pub given: Vec<String>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    check_args(&args)?;
    let spec = args.spec();
    if let Some(w) = spec.short_run_warning() {
        eprintln!("{w}");
    }
    if args.resume {
        crate::diffusion::train_run::apply_recorded_precision(&args.out);
    }
    let gpu = super::open_gpu()?;
    let command = recorded_command(std::env::args());
    let mut run = spec.open(&gpu, command)?;
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

impl TrainArgs {
    /// The library's description of the run these flags ask for.
    pub fn spec(&self) -> TrainSpec {
        TrainSpec {
            data: self.data.clone(),
            preset: self.preset.clone(),
            out: self.out.clone(),
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            ema: self.ema,
            param: self.param,
            weighting: self.weighting,
            grad_clip: self.grad_clip,
            dropout: self.dropout,
            image_size: self.image_size,
            classes: self.classes.map(|c| c.unwrap_or(0)),
            uncond_prob: self.uncond_prob,
            seed: self.seed,
            resume: self.resume,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            sample_every: self.sample_every,
            sample_steps: self.sample_steps,
        }
    }
}

/// The spec's checks, plus the flags only the command line has.
pub fn check_args(args: &TrainArgs) -> Result<()> {
    if args.classes == Some(Some(0)) {
        anyhow::bail!(
            "--classes 0: a class-conditional model needs at least one class; give --classes \
             alone to take the data's count, or leave it out for an unconditional model"
        );
    }
    if let Some(m) = args.max_minutes {
        anyhow::ensure!(
            m.is_finite() && m > 0.0,
            "--max-minutes {m} is not usable: give a positive number of minutes"
        );
    }
    args.spec().check()?;
    if args.resume {
        refuse_changed_on_resume(args)?;
    }
    Ok(())
}

/// On `--resume` the stored settings run; a typed flag that differs from them would be silently
/// ignored, so it is refused, naming the flag and both values. `--steps` (continue up to) and
/// `--max-minutes` (this session's limit) apply.
fn refuse_changed_on_resume(args: &TrainArgs) -> Result<()> {
    use crate::diffusion::train_run::TrainRun;
    let (opts, arch, train, _) = TrainRun::stored_options(&args.out)?;
    let mut changed = Vec::new();
    for id in &args.given {
        let (given, stored): (String, String) = match id.as_str() {
            // --precision is checked against the recorded one by the run itself.
            "out" | "resume" | "steps" | "max_minutes" | "precision" => continue,
            "data" => (args.data.clone(), opts.dataset.clone()),
            "preset" => (args.preset.clone(), arch.preset.clone()),
            "batch" => (args.batch.to_string(), train.batch.to_string()),
            "lr" => (shown(args.lr), train.lr.to_string()),
            "warmup" => (shown(args.warmup), train.warmup.to_string()),
            "ema" => (args.ema.to_string(), train.ema_decay.to_string()),
            "param" => (args.param.to_string(), train.param.to_string()),
            "weighting" => (args.weighting.to_string(), train.weighting.to_string()),
            "grad_clip" => (args.grad_clip.to_string(), train.grad_clip.to_string()),
            "dropout" => (shown(args.dropout), arch.dropout.to_string()),
            "image_size" => (shown(args.image_size), arch.width.to_string()),
            "classes" => {
                let stored = if arch.classes == 0 {
                    "none (unconditional)".to_string()
                } else {
                    arch.classes.to_string()
                };
                match args.classes.flatten() {
                    Some(n) => (n.to_string(), stored),
                    // `--classes` alone: any class count the data gave.
                    None if arch.classes > 0 => continue,
                    None => ("(the data's classes)".to_string(), stored),
                }
            }
            "uncond_prob" => (shown(args.uncond_prob), train.uncond_prob.to_string()),
            "seed" => (args.seed.to_string(), train.seed.to_string()),
            "checkpoint_every" => (
                args.checkpoint_every.to_string(),
                opts.checkpoint_every.to_string(),
            ),
            "log_every" => (
                args.log_every.max(1).to_string(),
                opts.log_every.to_string(),
            ),
            "sample_every" => (args.sample_every.to_string(), opts.sample_every.to_string()),
            "sample_steps" => (args.sample_steps.to_string(), opts.sample_steps.to_string()),
            other => anyhow::bail!(
                "--{} cannot be checked against the stored run on --resume; drop it",
                other.replace('_', "-")
            ),
        };
        if given != stored {
            let flag = format!("--{}", id.replace('_', "-"));
            changed.push(format!(
                "{flag} {given} (the run started with {flag} {stored})"
            ));
        }
    }
    crate::diffusion::run_spec::refuse_changed(&args.out, "run", &changed)
}

fn shown<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}
