//! The recipe's stages, each run by itself: the plan printed first (with an estimate timed on
//! this adapter), then train, distill, eval and bundle. `recipe/mod.rs` decides which run and
//! records them.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::estimate::human;
use super::settings::RecipeSettings;
use super::{
    bar, fill_seconds, record_stage, save_state, shown, write_bundle, write_manifest, Commands,
    Costs, RecipeState, MANIFEST_FILE, STAGES,
};
use crate::data::Dataset;
use crate::diffusion::distill_run::{model_file_name, STATE_FILE as DISTILL_STATE};
use crate::diffusion::load_model;
use crate::diffusion::train_run::{MODEL_FILE, STATE_FILE as TRAIN_STATE};
use crate::eval::metrics::{evaluate, EvalModel, EvalRow};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;

/// What will run, and how long each stage not yet done should take on this adapter.
pub(super) fn print_plan(
    gpu: &Gpu,
    adapter: &str,
    dir: &Path,
    state: &RecipeState,
    fresh_data: Option<Dataset>,
) -> Result<()> {
    let s = &state.settings;
    let data = match fresh_data {
        Some(d) => d,
        None => crate::diffusion::run_spec::load_data(&s.data, s.image_size.unwrap_or(32))?,
    };
    let remaining: Vec<&str> = STAGES
        .iter()
        .copied()
        .filter(|st| !state.done.contains_key(*st))
        .collect();
    let needs_measure = remaining.iter().any(|st| *st != "bundle");
    let estimate = if needs_measure {
        eprintln!("timing a few updates on {adapter} for the estimate ...");
        Some(Costs::measure(gpu, &data, s)?.stages(s))
    } else {
        None
    };
    let halvings = s.student_steps();
    let arch = UNetConfig::preset(&s.model_preset, data.channels, data.height, data.width, 1)?;
    let params = crate::nn::Layout::new(&arch)?.param_count();
    eprintln!(
        "recipe `{}` on {adapter}, into {}:",
        s.preset,
        dir.display()
    );
    let est = |st: &str| -> String {
        if state.done.contains_key(st) {
            "done".into()
        } else {
            estimate
                .as_ref()
                .and_then(|e| e.get(st))
                .map(|v| format!("~{}", human(*v)))
                .unwrap_or_default()
        }
    };
    let e = s.eval_settings();
    eprintln!(
        "  1. train    {} U-Net ({params} parameters) on {}: {} updates of batch {}, lr {}  {}",
        s.model_preset,
        s.data,
        s.train_steps,
        s.train_batch,
        s.train_lr,
        est("train")
    );
    eprintln!(
        "  2. distill  {}{} -> 1 steps: {} halvings of {} updates ({} for 2 and 1 steps) of batch \
         {}, lr {}{}  {}",
        if s.guided {
            "guided (stage 1: w as an input), then "
        } else {
            ""
        },
        s.from_steps,
        halvings.len(),
        s.updates,
        s.final_updates,
        s.distill_batch,
        s.distill_lr,
        s.distill_ema
            .map(|d| format!(", student EMA {d}"))
            .unwrap_or_default(),
        est("distill")
    );
    eprintln!(
        "  3. eval     {} steps, distilled vs plain DDIM: {} images per row{}, PSNR against the \
         teacher at {} steps on {}  {}",
        e.steps
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        e.samples,
        match &s.classifier {
            Some(c) => format!(" (distance: {c})"),
            None => " (no classifier: no distance)".into(),
        },
        s.from_steps,
        e.psnr_samples,
        est("eval")
    );
    eprintln!(
        "  4. bundle   f16 copies and {MANIFEST_FILE} in {}  {}",
        dir.join("bundle").display(),
        est("bundle")
    );
    if let Some(e) = &estimate {
        let total: f64 = remaining.iter().filter_map(|st| e.get(st)).sum();
        eprintln!("  estimated: {} in all on this adapter", human(total));
    }

    Ok(())
}

