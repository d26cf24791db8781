//! `fewstep` subcommands (native only).

mod bench;
mod bench_distill;
mod bench_model;
mod bench_print;
mod bench_profile;
mod compare;
mod convert;
pub(crate) mod distill;
mod eval;
mod recipe;
mod sample;
pub(crate) mod train;
mod train_classifier;
mod tune;

use clap::{Parser, Subcommand};

use crate::gpu::{Gpu, GpuOptions};

/// fewstep: diffusion models distilled to a few sampling steps, on any GPU through wgpu.
///
/// Environment: FEWSTEP_BACKEND (vulkan, metal, dx12, gl) and FEWSTEP_ADAPTER (part of an
/// adapter's name) choose the GPU; FEWSTEP_KERNELS=blocked|subgroup|tiled|coop forces a GEMM
/// kernel family (coop: tensor cores, f16 operands, after a self-check) and
/// FEWSTEP_GEMM_TILE=BMxBNxBKxTMxTN the blocked family's tile; FEWSTEP_PRECISION=f32|mixed is
/// --precision's default (`fewstep info` shows which runs and why).
#[derive(Parser)]
#[command(
    name = "fewstep",
    version,
    about,
    long_about,
    after_help = "Examples:\n  fewstep                     the desktop app, with the bundled models\n  fewstep sample --model fmnist-4step --steps 4 --seed 1 --out grid.png\n  fewstep <COMMAND> --help    a command's flags, and an example"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// GEMM precision: f32 (the default: the same numbers on every adapter, in the desktop app
    /// and in the browser) or mixed (f16 operands with f32 accumulation on cooperative matrices,
    /// where the adapter has them and they pass fewstep's self-check; their speed has not been
    /// measured on a GPU yet). Overrides FEWSTEP_PRECISION.
    #[arg(long, global = true, value_name = "f32|mixed")]
    precision: Option<crate::gpu::Precision>,
}

