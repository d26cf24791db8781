//! `fewstep distill`: progressive distillation (Algorithm 2), halving after halving.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::diffusion::distill_run::model_file_name;
use crate::diffusion::run_spec::DistillSpec;

/// Every setting but `--teacher`, `--out` and `--resume` is optional so that `--resume` can tell
/// a flag the user typed from a default: a typed flag that differs from the stored run is refused
/// instead of silently ignored (issue 13, item 8). The defaults are applied in
/// [`DistillSpec::plan`].
#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    /// The teacher: a model file from `fewstep train` (its EMA weights start the first student),
    /// or a diffusers `UNet2DModel` pipeline folder (imported into --out as
    /// diffusers-teacher.safetensors; pass its training data with --data). With --resume: where
    /// the teacher file is now, when it has moved since the run started.
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
    /// Guided distillation (Meng et al., "On Distillation of Guided Diffusion Models"): for a
    /// class-conditional teacher trained with label dropout, stage 1 trains a student that takes
    /// the guidance weight w as an input to match the teacher's classifier-free guided x_hat_w
    /// (two evaluations) in one evaluation (guided-teacher.safetensors), then the halvings
    /// distill it with w as an input, so every student keeps w as a knob.
    #[arg(long)]
    guided: bool,
    /// With --guided: the w range MIN,MAX stage 1 and the halvings draw w from, uniformly
    /// [default: 0,4].
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_range)]
    guidance_range: Option<[f32; 2]>,
    /// With --guided: updates of stage 1 [default: --updates].
    #[arg(long, value_name = "N")]
    guidance_updates: Option<u64>,
    /// Updates of the re-parameterisation stage: before the halvings, the student (the
    /// teacher's weights) learns to give the teacher's x_hat by predicting --student-param.
    /// Needed for an eps teacher, whose x = (z - sigma eps) / alpha is undefined at the few-step
    /// end; added by itself for a diffusers eps teacher [default there: --updates]. With
    /// --guided the guidance stage does it, in --guidance-updates.
    #[arg(long, value_name = "N")]
    reparam_updates: Option<u64>,
    /// What the students predict after re-parameterisation: v (diffusers' v_prediction) or x
    /// (sample) [default: v].
    #[arg(long, value_name = "v|x")]
    student_param: Option<crate::diffusion::Parameterization>,
}

fn parse_range(s: &str) -> std::result::Result<[f32; 2], String> {
    let bad = || format!("`{s}` is not MIN,MAX (two numbers, such as 0,4)");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let a: f32 = a.trim().parse().map_err(|_| bad())?;
    let b: f32 = b.trim().parse().map_err(|_| bad())?;
    Ok([a, b])
}

pub fn run(args: DistillArgs) -> Result<()> {
    let spec = args.spec();
    spec.check()?;
    if args.resume {
        crate::diffusion::distill_run::apply_recorded_precision(&args.out);
    }
    let gpu = super::open_gpu()?;
    let mut run = spec.open(&gpu, super::train::recorded_command(std::env::args()))?;
    let plan = run.plan.clone();
    let stage1 = plan.stage1_name(run.teacher_parameterization());
    let halvings = plan.halvings();
    let total = plan.total_updates();
    let done_before = run.updates_before();
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
        let steps = run.phase();
        if bar.as_ref().map(|b| b.0) != Some(steps) {
            if let Some((_, b)) = bar.take() {
                finished += b.length().unwrap_or(0);
                b.finish();
            }
            let b = multi.add(ProgressBar::new(run.distiller.cfg.updates));
            b.set_style(halving_style.clone());
            b.set_prefix(if steps == 0 {
                "stage 1".to_string()
            } else {
                format!("{} -> {}", steps * 2, steps)
            });
            b.set_message("-");
            bar = Some((steps, b));
        }
        let line = run.advance()?;
        if let Some((_, b)) = &bar {
            if let Some(l) = &line {
                b.set_message(format!("{:.5}  {:.0} img/s", l.loss, l.images_per_s));
                let who = if l.student_steps == 0 {
                    stage1.clone()
                } else {
                    format!("{}-step student", l.student_steps)
                };
                super::log_when_not_a_terminal(&format!(
                    "{who}: update {}  loss {:.5}  {:.1} img/s",
                    l.update, l.loss, l.images_per_s
                ));
            }
            let pos = if run.phase() == steps {
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
    for c in run.costs.iter().filter(|c| c.student_steps == 0) {
        eprintln!("  {stage1} {:>7} updates  {:>8.1} s", c.updates, c.seconds);
    }
    for c in run.costs.iter().filter(|c| c.student_steps > 0) {
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

impl DistillArgs {
    /// The library's description of the distillation these flags ask for.
    pub fn spec(&self) -> DistillSpec {
        DistillSpec {
            teacher: self.teacher.clone(),
            from_steps: self.from_steps,
            to_steps: self.to_steps,
            updates: self.updates,
            final_updates: self.final_updates,
            batch: self.batch,
            lr: self.lr,
            data: self.data.clone(),
            out: self.out.clone(),
            resume: self.resume,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            ema: self.ema,
            guided: self.guided,
            guidance_range: self.guidance_range,
            guidance_updates: self.guidance_updates,
            reparam_updates: self.reparam_updates,
            student_param: self.student_param,
        }
    }
}
