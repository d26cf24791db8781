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

use super::bench_print::emit;

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

pub(super) fn image_of(preset: &str) -> [usize; 3] {
    if preset == "cifar" {
        [3, 32, 32]
    } else {
        [1, 28, 28]
    }
}

/// The training configuration of updates run to time them (or to meet their GEMMs): synthetic
/// data, no warm-up.
pub(super) fn timing_config(param: Parameterization, batch: usize) -> TrainConfig {
    TrainConfig {
        param,
        weighting: Weighting::SnrTrunc,
        batch,
        lr: 1e-4,
        warmup: 0,
        ema_decay: 0.9999,
        grad_clip: 1.0,
        seed: 0,
        adam: AdamConfig::default(),
        uncond_prob: 0.0,
    }
}

pub(super) fn arch(preset: &str) -> Result<UNetConfig> {
    let [c, h, w] = image_of(preset);
    Ok(UNetConfig::preset(preset, c, h, w, 1)?)
}

/// What [`time_updates`] measured, per update.
pub(super) struct Timed {
    pub steps: usize,
    /// Wall time, which waits for the GPU.
    pub ms: f64,
    pub launches: u64,
    pub submits: f64,
    /// CPU time recording launches, and encoding them into a command buffer (bind groups,
    /// passes). On a GPU, an update whose recording + encoding time is close to its wall time
    /// is bound by the CPU side, not by the kernels. (The submit itself is left out of both: on
    /// CPU adapters such as lavapipe it runs the kernels.)
    pub record_ms: f64,
    pub encode_ms: f64,
    /// The share of launches whose bind group came from the cache (gpu/batch.rs).
    pub bind_groups_reused: f64,
}

/// Runs `update` twice to warm up (pipelines compile, the buffer pool fills), then for at least
/// 3 updates and `seconds` (at most 1000 updates), waiting for the GPU every 8.
pub(super) fn time_updates(gpu: &Gpu, seconds: f64, mut update: impl FnMut()) -> Result<Timed> {
    for _ in 0..2 {
        update();
    }
    gpu.finish_blocking()?;
    let (l0, s0) = gpu.counters();
    let (encode0, submit0, groups0) = (
        gpu.encode_seconds(),
        gpu.submit_seconds(),
        gpu.bind_group_counts(),
    );
    let mut inside = 0.0;
    let start = Instant::now();
    let mut steps = 0;
    while steps < 3 || (start.elapsed().as_secs_f64() < seconds && steps < 1000) {
        let t = Instant::now();
        update();
        inside += t.elapsed().as_secs_f64();
        steps += 1;
        if steps % 8 == 0 {
            gpu.finish_blocking()?;
        }
    }
    gpu.finish_blocking()?;
    let secs = start.elapsed().as_secs_f64();
    let (l1, s1) = gpu.counters();
    let encode = gpu.encode_seconds() - encode0;
    let submit = gpu.submit_seconds() - submit0;
    let (c, r) = gpu.bind_group_counts();
    let (c, r) = (c - groups0.0, r - groups0.1);
    let n = steps as f64;
    Ok(Timed {
        steps,
        ms: secs * 1e3 / n,
        launches: (l1 - l0) / steps as u64,
        submits: (s1 - s0) as f64 / n,
        record_ms: (inside - encode - submit).max(0.0) * 1e3 / n,
        encode_ms: encode * 1e3 / n,
        bind_groups_reused: r as f64 / (c + r).max(1) as f64,
    })
}

/// MiB of pooled buffers created since the pool held `bytes0`.
fn pool_mib(gpu: &Gpu, bytes0: u64) -> f64 {
    (gpu.pool_stats().bytes_created - bytes0) as f64 / (1u64 << 20) as f64
}

/// `bench train --tuned`: each preset timed with the fixed rule, then tuned afresh (not
/// cached) and timed with the plan, then with the rule again (so that whatever drifts over the
/// run, caches, the pool, the machine's load, weighs on both), on one device; the ratio of the
/// tuned time to the rule's mean, and the tuning's cost.
pub fn train_rule_vs_tuned(
    gpu: &Gpu,
    presets: &[String],
    batch: usize,
    seconds: f64,
    json: bool,
    (launches, profile): (bool, bool),
) -> Result<()> {
    use crate::tensor::tuner;
    for preset in presets {
        let one = std::slice::from_ref(preset);
        gpu.set_tuning(false);
        let rule = train(gpu, one, batch, seconds, json, launches, profile)?[0];
        gpu.set_tuning(true);
        tuner::start_afresh(gpu, false);
        let tuned = train(gpu, one, batch, seconds, json, launches, profile)?[0];
        let log = tuner::tuned(gpu);
        let tuning: f64 = log.iter().map(|t| t.tuning_seconds).sum();
        gpu.set_tuning(false);
        let rule_again = train(gpu, one, batch, seconds, json, launches, profile)?[0];
        let rule = (rule + rule_again) / 2.0;
        emit(
            json,
            serde_json::json!({
                "bench": "train_rule_vs_tuned", "preset": preset, "batch": batch,
                "rule_ms_per_step": round3(rule), "tuned_ms_per_step": round3(tuned),
                "speedup": round3(rule / tuned), "problems_tuned": log.len(),
                "tuning_seconds": round3(tuning), "adapter": gpu.info().name,
            }),
            format!(
                "train  {preset:<6} fixed rule {rule:.1} ms/update (mean of before and after), \
                 tuned {tuned:.1} ms/update ({:.2}x); tuning {} GEMM problems took {tuning:.1} s",
                rule / tuned,
                log.len()
            ),
        );
    }
    Ok(())
}

