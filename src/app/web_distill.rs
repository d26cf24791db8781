//! The Train / distill tab on the web: progressive distillation of a loaded model inside the
//! browser tab (diffusion/distill_memory.rs: the same updates and model files as `fewstep
//! distill`). The run is a task on the page's event loop that awaits the GPU after every update
//! and yields to the page, so the tab stays responsive; each finished student is loaded into the
//! app at once (Sample, Compare) and can be downloaded as a model file the CLI and the desktop
//! app open. Nothing is written anywhere: closing or reloading the tab loses the run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use eframe::egui::{self, Color32, RichText, Ui};
use egui_plot::{Line, Plot};
use futures_channel::mpsc::UnboundedSender;
use wasm_bindgen::JsCast;

use super::engine::{Job, ModelInfo};
use crate::diffusion::distill_memory::{Advanced, MemoryDistill};
use crate::diffusion::distill_plan::DistillPlan;
use crate::diffusion::train_memory::{MemoryTrain, TrainPlan};
use crate::gpu::Gpu;

/// The data set the page ships (the first 10,000 Fashion-MNIST training images, IDX + gzip).
pub const DATA_DIR: &str = "assets/fmnist-10k";
const DATA_NOTE: &str = "the first 10,000 Fashion-MNIST training images, shipped with the page \
                         (4.3 MB, fetched when a run starts)";

thread_local! {
    /// Model file bytes by model name (fetched, dropped, or made here): what a run starts from
    /// and what Download saves.
    static FILES: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    /// The runs' state, for `fewstep_distilled()` (tests and scripts).
    static LAST: RefCell<Option<Rc<RefCell<Shared>>>> = const { RefCell::new(None) };
}

/// Keeps a model file's bytes so that it can be distilled or downloaded later.
pub fn remember_file(name: &str, bytes: &[u8]) {
    FILES.with(|f| f.borrow_mut().insert(name.to_string(), bytes.to_vec()));
}

fn file_of(name: &str) -> Option<Vec<u8>> {
    FILES.with(|f| f.borrow().get(name).cloned())
}

/// Whether a model file is kept under `name` (asked every frame: no copy of the bytes).
fn has_file(name: &str) -> bool {
    FILES.with(|f| f.borrow().contains_key(name))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub teacher: String,
    /// The teacher's sampling steps (a student's own count; a teacher's is chosen).
    pub from_steps: usize,
    pub to_steps: usize,
    pub updates: u64,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for Settings {
    /// Halve the bundled 4-step student once: short enough for a laptop GPU (about a minute),
    /// and the result can be put beside the bundled 2-step student in Compare.
    fn default() -> Self {
        Settings {
            teacher: crate::bundled::DEFAULT_MODEL.into(),
            from_steps: 4,
            to_steps: 2,
            updates: 200,
            batch: 16,
            lr: 1e-4,
            seed: 0,
        }
    }
}

impl Settings {
    /// The plan `fewstep distill` would follow with the equivalent command line.
    fn plan(&self, teacher_file: &str) -> DistillPlan {
        DistillPlan {
            teacher: PathBuf::from(teacher_file),
            from_steps: self.from_steps,
            to_steps: self.to_steps,
            updates: self.updates,
            final_updates: self.updates,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            checkpoint_every: 0,
            // A loss every update: reading it back is also where the task awaits the GPU.
            log_every: 1,
            dataset: "fashion-mnist".into(),
            command: self.command(teacher_file),
            ema: None,
        }
    }

    /// The native command that makes the same students (same weights up to float rounding).
    pub fn command(&self, teacher_file: &str) -> String {
        format!(
            "fewstep distill --teacher {teacher_file} --from-steps {} --to-steps {} --updates {u} \
             --final-updates {u} --batch {} --lr {} --seed {} --data fashion-mnist:{DATA_DIR} \
             --out DIR",
            self.from_steps,
            self.to_steps,
            self.batch,
            self.lr,
            self.seed,
            u = self.updates
        )
    }
}

/// Training a teacher from scratch in the tab.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    pub preset: String,
    pub updates: u64,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for TrainSettings {
    /// A `tiny` teacher: a few thousand updates draw recognisable garments (README); 2,000 of
    /// batch 32 take minutes on a laptop GPU.
    fn default() -> Self {
        TrainSettings {
            preset: "tiny".into(),
            updates: 2000,
            batch: 32,
            lr: crate::diffusion::trainer::default_lr("tiny"),
            seed: 0,
        }
    }
}

impl TrainSettings {
    fn plan(&self) -> TrainPlan {
        TrainPlan {
            preset: self.preset.clone(),
            updates: self.updates,
            batch: self.batch,
            lr: Some(self.lr),
            warmup: None,
            seed: self.seed,
            dataset: format!("fashion-mnist:{DATA_DIR}"),
            command: self.command(),
        }
    }

    /// The native command that trains the same teacher.
    pub fn command(&self) -> String {
        format!(
            "fewstep train --data fashion-mnist:{DATA_DIR} --preset {} --steps {} --batch {} \
             --lr {} --seed {} --out DIR",
            self.preset, self.updates, self.batch, self.lr, self.seed
        )
    }
}

/// Which run the tab starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Distill,
    Train,
}