/// 1. train: the teacher, as `fewstep train` (resumed from its checkpoint if there is one).
pub(super) fn train(
    gpu: &Gpu,
    dir: &Path,
    state: &mut RecipeState,
    commands: &Commands,
) -> Result<f64> {
    let s = state.settings.clone();
    let mut w = commands.train.clone();
    if dir.join("teacher").join(TRAIN_STATE).exists() {
        w.push("--resume".into());
    }
    let targs = super::super::parse_train(&w[1..]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut run = targs.spec().open(gpu, shown(&commands.train))?;
    record_stage(dir, state, "teacher", &run.identity().id)?;
    let bar = bar(s.train_steps, "1/4 train  ");
    bar.set_position(run.step());
    while !run.is_done() {
        if let Some(line) = run.advance()? {
            bar.set_message(format!(
                "loss {:.4}  {:.0} img/s",
                line.loss, line.images_per_s
            ));
            super::super::log_when_not_a_terminal(&format!(
                "train: update {}/{}  loss {:.4}  {:.1} img/s",
                line.step, s.train_steps, line.loss, line.images_per_s
            ));
        }
        bar.set_position(run.step());
    }
    bar.finish();
    Ok(run.wall_seconds())
}

/// 2. distill: the halvings down to one step, as `fewstep distill`.
pub(super) fn distill(
    gpu: &Gpu,
    dir: &Path,
    state: &mut RecipeState,
    commands: &Commands,
) -> Result<f64> {
    let ddir = dir.join("distill");
    let finished = !ddir.join(DISTILL_STATE).exists() && ddir.join(model_file_name(1)).exists();
    let seconds = if finished {
        0.0
    } else {
        let mut w = commands.distill.clone();
        if ddir.join(DISTILL_STATE).exists() {
            w.push("--resume".into());
        }
        let dargs = super::super::parse_distill(&w[1..]).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut run = dargs.spec().open(gpu, shown(&commands.distill))?;
        record_stage(dir, state, "distill", &run.identity().id)?;
        let plan = run.plan.clone();
        let bar = bar(plan.total_updates(), "2/4 distill");
        while !run.is_done() {
            if let Some(l) = run.advance()? {
                bar.set_message(format!(
                    "{} -> {}  loss {:.5}  {:.0} img/s",
                    2 * l.student_steps,
                    l.student_steps,
                    l.loss,
                    l.images_per_s
                ));
                super::super::log_when_not_a_terminal(&format!(
                    "distill: {}-step student: update {}  loss {:.5}  {:.1} img/s",
                    l.student_steps, l.update, l.loss, l.images_per_s
                ));
            }
            bar.set_position(run.updates_before() + run.distiller.update);
        }
        bar.finish();
        run.wall_seconds()
    };
    Ok(seconds)
}

/// 3. eval: every step count, distilled against the teacher's plain DDIM.
pub(super) fn eval(gpu: &Gpu, dir: &Path, s: &RecipeSettings) -> Result<Vec<EvalRow>> {
    let halvings = s.student_steps();
    let mut models = vec![];
    for n in &halvings {
        let p = dir.join("distill").join(model_file_name(*n));
        let (model, meta) = load_model(gpu, &p)?;
        models.push(EvalModel {
            model,
            meta,
            name: format!("{}-{n}step", s.name),
        });
    }
    let tpath = dir.join("teacher").join(MODEL_FILE);
    let (model, meta) = load_model(gpu, &tpath)?;
    models.push(EvalModel {
        model,
        meta,
        name: format!("{}-teacher", s.name),
    });
    let settings = s.eval_settings();
    let rows_total = (2 * settings.steps.len()
        + usize::from(!settings.steps.contains(&s.teacher_distance_steps)))
        * settings.guidance.len().max(1);
    let bar = bar(rows_total as u64, "3/4 eval   ");
    println!(
        "{:<10} {:>6} {:>12} {:>12} {:>10}   model",
        "kind", "steps", "distance", "PSNR (dB)", "ms/image"
    );
    let rows = evaluate(gpu, &models, &settings, |row| {
        bar.suspend(|| println!("{}", super::super::eval::table_line(row)));
        bar.inc(1);
        Ok(())
    })?;
    bar.finish();
    Ok(rows)
}

/// 4. bundle: the f16 copies and the manifest, whose times include this stage.
pub(super) fn bundle(
    dir: &Path,
    state: &mut RecipeState,
    commands: &Commands,
    adapter: &str,
) -> Result<()> {
    let started = Instant::now();
    let manifest = write_bundle(dir, state, commands, adapter)?;
    state
        .done
        .insert("bundle".into(), started.elapsed().as_secs_f64());
    // The manifest's times include the bundle stage.
    let mut manifest = manifest;
    fill_seconds(&mut manifest, state);
    write_manifest(&dir.join("bundle"), &manifest)?;
    save_state(dir, state)?;
    Ok(())
}
