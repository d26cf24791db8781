//! A small line plot drawn into a PNG with the built-in font: y against step counts on a log2
//! axis, one line per series.

use ::image::{Rgb, RgbImage};

use crate::image::font::{draw_text, text_width};

pub struct Series {
    pub name: String,
    pub color: [u8; 3],
    /// (x, value): x a step count on the default axis, or any number on a linear one.
    pub points: Vec<(f64, f64)>,
}

/// The x axis of a plot.
#[derive(Clone, Copy, Debug)]
pub struct XAxis<'a> {
    pub label: &'a str,
    /// log2 (step counts), else linear.
    pub log2: bool,
}

/// Step counts on a log2 axis.
pub const STEPS_AXIS: XAxis<'static> = XAxis {
    label: "sampling steps",
    log2: true,
};

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1) * 2;
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0i64, 0i64), (1, 0), (0, 1)] {
            let (px, py) = (x as i64 + dx, y as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, Rgb(c));
            }
        }
    }
}

/// Plots `series` (y linear from 0, x = log2 of the step count); `title` at the top.
pub fn plot(title: &str, y_label: &str, series: &[Series]) -> RgbImage {
    plot_on(title, STEPS_AXIS, y_label, series)
}

/// Plots `series` against `axis` (y linear from 0); `title` at the top.
pub fn plot_on(title: &str, axis: XAxis, y_label: &str, series: &[Series]) -> RgbImage {
    let (w, h) = (560u32, 360u32);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let black = [0, 0, 0];
    draw_text(&mut img, 10, 10, title, 2, black);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    if xs.is_empty() || ys.is_empty() {
        return img;
    }
    let lx = |s: f64| if axis.log2 { s.max(1.0).log2() } else { s };
    let (x_min, x_max) = (
        xs.iter().map(|&s| lx(s)).fold(f64::MAX, f64::min),
        xs.iter().map(|&s| lx(s)).fold(f64::MIN, f64::max),
    );
    let y_max = ys.iter().cloned().fold(0.0, f64::max) * 1.1 + 1e-9;
    let px =
        |s: f64| left + (lx(s) - x_min) / (x_max - x_min).max(1e-9) * (w as f64 - left - right);
    let py = |v: f64| h as f64 - bottom - v / y_max * (h as f64 - top - bottom);
    line(&mut img, (left, top), (left, h as f64 - bottom), black);
    line(
        &mut img,
        (left, h as f64 - bottom),
        (w as f64 - right, h as f64 - bottom),
        black,
    );
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for &s in &ticks {
        let x = px(s);
        line(
            &mut img,
            (x, h as f64 - bottom),
            (x, h as f64 - bottom + 4.0),
            black,
        );
        let label = if s.fract() == 0.0 {
            format!("{s:.0}")
        } else {
            format!("{s:.2}")
        };
        draw_text(
            &mut img,
            (x - text_width(&label, 1) as f64 / 2.0) as u32,
            h - bottom as u32 + 8,
            &label,
            1,
            black,
        );
    }
    draw_text(
        &mut img,
        (w / 2).saturating_sub(40),
        h - 18,
        axis.label,
        1,
        black,
    );
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let y = py(v);
        line(&mut img, (left - 4.0, y), (left, y), black);
        draw_text(
            &mut img,
            4,
            (y as u32).saturating_sub(4),
            &format!("{v:.1}"),
            1,
            black,
        );
    }
    draw_text(&mut img, 4, top as u32 - 12, y_label, 1, black);
    for (i, s) in series.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .cloned()
            .filter(|p| p.1.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in pts.windows(2) {
            line(
                &mut img,
                (px(pair[0].0), py(pair[0].1)),
                (px(pair[1].0), py(pair[1].1)),
                s.color,
            );
        }
        for &(st, v) in &pts {
            let (x, y) = (px(st), py(v));
            for d in -2..=2 {
                line(
                    &mut img,
                    (x - 2.0, y + d as f64),
                    (x + 2.0, y + d as f64),
                    s.color,
                );
            }
        }
        let ly = top as u32 + 4 + 14 * i as u32;
        line(
            &mut img,
            (w as f64 - 170.0, ly as f64 + 3.0),
            (w as f64 - 150.0, ly as f64 + 3.0),
            s.color,
        );
        draw_text(&mut img, w - 145, ly, &s.name, 1, s.color);
    }
    img
}
