//! Drawing the app's panels from its state (no logic here beyond wiring buttons to methods).

use eframe::egui::{self, load::SizedTexture, Color32, RichText, Ui, Vec2};

use super::state::{MAX_COUNT, MAX_STEPS};
use super::{FewstepApp, Tab};
use crate::diffusion::SamplerKind;

pub fn draw(app: &mut FewstepApp, ui: &mut Ui) {
    egui::Panel::top("tabs").show(ui, |ui| {
        // Wrapped: on a phone (390 px) the last tab and the adapter's name go to a next line
        // instead of past the edge.
        ui.horizontal_wrapped(|ui| {
            ui.heading("fewstep");
            ui.separator();
            for (tab, name) in [
                (Tab::Sample, "Sample"),
                (Tab::Compare, "Compare"),
                (Tab::Models, "Models"),
                (Tab::Train, "Train / distill"),
            ] {
                let _r = ui.selectable_value(&mut app.tab, tab, name);
                #[cfg(target_arch = "wasm32")]
                crate::app::web_page::publish_rect(name, _r.rect);
            }
            ui.separator();
            ui.add(egui::Label::new(RichText::new(&app.adapter).weak()).wrap());
        });
        loading_bar(app, ui);
        if !app.status.is_empty() {
            ui.colored_label(Color32::from_rgb(230, 140, 60), &app.status);
        }
    });
    match app.tab {
        Tab::Sample => sample_tab(app, ui),
        Tab::Compare => compare_tab(app, ui),
        Tab::Models => models_tab(app, ui),
        #[cfg(not(target_arch = "wasm32"))]
        Tab::Train => app.platform.train.ui(ui),
        #[cfg(target_arch = "wasm32")]
        Tab::Train => {
            let jobs = app.job_sender();
            let picked = app.platform.web_train.ui(
                ui,
                &app.state.models,
                app.platform.web_gpu.as_ref(),
                jobs,
            );
            // "Sample it" on a model made in the tab: the Sample tab, at its own step count.
            if let Some(name) = picked {
                if app.state.select_by_name(&name) {
                    app.tab = Tab::Sample;
                    app.start_sample();
                }
            }
        }
    }
}

fn loading_bar(app: &FewstepApp, ui: &mut Ui) {
    let l = &app.loading;
    if l.expected > 0 && l.done < l.expected {
        let current = if l.current.is_empty() {
            String::new()
        } else {
            format!(" ({})", l.current)
        };
        // By bytes where the loader counts them (a download), else by files.
        let (fraction, text) = match l.bytes {
            // A second visit: the bytes come from the page's cache, not the network.
            Some((done, total)) if total > 0 && l.cached => (
                done as f32 / total as f32,
                format!("loading models: cached{current}"),
            ),
            Some((done, total)) if total > 0 => (
                done as f32 / total as f32,
                format!(
                    "loading models: {:.1} of {:.1} MB{current}",
                    done as f64 / 1e6,
                    total as f64 / 1e6
                ),
            ),
            _ => (
                l.done as f32 / l.expected as f32,
                format!("loading models: {} of {}{current}", l.done, l.expected),
            ),
        };
        ui.add(egui::ProgressBar::new(fraction).text(text));
    }
}

fn model_label(app: &FewstepApp, i: usize) -> String {
    let m = &app.state.models[i];
    match m.meta.steps {
        Some(k) => format!("{} ({k} steps, distilled)", m.name),
        None => format!("{} (teacher, DDIM at any count)", m.name),
    }
}

/// Windows narrower than this (a phone) get the settings above the pictures, not beside them.
const NARROW_WIDTH: f32 = 640.0;

/// The settings beside the pictures on a wide window, above them on a narrow one: a left panel
/// on a phone would leave the pictures a sliver at the edge.
fn settings_panel(wide: &'static str, narrow: &'static str, ui: &Ui) -> egui::Panel {
    if ui.available_width() < NARROW_WIDTH {
        egui::Panel::top(narrow)
    } else {
        egui::Panel::left(wide)
    }
}

