//! `fewstep distill`: progressive distillation (Algorithm 2), halving after halving.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::diffusion::distill_run::{model_file_name, DistillPlan, DistillRun};
use crate::diffusion::model_file::parse_model;

#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    /// The teacher: a model file from `fewstep train` (its EMA weights start the first student).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// The teacher's sampling steps; a power of 2 (the paper starts at 1024 or 8192).
    #[arg(long, default_value_t = 1024)]
    from_steps: usize,
    /// The last student's steps; a power of 2 below --from-steps.
    #[arg(long, default_value_t = 1)]
    to_steps: usize,
    /// Updates per halving.
    #[arg(long, default_value_t = 2000)]
    updates: u64,
    /// Updates of the last two halvings (the 2- and 1-step students) [default: 2 x --updates].
    #[arg(long)]
    final_updates: Option<u64>,
    /// Images per update.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Initial learning rate of each halving, annealed linearly to 0 [default: 2e-4 for tiny,
    /// 1e-4 otherwise].
    #[arg(long)]
    lr: Option<f32>,
    /// Training data [default: the data set named in the teacher's file].
    #[arg(long)]
    data: Option<String>,
    /// Output directory: steps-N.safetensors per step count, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue the distillation in --out where it stopped.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Updates between checkpoints of the halving in progress.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Updates between lines of metrics.jsonl.
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// Keep an EMA of each student with this decay (warm-up min(decay, (1+n)/(10+n)) as in
    /// training): the EMA is what each steps-N file holds and what the next halving starts from.
    /// Off by default.
    #[arg(long)]
    ema: Option<f32>,
}

pub fn run(args: DistillArgs) -> Result<()> {
    let gpu = super::open_gpu()?;
    let mut run = open(&args, &gpu, std::env::args().collect::<Vec<_>>().join(" "))?;
    let plan = run.plan.clone();
    let halvings = plan.halvings();
    let total = plan.total_updates();
    let done_before = plan.updates_before(run.student_steps());
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(total)).with_style(
        ProgressStyle::with_template(
            "overall {bar:30} {pos}/{len} updates [{elapsed_precise} < {eta_precise}]",
        )
        .expect("template"),
    );
    let halving_style =
        ProgressStyle::with_template("{prefix:>9} {bar:30} {pos}/{len}  loss {msg}")
            .expect("template");
    let mut bar: Option<(usize, ProgressBar)> = None;
    let mut finished = done_before;
    while !run.is_done() {
        let steps = run.student_steps();
        if bar.as_ref().map(|b| b.0) != Some(steps) {
            if let Some((_, b)) = bar.take() {
                finished += b.length().unwrap_or(0);
                b.finish();
            }
            let b = multi.add(ProgressBar::new(run.distiller.cfg.updates));
            b.set_style(halving_style.clone());
            b.set_prefix(format!("{} -> {}", steps * 2, steps));
            b.set_message("-");
            bar = Some((steps, b));
        }
        let line = run.advance()?;
        if let Some((_, b)) = &bar {
            if let Some(l) = &line {
                b.set_message(format!("{:.5}  {:.0} img/s", l.loss, l.images_per_s));
                super::log_when_not_a_terminal(&format!(
                    "{}-step student: update {}  loss {:.5}  {:.1} img/s",
                    l.student_steps, l.update, l.loss, l.images_per_s
                ));
            }
            let pos = if run.student_steps() == steps {
                run.distiller.update
            } else {
                b.length().unwrap_or(0)
            };
            b.set_position(pos);
            overall.set_position(finished + pos);
        }
    }
    if let Some((_, b)) = bar {
        b.finish();
    }
    overall.finish();
    eprintln!("cost of each halving (this session):");
    for c in &run.costs {
        eprintln!(
            "  {:>5} -> {:<5} {:>7} updates  {:>8.1} s",
            c.student_steps * 2,
            c.student_steps,
            c.updates,
            c.seconds
        );
    }
    eprintln!(
        "total {:.1} s; each update costs two teacher forward passes plus one student update \
         (about 1.7 teacher training updates). Models: {}",
        run.wall_seconds(),
        halvings
            .iter()
            .map(|&s| args.out.join(model_file_name(s)).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Creates the distillation `args` describe, or resumes it (shared by the CLI and the app).
pub fn open(args: &DistillArgs, gpu: &crate::gpu::Gpu, command: String) -> Result<DistillRun> {
    let run = if args.resume {
        let plan = DistillRun::stored_plan(&args.out)?;
        let data = super::train::load_data(&plan.dataset, 32)?;
        DistillRun::resume(gpu, &args.out, data)?
    } else {
        let Some(teacher) = args.teacher.clone() else {
            anyhow::bail!("--teacher FILE is required (a model file from `fewstep train`)");
        };
        let bytes = std::fs::read(&teacher)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", teacher.display()))?;
        let (meta, _) = parse_model(&teacher, &bytes)?;
        let dataset = args.data.clone().unwrap_or_else(|| meta.dataset.clone());
        let final_updates = args.final_updates.unwrap_or(2 * args.updates);
        let plan = DistillPlan {
            teacher,
            from_steps: args.from_steps,
            to_steps: args.to_steps,
            updates: args.updates,
            final_updates,
            batch: args.batch,
            lr: args.lr.unwrap_or(if meta.arch.preset == "tiny" {
                2e-4
            } else {
                1e-4
            }),
            seed: args.seed,
            checkpoint_every: args.checkpoint_every,
            log_every: args.log_every,
            dataset: dataset.clone(),
            command,
            ema: args.ema,
        };
        plan.validate(&meta)?;
        anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
        if let Some(e) = args.ema {
            anyhow::ensure!(
                e.is_finite() && (0.0..1.0).contains(&e),
                "--ema {e} is out of range: give a decay in [0, 1) such as 0.999"
            );
        }
        let data = super::train::load_data(&dataset, meta.arch.width)?;
        eprintln!(
            "distilling {} ({}) from {} to {} steps: {} halvings on {}",
            plan.teacher.display(),
            meta.describe(),
            plan.from_steps,
            plan.to_steps,
            (plan.from_steps / plan.to_steps).trailing_zeros(),
            gpu.info().name
        );
        DistillRun::create(gpu, &args.out, plan, data)?
    };
    Ok(run)
}
