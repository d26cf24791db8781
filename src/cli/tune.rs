//! `fewstep tune`: times every GEMM kernel a model's training update and sampling step would
//! meet on this adapter, keeps the fastest per problem in the plan cache, and prints the plan
//! next to what the fixed rule would have run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Dataset;
use crate::diffusion::{Denoiser, Parameterization, SampleOptions, Sampler, SamplerKind, Trainer};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;
use crate::tensor::tuner::{self, Tuned};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fewstep tune --preset tiny\n  fewstep tune --model fmnist-4step --batch 64 --count 16 --json\n  \
FEWSTEP_TUNE=off fewstep sample ...   (the fixed rule instead of the plan)"
)]
pub struct TuneArgs {
    /// The preset whose GEMMs to tune (tiny, small, cifar, ...) [default: tiny].
    #[arg(long, conflicts_with = "model")]
    preset: Option<String>,
    /// A model file, a bundled model's name or a diffusers folder: tune its network's GEMMs.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Images per training update (the distillation's and training's batch).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Images per sampling step.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// One JSON object per tuned problem, then a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: TuneArgs) -> Result<()> {
    if a.batch == 0 || a.count == 0 {
        bail!("--batch and --count need at least 1 image");
    }
    let mut opts = crate::gpu::GpuOptions::for_runs();
    if opts.tune == Some(false) {
        bail!("FEWSTEP_TUNE=off: unset it to tune");
    }
    // Asked for: CPU adapters, which do not tune by default, tune too.
    opts.tune = Some(true);
    let gpu = crate::gpu::Gpu::new_blocking(opts)?;
    if !gpu.tunes() {
        bail!(
            "FEWSTEP_KERNELS, FEWSTEP_GEMM_TILE or FEWSTEP_SPLIT_K forces the kernels: unset \
             them to tune"
        );
    }
    let (name, arch, image, param) = network(&gpu, &a)?;
    tuner::start_afresh(&gpu, true);
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {elapsed} tuned {pos}: {msg}",
    )?);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let b = bar.clone();
    tuner::on_tuned(
        &gpu,
        Some(Box::new(move |t: &Tuned| {
            b.inc(1);
            b.set_message(format!("{} -> {}", t.bucket, t.chosen));
            super::log_when_not_a_terminal(&format!("tuned {} -> {}", t.bucket, t.chosen));
        })),
    );
    let started = web_time::Instant::now();
    one_update(&gpu, arch.clone(), image, param, a.batch)?;
    one_sampling_step(&gpu, arch, param, a.count)?;
    let seconds = started.elapsed().as_secs_f64();
    tuner::on_tuned(&gpu, None);
    bar.finish_and_clear();
    report(&gpu, &name, &tuner::tuned(&gpu), seconds, a.json);
    Ok(())
}

/// The network to tune, its image shape and parameterization.
fn network(gpu: &Gpu, a: &TuneArgs) -> Result<(String, UNetConfig, [usize; 3], Parameterization)> {
    if let Some(m) = &a.model {
        super::sample::check_model_arg(m)?;
        let (model, meta) = crate::diffusion::load_model(gpu, m)?;
        return Ok((
            m.display().to_string(),
            model.net.config.clone(),
            meta.image,
            meta.parameterization,
        ));
    }
    let preset = a.preset.clone().unwrap_or_else(|| "tiny".into());
    let arch = super::bench_model::arch(&preset)?;
    let image = super::bench_model::image_of(&preset);
    Ok((preset, arch, image, Parameterization::V))
}

/// One training update of `arch` on synthetic images: every GEMM of the forward and backward
/// passes (the distillation's student runs the same ones).
fn one_update(
    gpu: &Gpu,
    arch: UNetConfig,
    [c, h, w]: [usize; 3],
    param: Parameterization,
    batch: usize,
) -> Result<()> {
    let mut data = Dataset::synthetic_patterns(8, c, h, w);
    if arch.classes > 0 {
        // A class-conditional network's update embeds labels: any will do for timing.
        data.labels = Some((0..data.len()).map(|i| (i % arch.classes) as u8).collect());
    }
    let cfg = super::bench_model::timing_config(param, batch);
    let mut tr = Trainer::new(gpu, arch, cfg)?;
    crate::diffusion::sampler::check_batch(&tr.model, batch, "--batch")
        .map_err(anyhow::Error::msg)?;
    tr.step(&data);
    gpu.finish_blocking()?;
    Ok(())
}

/// One DDIM step of `count` images: the sampler's GEMMs.
fn one_sampling_step(
    gpu: &Gpu,
    arch: UNetConfig,
    param: Parameterization,
    count: usize,
) -> Result<()> {
    let model = Denoiser {
        net: crate::nn::UNet::new(gpu, arch, 0)?,
        param,
    };
    crate::diffusion::sampler::check_batch(&model, count, "--count").map_err(anyhow::Error::msg)?;
    let opts = SampleOptions {
        steps: 1,
        count,
        seed: 0,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    Sampler::new(&model, opts).run(&model);
    gpu.finish_blocking()?;
    Ok(())
}

fn report(gpu: &Gpu, name: &str, rows: &[Tuned], seconds: f64, json: bool) {
    let chosen: f64 = rows.iter().map(|r| r.seconds).sum();
    let rule: f64 = rows.iter().map(|r| r.rule_seconds).sum();
    let kept = tuner::cache_file().map_or("nowhere (no cache folder)".into(), |f| {
        f.display().to_string()
    });
    if json {
        for r in rows {
            println!("{}", serde_json::json!({ "tuned": r }));
        }
        println!(
            "{}",
            serde_json::json!({
                "summary": {
                    "network": name, "adapter": gpu.info().name, "problems": rows.len(),
                    "tuning_seconds": seconds, "chosen_ms": chosen * 1e3, "rule_ms": rule * 1e3,
                    "plan_file": kept,
                }
            })
        );
        return;
    }
    println!(
        "{:<36} {:>22} {:>34} {:>9} {:>34} {:>9} {:>6}",
        "problem (layout, M, N, K, batch)",
        "timed at MxNxK (batch)",
        "fixed rule",
        "ms",
        "tuned",
        "ms",
        "x"
    );
    for r in rows {
        println!(
            "{:<36} {:>22} {:>34} {:>9.3} {:>34} {:>9.3} {:>6.2}",
            r.bucket,
            r.timed,
            r.rule,
            r.rule_seconds * 1e3,
            r.chosen,
            r.seconds * 1e3,
            r.rule_seconds / r.seconds
        );
    }
    println!(
        "{name} on {}: {} problems tuned in {seconds:.1} s; one launch of each: {:.2} ms with \
         the fixed rule, {:.2} ms tuned ({:.2}x). Plan kept in {kept}.",
        gpu.info().name,
        rows.len(),
        rule * 1e3,
        chosen * 1e3,
        rule / chosen
    );
    if gpu.info().device_type == wgpu::DeviceType::Cpu {
        println!(
            "This is a CPU adapter: runs keep the fixed rule unless FEWSTEP_TUNE=on, which makes \
             them use this plan."
        );
    }
}
