//! The web Train tab's drawing: mode, settings, an interrupted run to resume, progress, the
//! students made and the preview.

use super::checkpoint::{self, Interrupted};
use super::runner::Begin;
use super::*;

#[derive(Default)]
pub struct WebTrainPanel {
    pub mode: Mode,
    pub settings: Settings,
    pub train: TrainSettings,
    run: Option<Rc<RefCell<Shared>>>,
    /// The preview's texture and the version it shows.
    preview: Option<(u64, egui::TextureHandle)>,
    /// A run lost with the previous device, offered again.
    lost: Option<LostRun>,
    /// Checkpoint every this many updates (the address's `checkpoint=N`; 0: never), else by
    /// time (checkpoint.rs).
    pub checkpoint_every: Option<u64>,
}

impl WebTrainPanel {
    /// The panel of a page recreated after its device was lost: the lost run is offered again
    /// with its settings.
    pub fn after_device_loss() -> WebTrainPanel {
        let lost = LOST.with(|l| l.borrow_mut().take());
        let mut panel = WebTrainPanel::default();
        if let Some(l) = &lost {
            panel.mode = l.mode;
            panel.settings = l.settings.clone();
            panel.train = l.train.clone();
        }
        panel.lost = lost;
        panel
    }

    /// Whether a lost run waits to be started again.
    pub fn has_lost_run(&self) -> bool {
        self.lost.is_some()
    }

    /// Keeps the running run's settings for the page that replaces this one (the device was
    /// lost); nothing when no run was going.
    pub fn remember_lost_run(&self) {
        let Some(run) = &self.run else { return };
        let s = run.borrow();
        if s.ended.as_ref().is_some_and(|e| !e.1) {
            return;
        }
        let lost = LostRun {
            mode: self.mode,
            settings: self.settings.clone(),
            train: self.train.clone(),
            progress: format!("{} of {} updates", s.done, s.total),
        };
        LOST.with(|l| *l.borrow_mut() = Some(lost));
    }

