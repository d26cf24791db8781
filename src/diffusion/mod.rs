//! Diffusion: the cosine schedule, parameterizations and loss weightings, the samplers, model
//! files, and teacher training (Algorithm 1).

pub mod distill_memory;
pub mod distill_plan;
#[cfg(not(target_arch = "wasm32"))]
pub mod distill_run;
pub mod distill_state;
pub mod distiller;
pub mod guidance;
pub mod interpolate;
pub mod model;
pub mod model_file;
pub mod parameterization;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_dir;
#[cfg(not(target_arch = "wasm32"))]
mod run_files;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_precision;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_spec;
pub mod sampler;
pub mod schedule;
pub mod train_memory;
#[cfg(not(target_arch = "wasm32"))]
pub mod train_run;
pub mod trainer;

pub use distiller::{DistillConfig, Distiller, Teacher};
pub use model::Denoiser;
pub use model_file::{
    load_model, load_model_bytes, parse_model, save_model, ModelError, ModelMeta,
};
pub use parameterization::{Parameterization, Weighting};
pub use sampler::{images_per_pass, PassLimit, SampleOptions, Sampler, SamplerKind};
pub use trainer::{TrainConfig, Trainer};
