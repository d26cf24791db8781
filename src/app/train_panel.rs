//! The Train tab (native), drawn: the settings (train_settings.rs) on the left, the run
//! (train_runner.rs: the same library code as `fewstep train` / `fewstep distill`) on the right:
//! a progress bar, the loss (egui_plot) and sample grids as they are written.

use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText, Ui};
use egui_plot::{Line, Plot};

pub use super::train_runner::{run_blocking, Msg, TrainRunner};
pub use super::train_settings::{Mode, RunSpec, TrainSettings};

#[derive(Default)]
pub struct TrainPanel {
    pub settings: TrainSettings,
    pub runner: TrainRunner,
    /// The runner's latest sample grid, loaded as a texture.
    preview: Option<(PathBuf, egui::TextureHandle)>,
}

impl TrainPanel {
    pub fn running(&self) -> bool {
        self.runner.running()
    }

    fn start(&mut self, resume: bool, ctx: &egui::Context) {
        let spec = self.settings.spec(resume);
        let command = self.settings.command(resume, false);
        let repaint = ctx.clone();
        self.runner
            .start(spec, command, move || repaint.request_repaint());
        self.preview = None;
    }

    /// Takes the runner's messages and loads a new sample grid (every frame, whichever tab is
    /// shown).
    pub fn poll(&mut self, ctx: &egui::Context) {
        self.runner.poll();
        let Some(path) = &self.runner.preview else {
            return;
        };
        if self.preview.as_ref().is_some_and(|(p, _)| p == path) {
            return;
        }
        if let Ok(img) = ::image::open(path) {
            let rgba = img.to_rgba8();
            let size = [rgba.width() as usize, rgba.height() as usize];
            let color = egui::ColorImage::from_rgba_unmultiplied(size, &rgba);
            let tex = ctx.load_texture("preview", color, egui::TextureOptions::NEAREST);
            self.preview = Some((path.clone(), tex));
        }
    }

    pub fn ui(&mut self, ui: &mut Ui) {
        let running = self.runner.running();
        egui::Panel::left("train settings")
            .resizable(false)
            .show(ui, |ui| {
                ui.add_enabled_ui(!running, |ui| {
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut self.settings.mode, Mode::Teacher, "Train a teacher");
                        ui.radio_value(&mut self.settings.mode, Mode::Distill, "Distill");
                    });
                    egui::Grid::new("train grid").num_columns(2).show(ui, |ui| {
                        match self.settings.mode {
                            Mode::Teacher => {
                                let label = ui.label("data");
                                ui.text_edit_singleline(&mut self.settings.data)
                                    .labelled_by(label.id);
                                ui.end_row();
                                ui.label("preset");
                                ui.horizontal(|ui| {
                                    for p in ["tiny", "small", "cifar"] {
                                        ui.radio_value(&mut self.settings.preset, p.to_string(), p);
                                    }
                                });
                                ui.end_row();
                                let label = ui.label("updates");
                                ui.add(
                                    egui::DragValue::new(&mut self.settings.updates)
                                        .range(1..=10_000_000),
                                )
                                .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("samples every");
                                ui.add(
                                    egui::DragValue::new(&mut self.settings.sample_every)
                                        .range(0..=1_000_000),
                                )
                                .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("run directory");
                                ui.text_edit_singleline(&mut self.settings.out)
                                    .labelled_by(label.id);
                                ui.end_row();
                            }
                            Mode::Distill => {
                                let label = ui.label("teacher file");
                                ui.text_edit_singleline(&mut self.settings.teacher)
                                    .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("from steps");
                                ui.add(
                                    egui::DragValue::new(&mut self.settings.from_steps)
                                        .range(2..=8192),
                                )
                                .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("to steps");
                                ui.add(
                                    egui::DragValue::new(&mut self.settings.to_steps)
                                        .range(1..=4096),
                                )
                                .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("updates per halving");
                                ui.add(
                                    egui::DragValue::new(&mut self.settings.distill_updates)
                                        .range(1..=10_000_000),
                                )
                                .labelled_by(label.id);
                                ui.end_row();
                                let label = ui.label("output directory");
                                ui.text_edit_singleline(&mut self.settings.distill_out)
                                    .labelled_by(label.id);
                                ui.end_row();
                            }
                        }
                        let label = ui.label("batch");
                        ui.add(egui::DragValue::new(&mut self.settings.batch).range(1..=4096))
                            .labelled_by(label.id);
                        ui.end_row();
                    });
                });
                ui.label(
                    RichText::new(self.settings.command(false, true))
                        .monospace()
                        .small()
                        .weak(),
                );
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(!running, egui::Button::new("Start"))
                        .clicked()
                    {
                        self.start(false, ui.ctx());
                    }
                    if ui
                        .add_enabled(!running, egui::Button::new("Resume"))
                        .on_hover_text("continue the run in the directory from its last checkpoint")
                        .clicked()
                    {
                        self.start(true, ui.ctx());
                    }
                    if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                        self.runner.stop();
                    }
                });
                ui.label(
                    RichText::new(
                        "Stop writes a checkpoint; Resume continues exactly where it stopped. \
                         The same runs as the command line: files, metrics.jsonl and --resume \
                         work with either.",
                    )
                    .small()
                    .weak(),
                );
            });
        egui::CentralPanel::default().show(ui, |ui| {
            if !self.runner.what.is_empty() {
                ui.label(RichText::new(&self.runner.what).strong());
            }
            let (done, total) = self.runner.progress;
            if total > 0 {
                ui.add(
                    egui::ProgressBar::new(done as f32 / total as f32)
                        .text(format!("{done} / {total} updates   {}", self.runner.last)),
                );
            } else if running {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("loading data and compiling kernels…");
                });
            }
            if let Some((text, error)) = &self.runner.ended {
                let color = if *error {
                    Color32::from_rgb(230, 100, 80)
                } else {
                    Color32::from_rgb(120, 200, 120)
                };
                ui.colored_label(color, text);
            }
            ui.horizontal_top(|ui| {
                ui.vertical(|ui| {
                    ui.label("loss");
                    Plot::new("loss plot")
                        .width(420.0)
                        .height(260.0)
                        .show(ui, |p| {
                            p.line(Line::new("loss", self.runner.losses.clone()))
                        });
                });
                if let Some((path, tex)) = &self.preview {
                    ui.vertical(|ui| {
                        ui.label(format!("latest samples: {}", path.display()));
                        ui.image((tex.id(), tex.size_vec2()));
                    });
                }
            });
        });
    }
}
