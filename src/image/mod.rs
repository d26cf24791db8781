//! Tensors to pictures: sample grids, labelled rows, the bitmap font they use, atomic PNG writes.
//!
//! A leaf of the crate: it imports nothing from other layers, so the algorithm layer
//! (`diffusion`) and the front ends (`eval`, `cli`, `app`) can all draw with it. The external
//! image crate is `::image` inside the crate; this module is `crate::image`.

pub mod font;
mod grid;
mod labelled;
mod paint;
mod png;

pub use grid::image_grid;
pub use labelled::labelled_rows;
pub use paint::{to_byte, BACKGROUND};
pub use png::save_png;
