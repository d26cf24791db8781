//! Train the `tiny` teacher for a few updates on the Fashion-MNIST subset the repository ships
//! (assets/fmnist-10k), then save it as a model file every fewstep command reads.
//!
//!     cargo run --release --example train_tiny
//!
//! `fewstep train` adds run folders, checkpoints and `--resume` on top of these calls.

use std::path::Path;

use fewstep::data::{DataSpec, Dataset, Split};
use fewstep::diffusion::model_file::save_model;
use fewstep::diffusion::{Parameterization, TrainConfig, Trainer, Weighting};
use fewstep::gpu::{Gpu, GpuOptions};
use fewstep::nn::{StoreAs, UNetConfig};
use fewstep::tensor::AdamConfig;

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
    let spec: DataSpec = "fashion-mnist:assets/fmnist-10k".parse()?;
    let data = Dataset::load(&spec, Split::Train, None)?;
    let (c, h, w) = (data.channels, data.height, data.width);

    let arch = UNetConfig::preset("tiny", c, h, w, 1)?;
    let cfg = TrainConfig {
        param: Parameterization::V,
        weighting: Weighting::SnrTrunc,
        batch: 16,
        lr: 2e-3,
        warmup: 5,
        ema_decay: 0.999,
        grad_clip: 1.0,
        seed: 1,
        adam: AdamConfig::default(),
        uncond_prob: 0.0,
    };
    let mut trainer = Trainer::new(&gpu, arch, cfg)?;
    println!(
        "tiny: {} parameters on {}",
        trainer.model.net.param_count(),
        gpu.info().name
    );
    for update in 1..=20u32 {
        trainer.step(&data); // Algorithm 1: one recorded batch, one submit
        if update.is_multiple_of(5) {
            let loss = pollster::block_on(trainer.take_mean_loss())?.unwrap_or(f32::NAN);
            println!("update {update}: loss {loss:.4}");
        }
    }

    let meta = trainer.model_meta(&spec.to_string(), "examples/train_tiny.rs");
    let weights = pollster::block_on(trainer.ema_tensors())?;
    save_model(
        Path::new("tiny-example.safetensors"),
        &meta,
        &weights,
        StoreAs::F32,
    )?;
    println!("-> tiny-example.safetensors (try: fewstep sample --model tiny-example.safetensors)");
    Ok(())
}