fn sample_tab(app: &mut FewstepApp, ui: &mut Ui) {
    settings_panel("sample settings", "sample settings (narrow)", ui)
        .resizable(false)
        .show(ui, |ui| {
            ui.add_space(6.0);
            let selected = app.state.selected;
            let text = selected
                .map(|i| model_label(app, i))
                .unwrap_or_else(|| "(loading…)".into());
            let mut choice = selected;
            let label = ui.label("model");
            egui::ComboBox::from_id_salt("model")
                .selected_text(text)
                .width(260.0)
                .show_ui(ui, |ui| {
                    for i in 0..app.state.models.len() {
                        ui.selectable_value(&mut choice, Some(i), model_label(app, i));
                    }
                })
                .response
                .labelled_by(label.id);
            if choice != selected {
                if let Some(i) = choice {
                    app.state.select(i);
                }
            }
            if let Some(m) = app.state.selected_model() {
                ui.label(RichText::new(m.meta.describe()).weak());
            }
            ui.separator();
            let s = &mut app.state.settings;
            egui::Grid::new("settings").num_columns(2).show(ui, |ui| {
                let label = ui.label("steps");
                ui.add(egui::DragValue::new(&mut s.steps).range(1..=MAX_STEPS))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("seed");
                ui.add(egui::DragValue::new(&mut s.seed))
                    .labelled_by(label.id);
                ui.end_row();
                // A strip from this seed's noise to another's (interpolate.rs).
                let mut morph = s.interpolate_to.is_some();
                ui.checkbox(&mut morph, "morph to").on_hover_text(
                    "a row of images whose starting noise moves from the seed above to \
                         this one (spherical interpolation): DDIM turns it into a smooth morph",
                );
                let mut b = s.interpolate_to.unwrap_or(s.seed + 1);
                ui.add_enabled(morph, egui::DragValue::new(&mut b).prefix("seed "));
                s.interpolate_to = morph.then_some(b);
                ui.end_row();
                let label = ui.label("images");
                ui.add(egui::DragValue::new(&mut s.count).range(1..=MAX_COUNT))
                    .labelled_by(label.id);
                ui.end_row();
                ui.label("sampler");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut s.kind, SamplerKind::Ddim, "DDIM");
                    ui.radio_value(&mut s.kind, SamplerKind::Ancestral, "ancestral");
                });
                ui.end_row();
                ui.label("clip x_hat");
                ui.checkbox(&mut s.clip, "to [-1, 1]");
                ui.end_row();
            });
            let arch = app.state.selected_model().map(|m| m.meta.arch.clone());
            if let Some(arch) = arch.filter(|a| a.classes > 0) {
                class_controls(&mut app.state.settings, &arch, ui);
            }
            if let Some(made_for) = app.state.selected_model().and_then(|m| m.meta.steps) {
                if made_for as usize != app.state.settings.steps {
                    ui.label(
                        RichText::new(format!(
                            "this model was distilled for {made_for} steps; other counts are plain \
                             DDIM on a student and usually worse"
                        ))
                        .color(Color32::from_rgb(230, 180, 80)),
                    );
                }
            }
            ui.add_space(6.0);
            let running = app.state.sample_view.as_ref().is_some_and(|v| v.running);
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(!running, egui::Button::new("Sample"))
                    .clicked()
                {
                    app.start_sample();
                }
                if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                    app.stop();
                }
            });
            ui.add_space(6.0);
            // The run on screen, or the steps chosen before any run.
            let (steps, shown) = match &app.state.sample_view {
                Some(v) => (v.steps, v.frame().map(|f| f.step)),
                None => (app.state.settings.steps, None),
            };
            super::schedule_plot::show(ui, steps, shown);
        });
    egui::CentralPanel::default().show(ui, |ui| {
        let Some(v) = app.state.sample_view.as_mut() else {
            // A first visit: what this is, and what the step control does.
            ui.add_space(8.0);
            ui.heading("Diffusion sampling in a few steps");
            ui.add_space(4.0);
            ui.label(
                "A diffusion model makes an image by removing noise over many steps; the teacher \
                 here needs about 64. Progressive distillation trains a student to take in one \
                 step what its teacher takes in two, then does it again: the bundled students \
                 make the same garments in 4, 2 or even 1 step.",
            );
            ui.add_space(4.0);
            ui.label(
                "Pick a model on the left, keep the step count it was distilled for, and press \
                 Sample: every step is drawn as it happens. The Compare tab puts 1, 2 and 4 \
                 steps of the students next to the teacher's plain DDIM from the same noise.",
            );
            return;
        };
        ui.label(RichText::new(&v.label).strong());
        if let Some(e) = &v.error {
            ui.colored_label(Color32::RED, e);
        }
        let n = v.frames.len();
        if n == 0 {
            ui.label("starting…");
            return;
        }
        ui.horizontal(|ui| {
            let play = if v.playing { "Pause" } else { "Play" };
            if ui
                .add_enabled(n > 1, egui::Button::new(play))
                .on_hover_text("replay the steps")
                .clicked()
            {
                v.toggle_play();
            }
            let mut i = v.shown;
            let slider = egui::Slider::new(&mut i, 0..=n - 1)
                .show_value(false)
                .text("step");
            if ui.add_enabled(n > 1, slider).changed() {
                v.scrub(i);
            }
            let f = &v.frames[v.shown];
            ui.label(format!("step {} of {} (t = {:.3})", f.step, v.steps, f.t));
        });
        let f = v.frames[v.shown].clone();
        let timing = match v.total_ms {
            Some(total) => format!(
                "{} steps in {:.1} ms ({:.1} ms per step{})",
                v.steps,
                total,
                total / v.steps as f64,
                if f.step > 0 {
                    format!("; this step {:.1} ms", f.ms)
                } else {
                    String::new()
                }
            ),
            None if v.stopped => format!("stopped after {} steps", v.newest_step),
            None => format!(
                "running: {} of {} steps, {:.1} ms so far",
                v.newest_step,
                v.steps,
                v.steps_ms()
            ),
        };
        ui.label(timing);
        if v.stride > 1 {
            ui.label(
                RichText::new(format!(
                    "the slider keeps one step in {} ({:.0} MB of GPU memory; at most {:.0})",
                    v.stride,
                    v.scrub_bytes() as f64 / 1e6,
                    crate::app::state::SCRUB_CAP_BYTES as f64 / 1e6
                ))
                .weak(),
            );
        }
        if let Some(r) = &v.reproduce {
            reproduce_row(ui, r);
        }
        ui.add_space(4.0);
        let [w, h] = v.texture_size;
        let avail = ui.available_size();
        // A wide picture (a strip from one seed to another) goes above the other, full width;
        // grids side by side.
        let stacked = w > 2 * h;
        let scale = if stacked {
            grid_scale(((avail.x - 12.0) / w as f32).min((avail.y / 2.0 - 40.0) / h as f32))
        } else {
            grid_scale(((avail.x / 2.0 - 12.0) / w as f32).min((avail.y - 30.0) / h as f32))
        };
        let size = Vec2::new(w as f32, h as f32) * scale;
        let mut rects = [None, None];
        let draw = |ui: &mut Ui, rects: &mut [Option<egui::Rect>; 2]| {
            ui.vertical(|ui| {
                ui.label("z_t (the noisy state)");
                rects[0] = Some(ui.image(SizedTexture::new(f.z, size)).rect);
            });
            ui.vertical(|ui| {
                ui.label("x_hat (the model's guess of the clean image)");
                match f.x_hat {
                    Some(x) => {
                        rects[1] = Some(ui.image(SizedTexture::new(x, size)).rect);
                    }
                    None => {
                        ui.allocate_space(size);
                    }
                }
            });
        };
        if stacked {
            ui.vertical(|ui| draw(ui, &mut rects));
        } else {
            ui.horizontal_top(|ui| draw(ui, &mut rects));
        }
        // The page's tests read where the grids are to check the canvas pixels a visitor sees.
        #[cfg(target_arch = "wasm32")]
        crate::app::web_status::publish_layout(
            ui.ctx().pixels_per_point(),
            v.texture_size,
            f.step,
            v,
            rects,
        );
    });
}

