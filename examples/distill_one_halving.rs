//! One halving of progressive distillation (Algorithm 2): the bundled 4-step student is the
//! teacher, and a 2-step student learns to take each pair of its DDIM steps in one.
//!
//!     cargo run --release --example distill_one_halving
//!
//! `fewstep distill` chains halvings like this one (8 -> 4 -> 2 -> 1), with run folders,
//! checkpoints and `--resume`.

use std::path::Path;

use fewstep::data::{DataSpec, Dataset, Split};
use fewstep::diffusion::{
    load_model, DistillConfig, Distiller, SampleOptions, Sampler, SamplerKind,
};
use fewstep::gpu::{Gpu, GpuOptions};
use fewstep::tensor::AdamConfig;

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
    let (teacher, _) = load_model(&gpu, Path::new("fmnist-4step"))?;
    let spec: DataSpec = "fashion-mnist:assets/fmnist-10k".parse()?;
    let data = Dataset::load(&spec, Split::Train, None)?;

    let cfg = DistillConfig {
        teacher_steps: 4,
        updates: 20,
        batch: 16,
        lr: 1e-4,
        grad_clip: 1.0,
        seed: 1,
        adam: AdamConfig::default(),
        ema_decay: None,
        guidance_stage: false,
    };
    // The student starts as a copy of the teacher.
    let mut d = Distiller::new(&gpu, teacher, cfg);
    while !d.is_done() {
        d.step(&data); // two teacher DDIM steps make the target of one student step
        if d.update.is_multiple_of(5) {
            let loss = pollster::block_on(d.take_mean_loss())?.unwrap_or(f32::NAN);
            println!("update {}: loss {loss:.5}", d.update);
        }
    }

    // The 2-step student samples in 2 steps.
    let opts = SampleOptions {
        steps: 2,
        count: 16,
        seed: 1,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let mut s = Sampler::new(&d.student, opts);
    while !s.is_done() {
        s.step(&d.student);
    }
    let images = s.z().to_vec_blocking()?;
    let [c, h, w] = d.student.image_shape();
    fewstep::image::image_grid(&images, 16, c, h, w, 4, 3, 2).save("student-2step.png")?;
    println!("the 2-step student's samples -> student-2step.png");
    Ok(())
}
