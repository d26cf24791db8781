//! Sample grids and PNG writing moved to `crate::image`.

// Kept for src/app/train_panel.rs until it moves to crate::image (issue 14).
pub use crate::image::{image_grid, save_png};
