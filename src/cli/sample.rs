//! `fewstep sample`: images from a model file as a PNG grid, optionally with the trajectory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::diffusion::guidance::{check_guidance, class_name, parse_class};
use crate::diffusion::{load_model, load_model_bytes, SampleOptions, Sampler, SamplerKind};
use crate::image::{image_grid, labelled_rows, save_png};
use crate::nn::NetCond;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A model file (a run's model.safetensors, or one written by `fewstep distill`), or a
    /// bundled model's name [default: fmnist-4step, the bundled 4-step Fashion-MNIST student].
    #[arg(long)]
    model: Option<String>,
    /// Sampling steps [default: the count a distilled model was made for; 64 for a teacher].
    #[arg(long)]
    steps: Option<usize>,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Seed of the initial noise (the same seed gives the same images, natively and on the web).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG (a grid of the samples).
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write a PNG whose columns are the steps: for the first --trajectory-count samples,
    /// one row of z_t and one of x_hat.
    #[arg(long)]
    trajectory: Option<PathBuf>,
    /// Samples shown in the trajectory.
    #[arg(long, default_value_t = 4)]
    trajectory_count: usize,
    /// ddim (deterministic: what distilled models are made for) or ancestral (fresh noise at
    /// every step).
    #[arg(long, default_value_t = SamplerKind::Ddim,
          value_parser = super::choice::<SamplerKind>(&SamplerKind::NAMES))]
    sampler: SamplerKind,
    /// Do not clip x_hat to [-1, 1] at each step.
    #[arg(long)]
    no_clip: bool,
    /// Pixel scale of the output grids (1 to 16).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    scale: u32,
    /// Also write the samples' values (N x C x H x W, in [-1, 1]) as JSON, e.g. to compare with
    /// what the web page draws.
    #[arg(long)]
    values: Option<PathBuf>,
    /// For a class-conditional model: the class to draw, by name (e.g. Sneaker) or number, or
    /// `all` for one row of --count images per class (every row from the same noise) [default:
    /// no class, the model's unconditional samples].
    #[arg(long, value_name = "NAME|ID|all")]
    class: Option<String>,
    /// Classifier-free guidance weight w: x_hat = (1 + w) x_hat(class) - w x_hat(no class)
    /// (0: the conditional model alone; larger: more typical of the class, less varied). A
    /// guided-distillation student takes w as an input: one evaluation per step instead of two.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "W",
        allow_negative_numbers = true
    )]
    guidance: f64,
    /// Instead of --seed: a strip of --count images (2 to 64, one row) whose starting noise
    /// moves from seed A's first image to seed B's along the sphere (spherical interpolation:
    /// the noise keeps its norm); with DDIM, deterministic, the images morph smoothly. The web
    /// page's Sample tab and its link `?interpolate=A,B&count=K` make the same strip.
    #[arg(long, value_name = "A,B", conflicts_with = "seed")]
    interpolate: Option<String>,
    /// Start from this noise instead of drawing it: a float32 .npy file [count, C, H, W] (e.g.
    /// another tool's starting noise, to reproduce its samples); --count is taken from it.
    #[arg(long, value_name = "NOISE.npy", conflicts_with = "interpolate")]
    start: Option<PathBuf>,
}

/// Host memory the samples of one `fewstep sample` may take.
const MAX_HOST_BYTES: u64 = 8 << 30;
/// Images one `fewstep sample` draws at most (per class with `--class all`): a grid of more is
/// no picture (and its count would overflow the arithmetic before any memory check).
const MAX_COUNT: usize = 1 << 20;

