//! `fewstep bench distill`: whole distillation updates of each preset (two teacher DDIM steps
//! without gradients, then one student update) on synthetic data and a freshly initialised
//! teacher (speed does not depend on either): ms/update, images/s, launches and submits.

use anyhow::Result;

use super::bench_model::{arch, image_of, time_updates};
use super::bench_print::emit;
use crate::data::Dataset;
use crate::diffusion::{DistillConfig, Distiller, Parameterization};
use crate::gpu::Gpu;
use crate::nn::UNet;
use crate::tensor::AdamConfig;

pub fn distill(
    gpu: &Gpu,
    presets: &[String],
    batch: usize,
    seconds: f64,
    json: bool,
    profile: bool,
) -> Result<()> {
    for preset in presets {
        let arch = arch(preset)?;
        let [c, h, w] = image_of(preset);
        let data = Dataset::synthetic_patterns(8, c, h, w);
        let teacher = crate::diffusion::Denoiser {
            net: UNet::new(gpu, arch, 0)?,
            param: Parameterization::V,
        };
        let cfg = DistillConfig {
            teacher_steps: 64,
            updates: u64::MAX,
            batch,
            lr: 1e-5,
            grad_clip: 1.0,
            seed: 0,
            adam: AdamConfig::default(),
            ema_decay: None,
            guidance_stage: false,
        };
        let mut d = Distiller::new(gpu, teacher, cfg);
        let t = time_updates(gpu, seconds, || d.step(&data))?;
        let (steps, ms, launches, submits) = (t.steps, t.ms, t.launches, t.submits);
        let (record_ms, encode_ms) = (t.record_ms, t.encode_ms);
        let ips = batch as f64 * 1e3 / ms;
        emit(
            json,
            serde_json::json!({
                "bench": "distill", "preset": preset, "image": [c, h, w], "batch": batch,
                "steps": steps, "ms_per_update": (ms * 1e3).round() / 1e3,
                "images_per_s": (ips * 1e3).round() / 1e3, "launches_per_update": launches,
                "submits_per_update": submits, "adapter": gpu.info().name,
                "cpu_record_ms_per_update": (record_ms * 1e3).round() / 1e3,
                "cpu_encode_ms_per_update": (encode_ms * 1e3).round() / 1e3,
                "bind_groups_reused": (t.bind_groups_reused * 1e3).round() / 1e3,
            }),
            format!(
                "distill {preset:<6} batch {batch:<4} {ms:>10.1} ms/update {ips:>9.1} images/s  ({launches} launches, {submits:.2} submits per update; CPU {record_ms:.2} ms recording + {encode_ms:.2} ms encoding, {:.0}% of bind groups reused)",
                100.0 * t.bind_groups_reused
            ),
        );
        if profile {
            super::bench_profile::profile_updates(
                gpu,
                ("distill", "update"),
                preset,
                ms,
                json,
                || d.step(&data),
            )?;
        }
    }
    Ok(())
}