#[derive(Subcommand)]
enum Command {
    /// The desktop app (what `fewstep` with no subcommand opens): the bundled models, sampling
    /// step by step, step counts side by side.
    #[command(
        after_help = "Example:\n  fewstep app --model fmnist-4step --steps 4 --seed 1 --run"
    )]
    App(AppArgs),
    /// Print the GPU adapter, backend, driver, features and the limits that matter; with
    /// --model, describe a model file instead (architecture, parameters, lineage).
    #[command(after_help = "Example:\n  fewstep info --model fmnist-4step")]
    Info {
        /// A model file to describe.
        #[arg(long)]
        model: Option<std::path::PathBuf>,
    },
    /// Measure speed; prints a table, or one JSON object per line with --json.
    #[command(after_help = "Example:\n  fewstep bench train --preset small --batch 64")]
    Bench(bench::BenchArgs),
    /// Train a diffusion model (the teacher) on a data set: Algorithm 1 of the paper.
    #[command(
        after_help = "Example:\n  fewstep train --data fashion-mnist --preset tiny --steps 300 --out runs/tiny"
    )]
    Train(train::TrainArgs),
    /// Sample a model file with DDIM or the ancestral sampler; writes a PNG grid.
    #[command(
        after_help = "Example:\n  fewstep sample --model runs/tiny/model.safetensors --steps 8 --count 16 --out grid.png"
    )]
    Sample(sample::SampleArgs),
    /// Progressive distillation (Algorithm 2): halve a teacher's sampling steps again and again,
    /// writing one model file per step count.
    #[command(
        after_help = "Example:\n  fewstep distill --teacher runs/tiny/model.safetensors --from-steps 8 --to-steps 1 --updates 100 --out runs/distill"
    )]
    Distill(distill::DistillArgs),
    /// One PNG comparing step counts: distilled students against the teacher's plain DDIM with
    /// the same number of steps, from the same noise.
    #[command(
        after_help = "Example:\n  fewstep compare --model runs/distill/steps-*.safetensors runs/tiny/model.safetensors --steps 1,2,4,8 --out compare.png"
    )]
    Compare(compare::CompareArgs),
    /// Evaluate models per step count: Fréchet distance on the evaluation classifier's features,
    /// agreement (PSNR) with the teacher's full-step samples, time per image.
    #[command(
        after_help = "Example:\n  fewstep eval --model runs/distill/steps-*.safetensors runs/tiny/model.safetensors --steps 1,2,4,8 --samples 1000 --json"
    )]
    Eval(eval::EvalArgs),
    /// Train the evaluation classifier (its features give `eval` its Fréchet distance).
    #[command(
        after_help = "Example:\n  fewstep train-classifier --data fashion-mnist --out classifier.safetensors"
    )]
    TrainClassifier(train_classifier::TrainClassifierArgs),
    /// Rewrite a model file in f16 (half the size, for the web) or f32.
    #[command(
        after_help = "Example:\n  fewstep convert --model runs/distill/steps-4.safetensors --out steps-4-f16.safetensors --f16"
    )]
    Convert(convert::ConvertArgs),
    /// The whole recipe in one command: train a teacher, distill it down to 1 step, evaluate
    /// every step count, write f16 copies and a bundle folder with a manifest.json. Prints its
    /// plan and an estimate first; --resume continues an interrupted recipe.
    #[command(after_help = "Example:\n  fewstep recipe --preset quick --out runs/recipe")]
    Recipe(recipe::RecipeArgs),
    /// Time every GEMM kernel a model's training update and sampling step meet on this adapter
    /// and keep the fastest for each (runs otherwise tune what they meet, once; FEWSTEP_TUNE=off
    /// keeps the fixed rule). Prints the plan next to the rule's choice.
    Tune(tune::TuneArgs),
    /// Check the kernels on this adapter against CPU references (the same checks the browser runs).
    #[command(after_help = "Example:\n  fewstep selftest --precision mixed")]
    Selftest {
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        /// Seed for the inputs (default: from the clock, so each run draws fresh inputs).
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = flags_take_negative_numbers(Cli::command());
    let matches = cmd.clone().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(p) = cli.precision {
        crate::gpu::set_precision_flag(p);
    }
    // What was typed, as opposed to defaults: a resumed run refuses a typed flag it would ignore.
    if let Some((name, m)) = matches.subcommand() {
        let sub = cmd.find_subcommand(name).expect("a parsed subcommand");
        match &mut cli.command {
            Some(Command::Train(a)) => a.given = given_flags(m, sub),
            Some(Command::Recipe(a)) => a.given = given_flags(m, sub),
            _ => {}
        }
    }
    if !matches!(cli.command, None | Some(Command::App(_))) {
        ends_quietly_on_a_closed_pipe();
    }
    let result = match cli.command.unwrap_or(Command::App(AppArgs::default())) {
        Command::App(a) => a
            .check()
            .and_then(|_| crate::app::native::run(a.into_start())),
        Command::Info { model: None } => info(),
        Command::Info { model: Some(m) } => describe_model(&m),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Eval(args) => eval::run(args),
        Command::TrainClassifier(args) => train_classifier::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Recipe(args) => recipe::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Selftest { json, seed } => selftest(json, seed),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every option that takes a value takes it even when it starts with `-`: `--count -5` is then
/// refused by the option's own parser, naming the option, instead of clap's "unexpected argument
/// '-5'" that names none.
fn flags_take_negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_action().takes_values() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(flags_take_negative_numbers)
}

/// The ids of `cmd`'s options given on the command line (not defaulted), as their flags' names
/// without dashes (`grad_clip`).
fn given_flags(m: &clap::ArgMatches, cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

/// A closed stdout ends the program as it ends `ls | head`: quietly, by SIGPIPE, instead of a
/// panic from `println!` (Rust ignores SIGPIPE by default). Not for the app, whose window
/// system connection must not kill it.
fn ends_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds (an error that prints its source as well would otherwise say it twice).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[derive(clap::Args, Debug, Default)]
struct AppArgs {
    /// A bundled model's name (fmnist-4step, fmnist-2step, fmnist-1step, fmnist-teacher) or a
    /// model file to open and select.
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Number of images.
    #[arg(long)]
    count: Option<usize>,
    /// Start sampling as soon as the window opens.
    #[arg(long)]
    run: bool,
    /// Start a comparison of 1, 2 and 4 steps (distilled vs the teacher's DDIM) instead.
    #[arg(long)]
    compare: bool,
    /// When the started run is done, save the window as this PNG and close it.
    #[arg(long)]
    screenshot: Option<String>,
}

impl AppArgs {
    /// The screenshot path by the one output rule, before a window opens.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.screenshot {
            let inputs: Vec<(&str, &std::path::Path)> = self
                .model
                .iter()
                .map(|m| ("--model", std::path::Path::new(m)))
                .collect();
            crate::output_path::check_file("--screenshot", std::path::Path::new(p), &inputs)?;
        }
        Ok(())
    }

    fn into_start(self) -> crate::app::StartOptions {
        let run = self.run || self.model.is_some() && self.steps.is_some();
        crate::app::StartOptions {
            model: self.model,
            steps: self.steps,
            seed: self.seed,
            count: self.count,
            run,
            compare: self.compare,
            screenshot: self.screenshot,
            ..Default::default()
        }
    }
}