    pub fn running(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.borrow().ended.is_none())
    }

    /// Starts a run with the current settings (an interrupted run's checkpoint is let go).
    pub fn start(&mut self, gpu: Gpu, jobs: UnboundedSender<Job>, ctx: egui::Context) {
        checkpoint::withdraw_offer();
        let (mode, settings, train) = (self.mode, self.settings.clone(), self.train.clone());
        let every = self.checkpoint_every;
        self.spawn(
            gpu,
            ctx,
            "fetching the data set…",
            move |gpu, shared, ctx| {
                Box::pin(async move {
                    checkpoint::discard().await;
                    match mode {
                        Mode::Distill => {
                            distill(&gpu, Begin::New(settings), every, &shared, &jobs, &ctx).await
                        }
                        Mode::Teacher => {
                            train_teacher(&gpu, Begin::New(train), every, &shared, &jobs, &ctx)
                                .await
                        }
                    }
                })
            },
        );
    }

    /// Continues the run a page left in storage from its last checkpoint.
    pub fn resume(&mut self, gpu: Gpu, jobs: UnboundedSender<Job>, ctx: egui::Context) {
        let Some(offer) = checkpoint::interrupted() else {
            return;
        };
        checkpoint::withdraw_offer();
        self.mode = offer.info.mode;
        let every = offer.info.every;
        self.spawn(
            gpu,
            ctx,
            "reading the checkpoint…",
            move |gpu, shared, ctx| {
                Box::pin(async move {
                    let r = checkpoint::load_resume().await?;
                    match r.info.mode {
                        Mode::Distill => {
                            distill(&gpu, Begin::Resume(r), every, &shared, &jobs, &ctx).await
                        }
                        Mode::Teacher => {
                            train_teacher(&gpu, Begin::Resume(r), every, &shared, &jobs, &ctx).await
                        }
                    }
                })
            },
        );
    }

    /// Runs `run` as the tab's run. When it fails its checkpoint is let go, unless the GPU
    /// failed (a lost device): then the next page offers to resume it.
    fn spawn(
        &mut self,
        gpu: Gpu,
        ctx: egui::Context,
        what: &str,
        run: impl FnOnce(
                Gpu,
                Rc<RefCell<Shared>>,
                egui::Context,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>>>>
            + 'static,
    ) {
        let shared = Rc::new(RefCell::new(Shared {
            what: what.into(),
            ..Default::default()
        }));
        LAST.with(|l| *l.borrow_mut() = Some(shared.clone()));
        self.run = Some(shared.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let result = run(gpu.clone(), shared.clone(), ctx.clone()).await;
            if result.is_err() && gpu.fault().is_ok() {
                checkpoint::discard().await;
            }
            let mut s = shared.borrow_mut();
            s.ended = Some(match result {
                Ok(text) => (text, false),
                Err(e) => (format!("{e:#}"), true),
            });
            ctx.request_repaint();
        });
    }

    /// The offer of a run the last page left, with Resume and Discard.
    fn interrupted_ui(
        &mut self,
        ui: &mut Ui,
        offer: &Interrupted,
        gpu: Option<&Gpu>,
        jobs: Option<UnboundedSender<Job>>,
    ) {
        ui.group(|ui| {
            let i = &offer.info;
            let what = match i.mode {
                Mode::Distill => format!("A distillation of {}", i.base),
                Mode::Teacher => format!("A training of {}", i.base),
            };
            ui.add(
                egui::Label::new(
                    RichText::new(format!(
                        "{what} in this tab was interrupted (the tab closed, reloaded or lost \
                         its GPU). Its last checkpoint, at update {} of {}, is kept in this \
                         browser{}.",
                        i.done,
                        i.total,
                        kept_ago(offer.kept)
                    ))
                    .color(Color32::from_rgb(140, 200, 240)),
                )
                .wrap(),
            );
            ui.horizontal(|ui| {
                let resume = ui.add_enabled(gpu.is_some(), egui::Button::new("Resume it"));
                crate::app::web_page::publish_rect("resumeRun", resume.rect);
                if resume.clicked() {
                    if let (Some(g), Some(j)) = (gpu, jobs) {
                        self.resume(g.clone(), j, ui.ctx().clone());
                    }
                }
                let discard = ui.button("Discard it");
                crate::app::web_page::publish_rect("discardRun", discard.rect);
                if discard.clicked() {
                    checkpoint::withdraw_offer();
                    wasm_bindgen_futures::spawn_local(checkpoint::discard());
                }
            });
        });
    }

    /// Draws the tab; returns the name of a model made here whose "Sample it" was clicked.
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        models: &[ModelInfo],
        gpu: Option<&Gpu>,
        jobs: Option<UnboundedSender<Job>>,
    ) -> Option<String> {
        egui::CentralPanel::default()
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .show(ui, |ui| self.panel(ui, models, gpu, jobs))
                    .inner
            })
            .inner
    }

    fn panel(
        &mut self,
        ui: &mut Ui,
        models: &[ModelInfo],
        gpu: Option<&Gpu>,
        jobs: Option<UnboundedSender<Job>>,
    ) -> Option<String> {
        {
            ui.heading("Train and distill in this tab");
            ui.label(
                "Progressive distillation trains a student to take one sampling step where its \
                 teacher takes two, then repeats with the student as the next teacher. Here it \
                 runs on this page's GPU (WebGPU), with the same updates as `fewstep distill` \
                 and `fewstep train`.",
            );
            ui.add_enabled_ui(!self.running(), |ui| {
                ui.horizontal(|ui| {
                    ui.radio_value(&mut self.mode, Mode::Distill, "Distill a loaded model");
                    ui.radio_value(
                        &mut self.mode,
                        Mode::Teacher,
                        "Train a teacher from scratch",
                    );
                });
            });
            if let Some(l) = self.lost.clone() {
                ui.group(|ui| {
                    ui.label(
                        RichText::new(format!(
                            "The GPU device was lost during a run ({}, {}); the page started \
                             again on a new one. Students finished before are in the list.",
                            match l.mode {
                                Mode::Distill => "distilling",
                                Mode::Teacher => "training a teacher",
                            },
                            l.progress
                        ))
                        .color(Color32::from_rgb(230, 180, 90)),
                    );
                    let ready =
                        gpu.is_some() && (l.mode == Mode::Teacher || has_file(&l.settings.teacher));
                    let restart = ui.add_enabled(ready, egui::Button::new("Restart the lost run"));
                    crate::app::web_page::publish_rect("restartLost", restart.rect);
                    if restart.clicked() {
                        if let (Some(g), Some(j)) = (gpu, jobs.clone()) {
                            self.lost = None;
                            self.start(g.clone(), j, ui.ctx().clone());
                        }
                    }
                });
            }
            if let Some(offer) = checkpoint::interrupted().filter(|_| !self.running()) {
                self.interrupted_ui(ui, &offer, gpu, jobs.clone());
            }
            ui.label(format!("Data: {DATA_NOTE}."));
            ui.label(
                RichText::new(
                    "A run is checkpointed in this browser as it goes: after a reload, a closed \
                     tab or a lost GPU this tab offers to resume it. Each model made here is \
                     kept in this browser until you remove it in the Models tab.",
                )
                .weak(),
            );
            ui.add_space(6.0);
            let running = self.running();
            ui.add_enabled_ui(!running, |ui| match self.mode {
                Mode::Distill => self.settings_ui(ui, models),
                Mode::Teacher => self.train_settings_ui(ui),
            });
            ui.horizontal(|ui| {
                let (ready, text) = match self.mode {
                    Mode::Distill => (has_file(&self.settings.teacher), "Start distilling"),
                    Mode::Teacher => (true, "Start training"),
                };
                let ready = ready && !running && gpu.is_some();
                let start = ui.add_enabled(ready, egui::Button::new(text));
                crate::app::web_page::publish_rect("startRun", start.rect);
                if start.clicked() {
                    if let (Some(g), Some(j)) = (gpu, jobs.clone()) {
                        self.start(g.clone(), j, ui.ctx().clone());
                    }
                }
                if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                    if let Some(r) = &self.run {
                        r.borrow_mut().stop = true;
                    }
                }
            });
            ui.label(
                RichText::new(format!(
                    "Same run natively: {}",
                    match self.mode {
                        Mode::Distill => self.settings.command(&self.teacher_file_name()),
                        Mode::Teacher => self.train.command(),
                    }
                ))
                .weak(),
            );
            let run = self.run.clone()?;
            let loaded = |name: &str| models.iter().any(|m| m.name == name);
            let picked = self.progress_ui(ui, &run.borrow(), &loaded);
            self.preview_ui(ui, &run.borrow());
            picked
        }
    }

    fn teacher_file_name(&self) -> String {
        crate::bundled::find(&self.settings.teacher)
            .map(|b| format!("assets/{}", b.file))
            .unwrap_or_else(|| self.settings.teacher.clone())
    }

    fn settings_ui(&mut self, ui: &mut Ui, models: &[ModelInfo]) {
        let s = &mut self.settings;
        egui::Grid::new("distill settings")
            .num_columns(2)
            .show(ui, |ui| {
                let teacher_label = ui.label("teacher");
                egui::ComboBox::from_id_salt("distill teacher")
                    .selected_text(&s.teacher)
                    .show_ui(ui, |ui| {
                        for m in models {
                            let text = match m.meta.steps {
                                Some(k) => format!("{} ({k} steps)", m.name),
                                None => format!("{} (teacher)", m.name),
                            };
                            ui.selectable_value(&mut s.teacher, m.name.clone(), text);
                        }
                    })
                    .response
                    .labelled_by(teacher_label.id);
                ui.end_row();
                let fixed = models
                    .iter()
                    .find(|m| m.name == s.teacher)
                    .and_then(|m| m.meta.steps);
                let from_label = ui.label("teacher's steps");
                match fixed {
                    Some(k) => {
                        s.from_steps = k as usize;
                        ui.label(format!("{k} (a distilled student keeps its own)"));
                    }
                    None => {
                        egui::ComboBox::from_id_salt("distill from")
                            .selected_text(s.from_steps.to_string())
                            .show_ui(ui, |ui| {
                                for k in [2, 4, 8, 16, 32, 64] {
                                    ui.selectable_value(&mut s.from_steps, k, k.to_string());
                                }
                            })
                            .response
                            .labelled_by(from_label.id);
                    }
                }
                ui.end_row();
                s.from_steps = s.from_steps.max(2);
                if s.to_steps >= s.from_steps {
                    s.to_steps = s.from_steps / 2;
                }
                let to_label = ui.label("down to steps");
                egui::ComboBox::from_id_salt("distill to")
                    .selected_text(s.to_steps.to_string())
                    .show_ui(ui, |ui| {
                        let mut k = s.from_steps / 2;
                        while k >= 1 {
                            ui.selectable_value(&mut s.to_steps, k, k.to_string());
                            k /= 2;
                        }
                    })
                    .response
                    .labelled_by(to_label.id);
                ui.end_row();
                run_rows(
                    ui,
                    ("updates per halving", &mut s.updates, 20_000),
                    &mut s.batch,
                    ("learning rate", &mut s.lr),
                    &mut s.seed,
                );
                // Guided distillation needs a class-conditional teacher that does not take w yet.
                let conditional = models
                    .iter()
                    .find(|m| m.name == s.teacher)
                    .is_some_and(|m| m.meta.arch.classes > 0 && m.meta.arch.guidance.is_none());
                if !conditional {
                    s.guided = false;
                    return;
                }
                let l = ui.label("guidance");
                ui.checkbox(
                    &mut s.guided,
                    "guided: first a student that takes the guidance weight w as an input",
                )
                .labelled_by(l.id);
                ui.end_row();
                if s.guided {
                    let l = ui.label("w drawn from");
                    let low = s.w_range[0];
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::DragValue::new(&mut s.w_range[0])
                                .range(0.0..=20.0)
                                .speed(0.1),
                        )
                        .labelled_by(l.id);
                        ui.label("to");
                        ui.add(
                            egui::DragValue::new(&mut s.w_range[1])
                                .range(low..=20.0)
                                .speed(0.1),
                        );
                    });
                    ui.end_row();
                    let l = ui.label("updates of the guidance stage");
                    ui.add(egui::DragValue::new(&mut s.guidance_updates).range(1..=20_000))
                        .labelled_by(l.id);
                    ui.end_row();
                }
            });
    }

    fn train_settings_ui(&mut self, ui: &mut Ui) {
        let t = &mut self.train;
        egui::Grid::new("train settings")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("U-Net preset");
                egui::ComboBox::from_id_salt("train preset")
                    .selected_text(&t.preset)
                    .show_ui(ui, |ui| {
                        ui.selectable_value(
                            &mut t.preset,
                            "tiny".to_string(),
                            "tiny (164k parameters)",
                        );
                        ui.selectable_value(
                            &mut t.preset,
                            "small".to_string(),
                            "small (1.6M parameters)",
                        );
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                run_rows(
                    ui,
                    ("updates", &mut t.updates, 100_000),
                    &mut t.batch,
                    ("peak learning rate", &mut t.lr),
                    &mut t.seed,
                );
                let l = ui.label("classes");
                ui.checkbox(
                    &mut t.classes,
                    "class-conditional: the 10 Fashion-MNIST classes (for classifier-free guidance)",
                )
                .labelled_by(l.id);
                ui.end_row();
                if t.classes {
                    let l = ui.label("labels dropped");
                    ui.add(
                        egui::DragValue::new(&mut t.uncond_prob)
                            .range(0.0..=0.95)
                            .speed(0.01)
                            .max_decimals(2),
                    )
                    .labelled_by(l.id)
                    .on_hover_text(
                        "the share of updates that see no class, so the model also learns the \
                         unconditional prediction guidance needs (Ho & Salimans: 0.1-0.2)",
                    );
                    ui.end_row();
                }
            });
        ui.label(
            RichText::new(format!(
                "Warm-up: {} updates (fewstep train's default for {}); the result is the EMA \
                 of the weights, as natively.",
                crate::diffusion::trainer::default_warmup(&t.preset),
                t.preset
            ))
            .weak(),
        );
    }

    fn progress_ui(
        &self,
        ui: &mut Ui,
        s: &Shared,
        loaded: &dyn Fn(&str) -> bool,
    ) -> Option<String> {
        let mut picked = None;
        ui.separator();
        if s.total > 0 {
            let frac = s.done as f32 / s.total as f32;
            let eta = if s.done > 0 && s.ended.is_none() {
                let left = s.seconds / s.done as f64 * (s.total - s.done) as f64;
                format!(", about {} left", duration(left))
            } else {
                String::new()
            };
            ui.add(egui::ProgressBar::new(frac).text(format!(
                "{} of {} updates, {}{eta}",
                s.done,
                s.total,
                duration(s.seconds)
            )));
        }
        if let Some(c) = &s.checkpoints {
            ui.label(
                RichText::new(format!(
                    "checkpointed at update {} ({} so far, {:.1} s in all, {:.1} MB each)",
                    c.update,
                    c.count,
                    c.seconds,
                    c.bytes as f64 / 1e6
                ))
                .weak(),
            );
        }
        if let Some(e) = &s.checkpoint_error {
            ui.colored_label(Color32::from_rgb(230, 180, 90), e);
        }
        match &s.ended {
            Some((text, true)) => {
                ui.colored_label(Color32::from_rgb(230, 140, 60), text);
            }
            Some((text, false)) => {
                ui.label(text);
            }
            None => {
                ui.label(&s.what);
            }
        }
        if !s.losses.is_empty() {
            Plot::new("web distill loss")
                .width(ui.available_width().min(520.0))
                .height(200.0)
                .show(ui, |p| p.line(Line::new("loss", s.losses.clone())));
        }
        for m in &s.students {
            ui.horizontal(|ui| {
                ui.label(match m.steps {
                    0 => format!(
                        "{} (teacher): in the model list of Sample and Compare",
                        m.name
                    ),
                    k => format!(
                        "{} ({k} steps): in the model list of Sample and Compare",
                        m.name
                    ),
                });
                // The worker loads it a moment after the run hands it over.
                if ui
                    .add_enabled(loaded(&m.name), egui::Button::new("Sample it"))
                    .clicked()
                {
                    picked = Some(m.name.clone());
                }
                if ui.button("Download").clicked() {
                    download(&format!("{}.safetensors", m.name), &m.file);
                }
            });
        }
        picked
    }
}

