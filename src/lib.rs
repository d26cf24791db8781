//! fewstep: progressive distillation of diffusion models, every tensor op a WGSL compute shader.

pub mod app;
pub mod bundled;
pub mod data;
pub mod diffusion;
pub mod eval;
pub mod gpu;
pub mod image;
pub mod nn;
pub mod reference;
pub mod selftest;
pub mod tensor;
#[cfg(target_arch = "wasm32")]
pub mod web;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