/// Times training updates of each preset; returns ms per update, per preset.
pub fn train(
    gpu: &Gpu,
    presets: &[String],
    batch: usize,
    seconds: f64,
    json: bool,
    launches: bool,
    profile: bool,
) -> Result<Vec<f64>> {
    let mut per_preset = Vec::new();
    for preset in presets {
        let arch = arch(preset)?;
        let [c, h, w] = image_of(preset);
        let data = Dataset::synthetic_patterns(8, c, h, w);
        let cfg = timing_config(Parameterization::V, batch);
        let params = crate::nn::Layout::new(&arch)?.param_count();
        // What this preset's updates allocate, from an empty pool (weights, optimizer state,
        // activations, gradients, uploads): the GPU memory a training run of it needs.
        gpu.trim_pool();
        let pool0 = gpu.pool_stats().bytes_created;
        let mut tr = Trainer::new(gpu, arch, cfg)?;
        // The warm-up updates count too: their launches are the same as the timed ones'.
        let before = crate::gpu::launch_counts(gpu);
        let t = time_updates(gpu, seconds, || tr.step(&data))?;
        let per_kernel = launches_per_step(&before, &crate::gpu::launch_counts(gpu), t.steps + 2);
        let Timed {
            steps,
            ms,
            launches: launches_per,
            submits,
            record_ms,
            encode_ms,
            bind_groups_reused,
        } = t;
        let ips = batch as f64 * 1e3 / ms;
        per_preset.push(ms);
        emit(
            json,
            serde_json::json!({
                "bench": "train", "preset": preset, "image": [c, h, w], "params": params,
                "batch": batch, "steps": steps, "ms_per_step": round3(ms),
                "images_per_s": round3(ips),
                "launches_per_step": launches_per,
                "submits_per_step": submits,
                "cpu_record_ms_per_step": round3(record_ms),
                "cpu_encode_ms_per_step": round3(encode_ms),
                "bind_groups_reused": round3(bind_groups_reused),
                "pool_mib": round3(pool_mib(gpu, pool0)),
                "adapter": gpu.info().name,
            }),
            format!(
                "train  {preset:<6} {params:>9} params  batch {batch:<4} {ms:>10.1} ms/update {ips:>9.1} images/s  ({} launches, {:.2} submits per update; CPU {record_ms:.2} ms recording + {encode_ms:.2} ms encoding, {:.0}% of bind groups reused; {:.0} MiB of pooled buffers)",
                launches_per,
                submits,
                100.0 * bind_groups_reused,
                pool_mib(gpu, pool0)
            ),
        );
        if launches {
            print_launches(json, "train_launches", preset, &per_kernel);
        }
        if profile {
            super::bench_profile::profile_updates(
                gpu,
                ("train", "update"),
                preset,
                ms,
                json,
                || tr.step(&data),
            )?;
        }
    }
    Ok(per_preset)
}

/// The launch histogram of one update or step: a JSON row, or a line per kernel.
fn print_launches(json: bool, bench: &str, preset: &str, per_kernel: &[(String, u64)]) {
    if json {
        let rows: Vec<_> = per_kernel
            .iter()
            .map(|(k, n)| serde_json::json!({"kernel": k, "launches_per_step": n}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"bench": bench, "preset": preset, "kernels": rows})
        );
    } else {
        for (k, n) in per_kernel {
            println!("  {n:>6}  {k}");
        }
    }
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

/// `(launches, profile)`: also list a step's launches per kernel, and its GPU time per kernel.
pub fn sample(
    gpu: &Gpu,
    presets: &[String],
    count: usize,
    seconds: f64,
    json: bool,
    (launches, profile): (bool, bool),
) -> Result<()> {
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
        // Launches of one step: a 4-step run's launches per kernel over 4, rounded down, so the
        // once-per-run noise draw drops out. The profile below times 1-step runs, which include it.
        let before = crate::gpu::launch_counts(gpu);
        Sampler::new(&model, opts(4)).run(&model);
        gpu.finish_blocking()?;
        let per_kernel = launches_per_step(&before, &crate::gpu::launch_counts(gpu), 4);
        let launches_per: u64 = per_kernel.iter().map(|(_, n)| n).sum();
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
                "launches_per_step": launches_per,
                "adapter": gpu.info().name,
            }),
            format!(
                "sample {preset:<6} {count} images  {ms:>9.2} ms/step  {four:>9.1} images/s at 4 steps  ({launches_per} launches per step)"
            ),
        );
        if launches {
            print_launches(json, "sample_launches", preset, &per_kernel);
        }
        if profile {
            super::bench_profile::profile_updates(
                gpu,
                ("sample", "step"),
                preset,
                ms,
                json,
                || {
                    Sampler::new(&model, opts(1)).run(&model);
                },
            )?;
        }
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
