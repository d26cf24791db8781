//! Sample grids: a batch of images [n, c, h, w] in [-1, 1] laid out as one picture.

use ::image::{Rgb, RgbImage};

use super::paint::{paint, BACKGROUND};

/// The number of columns actually used for `n` images when `cols` are asked for.
fn effective_cols(n: usize, cols: usize) -> usize {
    cols.max(1).min(n.max(1))
}

/// Images [n, c, h, w] with values in [-1, 1] (clamped), laid out in `cols` columns, each pixel
/// scaled up by `scale`, `pad` pixels of gap (background dark gray 32) between the images and
/// around the edge. 1-channel images become gray RGB.
///
/// With fewer than `cols` images the grid is only as wide as the images need; the size is
/// `cols' * (w*scale + pad) + pad` by `rows * (h*scale + pad) + pad` with `rows = ceil(n / cols')`.
#[allow(clippy::too_many_arguments)] // the shape is spelled out for callers holding raw buffers
pub fn image_grid(
    data: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    cols: usize,
    scale: u32,
    pad: u32,
) -> RgbImage {
    let scale = scale.max(1);
    let image_len = c * h * w;
    assert!(
        data.len() >= n * image_len,
        "image_grid: {} values for {n} images of {c}x{h}x{w}",
        data.len()
    );
    let cols = effective_cols(n, cols);
    let rows = n.div_ceil(cols);
    let (cell_w, cell_h) = (w as u32 * scale, h as u32 * scale);
    let width = cols as u32 * (cell_w + pad) + pad;
    let height = rows as u32 * (cell_h + pad) + pad;
    let mut out = RgbImage::from_pixel(width.max(1), height.max(1), Rgb(BACKGROUND));
    for i in 0..n {
        let (col, row) = ((i % cols) as u32, (i / cols) as u32);
        let x0 = pad + col * (cell_w + pad);
        let y0 = pad + row * (cell_h + pad);
        paint(
            &mut out,
            &data[i * image_len..(i + 1) * image_len],
            (c, h, w),
            (x0, y0),
            scale,
        );
    }
    out
}