/// A finished student.
pub struct Made {
    pub name: String,
    pub steps: usize,
    pub file: Vec<u8>,
}

/// What the running task and the tab share (one thread on the web).
#[derive(Default)]
pub struct Shared {
    pub done: u64,
    pub total: u64,
    pub what: String,
    pub losses: Vec<[f64; 2]>,
    pub students: Vec<Made>,
    pub ended: Option<(String, bool)>,
    pub stop: bool,
    pub seconds: f64,
    /// The newest model's sample grid: (what it shows, the picture, a version that changes with
    /// each new grid).
    pub preview: Option<(String, egui::ColorImage, u64)>,
}

#[derive(Default)]
pub struct WebTrainPanel {
    pub mode: Mode,
    pub settings: Settings,
    pub train: TrainSettings,
    run: Option<Rc<RefCell<Shared>>>,
    /// The preview's texture and the version it shows.
    preview: Option<(u64, egui::TextureHandle)>,
}

impl WebTrainPanel {
    pub fn running(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.borrow().ended.is_none())
    }

    /// Starts a distillation with the current settings.
    pub fn start(&mut self, gpu: Gpu, jobs: UnboundedSender<Job>, ctx: egui::Context) {
        let shared = Rc::new(RefCell::new(Shared {
            what: "fetching the data set…".into(),
            ..Default::default()
        }));
        LAST.with(|l| *l.borrow_mut() = Some(shared.clone()));
        self.run = Some(shared.clone());
        let (mode, settings, train) = (self.mode, self.settings.clone(), self.train.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let result = match mode {
                Mode::Distill => distill(&gpu, &settings, &shared, &jobs, &ctx).await,
                Mode::Train => train_teacher(&gpu, &train, &shared, &jobs, &ctx).await,
            };
            let mut s = shared.borrow_mut();
            s.ended = Some(match result {
                Ok(text) => (text, false),
                Err(e) => (format!("{e:#}"), true),
            });
            ctx.request_repaint();
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
                    ui.radio_value(&mut self.mode, Mode::Train, "Train a teacher from scratch");
                });
            });
            ui.label(format!("Data: {DATA_NOTE}."));
            ui.label(
                RichText::new(
                    "Nothing is saved for you: closing or reloading the tab loses the run. \
                     Download the students you want to keep.",
                )
                .color(Color32::from_rgb(230, 180, 90)),
            );
            ui.add_space(6.0);
            let running = self.running();
            ui.add_enabled_ui(!running, |ui| match self.mode {
                Mode::Distill => self.settings_ui(ui, models),
                Mode::Train => self.train_settings_ui(ui),
            });
            ui.horizontal(|ui| {
                let (ready, text) = match self.mode {
                    Mode::Distill => (has_file(&self.settings.teacher), "Start distilling"),
                    Mode::Train => (true, "Start training"),
                };
                let ready = ready && !running && gpu.is_some();
                if ui.add_enabled(ready, egui::Button::new(text)).clicked() {
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
                        Mode::Train => self.train.command(),
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

/// Samples 8 images from a model file just made (its own step count for a student, 16 DDIM
/// steps for a teacher) as a picture for the tab.
async fn preview(
    gpu: &Gpu,
    name: &str,
    file: &[u8],
    version: u64,
) -> anyhow::Result<(String, egui::ColorImage, u64)> {
    use crate::diffusion::{load_model_bytes, SampleOptions, Sampler, SamplerKind};
    let (model, meta) = load_model_bytes(gpu, std::path::Path::new(name), file)?;
    let steps = meta.steps.map_or(16, |k| k as usize);
    let opts = SampleOptions {
        steps,
        count: 8,
        seed: 0,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let x = Sampler::new(&model, opts).run(&model).to_vec().await?;
    let [c, h, w] = model.image_shape();
    let img = crate::image::image_grid(&x, 8, c, h, w, 4, 3, 2);
    let image =
        egui::ColorImage::from_rgb([img.width() as usize, img.height() as usize], img.as_raw());
    Ok((
        format!("{name}: 8 samples in {steps} steps (seed 0)"),
        image,
        version,
    ))
}

fn run_rows(
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

fn duration(s: f64) -> String {
    crate::human::duration(s)
}

/// The run itself: fetch the data, then update until done, stopped or failed.
async fn distill(
    gpu: &Gpu,
    settings: &Settings,
    shared: &Rc<RefCell<Shared>>,
    jobs: &UnboundedSender<Job>,
    ctx: &egui::Context,
) -> anyhow::Result<String> {
    let teacher = file_of(&settings.teacher)
        .ok_or_else(|| anyhow::anyhow!("{} is not loaded", settings.teacher))?;
    ctx.request_repaint();
    let data = super::web_page::fashion_mnist_subset().await?;
    let mut run = MemoryDistill::new(gpu, settings.plan(&settings.teacher), &teacher, data)?;
    let t0 = web_time::Instant::now();
    let base = settings.teacher.clone();
    loop {
        if shared.borrow().stop {
            let s = shared.borrow();
            return Ok(format!(
                "stopped after {} of {} updates; the students finished so far stay",
                s.done, s.total
            ));
        }
        let advanced = run.advance().await?;
        let (done, total) = run.progress();
        {
            let mut s = shared.borrow_mut();
            s.done = done;
            s.total = total;
            s.seconds = t0.elapsed().as_secs_f64();
            s.what = format!("training the {}-step student", run.student_steps());
            if let Advanced::Update { loss: Some(l) } = &advanced {
                s.losses.push([done as f64, *l as f64]);
            }
        }
        if let Advanced::Halving { student, done } = advanced {
            let name = unused_name(&format!("{base}-to-{}step", student.steps));
            remember_file(&name, &student.file);
            let _ = jobs.unbounded_send(Job::Load {
                name: name.clone(),
                bytes: student.file.clone(),
            });
            shared.borrow_mut().what = format!("sampling a preview of {name}…");
            ctx.request_repaint();
            let version = shared.borrow().students.len() as u64 + 1;
            let shown = preview(gpu, &name, &student.file, version).await?;
            let mut s = shared.borrow_mut();
            s.preview = Some(shown);
            s.students.push(Made {
                name,
                steps: student.steps,
                file: student.file,
            });
            drop(s);
            if done {
                let s = shared.borrow();
                let n = s.students.len();
                return Ok(format!(
                    "done: {n} student{} in {}",
                    if n == 1 { "" } else { "s" },
                    duration(s.seconds)
                ));
            }
        }
        ctx.request_repaint();
        yield_to_page().await;
    }
}

/// Trains a teacher from scratch; at the end it joins the model list as `web-PRESET-teacher`.
async fn train_teacher(
    gpu: &Gpu,
    settings: &TrainSettings,
    shared: &Rc<RefCell<Shared>>,
    jobs: &UnboundedSender<Job>,
    ctx: &egui::Context,
) -> anyhow::Result<String> {
    let data = super::web_page::fashion_mnist_subset().await?;
    let mut run = MemoryTrain::new(gpu, settings.plan(), data)?;
    let t0 = web_time::Instant::now();
    shared.borrow_mut().total = settings.updates;
    while !run.is_done() {
        if shared.borrow().stop {
            let s = shared.borrow();
            return Ok(format!(
                "stopped after {} of {} updates (no model: a teacher is kept only when done)",
                s.done, s.total
            ));
        }
        let loss = run.advance().await?;
        {
            let mut s = shared.borrow_mut();
            s.done = run.trainer.step;
            s.seconds = t0.elapsed().as_secs_f64();
            s.what = format!("training a {} teacher", settings.preset);
            let at = s.done as f64;
            s.losses.push([at, loss as f64]);
        }
        ctx.request_repaint();
        yield_to_page().await;
    }
    let file = run.model_file().await?;
    let name = unused_name(&format!("web-{}-teacher", settings.preset));
    remember_file(&name, &file);
    let _ = jobs.unbounded_send(Job::Load {
        name: name.clone(),
        bytes: file.clone(),
    });
    shared.borrow_mut().what = format!("sampling a preview of {name}…");
    ctx.request_repaint();
    let shown = preview(gpu, &name, &file, 1).await?;
    let mut s = shared.borrow_mut();
    s.preview = Some(shown);
    s.students.push(Made {
        name: name.clone(),
        steps: 0,
        file,
    });
    Ok(format!("done: {name} in {}", duration(s.seconds)))
}

/// `base`, or `base-2`, `base-3`, … if a model by that name was made before.
fn unused_name(base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 2;
    while has_file(&name) {
        name = format!("{base}-{k}");
        k += 1;
    }
    name
}

/// Lets the page handle input and draw a frame before the next update.
async fn yield_to_page() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Saves `bytes` as a file through the browser's download.
fn download(name: &str, bytes: &[u8]) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let array = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let Ok(blob) = web_sys::Blob::new_with_u8_array_sequence(&array) else {
        return;
    };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Ok(a) = document
        .create_element("a")
        .map(|e| e.unchecked_into::<web_sys::HtmlAnchorElement>())
    {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

/// The last run, as JSON for `fewstep_distilled()`: progress, how it ended, and each student's
/// model file (base64), so a test can compare it with native `fewstep distill`.
pub fn last_run_json() -> Option<String> {
    LAST.with(|l| {
        let run = l.borrow().clone()?;
        let s = run.borrow();
        let students: Vec<serde_json::Value> = s
            .students
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "steps": m.steps,
                    "file": base64(&m.file),
                })
            })
            .collect();
        Some(
            serde_json::json!({
                "done": s.done,
                "total": s.total,
                "seconds": s.seconds,
                "ended": s.ended.as_ref().map(|e| e.0.clone()),
                "failed": s.ended.as_ref().is_some_and(|e| e.1),
                "losses": s.losses,
                "preview": s.preview.as_ref().map(|p| p.0.clone()),
                "students": students,
            })
            .to_string(),
        )
    })
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