/// A link (web) or command (native) that makes the same picture again, with a button to copy it.
/// The class picker and the guidance slider of a class-conditional model.
fn class_controls(
    s: &mut crate::app::state::SampleSettings,
    arch: &crate::nn::UNetConfig,
    ui: &mut Ui,
) {
    use crate::diffusion::guidance::class_name;
    ui.separator();
    egui::Grid::new("class settings")
        .num_columns(2)
        .show(ui, |ui| {
            let label = ui.label("class");
            let shown = s.class.map_or_else(
                || "none (unconditional)".to_string(),
                |c| class_name(arch, c),
            );
            egui::ComboBox::from_id_salt("class")
                .selected_text(shown)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut s.class, None, "none (unconditional)");
                    for c in 0..arch.classes as u32 {
                        ui.selectable_value(&mut s.class, Some(c), class_name(arch, c));
                    }
                })
                .response
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("guidance w");
            let top = arch.guidance.map_or(8.0, |g| g.w_max.max(1.0));
            ui.add_enabled(
                s.class.is_some(),
                egui::Slider::new(&mut s.guidance, 0.0..=top).step_by(0.25),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "x_hat = (1 + w) x_hat(class) - w x_hat(no class): 0 is the conditional model \
             alone; larger w draws more typical, less varied images of the class",
            );
            ui.end_row();
        });
    match arch.guidance {
        Some(g) => ui.label(
            RichText::new(format!(
                "a guided student: w is an input (one evaluation per step), distilled for w in \
                 {}..{}",
                g.w_min, g.w_max
            ))
            .weak(),
        ),
        None => {
            ui.label(RichText::new("guidance costs two evaluations per step on this model").weak())
        }
    };
}

