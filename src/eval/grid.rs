//! Sample grids: batches of images in [-1, 1] laid out as one picture, optionally with a label
//! per row and a title, and written to PNG atomically.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use image::{ImageEncoder, Rgb, RgbImage};

use super::font;

/// Background and gap colour.
pub const BACKGROUND: [u8; 3] = [32, 32, 32];
const TEXT_COLOR: [u8; 3] = [225, 225, 225];

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
fn paint(
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

/// Rows of images with a text label at the left of each row (e.g. "4 steps"), and an optional
/// title line at the top; returns the image. rows[i] = (label, data for k images of [c,h,w]).
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

/// Writes a PNG atomically: to a temporary file in the same directory, then renamed into place;
/// creates the parent directory. Errors name the path.
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| {
        format!(
            "cannot create the directory {} for {}",
            parent.display(),
            path.display()
        )
    })?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name to write the PNG to", path.display()))?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> anyhow::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut writer = BufWriter::new(file);
        image::codecs::png::PngEncoder::new(&mut writer).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!(
            "cannot write the PNG {} (via {})",
            path.display(),
            tmp.display()
        )));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!(
            "cannot move the PNG into place at {}",
            path.display()
        )));
    }
    Ok(())
}
