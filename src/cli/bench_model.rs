//! `fewstep bench train|sample`: whole training updates and sampling steps of each preset, on
//! synthetic data and freshly initialised weights (speed does not depend on either).

use std::time::Instant;

use anyhow::Result;

use crate::data::Dataset;
use crate::diffusion::{
    Parameterization, SampleOptions, Sampler, SamplerKind, TrainConfig, Trainer, Weighting,
};
use crate::gpu::Gpu;
use crate::nn::UNetConfig;
use crate::tensor::AdamConfig;

/// The presets to measure: those asked for, or every preset that fits the adapter (the cifar
/// net is left out on CPU adapters, where one update takes minutes).
pub fn presets(gpu: &Gpu, asked: &[String]) -> Vec<String> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let mut p = vec!["tiny".to_string(), "small".to_string()];
    if gpu.info().device_type != wgpu::DeviceType::Cpu {
        p.push("cifar".into());
    }
    p
}

fn image_of(preset: &str) -> [usize; 3] {
    if preset == "cifar" {
        [3, 32, 32]
    } else {
        [1, 28, 28]
    }
}

fn arch(preset: &str) -> Result<UNetConfig> {
    let [c, h, w] = image_of(preset);
    Ok(UNetConfig::preset(preset, c, h, w, 1)?)
}

fn emit(json: bool, v: serde_json::Value, text: String) {
    if json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

pub fn train(
    gpu: &Gpu,
    presets: &[String],
    batch: usize,
    seconds: f64,
    json: bool,
    launches: bool,
) -> Result<()> {
    for preset in presets {
        let arch = arch(preset)?;
        let [c, h, w] = image_of(preset);
        let data = Dataset::synthetic_patterns(8, c, h, w);
        let cfg = TrainConfig {
            param: Parameterization::V,
            weighting: Weighting::SnrTrunc,
            batch,
            lr: 1e-4,
            warmup: 0,
            ema_decay: 0.9999,
            grad_clip: 1.0,
            seed: 0,
            adam: AdamConfig::default(),
        };
        let params = crate::nn::Layout::new(&arch)?.param_count();
        let mut tr = Trainer::new(gpu, arch, cfg)?;
        // Warm-up: pipelines compile, the buffer pool fills.
        for _ in 0..2 {
            tr.step(&data);
        }
        gpu.finish_blocking()?;
        let (l0, s0) = gpu.counters();
        let before = crate::gpu::launch_counts(gpu);
        let start = Instant::now();
        let mut steps = 0;
        while steps < 3 || (start.elapsed().as_secs_f64() < seconds && steps < 1000) {
            tr.step(&data);
            steps += 1;
            if steps % 8 == 0 {
                gpu.finish_blocking()?;
            }
        }
        gpu.finish_blocking()?;
        let secs = start.elapsed().as_secs_f64();
        let (l1, s1) = gpu.counters();
        let per_kernel = launches_per_step(&before, &crate::gpu::launch_counts(gpu), steps);
        let ms = secs * 1e3 / steps as f64;
        let ips = (steps * batch) as f64 / secs;
        emit(
            json,
            serde_json::json!({
                "bench": "train", "preset": preset, "image": [c, h, w], "params": params,
                "batch": batch, "steps": steps, "ms_per_step": round3(ms),
                "images_per_s": round3(ips),
                "launches_per_step": (l1 - l0) / steps as u64,
                "submits_per_step": (s1 - s0) as f64 / steps as f64,
                "adapter": gpu.info().name,
            }),
            format!(
                "train  {preset:<6} {params:>9} params  batch {batch:<4} {ms:>10.1} ms/update {ips:>9.1} images/s  ({} launches, {:.2} submits per update)",
                (l1 - l0) / steps as u64,
                (s1 - s0) as f64 / steps as f64
            ),
        );
        if launches {
            if json {
                let rows: Vec<_> = per_kernel
                    .iter()
                    .map(|(k, n)| serde_json::json!({"kernel": k, "launches_per_step": n}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"bench": "train_launches", "preset": preset, "kernels": rows})
                );
            } else {
                for (k, n) in &per_kernel {
                    println!("  {n:>6}  {k}");
                }
            }
        }
    }
    Ok(())
}

/// Launches per update of each kernel between two `gpu::launch_counts` snapshots, largest first.
fn launches_per_step(
    before: &[(String, u64)],
    after: &[(String, u64)],
    steps: usize,
) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = after
        .iter()
        .map(|(k, n)| {
            let b = before.iter().find(|(kb, _)| kb == k).map_or(0, |(_, b)| *b);
            (k.clone(), (n - b) / steps as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

pub fn sample(gpu: &Gpu, presets: &[String], count: usize, seconds: f64, json: bool) -> Result<()> {
    for preset in presets {
        let arch = arch(preset)?;
        let [c, h, w] = image_of(preset);
        let net = crate::nn::UNet::new(gpu, arch, 0)?;
        let model = crate::diffusion::Denoiser {
            net,
            param: Parameterization::V,
        };
        let opts = |steps| SampleOptions {
            steps,
            count,
            seed: 0,
            kind: SamplerKind::Ddim,
            clip: true,
        };
        Sampler::new(&model, opts(2)).run(&model);
        gpu.finish_blocking()?;
        let start = Instant::now();
        let mut steps = 0;
        while steps < 4 || (start.elapsed().as_secs_f64() < seconds && steps < 2000) {
            Sampler::new(&model, opts(4)).run(&model);
            gpu.finish_blocking()?;
            steps += 4;
        }
        let secs = start.elapsed().as_secs_f64();
        let ms = secs * 1e3 / steps as f64;
        let four = count as f64 * 1e3 / (4.0 * ms);
        emit(
            json,
            serde_json::json!({
                "bench": "sample", "preset": preset, "image": [c, h, w], "count": count,
                "ms_per_step": round3(ms), "images_per_s_4_steps": round3(four),
                "ms_per_image_4_steps": round3(4.0 * ms / count as f64),
                "adapter": gpu.info().name,
            }),
            format!(
                "sample {preset:<6} {count} images  {ms:>9.2} ms/step  {four:>9.1} images/s at 4 steps"
            ),
        );
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
