//! `fewstep compare`: one PNG with a row per (step count, sampler): the distilled model for that
//! count against the teacher's plain DDIM with as many steps, from the same noise.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::diffusion::{load_model, Denoiser, SampleOptions, Sampler, SamplerKind};
use crate::image::{labelled_rows, save_png};

/// Images per row at most: beyond this a row is no picture to compare by eye.
const MAX_COUNT: usize = 1024;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Model files: distilled students (each used at its own step count) and at most one teacher
    /// (sampled with plain DDIM at every step count).
    #[arg(long, num_args = 1.., required = true)]
    model: Vec<PathBuf>,
    /// Step counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    steps: Vec<usize>,
    /// Images per row.
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Seed of the initial noise, the same in every row.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "compare.png")]
    out: PathBuf,
    /// Pixel scale (1 to 16).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    scale: u32,
    /// For class-conditional models: the class every row draws, by name or number.
    #[arg(long, value_name = "NAME|ID")]
    class: Option<String>,
    /// Classifier-free guidance weight w (with --class).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "W",
        allow_negative_numbers = true
    )]
    guidance: f64,
}

pub fn run(args: CompareArgs) -> Result<()> {
    check_args(&args)?;
    let gpu = super::open_gpu()?;
    let models = load_models(&gpu, &args)?;
    let per_pass = fit_and_warm(&args, &models)?;
    let (rows, report) = sample_rows(&args, &models, per_pass)?;
    write_picture(&args, &models, &rows, &report)
}

/// Every flag in range and the output path usable, before any work.
fn check_args(args: &CompareArgs) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&args.count),
        "--count {}: a comparison row holds 1 to {MAX_COUNT} images (default 8); for many \
         samples use `fewstep sample --count` or `fewstep eval`",
        args.count
    );
    for &s in &args.steps {
        super::sample::check_steps(s)?;
    }
    let mut inputs = Vec::new();
    for m in &args.model {
        super::sample::check_model_arg(m)?;
        inputs.push(("--model", m.as_path()));
    }
    crate::output_path::check_file("--out", &args.out, &inputs)?;
    Ok(())
}

/// The models of a comparison: at most one teacher, the students by step count, the image
/// shape they share and the class asked for (checked against each model).
struct Models {
    teacher: Option<Denoiser>,
    students: Vec<(usize, Denoiser)>,
    shape: [usize; 3],
    asked_class: Option<u32>,
}

fn load_models(gpu: &crate::gpu::Gpu, args: &CompareArgs) -> Result<Models> {
    let mut teacher: Option<Denoiser> = None;
    let mut students: Vec<(usize, Denoiser)> = vec![];
    let mut shape = None;
    let mut asked_class = None;
    for path in &args.model {
        let (m, meta) =
            load_model(gpu, path).with_context(|| format!("--model {}", path.display()))?;
        if let Some(c) = &args.class {
            let l = crate::diffusion::guidance::parse_class(&meta.arch, c)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if asked_class.is_some_and(|k| k != l) {
                bail!(
                    "{}: --class {c} names another class there than in the other models",
                    path.display()
                );
            }
            asked_class = Some(l);
        }
        if let Some(note) = crate::diffusion::guidance::check_guidance(&meta.arch, args.guidance)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        {
            eprintln!("{}: {note}", path.display());
        }
        if shape.is_some_and(|s| s != m.image_shape()) {
            bail!(
                "{} makes images of another shape than the other models",
                path.display()
            );
        }
        shape = Some(m.image_shape());
        match meta.steps {
            Some(s) => students.push((s as usize, m)),
            None if teacher.is_none() => teacher = Some(m),
            None => bail!(
                "{} is a second teacher; compare takes at most one",
                path.display()
            ),
        }
    }
    Ok(Models {
        teacher,
        students,
        shape: shape.expect("at least one model"),
        asked_class,
    })
}

/// Checks that the picture fits, finds the images per pass every model fits, and compiles every
/// pipeline before anything is timed.
fn fit_and_warm(args: &CompareArgs, models: &Models) -> Result<usize> {
    let (teacher, students) = (&models.teacher, &models.students);
    let [_, h, w] = models.shape;
    let row_count = args.steps.len() * (students.len() + usize::from(teacher.is_some()));
    crate::image::check_picture_size(
        "the comparison (--out)",
        args.count as u64,
        row_count as u64,
        h,
        w,
        args.scale,
    )
    .map_err(anyhow::Error::msg)?;
    // Images per pass that every model's passes fit (measured once, before any timing).
    let per_pass = teacher
        .iter()
        .chain(students.iter().map(|(_, m)| m))
        .map(|m| crate::diffusion::images_per_pass(m).images)
        .min()
        .expect("at least one model");
    // Compile every pipeline before timing anything.
    for m in teacher.iter().chain(students.iter().map(|(_, m)| m)) {
        let warm = SampleOptions {
            steps: 1,
            count: args.count.min(per_pass),
            seed: args.seed,
            kind: SamplerKind::Ddim,
            clip: true,
        };
        Sampler::new(m, warm).run(m).to_vec_blocking()?;
    }
    Ok(per_pass)
}

/// One row per step count and model (a student made for it, and the teacher's DDIM), every
/// row from the same noise; and a timing line per row.
#[allow(clippy::type_complexity)]
fn sample_rows(
    args: &CompareArgs,
    models: &Models,
    per_pass: usize,
) -> Result<(Vec<(String, Vec<f32>)>, Vec<String>)> {
    let (teacher, students, asked_class) = (&models.teacher, &models.students, models.asked_class);
    let mut rows = vec![];
    let mut report = vec![];
    for &n in &args.steps {
        if n == 0 {
            bail!("step counts start at 1");
        }
        let mut entries: Vec<(String, &Denoiser)> = students
            .iter()
            .filter(|(s, _)| *s == n)
            .map(|(_, m)| (format!("{n} distilled"), m))
            .collect();
        if let Some(t) = &teacher {
            entries.push((format!("{n} DDIM"), t));
        }
        if entries.is_empty() {
            eprintln!("note: no model for {n} steps (no {n}-step student and no teacher)");
        }
        for (label, m) in entries {
            let opts = SampleOptions {
                steps: n,
                count: args.count,
                seed: args.seed,
                kind: SamplerKind::Ddim,
                clip: true,
            };
            let start = Instant::now();
            let cond = if asked_class.is_some() || args.guidance > 0.0 {
                crate::nn::NetCond::uniform(args.count, asked_class, args.guidance as f32)
            } else {
                crate::nn::NetCond::NONE
            };
            let x = crate::diffusion::sampler::sample_in_passes(m, opts, &cond, per_pass)?;
            let secs = start.elapsed().as_secs_f64();
            report.push(format!(
                "{label:<14} {:>8.1} ms for {} images",
                secs * 1e3,
                args.count
            ));
            rows.push((label, x));
        }
    }
    Ok((rows, report))
}

/// The labelled rows as one PNG (`--out`), then the timings.
fn write_picture(
    args: &CompareArgs,
    models: &Models,
    rows: &[(String, Vec<f32>)],
    report: &[String],
) -> Result<()> {
    let [c, h, w] = models.shape;
    let asked = match &args.class {
        Some(c) => format!(", class {c}, guidance {}", args.guidance),
        None => String::new(),
    };
    let title = format!(
        "same noise in every row (seed {}{asked}), label = steps and model",
        args.seed
    );
    let img = labelled_rows(Some(&title), rows, c, h, w, args.scale);
    save_png(&img, &args.out)?;
    for r in report {
        eprintln!("{r}");
    }
    eprintln!("-> {}", args.out.display());
    Ok(())
}
