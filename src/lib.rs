//! fewstep: progressive distillation of diffusion models on wgpu compute shaders.
pub mod gpu;
pub mod tensor;
