//! `fewstep eval`: per model and step count, the Fréchet distance on the evaluation classifier's
//! features (generated vs test images), the agreement (PSNR) with the teacher's full-step
//! samples from the same noise, and the time per image; a table or JSON, and a plot.

use std::path::PathBuf;

use anyhow::{Context, Result};
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
    /// Plot of distance against step count, distilled vs plain DDIM. With --guidance: class
    /// accuracy against w at each step count (distilled vs the teacher's DDIM), and the distance
    /// against w beside it (PLOT's name with `-distance`).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Class-conditional models: evaluate at these guidance weights (comma separated, e.g.
    /// 0,1,2,4); each row's images ask for the classes in turn, and the evaluation classifier's
    /// accuracy on the class asked for is reported per class and overall.
    #[arg(long, value_delimiter = ',', value_name = "W,W,...")]
    guidance: Vec<f64>,
}

/// Images per row at most: bounded before any count is multiplied into a buffer size.
const MAX_SAMPLES: usize = 100_000;

pub fn run(args: EvalArgs) -> Result<()> {
    check_args(&args)?;
    let gpu = super::open_gpu()?;
    let models = load_models(&gpu, &args)?;
    let settings = settings(&args);
    let guided = !args.guidance.is_empty();
    print_header(&args, guided);
    let rows = evaluate(&gpu, &models, &settings, |row| {
        print_row(&args, guided, row)
    })?;
    match &args.plot {
        Some(path) if guided => guidance_plots(&rows, &args.steps, path)?,
        Some(path) => distance_plot(&rows, path)?,
        None => {}
    }
    Ok(())
}

/// Every flag in range and every file where it should be, before any work.
fn check_args(args: &EvalArgs) -> Result<()> {
    anyhow::ensure!(
        args.samples >= 2,
        "--samples {} is too few: the Fréchet distance needs at least 2 images per row (its \
         covariance); 1000 is the default, 500 is what docs/bundled-models.md's table used",
        args.samples
    );
    for (flag, n) in [
        ("--samples", args.samples),
        ("--psnr-samples", args.psnr_samples),
    ] {
        anyhow::ensure!(
            n <= MAX_SAMPLES,
            "{flag} {n}: at most {MAX_SAMPLES} images per row (the test sets here have 10,000; \
             a Fréchet distance settles long before that)"
        );
    }
    anyhow::ensure!(
        args.psnr_samples >= 1,
        "--psnr-samples 0: the agreement PSNR needs at least 1 image per row (default 64)"
    );
    for &s in args.steps.iter().chain(&args.teacher_steps) {
        super::sample::check_steps(s)?;
    }
    if let Some(w) = args
        .guidance
        .iter()
        .find(|w| !(w.is_finite() && (0.0..=crate::diffusion::guidance::MAX_GUIDANCE).contains(*w)))
    {
        anyhow::bail!(
            "--guidance {w} is not usable: give weights from 0 to {} such as 0,1,2,4",
            crate::diffusion::guidance::MAX_GUIDANCE
        );
    }
    let mut inputs = Vec::new();
    for m in &args.model {
        super::sample::check_model_arg(m)?;
        inputs.push(("--model", m.as_path()));
    }
    if let Some(plot) = &args.plot {
        crate::output_path::check_file("--plot", plot, &inputs)?;
        if !args.guidance.is_empty() {
            let distance = distance_plot_path(plot);
            crate::output_path::check_file("--plot", &distance, &inputs)?;
        }
    }
    if let Some(c) = args
        .classifier
        .as_ref()
        .filter(|c| !crate::input_file::is_bundled_name(c))
    {
        std::fs::metadata(c).map_err(|e| {
            anyhow::anyhow!(
                "--classifier {}: {e}; give a file written by `fewstep train-classifier`, or \
                 leave the flag out to use the bundled one",
                c.display()
            )
        })?;
    }
    Ok(())
}

