//! Labelled rows: rows of images with a text label at the left of each (e.g. "4 steps") and an
//! optional title at the top, drawn with the built-in font.

use ::image::{Rgb, RgbImage};

use super::font;
use super::paint::{paint, BACKGROUND};

const TEXT_COLOR: [u8; 3] = [225, 225, 225];

/// Rows of images with a text label at the left of each row (e.g. "4 steps"), and an optional
/// title line at the top; returns the image. rows\[i\] = (label, data for k images of \[c,h,w\]).
/// Rows may hold different numbers of images; the picture is as wide as the longest.
pub fn labelled_rows(
    title: Option<&str>,
    rows: &[(String, Vec<f32>)],
    c: usize,
    h: usize,
    w: usize,
    scale: u32,
) -> RgbImage {
    let scale = scale.max(1);
    let image_len = (c * h * w).max(1);
    let (cell_w, cell_h) = (w as u32 * scale, h as u32 * scale);
    let pad = 2 + scale;
    // Text between a third and a quarter of a cell high, from 1x to 3x the font's own size.
    let text_scale = (cell_h / 24).clamp(1, 3);
    let text_h = font::text_height(text_scale);
    let margin = 2 * pad;

    let label_w = rows
        .iter()
        .map(|(label, _)| font::text_width(label, text_scale))
        .max()
        .unwrap_or(0);
    let label_area = if label_w > 0 {
        label_w + 2 * margin
    } else {
        pad
    };
    let max_k = rows
        .iter()
        .map(|(_, d)| d.len() / image_len)
        .max()
        .unwrap_or(0) as u32;
    let grid_w = max_k * (cell_w + pad);
    let title_h = match title {
        Some(t) if !t.is_empty() => text_h + 2 * margin,
        _ => 0,
    };
    let title_w = title.map_or(0, |t| font::text_width(t, text_scale) + 2 * margin);
    let row_h = cell_h.max(text_h) + pad;

    let width = (label_area + grid_w).max(title_w).max(1);
    let height = (title_h + rows.len() as u32 * row_h + pad).max(1);
    let mut out = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));

    if let Some(t) = title {
        font::draw_text(&mut out, margin, margin, t, text_scale, TEXT_COLOR);
    }
    for (r, (label, data)) in rows.iter().enumerate() {
        let y0 = title_h + pad + r as u32 * row_h;
        let text_y = y0 + cell_h.max(text_h).saturating_sub(text_h) / 2;
        font::draw_text(&mut out, margin, text_y, label, text_scale, TEXT_COLOR);
        let image_y = y0 + cell_h.max(text_h).saturating_sub(cell_h) / 2;
        for (i, img) in data.chunks_exact(image_len).enumerate() {
            let x0 = label_area + i as u32 * (cell_w + pad);
            paint(&mut out, img, (c, h, w), (x0, image_y), scale);
        }
    }
    out
}
