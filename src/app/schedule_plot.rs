//! The noise schedule beside the samples: log-SNR (log alpha^2 / sigma^2 of the cosine schedule)
//! against t, the times the chosen step count samples at, and the step on screen. It shows why
//! a student's few steps can stand in for a teacher's many: each of 4 steps crosses a quarter
//! of the curve, ~10 units of log-SNR near the ends, where a 256-step teacher moves 0.2 a step.

use eframe::egui::{Color32, Ui};
use egui_plot::{Line, Plot, PlotPoints, Points};

use crate::diffusion::schedule::{grid, logsnr};

/// Samples of the curve: smooth at the plot's size.
const CURVE_POINTS: usize = 200;

/// The plot for `steps` sampling steps; `shown`: the step on screen (0 = the initial noise).
pub fn show(ui: &mut Ui, steps: usize, shown: Option<usize>) {
    let curve: PlotPoints = (0..=CURVE_POINTS)
        .map(|i| {
            let t = i as f64 / CURVE_POINTS as f64;
            [t, logsnr(t)]
        })
        .collect();
    let times = grid(steps.max(1));
    let marks: PlotPoints = times.iter().map(|&t| [t, logsnr(t)]).collect();
    ui.label(format!(
        "noise schedule: where {steps} step{} sample",
        if steps == 1 { "" } else { "s" }
    ));
    Plot::new("schedule plot")
        .height(130.0)
        .width(ui.available_width().min(280.0))
        .x_axis_label("t")
        .y_axis_label("log-SNR")
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .show(ui, |p| {
            p.line(Line::new("log-SNR", curve).color(Color32::GRAY));
            p.points(
                Points::new("sampling times", marks)
                    .radius(if steps > 64 { 1.0 } else { 2.5 })
                    .color(Color32::from_rgb(120, 170, 230)),
            );
            if let Some(&t) = shown.and_then(|k| times.get(k)) {
                p.points(
                    Points::new("on screen", vec![[t, logsnr(t)]])
                        .radius(5.0)
                        .color(Color32::from_rgb(240, 160, 80)),
                );
            }
        });
}
