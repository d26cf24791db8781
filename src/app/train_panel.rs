//! The Train tab (native): start, stop and resume a teacher training or a distillation with the
//! same code as `fewstep train` / `fewstep distill` (the settings become that command line and are
//! parsed by it), on a thread of its own with its own device, so the window stays responsive.
//! Shows a progress bar, the loss (egui_plot) and sample grids as they are written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use eframe::egui::{self, Color32, RichText, Ui};
use egui_plot::{Line, Plot};

use crate::cli;
use crate::diffusion::distill_run::model_file_name;
use crate::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
use crate::eval::grid::{image_grid, save_png};
use crate::gpu::{Gpu, GpuOptions};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Teacher,
    Distill,
}

/// What the training thread reports.
pub enum Msg {
    Started { total: u64, done: u64, what: String },
    Line { at: u64, loss: f32, text: String },
    Preview(PathBuf),
    Ended { text: String, error: bool },
}

struct Job {
    stop: Arc<AtomicBool>,
    rx: mpsc::Receiver<Msg>,
}

pub struct TrainPanel {
    pub mode: Mode,
    pub data: String,
    pub preset: String,
    pub out: String,
    pub updates: u64,
    pub batch: usize,
    pub sample_every: u64,
    pub teacher: String,
    pub from_steps: usize,
    pub to_steps: usize,
    pub distill_updates: u64,
    pub distill_out: String,
    job: Option<Job>,
    progress: (u64, u64),
    what: String,
    losses: Vec<[f64; 2]>,
    last: String,
    ended: Option<(String, bool)>,
    preview: Option<(PathBuf, egui::TextureHandle)>,
}

impl Default for TrainPanel {
    fn default() -> Self {
        TrainPanel {
            mode: Mode::Teacher,
            data: "fashion-mnist".into(),
            preset: "tiny".into(),
            out: "runs/app-teacher".into(),
            updates: 2000,
            batch: 64,
            sample_every: 200,
            teacher: "assets/fmnist-small-teacher.safetensors".into(),
            from_steps: 64,
            to_steps: 4,
            distill_updates: 200,
            distill_out: "runs/app-distill".into(),
            job: None,
            progress: (0, 0),
            what: String::new(),
            losses: Vec::new(),
            last: String::new(),
            ended: None,
            preview: None,
        }
    }
}

impl TrainPanel {
    /// The command line the settings stand for (shown, and parsed by the CLI's own parser).
    pub fn words(&self, resume: bool) -> Vec<String> {
        let mut w: Vec<String> = match self.mode {
            Mode::Teacher => vec![
                "--data".into(),
                self.data.clone(),
                "--preset".into(),
                self.preset.clone(),
                "--steps".into(),
                self.updates.to_string(),
                "--batch".into(),
                self.batch.to_string(),
                "--sample-every".into(),
                self.sample_every.to_string(),
                "--out".into(),
                self.out.clone(),
            ],
            Mode::Distill => vec![
                "--teacher".into(),
                self.teacher.clone(),
                "--from-steps".into(),
                self.from_steps.to_string(),
                "--to-steps".into(),
                self.to_steps.to_string(),
                "--updates".into(),
                self.distill_updates.to_string(),
                "--batch".into(),
                self.batch.to_string(),
                "--out".into(),
                self.distill_out.clone(),
            ],
        };
        if resume {
            w.push("--resume".into());
        }
        w
    }