/// The models to evaluate, and a classifier named on the command line, loaded (errors name the
/// flag).
fn load_models(gpu: &crate::gpu::Gpu, args: &EvalArgs) -> Result<Vec<EvalModel>> {
    let mut models = vec![];
    for p in &args.model {
        let (model, meta) =
            load_model(gpu, p).with_context(|| format!("--model {}", p.display()))?;
        models.push(EvalModel {
            model,
            meta,
            name: p.display().to_string(),
        });
    }
    // A classifier named on the command line must load (the default one is skipped with a
    // note where it does not fit).
    if let Some(c) = &args.classifier {
        crate::eval::classifier::load(gpu, c)
            .map_err(|e| e.context(format!("--classifier {}", c.display())))?;
    }
    Ok(models)
}

fn settings(args: &EvalArgs) -> EvalSettings {
    EvalSettings {
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
        guidance: args.guidance.clone(),
    }
}

/// The table's header (not with `--json`).
fn print_header(args: &EvalArgs, guided: bool) {
    if !args.json {
        if guided {
            print!("{:>6} {:>10} ", "w", "class acc");
        }
        println!(
            "{:<10} {:>6} {:>12} {:>12} {:>10}   model",
            "kind", "steps", "distance", "PSNR (dB)", "ms/image"
        );
    }
}

/// One row as it comes: a JSON line, or a line of the table.
fn print_row(args: &EvalArgs, guided: bool, row: &EvalRow) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(row)?);
    } else {
        if guided {
            print!(
                "{:>6} {:>10} ",
                row.guidance.map(|w| format!("{w}")).unwrap_or_default(),
                row.class_accuracy
                    .map(|a| format!("{:.1}%", 100.0 * a))
                    .unwrap_or_else(|| "-".into())
            );
        }
        println!("{}", table_line(row));
    }
    Ok(())
}

/// `--plot` without guidance: the distance against the step count, distilled and plain DDIM.
fn distance_plot(rows: &[EvalRow], path: &std::path::Path) -> Result<()> {
    let series = |kind: &str, name: &str, color| Series {
        name: name.into(),
        color,
        points: rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.frechet.map(|f| (r.steps as f64, f)))
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

/// With --guidance: class accuracy and distance against w, one line per step count for the
/// distilled students and one for the teacher's DDIM with as many steps.
/// Where `--plot PLOT --guidance ...` writes the distance plot beside PLOT.
fn distance_plot_path(path: &std::path::Path) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    path.with_file_name(format!("{stem}-distance.png"))
}

fn guidance_plots(rows: &[EvalRow], steps: &[usize], path: &std::path::Path) -> Result<()> {
    use crate::eval::plot::{plot_on, XAxis};
    const COLORS: [[u8; 3]; 4] = [[200, 40, 40], [230, 140, 30], [40, 150, 60], [120, 60, 180]];
    let axis = XAxis {
        label: "guidance weight w",
        log2: false,
    };
    let series = |value: &dyn Fn(&EvalRow) -> Option<f64>| -> Vec<Series> {
        let mut out = Vec::new();
        for (i, &n) in steps.iter().take(4).enumerate() {
            for (kind, what, shade) in [("distilled", "distilled", 0u8), ("ddim", "DDIM", 1)] {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.kind == kind && r.steps == n)
                    .filter_map(|r| Some((r.guidance?, value(r)?)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let c = COLORS[i];
                // The teacher's DDIM lines: the same hue, lighter.
                let color = if shade == 0 {
                    c
                } else {
                    c.map(|v| v / 2 + 127)
                };
                out.push(Series {
                    name: format!("{n} {what}"),
                    color,
                    points,
                });
            }
        }
        out
    };
    let acc = plot_on(
        "Class accuracy vs guidance",
        axis,
        "accuracy % (higher is better)",
        &series(&|r| r.class_accuracy.map(|a| 100.0 * a)),
    );
    crate::image::save_png(&acc, path)?;
    let dist_path = distance_plot_path(path);
    let dist = plot_on(
        "Frechet distance vs guidance",
        axis,
        "distance (lower is better)",
        &series(&|r| r.frechet),
    );
    crate::image::save_png(&dist, &dist_path)?;
    eprintln!("plots -> {}, {}", path.display(), dist_path.display());
    Ok(())
}
