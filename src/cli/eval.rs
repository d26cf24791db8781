//! `fewstep eval`: per model and step count, the Fréchet distance on the evaluation classifier's
//! features (generated vs test images), the agreement (PSNR) with the teacher's full-step
//! samples from the same noise, and the time per image; a table or JSON, and a plot.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::data::{DataSpec, Dataset, Split};
use crate::diffusion::{load_model, Denoiser, ModelMeta, SampleOptions, Sampler, SamplerKind};
use crate::eval::classifier::{all_images, features_and_predictions, load};
use crate::eval::frechet::{frechet_distance, mean_cov};
use crate::eval::plot::{plot, Series};
use crate::nn::classifier::{Classifier, FEATURES};

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
    /// The evaluation classifier (from `fewstep train-classifier`).
    #[arg(long, default_value = "assets/fmnist-classifier.safetensors")]
    classifier: PathBuf,
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

#[derive(Serialize)]
struct Row {
    model: String,
    kind: &'static str,
    steps: usize,
    frechet: Option<f64>,
    psnr_vs_teacher: Option<f64>,
    ms_per_image: f64,
    samples: usize,
}

fn sample_all(m: &Denoiser, steps: usize, n: usize, seed: u64) -> Result<(Vec<f32>, f64)> {
    let mut out = vec![];
    let start = Instant::now();
    for (b, first) in (0..n).step_by(250).enumerate() {
        let opts = SampleOptions {
            steps,
            count: (n - first).min(250),
            seed: seed + b as u64,
            kind: SamplerKind::Ddim,
            clip: true,
        };
        out.extend(Sampler::new(m, opts).run(m).to_vec_blocking()?);
    }
    Ok((out, start.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64))
}

fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    10.0 * (4.0 / mse.max(1e-12)).log10()
}

struct Distance {
    clf: Classifier,
    mu: Vec<f64>,
    cov: Vec<f64>,
    shape: [usize; 3],
}

impl Distance {
    fn of(&self, images: &[f32]) -> Result<f64> {
        let (f, _) = features_and_predictions(&self.clf, images, self.shape)?;
        let (mu, cov) = mean_cov(&f, FEATURES);
        Ok(frechet_distance(&mu, &cov, &self.mu, &self.cov))
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let gpu = super::open_gpu()?;
    let mut teacher: Option<(Denoiser, ModelMeta, String)> = None;
    let mut students: Vec<(Denoiser, ModelMeta, String)> = vec![];
    for p in &args.model {
        let (m, meta) = load_model(&gpu, p)?;
        let name = p.display().to_string();
        match meta.steps {
            Some(_) => students.push((m, meta, name)),
            None if teacher.is_none() => teacher = Some((m, meta, name)),
            None => anyhow::bail!("{name} is a second teacher; eval takes at most one"),
        }
    }
    let first_meta = teacher
        .as_ref()
        .map(|t| &t.1)
        .unwrap_or_else(|| &students[0].1);
    let shape = first_meta.image;
    let dataset = args
        .data
        .clone()
        .unwrap_or_else(|| first_meta.dataset.clone());
    // The distance needs the classifier and labelled test data of the same shape.
    let distance = (|| -> Result<Distance> {
        let (clf, cmeta) = load(&gpu, &args.classifier)?;
        anyhow::ensure!(
            [cmeta.channels, cmeta.height, cmeta.width] == shape,
            "the classifier takes {}x{}x{} images, the models make {shape:?}",
            cmeta.channels,
            cmeta.height,
            cmeta.width
        );
        let spec: DataSpec = dataset.parse()?;
        let test = Dataset::load(&spec, Split::Test, None)?;
        let (f, _) = features_and_predictions(&clf, &all_images(&test, args.samples), shape)?;
        let (mu, cov) = mean_cov(&f, FEATURES);
        eprintln!(
            "distance: classifier {} (test accuracy {:.2}%), {} test images of {dataset}",
            args.classifier.display(),
            100.0 * cmeta.test_accuracy,
            f.len() / FEATURES
        );
        Ok(Distance {
            clf,
            mu,
            cov,
            shape,
        })
    })();
    let distance = match distance {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!(
                "note: no Fréchet distance: {e:#} (train one with `fewstep train-classifier`)"
            );
            None
        }
    };
    let full = args.teacher_steps.unwrap_or_else(|| {
        students
            .iter()
            .filter_map(|s| s.1.lineage.steps_path.first().map(|&v| v as usize))
            .max()
            .unwrap_or(256)
    });
    let reference = match &teacher {
        Some((t, _, _)) => {
            eprintln!(
                "reference: the teacher with {full} DDIM steps on {} images",
                args.psnr_samples
            );
            Some(sample_all(t, full, args.psnr_samples, args.seed)?.0)
        }
        None => {
            eprintln!("note: no teacher given, so no agreement PSNR");
            None
        }
    };
    let mut rows = vec![];
    let evaluate = |m: &Denoiser, name: &str, kind: &'static str, n: usize| -> Result<Row> {
        let (imgs, ms) = sample_all(m, n, args.samples, args.seed)?;
        let frechet = distance.as_ref().map(|d| d.of(&imgs)).transpose()?;
        let psnr_v = match &reference {
            // The teacher at its full count is the reference itself.
            Some(_) if kind == "teacher" && n == full => None,
            Some(r) => {
                let (mine, _) = sample_all(m, n, args.psnr_samples, args.seed)?;
                Some(psnr(&mine, r))
            }
            None => None,
        };
        let row = Row {
            model: name.to_string(),
            kind,
            steps: n,
            frechet,
            psnr_vs_teacher: psnr_v,
            ms_per_image: ms,
            samples: args.samples,
        };
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            let f = |v: Option<f64>, p: usize| {
                v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<10} {:>6} {:>12} {:>12} {:>10.2}   {}",
                kind,
                n,
                f(row.frechet, 3),
                f(row.psnr_vs_teacher, 2),
                row.ms_per_image,
                name
            );
        }
        Ok(row)
    };
    if !args.json {
        println!(
            "{:<10} {:>6} {:>12} {:>12} {:>10}   model",
            "kind", "steps", "distance", "PSNR (dB)", "ms/image"
        );
    }
    for &n in &args.steps {
        for (m, meta, name) in &students {
            if meta.steps == Some(n as u32) {
                rows.push(evaluate(m, name, "distilled", n)?);
            }
        }
        if let Some((t, _, name)) = &teacher {
            rows.push(evaluate(t, name, "ddim", n)?);
        }
    }
    if let Some((t, _, name)) = &teacher {
        let n = args.teacher_distance_steps.unwrap_or(full);
        if !args.steps.contains(&n) {
            rows.push(evaluate(t, name, "teacher", n)?);
        }
    }
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
        crate::eval::grid::save_png(&img, path)?;
        eprintln!("plot -> {}", path.display());
    }
    Ok(())
}
