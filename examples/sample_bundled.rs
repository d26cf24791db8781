//! Sample the bundled 4-step student into a PNG: 16 Fashion-MNIST images in 4 DDIM steps.
//!
//!     cargo run --release --example sample_bundled
//!
//! The same as `fewstep sample --model fmnist-4step --steps 4 --count 16 --seed 1`, in library
//! calls: open a GPU, load a model (a bundled name, a model file, or a diffusers folder), step a
//! sampler, read the images back and lay them out.

use std::path::Path;

use fewstep::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
use fewstep::gpu::{Gpu, GpuOptions};

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
    let (model, meta) = load_model(&gpu, Path::new("fmnist-4step"))?;
    println!("{} on {}", meta.describe(), gpu.info().name);

    let opts = SampleOptions {
        steps: 4,
        count: 16,
        seed: 1,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let mut sampler = Sampler::new(&model, opts);
    while !sampler.is_done() {
        sampler.step(&model); // one submit per step; z_t stays on the GPU
    }
    let images = sampler.z().to_vec_blocking()?; // [16, 1, 28, 28] in [-1, 1]

    let [c, h, w] = model.image_shape();
    let grid = fewstep::image::image_grid(&images, opts.count, c, h, w, 4, 3, 2);
    grid.save("bundled-4step.png")?;
    println!("16 images in 4 steps -> bundled-4step.png");
    Ok(())
}
