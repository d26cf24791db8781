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
    // Parse and check: every flag, the noise file and the outputs, before any work.
    let strip = check_count_and_strip(&args)?;
    let (args, start_noise) = read_start_noise(args)?;
    let name = args
        .model
        .clone()
        .unwrap_or_else(|| crate::bundled::DEFAULT_MODEL.to_string());
    let bundled = crate::bundled::find(&name).filter(|_| !Path::new(&name).exists());
    check_model_arg(Path::new(&name))?;
    check_outputs(&args, &name, bundled.is_some())?;
    // Load the model, and lay out what it is asked for.
    let gpu = super::open_gpu()?;
    let (model, meta) = match bundled {
        Some(b) => load_model_bytes(&gpu, Path::new(b.name), b.bytes())?,
        None => load_model(&gpu, Path::new(&name))?,
    };
    let plan = Plan::new(&args, (&name, &model, &meta), strip, start_noise.as_ref())?;
    // Sample, then write the grid, the values and the trajectory.
    let drawn = draw(&args, &model, &plan, start_noise.as_ref())?;
    write_grid(&args, &meta.arch, &plan, &drawn)?;
    if let Some(path) = &args.values {
        write_values(path, &name, &args, &meta.arch, &plan, &drawn.images)?;
    }
    if let Some(path) = &args.trajectory {
        write_trajectory(path, &args, &plan, &drawn)?;
    }
    Ok(())
}

/// `--count` in range, and `--interpolate`'s seeds with the count and class it needs.
fn check_count_and_strip(args: &SampleArgs) -> Result<Option<(u64, u64)>> {
    use crate::diffusion::interpolate::{parse_seeds, STRIP_COUNTS};
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
    Ok(strip)
}

/// `--start`: the noise, read and checked before any work (its shape against the model's once
/// the model is loaded); `--count` becomes its image count.
fn read_start_noise(mut args: SampleArgs) -> Result<(SampleArgs, Option<crate::npy::Array>)> {
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
    Ok((args, start_noise))
}

/// Refused before any work: an output that is the model (or the noise), a device, a FIFO or a
/// folder, or whose folder does not exist (it is not created), and two outputs on one path.
fn check_outputs(args: &SampleArgs, name: &str, bundled: bool) -> Result<()> {
    let outputs: Vec<(&str, &Path)> = [
        ("--out", Some(&args.out)),
        ("--values", args.values.as_ref()),
        ("--trajectory", args.trajectory.as_ref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p?.as_path())))
    .collect();
    let mut inputs: Vec<(&str, &Path)> = if bundled {
        vec![]
    } else {
        vec![("--model", Path::new(name))]
    };
    if let Some(p) = &args.start {
        inputs.push(("--start", p.as_path()));
    }
    for (flag, path) in &outputs {
        crate::output_path::check_file(flag, path, &inputs)?;
    }
    crate::output_path::check_distinct(&outputs)?;
    Ok(())
}

/// What one `fewstep sample` draws, laid out: steps, rows (classes), passes, the grid and the
/// trajectory's columns.
struct Plan {
    steps: usize,
    /// One row per class asked for (`None`: no class).
    rows: Vec<Option<u32>>,
    opts: SampleOptions,
    shape: [usize; 3],
    /// All images: `--count` per row.
    total: usize,
    grid_cols: usize,
    /// Images sampled at once (the adapter's limit).
    per_pass: usize,
    strip: Option<(u64, u64)>,
    /// Samples shown in the trajectory, and the steps that get a column.
    shown: usize,
    cols: Vec<usize>,
}