/// `fewstep train` / `fewstep distill` arguments parsed from words, as on a command line: `fewstep
/// recipe` runs its stages this way, so they are exactly the commands it prints.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct TrainOnly {
    #[command(flatten)]
    args: train::TrainArgs,
}
#[derive(Parser)]
#[command(no_binary_name = true)]
struct DistillOnly {
    #[command(flatten)]
    args: distill::DistillArgs,
}
pub(crate) fn parse_train(words: &[String]) -> Result<train::TrainArgs, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = flags_take_negative_numbers(TrainOnly::command());
    let m = cmd.clone().try_get_matches_from(words)?;
    let mut args = TrainOnly::from_arg_matches(&m)?.args;
    args.given = given_flags(&m, &cmd);
    Ok(args)
}
pub(crate) fn parse_distill(words: &[String]) -> Result<distill::DistillArgs, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let m = flags_take_negative_numbers(DistillOnly::command()).try_get_matches_from(words)?;
    Ok(DistillOnly::from_arg_matches(&m)?.args)
}

/// Progress bars draw only on a terminal; when stderr goes to a file, long commands print plain
/// progress lines instead.
pub(crate) fn log_when_not_a_terminal(line: &str) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        eprintln!("{line}");
    }
}

pub(crate) fn open_gpu() -> anyhow::Result<Gpu> {
    Ok(Gpu::new_blocking(GpuOptions::for_runs())?)
}

fn info() -> anyhow::Result<()> {
    let gpu = open_gpu()?;
    print!("{}", gpu.describe());
    println!(
        "GEMM:      {}",
        crate::tensor::kernel_policy::describe_gemm(&gpu)
    );
    println!(
        "precision: {}",
        crate::tensor::kernel_policy::describe_precision(&gpu)
    );
    print_plan(&gpu);
    Ok(())
}

/// The tuned kernel plan of this adapter: where it is kept and its entries.
fn print_plan(gpu: &Gpu) {
    use crate::tensor::tuner;
    let kept = tuner::kept_where();
    if !gpu.tunes() {
        let opts = GpuOptions::for_runs();
        let why = if opts.tune == Some(false) {
            "FEWSTEP_TUNE=off"
        } else if opts.variant.is_some() || opts.gemm_tile.is_some() || opts.split_k.is_some() {
            "FEWSTEP_KERNELS, FEWSTEP_GEMM_TILE or FEWSTEP_SPLIT_K forces the kernels"
        } else {
            "a CPU adapter keeps the rule measured on lavapipe; FEWSTEP_TUNE=on tunes"
        };
        println!("plan:      off ({why}): the fixed rule above; a plan would be {kept}");
        return;
    }
    let plan = tuner::plan(gpu);
    println!(
        "plan:      {} GEMM problems tuned on this adapter, {kept} (runs tune what they meet \
         once; `fewstep tune` up front){}",
        plan.len(),
        if plan.is_empty() { "" } else { ":" }
    );
    for (bucket, choice) in plan {
        println!("           {bucket:<36} {choice}");
    }
}