    pub fn command(&self, resume: bool) -> String {
        let verb = match self.mode {
            Mode::Teacher => "train",
            Mode::Distill => "distill",
        };
        format!("fewstep {verb} {}", self.words(resume).join(" "))
    }

    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    fn start(&mut self, resume: bool, ctx: &egui::Context) {
        let words = self.words(resume);
        let command = self.command(resume);
        let mode = self.mode;
        // Parse here so that a bad setting is reported at once, in the CLI's words.
        let parsed = match mode {
            Mode::Teacher => cli::parse_train(&words).map(Either::Train),
            Mode::Distill => cli::parse_distill(&words).map(Either::Distill),
        };
        let args = match parsed {
            Ok(a) => a,
            Err(e) => {
                self.ended = Some((e.to_string(), true));
                return;
            }
        };
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let repaint = ctx.clone();
        std::thread::Builder::new()
            .name("fewstep-train".into())
            .spawn(move || {
                let send = |m: Msg| {
                    let _ = tx.send(m);
                    repaint.request_repaint();
                };
                // A panic (a bug) ends the job with its message instead of a silent thread
                // death that would leave the tab "running" (poll() also catches a hang-up).
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match args {
                        Either::Train(a) => train(a, command, &flag, &send),
                        Either::Distill(a) => distill(a, command, &flag, &send),
                    }));
                let (text, error) = match result {
                    Ok(Ok(t)) => (t, false),
                    Ok(Err(e)) => (format!("{e:#}"), true),
                    Err(panic) => (
                        format!(
                            "stopped by a bug in fewstep ({}); the last checkpoint is intact",
                            panic_text(panic.as_ref())
                        ),
                        true,
                    ),
                };
                send(Msg::Ended { text, error });
            })
            .expect("spawning the training thread");
        self.job = Some(Job { stop, rx });
        self.losses.clear();
        self.ended = None;
        self.progress = (0, 0);
        self.last.clear();
    }

    /// Takes the training thread's messages (called every frame, whichever tab is shown).
    pub fn poll(&mut self, ctx: &egui::Context) {
        let Some(job) = &self.job else { return };
        let mut finished = false;
        loop {
            let m = match job.rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The thread ended without its last word: never show "running" forever.
                    if !finished {
                        self.ended = Some(("the training thread ended unexpectedly".into(), true));
                        finished = true;
                    }
                    break;
                }
            };
            match m {
                Msg::Started { total, done, what } => {
                    self.progress = (done, total);
                    self.what = what;
                }
                Msg::Line { at, loss, text } => {
                    self.progress.0 = at;
                    self.losses.push([at as f64, loss as f64]);
                    self.last = text;
                }
                Msg::Preview(path) => {
                    if let Ok(img) = image::open(&path) {
                        let rgba = img.to_rgba8();
                        let size = [rgba.width() as usize, rgba.height() as usize];
                        let color = egui::ColorImage::from_rgba_unmultiplied(size, &rgba);
                        let tex = ctx.load_texture("preview", color, egui::TextureOptions::NEAREST);
                        self.preview = Some((path, tex));
                    }
                }
                Msg::Ended { text, error } => {
                    self.ended = Some((text, error));
                    finished = true;
                }
            }
        }
        if finished {
            self.job = None;
        }
    }

    pub fn ui(&mut self, ui: &mut Ui) {
        let running = self.running();
        egui::Panel::left("train settings")
            .resizable(false)
            .show(ui, |ui| {
                ui.add_enabled_ui(!running, |ui| {
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut self.mode, Mode::Teacher, "Train a teacher");
                        ui.radio_value(&mut self.mode, Mode::Distill, "Distill");
                    });
                    egui::Grid::new("train grid").num_columns(2).show(ui, |ui| {
                        match self.mode {
                            Mode::Teacher => {
                                ui.label("data");
                                ui.text_edit_singleline(&mut self.data);
                                ui.end_row();
                                ui.label("preset");
                                ui.horizontal(|ui| {
                                    for p in ["tiny", "small", "cifar"] {
                                        ui.radio_value(&mut self.preset, p.to_string(), p);
                                    }
                                });
                                ui.end_row();
                                ui.label("updates");
                                ui.add(
                                    egui::DragValue::new(&mut self.updates).range(1..=10_000_000),
                                );
                                ui.end_row();
                                ui.label("samples every");
                                ui.add(
                                    egui::DragValue::new(&mut self.sample_every)
                                        .range(0..=1_000_000),
                                );
                                ui.end_row();
                                ui.label("run directory");
                                ui.text_edit_singleline(&mut self.out);
                                ui.end_row();
                            }
                            Mode::Distill => {
                                ui.label("teacher file");
                                ui.text_edit_singleline(&mut self.teacher);
                                ui.end_row();
                                ui.label("from steps");
                                ui.add(egui::DragValue::new(&mut self.from_steps).range(2..=8192));
                                ui.end_row();
                                ui.label("to steps");
                                ui.add(egui::DragValue::new(&mut self.to_steps).range(1..=4096));
                                ui.end_row();
                                ui.label("updates per halving");
                                ui.add(
                                    egui::DragValue::new(&mut self.distill_updates)
                                        .range(1..=10_000_000),
                                );
                                ui.end_row();
                                ui.label("output directory");
                                ui.text_edit_singleline(&mut self.distill_out);
                                ui.end_row();
                            }
                        }
                        ui.label("batch");
                        ui.add(egui::DragValue::new(&mut self.batch).range(1..=4096));
                        ui.end_row();
                    });
                });
                ui.label(
                    RichText::new(self.command(false))
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
                        if let Some(j) = &self.job {
                            j.stop.store(true, Ordering::SeqCst);
                        }
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
            if !self.what.is_empty() {
                ui.label(RichText::new(&self.what).strong());
            }
            let (done, total) = self.progress;
            if total > 0 {
                ui.add(
                    egui::ProgressBar::new(done as f32 / total as f32)
                        .text(format!("{done} / {total} updates   {}", self.last)),
                );
            } else if running {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("loading data and compiling kernels…");
                });
            }
            if let Some((text, error)) = &self.ended {
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
                        .show(ui, |p| p.line(Line::new("loss", self.losses.clone())));
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

/// Runs what `words` (a `fewstep train` or `distill` command line without the verb) describe on
/// this thread until it is done or `stop` is set; what the Train tab's thread does.
pub fn run_blocking(
    mode: Mode,
    words: &[String],
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    let command = format!("fewstep {}", words.join(" "));
    match mode {
        Mode::Teacher => train(cli::parse_train(words)?, command, stop, send),
        Mode::Distill => distill(cli::parse_distill(words)?, command, stop, send),
    }
}

enum Either {
    Train(cli::train::TrainArgs),
    Distill(cli::distill::DistillArgs),
}

fn train(
    args: cli::train::TrainArgs,
    command: String,
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
    let mut run = cli::train::open(&args, &gpu, command)?;
    let total = run.options.total_steps;
    send(Msg::Started {
        total,
        done: run.step(),
        what: format!("training a teacher in {}", run.dir.display()),
    });
    let every = run.options.sample_every;
    while !run.is_done() {
        if stop.load(Ordering::SeqCst) {
            run.checkpoint()?;
            return Ok(format!(
                "stopped at update {}; checkpoint written, Resume continues",
                run.step()
            ));
        }
        if let Some(l) = run.advance()? {
            send(Msg::Line {
                at: l.step,
                loss: l.loss,
                text: format!("loss {:.4}, {:.1} img/s", l.loss, l.images_per_s),
            });
        }
        if every > 0 && run.step().is_multiple_of(every) {
            let path = run
                .dir
                .join("samples")
                .join(format!("step_{:08}.png", run.step()));
            send(Msg::Preview(path));
        }
    }
    Ok(format!(
        "done: {} updates in {:.0} s; the model is {}",
        run.step(),
        run.wall_seconds(),
        run.dir.join("model.safetensors").display()
    ))
}

fn distill(
    args: cli::distill::DistillArgs,
    command: String,
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env())?;
    let mut run = cli::distill::open(&args, &gpu, command)?;
    let plan = run.plan.clone();
    let halvings = plan.halvings();
    let total = plan.total_updates();
    let before = |steps: usize| plan.updates_before(steps);
    send(Msg::Started {
        total,
        done: before(run.student_steps()) + run.distiller.update,
        what: format!(
            "distilling {} from {} to {} steps into {}",
            plan.teacher.display(),
            plan.from_steps,
            plan.to_steps,
            run.dir.display()
        ),
    });
    let mut steps = run.student_steps();
    while !run.is_done() {
        if stop.load(Ordering::SeqCst) {
            run.checkpoint()?;
            return Ok(format!(
                "stopped in the {}-step halving at update {}; Resume continues",
                run.student_steps(),
                run.distiller.update
            ));
        }
        if let Some(l) = run.advance()? {
            send(Msg::Line {
                at: before(l.student_steps) + l.update,
                loss: l.loss,
                text: format!(
                    "{}-step student, loss {:.5}, {:.1} img/s",
                    l.student_steps, l.loss, l.images_per_s
                ),
            });
        }
        if run.student_steps() != steps || run.is_done() {
            // A halving finished: a preview grid of the new student at its own step count.
            let file = run.dir.join(model_file_name(steps));
            if file.exists() {
                send(Msg::Preview(preview(&gpu, &file, steps, &run.dir)?));
            }
            steps = run.student_steps();
        }
    }
    Ok(format!(
        "done in {:.0} s: {}",
        run.wall_seconds(),
        halvings
            .iter()
            .map(|&s| run.dir.join(model_file_name(s)).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn preview(
    gpu: &Gpu,
    file: &std::path::Path,
    steps: usize,
    dir: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let (model, _) = load_model(gpu, file)?;
    let opts = SampleOptions {
        steps,
        count: 16,
        seed: 0,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let x = Sampler::new(&model, opts).run(&model).to_vec_blocking()?;
    let [c, h, w] = model.image_shape();
    let img = image_grid(&x, 16, c, h, w, 4, 2, 2);
    let path = dir.join("samples").join(format!("steps-{steps}.png"));
    save_png(&img, &path)?;
    Ok(path)
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
