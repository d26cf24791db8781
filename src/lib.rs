//! fewstep: progressive distillation of diffusion models, every tensor op a WGSL compute shader.
//!
//! A teacher that needs N sampling steps is distilled into a student that needs N/2, again and
//! again (Salimans & Ho, 2022). The layers, bottom up: [`gpu`] (a wgpu device, batched launches,
//! pooled buffers), [`tensor`] (the WGSL kernels and the autodiff tape), [`nn`] (the U-Net and model
//! files), [`diffusion`] (schedules, samplers, Algorithm 1 in [`diffusion::Trainer`] and
//! Algorithm 2 in [`diffusion::Distiller`]), and the front ends (`cli`, `app`). ARCHITECTURE.md
//! in the repository is the map.
//!
//! Sampling the bundled 4-step student, in library calls:
//!
//! ```
//! use fewstep::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
//! use fewstep::gpu::{Gpu, GpuOptions};
//!
//! let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
//! let (model, _meta) = load_model(&gpu, std::path::Path::new("fmnist-4step"))?;
//! let opts = SampleOptions { steps: 4, count: 4, seed: 1, kind: SamplerKind::Ddim, clip: true };
//! let mut sampler = Sampler::new(&model, opts);
//! while !sampler.is_done() {
//!     sampler.step(&model); // one GPU submit per step
//! }
//! let images = sampler.z().to_vec_blocking()?; // [4, 1, 28, 28], values in [-1, 1]
//! assert_eq!(images.len(), 4 * 28 * 28);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! More in `examples/`: `sample_bundled` (a PNG grid), `train_tiny` (Algorithm 1 for a few
//! updates), `distill_one_halving` (Algorithm 2, 4 steps to 2).

#[cfg(feature = "app")]
pub mod app;
pub mod atomic_file;
pub mod bundled;
pub mod data;
pub mod diffusers;
pub mod diffusion;
pub mod eval;
pub mod gpu;
pub mod human;
pub mod image;
pub mod input_file;
pub mod nn;
pub mod npy;
pub mod output_path;
pub mod reference;
pub mod selftest;
pub mod tensor;
#[cfg(all(feature = "app", target_arch = "wasm32"))]
pub mod web;

#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod cli;
