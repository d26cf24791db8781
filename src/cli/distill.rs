//! `fewstep distill`: progressive distillation (Algorithm 2), halving after halving.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::diffusion::distill_run::{model_file_name, DistillPlan, DistillRun};
use crate::diffusion::model_file::parse_model;

/// Every setting but `--teacher`, `--out` and `--resume` is optional so that `--resume` can tell
/// a flag the user typed from a default: a typed flag that differs from the stored run is refused
/// instead of silently ignored (issue 13, item 8). The defaults are applied in [`plan_from`].
#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    /// The teacher: a model file from `fewstep train` (its EMA weights start the first student).
    /// With --resume: where the teacher is now, when it has moved since the run started.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// The teacher's sampling steps; a power of 2 (the paper starts at 1024 or 8192) [default: 1024].
    #[arg(long)]
    from_steps: Option<usize>,
    /// The last student's steps; a power of 2 below --from-steps [default: 1].
    #[arg(long)]
    to_steps: Option<usize>,
    /// Updates per halving [default: 2000].
    #[arg(long)]
    updates: Option<u64>,
    /// Updates of the last two halvings (the 2- and 1-step students) [default: 2 x --updates].
    #[arg(long)]
    final_updates: Option<u64>,
    /// Images per update [default: 64].
    #[arg(long)]
    batch: Option<usize>,
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
    /// Continue the distillation in --out where it stopped, with the settings it started with
    /// (a setting given again must be the same).
    #[arg(long)]
    resume: bool,
    /// Seed of every random choice [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Updates between checkpoints of the halving in progress [default: 500].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Updates between lines of metrics.jsonl [default: 50].
    #[arg(long)]
    log_every: Option<u64>,
    /// Keep an EMA of each student with this decay (warm-up min(decay, (1+n)/(10+n)) as in
    /// training): the EMA is what each steps-N file holds and what the next halving starts from.
    /// Off by default.
    #[arg(long)]
    ema: Option<f32>,
}

pub fn run(args: DistillArgs) -> Result<()> {
    check_args(&args)?;
    let gpu = super::open_gpu()?;
    let mut run = open(
        &args,
        &gpu,
        super::train::recorded_command(std::env::args()),
    )?;
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
    if args.resume {
        let stored = DistillRun::stored(&args.out, args.teacher.as_deref())?;
        refuse_changed_settings(args, &stored.plan)?;
        let data = super::train::load_data(&stored.plan.dataset, stored.image_size)?;
        eprintln!(
            "resuming the distillation in {} at update {} of the {}-step student",
            args.out.display(),
            stored.update,
            stored.teacher_steps / 2
        );
        return DistillRun::resume_with_teacher(gpu, &args.out, data, args.teacher.as_deref());
    }
    let Some(teacher) = args.teacher.clone() else {
        anyhow::bail!("--teacher FILE is required (a model file from `fewstep train`)");
    };
    let bytes = std::fs::read(&teacher)
        .map_err(|e| anyhow::anyhow!("cannot read --teacher {}: {e}", teacher.display()))?;
    let (meta, _) = parse_model(&teacher, &bytes)?;
    // Stored absolute, so that --resume works from any working directory.
    let teacher = std::fs::canonicalize(&teacher).unwrap_or(teacher);
    let plan = plan_from(args, teacher, &meta.dataset, &meta.arch.preset, command);
    plan.validate(&meta)?;
    DistillRun::check_dir(&args.out)?;
    let data = super::train::load_data(&plan.dataset, meta.arch.width)?;
    eprintln!(
        "distilling {} ({}) from {} to {} steps: {} halvings on {}",
        plan.teacher.display(),
        meta.describe(),
        plan.from_steps,
        plan.to_steps,
        (plan.from_steps / plan.to_steps).trailing_zeros(),
        gpu.info().name
    );
    DistillRun::create(gpu, &args.out, plan, data)
}

/// Refuses settings that would distill nothing, or a directory that would lose finished work,
/// before the GPU is opened or anything is written.
pub fn check_args(args: &DistillArgs) -> Result<()> {
    if args.resume {
        let stored = DistillRun::stored(&args.out, args.teacher.as_deref())?;
        return refuse_changed_settings(args, &stored.plan);
    }
    let Some(teacher) = args.teacher.clone() else {
        anyhow::bail!("--teacher FILE is required (a model file from `fewstep train`)");
    };
    let bytes = std::fs::read(&teacher)
        .map_err(|e| anyhow::anyhow!("cannot read --teacher {}: {e}", teacher.display()))?;
    let (meta, _) = parse_model(&teacher, &bytes)?;
    plan_from(
        args,
        teacher,
        &meta.dataset,
        &meta.arch.preset,
        String::new(),
    )
    .validate(&meta)?;
    DistillRun::check_dir(&args.out)
}

/// The plan of a new distillation: the flags given, the defaults for the rest.
fn plan_from(
    args: &DistillArgs,
    teacher: PathBuf,
    teacher_data: &str,
    preset: &str,
    command: String,
) -> DistillPlan {
    let updates = args.updates.unwrap_or(2000);
    DistillPlan {
        teacher,
        from_steps: args.from_steps.unwrap_or(1024),
        to_steps: args.to_steps.unwrap_or(1),
        updates,
        final_updates: args.final_updates.unwrap_or(2 * updates),
        batch: args.batch.unwrap_or(64),
        lr: args
            .lr
            .unwrap_or(if preset == "tiny" { 2e-4 } else { 1e-4 }),
        seed: args.seed.unwrap_or(0),
        checkpoint_every: args.checkpoint_every.unwrap_or(500),
        log_every: args.log_every.unwrap_or(50),
        dataset: args
            .data
            .clone()
            .unwrap_or_else(|| teacher_data.to_string()),
        command,
        ema: args.ema,
    }
}

/// With --resume the stored plan is what runs; a flag typed with a different value would be
/// silently ignored, so it is refused, naming the flag and the value the run started with.
fn refuse_changed_settings(args: &DistillArgs, stored: &DistillPlan) -> Result<()> {
    fn differs<T: PartialEq + std::fmt::Display>(
        flag: &str,
        given: Option<T>,
        stored: T,
    ) -> Option<String> {
        given
            .filter(|g| *g != stored)
            .map(|g| format!("{flag} {g} (the run started with {flag} {stored})"))
    }
    let ema_given = args.ema.map(|e| e.to_string());
    let ema_stored = stored
        .ema
        .map_or_else(|| "none".to_string(), |e| e.to_string());
    let changed: Vec<String> = [
        differs("--from-steps", args.from_steps, stored.from_steps),
        differs("--to-steps", args.to_steps, stored.to_steps),
        differs("--updates", args.updates, stored.updates),
        differs("--final-updates", args.final_updates, stored.final_updates),
        differs("--batch", args.batch, stored.batch),
        differs("--lr", args.lr, stored.lr),
        differs("--data", args.data.as_deref(), stored.dataset.as_str()),
        differs("--seed", args.seed, stored.seed),
        differs(
            "--checkpoint-every",
            args.checkpoint_every,
            stored.checkpoint_every,
        ),
        differs("--log-every", args.log_every, stored.log_every),
        differs("--ema", ema_given.as_deref(), ema_stored.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    anyhow::ensure!(
        changed.is_empty(),
        "--resume continues {} with the settings it started with, but {} {} given: drop {} \
         to resume, or start a new distillation in another --out",
        args.out.display(),
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
