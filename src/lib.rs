//! fewstep: progressive distillation of diffusion models on wgpu compute shaders.
pub mod gpu;
pub mod reference;
pub mod selftest;
pub mod tensor;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(target_arch = "wasm32")]
pub mod web;
