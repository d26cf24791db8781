//! Evaluation: the Fréchet distance, the evaluation classifier, metrics over step counts, and the
//! plot of a metric against step counts. Pictures themselves (grids, font, PNG) are `crate::image`.

#[cfg(not(target_arch = "wasm32"))]
pub mod classifier;
pub mod frechet;
#[cfg(not(target_arch = "wasm32"))]
pub mod metrics;
pub mod plot;