fn reproduce_row(ui: &mut Ui, r: &crate::app::StartOptions) {
    #[cfg(target_arch = "wasm32")]
    let (what, text) = (
        "link to this picture",
        crate::app::web_page::page_address(&r.to_query()),
    );
    #[cfg(not(target_arch = "wasm32"))]
    let (what, text) = ("the same picture from the command line", r.sample_command());
    ui.horizontal_wrapped(|ui| {
        if ui
            .small_button("Copy")
            .on_hover_text(format!("copy {what}"))
            .clicked()
        {
            ui.ctx().copy_text(text.clone());
        }
        ui.label(RichText::new(text).monospace().small().weak());
    });
}

/// How much to magnify a grid texture that `fit` times its size would fill: whole texels up to 3x
/// (crisp), beyond that whatever fills the space (texels large enough for uneven widths not to
/// show), never below 1x and at most 12x.
fn grid_scale(fit: f32) -> f32 {
    if fit < 3.0 {
        fit.floor().max(1.0)
    } else {
        fit.min(12.0)
    }
}

fn compare_tab(app: &mut FewstepApp, ui: &mut Ui) {
    settings_panel("compare settings", "compare settings (narrow)", ui)
        .resizable(false)
        .show(ui, |ui| {
            ui.add_space(6.0);
            ui.label("Step counts");
            let c = &mut app.state.compare;
            ui.horizontal_wrapped(|ui| {
                for (k, on) in c.counts.iter_mut() {
                    ui.checkbox(on, k.to_string());
                }
            });
            egui::Grid::new("compare grid")
                .num_columns(2)
                .show(ui, |ui| {
                    let label = ui.label("seed");
                    ui.add(egui::DragValue::new(&mut c.seed))
                        .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("images per row");
                    ui.add(egui::DragValue::new(&mut c.count).range(1..=MAX_COUNT))
                        .labelled_by(label.id);
                    ui.end_row();
                });
            let conditional = app
                .state
                .selected_model()
                .is_some_and(|m| m.meta.arch.classes > 0);
            if conditional {
                let c = &mut app.state.compare;
                ui.checkbox(&mut c.per_class, "one group of rows per class")
                    .on_hover_text(
                        "every class at every ticked step count, with the Sample tab's \
                         guidance w; off: the Sample tab's class",
                    );
            }
            ui.label(
                RichText::new(
                    "Each count gets the distilled model made for it (if loaded) and the \
                     teacher's plain DDIM with as many steps, from the same noise.",
                )
                .weak(),
            );
            let running = app.state.compare_view.as_ref().is_some_and(|v| v.running);
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(!running, egui::Button::new("Compare"))
                    .clicked()
                {
                    app.start_compare();
                }
                if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                    app.stop();
                }
            });
            ui.add_space(6.0);
            // The run on screen, or the steps chosen before any run.
            let (steps, shown) = match &app.state.sample_view {
                Some(v) => (v.steps, v.frame().map(|f| f.step)),
                None => (app.state.settings.steps, None),
            };
            super::schedule_plot::show(ui, steps, shown);
        });
    egui::CentralPanel::default().show(ui, |ui| {
        let Some(v) = &app.state.compare_view else {
            ui.add_space(8.0);
            ui.label(
                "Compare puts step counts side by side: for each count you tick, the student \
                 distilled for it and the teacher's plain DDIM with as many steps, all from the \
                 same noise. At 1 or 2 steps plain DDIM gives grey blurs; the students give \
                 garments. Press Compare.",
            );
            return;
        };
        if let Some(e) = &v.error {
            ui.colored_label(Color32::RED, e);
        }
        // The images column takes what the label and time columns leave.
        let image_width = (ui.available_width() - 180.0).max(100.0);
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("compare rows")
                .num_columns(3)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    for r in &v.rows {
                        ui.label(RichText::new(&r.label).monospace().strong());
                        match r.image {
                            Some(id) => {
                                let [w, h] = r.size;
                                let scale = grid_scale(image_width / w as f32);
                                ui.image(SizedTexture::new(
                                    id,
                                    Vec2::new(w as f32, h as f32) * scale,
                                ));
                            }
                            None if v.running => {
                                ui.spinner();
                            }
                            None => {
                                ui.label("—");
                            }
                        }
                        match r.ms {
                            Some(ms) => ui.label(format!("{ms:.0} ms")),
                            None => ui.label(""),
                        };
                        ui.end_row();
                    }
                });
        });
    });
}

