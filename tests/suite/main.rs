//! The integration tests, as modules of one test binary: each was its own binary, and each of
//! those linked the whole library with wgpu and eframe (12 minutes of a cold CI run).

mod app;
mod autodiff;
mod bind_groups;
mod bundled_quality;
mod classifier;
mod cli;
mod common;
mod coop;
mod data;
mod diffusers;
mod diffusers_distill;
mod diffusion;
mod distill;
mod distill_memory;
mod edges;
mod failures;
mod frechet;
mod fuzz_readers;
mod gemm_grid;
mod gpu_errors;
mod grid;
mod group_norm_grid;
mod guided;
mod interpolate;
mod kernel_registry;
mod kernels;
mod kill_resume;
mod layers;
mod pool_reuse;
mod profile;
mod runs_survive;
mod stand_in;
mod training;
mod tuner;
mod ui;