fn describe_model(path: &std::path::Path) -> anyhow::Result<()> {
    sample::check_model_arg(path)?;
    if path.is_dir() {
        let (meta, tensors) = crate::diffusion::model_file::import_diffusers(path)?;
        let params: usize = tensors.iter().map(|t| t.data.len()).sum();
        println!("{}", meta.describe());
        println!("parameters: {params} in {} tensors", tensors.len());
        println!("steps:      any (a teacher: DDIM on its discrete schedule, trailing timesteps)");
        if let Some(s) = &meta.arch.noise_schedule {
            println!("schedule:   {}", s.describe());
        }
        println!("arch:       {}", serde_json::to_string(&meta.arch)?);
        return Ok(());
    }
    let bytes = crate::input_file::read_model(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let (meta, tensors) = crate::diffusion::parse_model(path, &bytes)?;
    let params: usize = tensors.iter().map(|t| t.data.len()).sum();
    println!("{}", meta.describe());
    println!("parameters: {params} in {} tensors", tensors.len());
    println!(
        "steps:      {}",
        meta.steps
            .map(|s| s.to_string())
            .unwrap_or_else(|| "any (a teacher: plain DDIM)".into())
    );
    println!(
        "lineage:    {} halvings{}{}",
        meta.lineage.halvings,
        if meta.lineage.steps_path.is_empty() {
            String::new()
        } else {
            format!(
                ", steps {}",
                meta.lineage
                    .steps_path
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )
        },
        meta.lineage
            .parent_sha256
            .as_ref()
            .map(|h| format!(", parent sha256 {h}"))
            .unwrap_or_default()
    );
    if let Some(h) = &meta.lineage.converted_from_sha256 {
        println!("converted:  from the file with sha256 {h} (same model, other precision)");
    }
    println!(
        "sha256:     {}",
        crate::diffusion::model_file::sha256_hex(&bytes)
    );
    if let Some(s) = &meta.arch.noise_schedule {
        println!("schedule:   {}", s.describe());
    }
    println!("arch:       {}", serde_json::to_string(&meta.arch)?);
    println!("command:    {}", meta.command);
    manifest_figures(path, &bytes);
    Ok(())
}

/// The eval figures a manifest.json next to a model file gives for it (a bundle folder from
/// `fewstep recipe`, or assets/ for the bundled models).
fn manifest_figures(path: &std::path::Path, bytes: &[u8]) {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let manifest_path = dir.join("manifest.json");
    let Ok(text) = crate::input_file::read_text(&manifest_path, crate::input_file::TEXT_MAX) else {
        return;
    };
    let manifest = match crate::bundled::Manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            println!(
                "manifest:   {} is unreadable ({e})",
                manifest_path.display()
            );
            return;
        }
    };
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let Some(entry) = manifest.model_by_file(file) else {
        return;
    };
    let e = &manifest.eval;
    println!(
        "eval:       {} (from {}: {} images per row, agreement PSNR against the teacher at {} \
         DDIM steps on {} images; {}, {})",
        entry
            .summary()
            .unwrap_or_else(|| "no figures recorded".into()),
        manifest_path.display(),
        e.samples,
        e.reference_steps,
        e.psnr_samples,
        manifest.adapter,
        manifest.date
    );
    if !manifest.note.is_empty() {
        println!("            {}", manifest.note);
    }
    if entry.sha256 != crate::diffusion::model_file::sha256_hex(bytes) {
        println!(
            "            note: the manifest lists {file} with sha256 {}, not this file's: the \
             figures may be for another version of it",
            entry.sha256
        );
    }
}

fn selftest(json: bool, seed: Option<u64>) -> anyhow::Result<()> {
    let gpu = open_gpu()?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let report = pollster::block_on(crate::selftest::run(&gpu, seed));
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for c in &report.checks {
            println!(
                "{} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        for note in &report.notes {
            println!("NOTE {note}");
        }
        println!(
            "{} passed, {} failed on {} (seed {seed})",
            report.passed, report.failed, report.adapter
        );
    }
    anyhow::ensure!(report.failed == 0, "{} kernel checks failed", report.failed);
    Ok(())
}

/// A clap value parser for one of the library's choice enums (which know nothing of clap): its
/// names are listed by --help and checked by clap, then parsed by the enum's own `FromStr`.
pub(crate) fn choice<T>(
    names: &'static [&'static str],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    // Clap has already refused any name not listed; every listed name parses.
    clap::builder::PossibleValuesParser::new(names)
        .map(|s| s.parse::<T>().expect("a listed name parses"))
}