pub fn run(args: SampleArgs) -> Result<()> {
    use crate::diffusion::interpolate::{parse_seeds, strip_start, STRIP_COUNTS};
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&args.count),
        "--count {} is out of range: one run draws 1 to at most {MAX_COUNT} images (several \
         runs with other --seed values make more)",
        args.count
    );
    let strip = match &args.interpolate {
        Some(text) => {
            let seeds = parse_seeds(text).map_err(|e| anyhow::anyhow!("--interpolate {e}"))?;
            anyhow::ensure!(
                STRIP_COUNTS.contains(&args.count),
                "--interpolate makes a strip of --count images from A to B: give --count {} to \
                 {} (not {})",
                STRIP_COUNTS.start(),
                STRIP_COUNTS.end(),
                args.count
            );
            anyhow::ensure!(
                args.class.as_deref() != Some("all"),
                "--interpolate draws one strip: give one --class (or none), not all"
            );
            Some(seeds)
        }
        None => None,
    };
    if let Some(s) = args.steps {
        check_steps(s)?;
    }
    // --start: the noise, read and checked before any work (its shape against the model's once
    // the model is loaded).
    let start_noise = match &args.start {
        Some(p) => {
            let bytes = crate::input_file::read(p, crate::input_file::DATA_MAX)
                .map_err(|e| anyhow::anyhow!("--start {}: cannot read it: {e}", p.display()))?;
            let a = crate::npy::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("--start {}: {e}", p.display()))?;
            anyhow::ensure!(
                a.shape.len() == 4 && a.shape[0] >= 1,
                "--start {}: the array has shape {:?}; give [count, channels, height, width]",
                p.display(),
                a.shape
            );
            Some(a)
        }
        None => None,
    };
    let mut args = args;
    if let Some(a) = &start_noise {
        anyhow::ensure!(
            args.count == 16 || args.count == a.shape[0],
            "--count {} but --start holds {} images: leave --count out with --start",
            args.count,
            a.shape[0]
        );
        anyhow::ensure!(
            args.class.as_deref() != Some("all"),
            "--start gives one set of images: give one --class (or none), not all"
        );
        args.count = a.shape[0];
    }
    let name = args
        .model
        .clone()
        .unwrap_or_else(|| crate::bundled::DEFAULT_MODEL.to_string());
    let bundled = crate::bundled::find(&name).filter(|_| !Path::new(&name).exists());
    check_model_arg(Path::new(&name))?;
    // Refused before any work: an output that is the model, a device, a FIFO or a folder, or
    // whose folder does not exist (it is not created).
    let outputs: Vec<(&str, &Path)> = [
        ("--out", Some(&args.out)),
        ("--values", args.values.as_ref()),
        ("--trajectory", args.trajectory.as_ref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p?.as_path())))
    .collect();
    let mut inputs: Vec<(&str, &Path)> = match bundled {
        Some(_) => vec![],
        None => vec![("--model", Path::new(&name))],
    };
    if let Some(p) = &args.start {
        inputs.push(("--start", p.as_path()));
    }
    for (flag, path) in &outputs {
        crate::output_path::check_file(flag, path, &inputs)?;
    }
    crate::output_path::check_distinct(&outputs)?;
    let gpu = super::open_gpu()?;
    let (model, meta) = match bundled {
        Some(b) => load_model_bytes(&gpu, Path::new(b.name), b.bytes())?,
        None => load_model(&gpu, Path::new(&name))?,
    };
    let steps = args.steps.or(meta.steps.map(|s| s as usize)).unwrap_or(64);
    check_steps(steps)?;
    if let Some(made_for) = meta.steps {
        if made_for as usize != steps {
            eprintln!(
                "note: this model was distilled for {made_for} steps; sampling it with {steps} \
                 is plain DDIM on a student and usually worse"
            );
        }
    }
    eprintln!("{name}: {}", meta.describe());
    let arch = &meta.arch;
    let rows: Vec<Option<u32>> = match args.class.as_deref() {
        None => vec![None],
        Some("all") if arch.classes > 0 => (0..arch.classes as u32).map(Some).collect(),
        Some(c) => vec![Some(parse_class(arch, c).map_err(anyhow::Error::msg)?)],
    };
    if let Some(note) = check_guidance(arch, args.guidance).map_err(anyhow::Error::msg)? {
        eprintln!("{note}");
    }
    if args.guidance > 0.0 && rows == [None] {
        eprintln!(
            "note: --guidance without --class guides towards no class at all: the samples are \
             the unconditional model's; add --class NAME or --class all"
        );
    }
    let opts = SampleOptions {
        steps,
        count: args.count,
        seed: args.seed,
        kind: args.sampler,
        clip: !args.no_clip,
    };
    let [c, h, w] = model.image_shape();
    let per_image = c * h * w;
    if let Some(a) = &start_noise {
        anyhow::ensure!(
            a.shape[1..] == [c, h, w],
            "--start holds images of {}x{}x{}; the model makes {c}x{h}x{w}",
            a.shape[1],
            a.shape[2],
            a.shape[3]
        );
    }
    // The images themselves must fit in memory (and a grid of them in a PNG).
    let total = args.count * rows.len();
    let host_bytes = (total as u64).saturating_mul(per_image as u64 * 4);
    let (grid_cols, grid_rows) = if rows.len() > 1 {
        (args.count, rows.len())
    } else if strip.is_some() {
        (args.count, 1)
    } else {
        let cols = (args.count as f64).sqrt().ceil() as usize;
        (cols, args.count.div_ceil(cols))
    };
    crate::image::check_picture_size(
        "the grid (--out)",
        grid_cols as u64,
        grid_rows as u64,
        h,
        w,
        args.scale,
    )
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        host_bytes <= MAX_HOST_BYTES,
        "--count {} of {c}x{h}x{w} images needs {:.1} GB of memory for the samples alone; at \
         most {} fit in {} GB: sample fewer (or several runs with other --seed values)",
        args.count,
        host_bytes as f64 / 1e9,
        MAX_HOST_BYTES / (per_image as u64 * 4),
        MAX_HOST_BYTES >> 30
    );
    // A user asks for images, not buffers: large counts are sampled in passes that fit the
    // adapter (the same images as one pass, see Sampler::new_from).
    let pass = crate::diffusion::images_per_pass(&model);
    let per_pass = pass.images.min(args.count.next_multiple_of(4));
    if per_pass < args.count {
        eprintln!(
            "sampling in {} passes of up to {per_pass} images (this adapter's largest tensor: {} \
             MB; a pass's largest is {:.2} MB per image)",
            args.count.div_ceil(per_pass),
            pass.tensor_limit >> 20,
            pass.largest_per_image as f64 / 1e6
        );
    }
    anyhow::ensure!(
        strip.is_none() || per_pass >= args.count,
        "this adapter samples at most {per_pass} of these images at once; a strip is one pass: \
         give --count {per_pass} or fewer with --interpolate"
    );
    let shown = args.trajectory_count.min(args.count).min(per_pass);
    // Which steps get a trajectory column: all, or 16 spread evenly when there are more.
    let cols: Vec<usize> = if steps <= 16 {
        (1..=steps).collect()
    } else {
        (1..=16).map(|k| (k * steps).div_ceil(16)).collect()
    };
    if args.trajectory.is_some() {
        crate::image::check_picture_size(
            "the trajectory",
            cols.len() as u64 + 1,
            2 * shown as u64,
            h,
            w,
            args.scale,
        )
        .map_err(anyhow::Error::msg)?;
    }
    let mut z_cols = vec![];
    let mut x_cols = vec![];
    let start = Instant::now();
    let mut images = Vec::with_capacity(total * per_image);
    // Every row (class) starts from the same noise, so rows differ only by what was asked for.
    for (row, &label) in rows.iter().enumerate() {
        for first_image in (0..args.count).step_by(per_pass) {
            let count = per_pass.min(args.count - first_image);
            let cond = NetCond::uniform(count, label, args.guidance as f32);
            let pass_opts = SampleOptions { count, ..opts };
            let sampler = match (strip, &start_noise) {
                (Some(seeds), _) => Sampler::from_start(
                    pass_opts,
                    pollster::block_on(strip_start(&model, seeds, count))?,
                ),
                (None, Some(a)) => Sampler::from_start(
                    pass_opts,
                    crate::tensor::Tensor::from_slice(
                        model.net.gpu(),
                        &[count, c, h, w],
                        &a.data[first_image * per_image..(first_image + count) * per_image],
                    ),
                ),
                (None, None) => Sampler::new_from(&model, pass_opts, first_image),
            };
            let mut sampler = sampler.with_cond(cond);
            // The trajectory follows the first images, all in the first pass of the first row.
            let trace = args.trajectory.is_some() && first_image == 0 && row == 0;
            if trace {
                z_cols.push(first(&sampler.z().to_vec_blocking()?, shown * per_image));
                x_cols.push(vec![0.0; shown * per_image]);
            }
            while !sampler.is_done() {
                sampler.step(&model);
                if trace && cols.contains(&sampler.steps_done()) {
                    z_cols.push(first(&sampler.z().to_vec_blocking()?, shown * per_image));
                    let x = sampler
                        .x_hat()
                        .expect("a step was taken")
                        .to_vec_blocking()?;
                    x_cols.push(first(&x, shown * per_image));
                }
            }
            images.extend(sampler.z().to_vec_blocking()?);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let img = if rows.len() > 1 {
        let per_row = args.count * per_image;
        let labelled: Vec<(String, Vec<f32>)> = rows
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let name = class_name(arch, l.expect("a class per row"));
                (name, images[i * per_row..(i + 1) * per_row].to_vec())
            })
            .collect();
        let title = format!("guidance w = {}, seed {}", args.guidance, args.seed);
        labelled_rows(Some(&title), &labelled, c, h, w, args.scale)
    } else if strip.is_some() {
        image_grid(&images, args.count, c, h, w, args.count, args.scale, 2)
    } else {
        image_grid(&images, args.count, c, h, w, grid_cols, args.scale, 2)
    };
    save_png(&img, &args.out)?;
    let mut asked = match rows.as_slice() {
        [None] => String::new(),
        [Some(l)] => format!(" of {} (guidance {})", class_name(arch, *l), args.guidance),
        _ => format!(" ({} per class, guidance {})", args.count, args.guidance),
    };
    if let Some((a, b)) = strip {
        asked += &format!(" from seed {a} to seed {b}");
    }
    eprintln!(
        "{} images{asked} in {steps} {} steps: {:.2} s ({:.1} ms per step, {:.1} ms per image) -> {}",
        total,
        sampler_name(args.sampler),
        secs,
        secs * 1e3 / steps as f64,
        secs * 1e3 / total as f64,
        args.out.display()
    );
    if let Some(path) = &args.values {
        let json = serde_json::json!({
            "model": name,
            "steps": steps,
            "seed": args.seed,
            "count": total,
            "class": rows.iter().map(|l| l.map(|v| v as i64).unwrap_or(-1)).collect::<Vec<_>>(),
            "class_name": match rows.as_slice() {
                [Some(l)] => Some(class_name(arch, *l)),
                _ => None,
            },
            "guidance": args.guidance,
            "interpolate": strip.map(|(a, b)| [a, b]),
            "shape": [total, c, h, w],
            "values": images,
        });
        crate::nn::tensor_file::write_atomic(path, json.to_string().as_bytes())?;
        eprintln!("values -> {}", path.display());
    }
    if let Some(path) = &args.trajectory {
        // Rows: for each shown sample, z_t then x_hat; columns: the start and the chosen steps.
        let mut rows = Vec::new();
        for s in 0..shown {
            let pick = |cols: &[Vec<f32>]| -> Vec<f32> {
                cols.iter()
                    .flat_map(|col| col[s * per_image..(s + 1) * per_image].to_vec())
                    .collect()
            };
            rows.push((format!("#{s} z"), pick(&z_cols)));
            rows.push((format!("#{s} x_hat"), pick(&x_cols)));
        }
        let title = format!(
            "{steps} {} steps, seed {}. Columns: start, then steps {}",
            sampler_name(args.sampler),
            args.seed,
            cols.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let img = labelled_rows(Some(&title), &rows, c, h, w, args.scale);
        save_png(&img, path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("trajectory -> {}", path.display());
    }
    Ok(())
}

/// `--steps` from 1 to [`MAX_STEPS`](crate::diffusion::sampler::MAX_STEPS).
pub(crate) fn check_steps(steps: usize) -> Result<()> {
    let max = crate::diffusion::sampler::MAX_STEPS;
    anyhow::ensure!(
        (1..=max).contains(&steps),
        "--steps {steps} is out of range: give 1 to {max} sampling steps (a distilled model \
         takes its own 1-8, a teacher 64 to 1024)"
    );
    Ok(())
}

/// Refuses a `--model` that is neither a path that exists nor a bundled model's name.
pub(crate) fn check_model_arg(path: &Path) -> Result<()> {
    crate::input_file::check_model_exists("--model", path).map_err(anyhow::Error::msg)
}

fn first(v: &[f32], n: usize) -> Vec<f32> {
    v[..n].to_vec()
}

fn sampler_name(k: SamplerKind) -> &'static str {
    match k {
        SamplerKind::Ddim => "DDIM",
        SamplerKind::Ancestral => "ancestral",
    }
}