fn models_tab(app: &mut FewstepApp, ui: &mut Ui) {
    egui::CentralPanel::default().show(ui, |ui| {
        ui.label(
            "Bundled models are loaded at start. Open your own: drop a .safetensors file written \
             by fewstep train / distill on this window, or give its path.",
        );
        #[cfg(not(target_arch = "wasm32"))]
        ui.horizontal(|ui| {
            let label = ui.label("path");
            ui.text_edit_singleline(&mut app.platform.open_path)
                .labelled_by(label.id);
            if ui.button("Open").clicked() {
                let p = app.platform.open_path.trim().to_string();
                app.open_path(&p);
            }
        });
        #[cfg(target_arch = "wasm32")]
        if ui.button("Open a model file…").clicked() {
            if let Some(tx) = app.job_sender() {
                crate::app::web_models::pick_file(tx);
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            ui.separator();
            crate::app::web_cache::show(ui);
            crate::app::web_store::show(ui);
        }
        ui.separator();
        let mut clicked = None;
        let mut removed = None;
        // Both ways: the table is wider than a phone (its columns scroll, not the page). It
        // takes the rest of the tab, so that the floating horizontal bar sits at the tab's foot
        // instead of over the last model's row (its Remove button could not be clicked).
        egui::ScrollArea::both()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                egui::Grid::new("models")
                    .striped(true)
                    .num_columns(9)
                    .show(ui, |ui| {
                        for h in [
                            "",
                            "name",
                            "steps",
                            "preset / parameters",
                            "classes",
                            "data",
                            "lineage",
                            "file",
                            "eval (bundled: assets/manifest.json)",
                        ] {
                            ui.label(RichText::new(h).strong());
                        }
                        ui.end_row();
                        for (i, m) in app.state.models.iter().enumerate() {
                            let remove = ui
                                .small_button("Remove")
                                .on_hover_text("remove from the list (its file bytes are let go)");
                            #[cfg(target_arch = "wasm32")]
                            crate::app::web_page::publish_rect(
                                format!("remove:{}", m.name),
                                remove.rect,
                            );
                            if remove.clicked() {
                                removed = Some(i);
                            }
                            let sel = app.state.selected == Some(i);
                            if ui.selectable_label(sel, &m.name).clicked() {
                                clicked = Some(i);
                            }
                            ui.label(match m.meta.steps {
                                Some(k) => k.to_string(),
                                None => "teacher".into(),
                            });
                            ui.label(format!(
                                "{}, {:.2} M, {}x{}x{}",
                                m.meta.arch.preset,
                                m.params as f64 / 1e6,
                                m.meta.image[0],
                                m.meta.image[1],
                                m.meta.image[2]
                            ));
                            ui.label(model_classes(&m.meta.arch));
                            ui.label(format!(
                                "{} ({} updates)",
                                m.meta.dataset, m.meta.training_steps
                            ));
                            let path = &m.meta.lineage.steps_path;
                            ui.label(if path.is_empty() {
                                "trained".to_string()
                            } else {
                                format!(
                                    "{} halvings: {}",
                                    m.meta.lineage.halvings,
                                    path.iter()
                                        .map(|s| s.to_string())
                                        .collect::<Vec<_>>()
                                        .join(" -> ")
                                )
                            });
                            ui.label(format!("{:.1} MB", m.file_bytes as f64 / 1e6));
                            ui.label(crate::bundled::figures(&m.name).unwrap_or_default());
                            ui.end_row();
                        }
                    });
            });
        if let Some(i) = clicked {
            app.state.select(i);
        }
        if let Some(i) = removed {
            app.remove_model(i);
        }
    });
}

/// The Models tab's "classes" cell: the class names (or count) and a guided student's w range.
fn model_classes(a: &crate::nn::UNetConfig) -> String {
    if a.classes == 0 {
        return "unconditional".into();
    }
    let names = if a.class_names.is_empty() {
        format!("{} classes", a.classes)
    } else {
        a.class_names.join(", ")
    };
    match a.guidance {
        Some(g) => format!("{names}; w input {}..{}", g.w_min, g.w_max),
        None => names,
    }
}
