//! Evaluation output: sample grids, labelled step-count comparisons, and the bitmap font they use.

pub mod font;
pub mod grid;
