//! Evaluation output: sample grids, labelled step-count comparisons, and the bitmap font they use.

#[cfg(not(target_arch = "wasm32"))]
pub mod classifier;
pub mod font;
pub mod frechet;
pub mod grid;
#[cfg(not(target_arch = "wasm32"))]
pub mod metrics;
pub mod plot;