/// The grid rows both modes share: updates, batch, learning rate, seed (each field labelled, so
/// screen readers and UI tests find it by name).
impl WebTrainPanel {
    fn preview_ui(&mut self, ui: &mut Ui, s: &Shared) {
        let Some((label, image, version)) = &s.preview else {
            return;
        };
        if self.preview.as_ref().is_none_or(|(v, _)| v != version) {
            let tex = ui.ctx().load_texture(
                "web train preview",
                image.clone(),
                egui::TextureOptions::NEAREST,
            );
            self.preview = Some((*version, tex));
        }
        if let Some((_, tex)) = &self.preview {
            ui.label(label);
            ui.image((tex.id(), tex.size_vec2()));
        }
    }
}

pub(super) fn run_rows(
    ui: &mut Ui,
    (updates_text, updates, max_updates): (&str, &mut u64, u64),
    batch: &mut usize,
    (lr_text, lr): (&str, &mut f32),
    seed: &mut u64,
) {
    let l = ui.label(updates_text);
    ui.add(egui::DragValue::new(updates).range(1..=max_updates))
        .labelled_by(l.id);
    ui.end_row();
    let l = ui.label("images per update");
    ui.add(egui::DragValue::new(batch).range(1..=128))
        .labelled_by(l.id);
    ui.end_row();
    let l = ui.label(lr_text);
    ui.add(
        egui::DragValue::new(lr)
            .range(1e-6..=1e-2)
            .speed(1e-5)
            .max_decimals(6),
    )
    .labelled_by(l.id);
    ui.end_row();
    let l = ui.label("seed");
    ui.add(egui::DragValue::new(seed)).labelled_by(l.id);
    ui.end_row();
}

pub(super) fn duration(s: f64) -> String {
    crate::human::duration(s)
}

/// " (3 min ago)", from a time in ms since 1970.
fn kept_ago(kept_ms: f64) -> String {
    let now = js_sys::Date::now();
    if kept_ms <= 0.0 || now < kept_ms {
        return String::new();
    }
    format!(" ({} ago)", duration((now - kept_ms) / 1000.0))
}
