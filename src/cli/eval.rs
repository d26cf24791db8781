//! `fewstep eval`: per model and step count, the Fréchet distance on the evaluation classifier's
//! features (generated vs test images), the agreement (PSNR) with the teacher's full-step
//! samples from the same noise, and the time per image; a table or JSON, and a plot.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::diffusion::load_model;
use crate::eval::metrics::{evaluate, EvalModel, EvalRow, EvalSettings};
use crate::eval::plot::{plot, Series};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model files: distilled students (each at its own step count) and at most one teacher
    /// (plain DDIM at every --steps count, and the reference for agreement).
    #[arg(long, num_args = 1.., required = true)]
    model: Vec<PathBuf>,
    /// Step counts to evaluate, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    steps: Vec<usize>,
    /// Generated images per row for the Fréchet distance (and as many test images).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Images per row for the agreement PSNR against the teacher's full step count.
    #[arg(long, default_value_t = 64)]
    psnr_samples: usize,
    /// The teacher's full step count [default: the step count the students were distilled from].
    #[arg(long)]
    teacher_steps: Option<usize>,
    /// Step count of the teacher's own distance row [default: --teacher-steps].
    #[arg(long)]
    teacher_distance_steps: Option<usize>,
    /// The evaluation classifier (from `fewstep train-classifier`) [default:
    /// assets/fmnist-classifier.safetensors, used where it exists and fits the models; a
    /// classifier named here that cannot be read is an error].
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Test data [default: the data set named in the models' files].
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
    /// Plot of distance against step count, distilled vs plain DDIM.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    anyhow::ensure!(
        args.samples >= 2,
        "--samples {} is too few: the Fréchet distance needs at least 2 images per row (its \
         covariance); 1000 is the default, 500 is what the README's table used",
        args.samples
    );
    anyhow::ensure!(
        args.psnr_samples >= 1,
        "--psnr-samples 0: the agreement PSNR needs at least 1 image per row (default 64)"
    );
    for &s in args.steps.iter().chain(&args.teacher_steps) {
        super::sample::check_steps(s)?;
    }
    if let Some(c) = &args.classifier {
        std::fs::metadata(c).map_err(|e| {
            anyhow::anyhow!(
                "--classifier {}: {e}; give a file written by `fewstep train-classifier`, or \
                 leave the flag out to use the bundled one",
                c.display()
            )
        })?;
    }
    let gpu = super::open_gpu()?;
    let mut models = vec![];
    for p in &args.model {
        let (model, meta) = load_model(&gpu, p)?;
        models.push(EvalModel {
            model,
            meta,
            name: p.display().to_string(),
        });
    }
    // A classifier named on the command line must load (the default one is skipped with a
    // note where it does not fit).
    if let Some(c) = &args.classifier {
        crate::eval::classifier::load(&gpu, c)
            .map_err(|e| e.context(format!("--classifier {}", c.display())))?;
    }
    let settings = EvalSettings {
        steps: args.steps.clone(),
        samples: args.samples,
        psnr_samples: args.psnr_samples,
        teacher_steps: args.teacher_steps,
        teacher_distance_steps: args.teacher_distance_steps,
        classifier: Some(
            args.classifier
                .clone()
                .unwrap_or_else(|| PathBuf::from("assets/fmnist-classifier.safetensors")),
        ),
        data: args.data.clone(),
        seed: args.seed,
    };
    if !args.json {
        println!(
            "{:<10} {:>6} {:>12} {:>12} {:>10}   model",
            "kind", "steps", "distance", "PSNR (dB)", "ms/image"
        );
    }
    let rows = evaluate(&gpu, &models, &settings, |row| {
        if args.json {
            println!("{}", serde_json::to_string(row)?);
        } else {
            println!("{}", table_line(row));
        }
        Ok(())
    })?;
    if let Some(path) = &args.plot {
        let series = |kind: &str, name: &str, color| Series {
            name: name.into(),
            color,
            points: rows
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.frechet.map(|f| (r.steps, f)))
                .collect(),
        };
        let img = plot(
            "Frechet distance vs sampling steps",
            "distance (lower is better)",
            &[
                series("distilled", "distilled", [200, 40, 40]),
                series("ddim", "plain DDIM", [40, 80, 200]),
            ],
        );
        crate::image::save_png(&img, path)?;
        eprintln!("plot -> {}", path.display());
    }
    Ok(())
}

/// A row of the table `eval` prints (the header is printed before the first).
pub(crate) fn table_line(row: &EvalRow) -> String {
    let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    format!(
        "{:<10} {:>6} {:>12} {:>12} {:>10.2}   {}",
        row.kind,
        row.steps,
        f(row.frechet, 3),
        f(row.psnr_vs_teacher, 2),
        row.ms_per_image,
        row.model
    )
}
