//! fewstep: progressive distillation of diffusion models, every tensor op a WGSL compute shader.

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
