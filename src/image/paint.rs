//! Tensor values to pixels: one image [c, h, w] with values in [-1, 1] painted into an RGB picture.

use ::image::{Rgb, RgbImage};

/// Background and gap colour.
pub const BACKGROUND: [u8; 3] = [32, 32, 32];

/// Maps a value in [-1, 1] to a byte: -1 -> 0, 1 -> 255; out-of-range values are clamped.
pub fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Paints image `img` ([c, h, w], values in [-1, 1]) into `out` with its top-left corner at
/// (x0, y0), each pixel a `scale` x `scale` square. One or two channels paint gray (from the
/// first); three or more paint RGB from the first three.
pub(super) fn paint(
    out: &mut RgbImage,
    img: &[f32],
    (c, h, w): (usize, usize, usize),
    (x0, y0): (u32, u32),
    scale: u32,
) {
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let at = y * w + x;
            let rgb = if c >= 3 {
                [
                    to_byte(img[at]),
                    to_byte(img[plane + at]),
                    to_byte(img[2 * plane + at]),
                ]
            } else {
                let g = to_byte(img[at]);
                [g, g, g]
            };
            let (px, py) = (x0 + x as u32 * scale, y0 + y as u32 * scale);
            for dy in 0..scale {
                for dx in 0..scale {
                    out.put_pixel(px + dx, py + dy, Rgb(rgb));
                }
            }
        }
    }
}
