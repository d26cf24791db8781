//! fewstep: progressive distillation of diffusion models on wgpu compute shaders.
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod gpu;
pub mod reference;
pub mod selftest;
pub mod tensor;
#[cfg(target_arch = "wasm32")]
pub mod web;