impl Plan {
    /// `loaded`: the model's name (for the line that describes it), the model and its metadata.
    fn new(
        args: &SampleArgs,
        (name, model, meta): (
            &str,
            &crate::diffusion::Denoiser,
            &crate::diffusion::ModelMeta,
        ),
        strip: Option<(u64, u64)>,
        start_noise: Option<&crate::npy::Array>,
    ) -> Result<Plan> {
        let steps = args.steps.or(meta.steps.map(|s| s as usize)).unwrap_or(64);
        check_steps(steps)?;
        if let Some(made_for) = meta.steps {
            if made_for as usize != steps {
                eprintln!(
                    "note: this model was distilled for {made_for} steps; sampling it with \
                     {steps} is plain DDIM on a student and usually worse"
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
                "note: --guidance without --class guides towards no class at all: the samples \
                 are the unconditional model's; add --class NAME or --class all"
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
        if let Some(a) = start_noise {
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
            "--count {} of {c}x{h}x{w} images needs {:.1} GB of memory for the samples alone; \
             at most {} fit in {} GB: sample fewer (or several runs with other --seed values)",
            args.count,
            host_bytes as f64 / 1e9,
            MAX_HOST_BYTES / (per_image as u64 * 4),
            MAX_HOST_BYTES >> 30
        );
        // A user asks for images, not buffers: large counts are sampled in passes that fit the
        // adapter (the same images as one pass, see Sampler::new_from).
        let pass = crate::diffusion::images_per_pass(model);
        let per_pass = pass.images.min(args.count.next_multiple_of(4));
        if per_pass < args.count {
            eprintln!(
                "sampling in {} passes of up to {per_pass} images (this adapter's largest \
                 tensor: {} MB; a pass's largest is {:.2} MB per image)",
                args.count.div_ceil(per_pass),
                pass.tensor_limit >> 20,
                pass.largest_per_image as f64 / 1e6
            );
        }
        anyhow::ensure!(
            strip.is_none() || per_pass >= args.count,
            "this adapter samples at most {per_pass} of these images at once; a strip is one \
             pass: give --count {per_pass} or fewer with --interpolate"
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
        Ok(Plan {
            steps,
            rows,
            opts,
            shape: [c, h, w],
            total,
            grid_cols,
            per_pass,
            strip,
            shown,
            cols,
        })
    }

    fn per_image(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What sampling gave: every image (row after row), the trajectory's columns, the seconds.
struct Drawn {
    images: Vec<f32>,
    z_cols: Vec<Vec<f32>>,
    x_cols: Vec<Vec<f32>>,
    secs: f64,
}

/// Samples every row in passes; every row (class) starts from the same noise, so rows differ
/// only by what was asked for.
fn draw(
    args: &SampleArgs,
    model: &crate::diffusion::Denoiser,
    plan: &Plan,
    start_noise: Option<&crate::npy::Array>,
) -> Result<Drawn> {
    use crate::diffusion::interpolate::strip_start;
    let [c, h, w] = plan.shape;
    let per_image = plan.per_image();
    let (shown, per_pass) = (plan.shown, plan.per_pass);
    let mut z_cols = vec![];
    let mut x_cols = vec![];
    let start = Instant::now();
    let mut images = Vec::with_capacity(plan.total * per_image);
    for (row, &label) in plan.rows.iter().enumerate() {
        for first_image in (0..args.count).step_by(per_pass) {
            let count = per_pass.min(args.count - first_image);
            let cond = NetCond::uniform(count, label, args.guidance as f32);
            let pass_opts = SampleOptions { count, ..plan.opts };
            let sampler = match (plan.strip, start_noise) {
                (Some(seeds), _) => Sampler::from_start(
                    pass_opts,
                    pollster::block_on(strip_start(model, seeds, count))?,
                ),
                (None, Some(a)) => Sampler::from_start(
                    pass_opts,
                    crate::tensor::Tensor::from_slice(
                        model.net.gpu(),
                        &[count, c, h, w],
                        &a.data[first_image * per_image..(first_image + count) * per_image],
                    ),
                ),
                (None, None) => Sampler::new_from(model, pass_opts, first_image),
            };
            let mut sampler = sampler.with_cond(cond);
            // The trajectory follows the first images, all in the first pass of the first row.
            let trace = args.trajectory.is_some() && first_image == 0 && row == 0;
            if trace {
                z_cols.push(first(&sampler.z().to_vec_blocking()?, shown * per_image));
                x_cols.push(vec![0.0; shown * per_image]);
            }
            while !sampler.is_done() {
                sampler.step(model);
                if trace && plan.cols.contains(&sampler.steps_done()) {
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
    Ok(Drawn {
        images,
        z_cols,
        x_cols,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// The grid (`--out`): a labelled row per class, one strip, or a square grid; and the line
/// that says what was drawn and how fast.
fn write_grid(
    args: &SampleArgs,
    arch: &crate::nn::UNetConfig,
    plan: &Plan,
    drawn: &Drawn,
) -> Result<()> {
    let [c, h, w] = plan.shape;
    let (rows, images, steps) = (&plan.rows, &drawn.images, plan.steps);
    let img = if rows.len() > 1 {
        let per_row = args.count * plan.per_image();
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
    } else if plan.strip.is_some() {
        image_grid(images, args.count, c, h, w, args.count, args.scale, 2)
    } else {
        image_grid(images, args.count, c, h, w, plan.grid_cols, args.scale, 2)
    };
    save_png(&img, &args.out)?;
    let mut asked = match rows.as_slice() {
        [None] => String::new(),
        [Some(l)] => format!(" of {} (guidance {})", class_name(arch, *l), args.guidance),
        _ => format!(" ({} per class, guidance {})", args.count, args.guidance),
    };
    if let Some((a, b)) = plan.strip {
        asked += &format!(" from seed {a} to seed {b}");
    }
    let secs = drawn.secs;
    eprintln!(
        "{} images{asked} in {steps} {} steps: {:.2} s ({:.1} ms per step, {:.1} ms per image) -> {}",
        plan.total,
        sampler_name(args.sampler),
        secs,
        secs * 1e3 / steps as f64,
        secs * 1e3 / plan.total as f64,
        args.out.display()
    );
    Ok(())
}

/// `--values`: the samples and what made them, as JSON.
fn write_values(
    path: &Path,
    name: &str,
    args: &SampleArgs,
    arch: &crate::nn::UNetConfig,
    plan: &Plan,
    images: &[f32],
) -> Result<()> {
    let rows = &plan.rows;
    let [c, h, w] = plan.shape;
    let json = serde_json::json!({
        "model": name,
        "steps": plan.steps,
        "seed": args.seed,
        "count": plan.total,
        "class": rows.iter().map(|l| l.map(|v| v as i64).unwrap_or(-1)).collect::<Vec<_>>(),
        "class_name": match rows.as_slice() {
            [Some(l)] => Some(class_name(arch, *l)),
            _ => None,
        },
        "guidance": args.guidance,
        "interpolate": plan.strip.map(|(a, b)| [a, b]),
        "shape": [plan.total, c, h, w],
        "values": images,
    });
    crate::nn::tensor_file::write_atomic(path, json.to_string().as_bytes())?;
    eprintln!("values -> {}", path.display());
    Ok(())
}

/// `--trajectory`: for each shown sample a row of z_t and one of x_hat; columns: the start and
/// the chosen steps.
fn write_trajectory(path: &Path, args: &SampleArgs, plan: &Plan, drawn: &Drawn) -> Result<()> {
    let [c, h, w] = plan.shape;
    let per_image = plan.per_image();
    let mut rows = Vec::new();
    for s in 0..plan.shown {
        let pick = |cols: &[Vec<f32>]| -> Vec<f32> {
            cols.iter()
                .flat_map(|col| col[s * per_image..(s + 1) * per_image].to_vec())
                .collect()
        };
        rows.push((format!("#{s} z"), pick(&drawn.z_cols)));
        rows.push((format!("#{s} x_hat"), pick(&drawn.x_cols)));
    }
    let title = format!(
        "{} {} steps, seed {}. Columns: start, then steps {}",
        plan.steps,
        sampler_name(args.sampler),
        args.seed,
        plan.cols
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let img = labelled_rows(Some(&title), &rows, c, h, w, args.scale);
    save_png(&img, path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("trajectory -> {}", path.display());
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
