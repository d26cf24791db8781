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

/// The largest picture fewstep draws: 100 megapixels (300 MB of RGB), far beyond any grid worth
/// looking at, and checked before the samples are drawn so that a mistyped `--scale` or
/// `--count` is an error instead of an allocation that aborts.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Refuses a picture of `cols` x `rows` cells, each an `h` x `w` image at `scale`, that would be
/// larger than [`MAX_PIXELS`] (margins, labels and a title estimated generously).
pub fn check_picture_size(
    what: &str,
    cols: u64,
    rows: u64,
    h: usize,
    w: usize,
    scale: u32,
) -> Result<(), String> {
    let cell = |side: usize| {
        (side as u64)
            .saturating_mul(scale as u64)
            .saturating_add(2 + scale as u64)
    };
    let width = cols.saturating_mul(cell(w)).saturating_add(400);
    let height = rows.saturating_mul(cell(h)).saturating_add(100);
    let pixels = width.saturating_mul(height);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "{what} would be about {width} x {height} pixels ({:.0} megapixels), more than the {} \
             megapixels fewstep draws: lower --scale (now {scale}) or --count",
            pixels as f64 / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}
