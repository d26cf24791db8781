//! The Train tab's runner: starts a teacher training or a distillation on a thread of its own
//! (with its own device, so the window stays responsive), takes its messages, and keeps what the
//! tab shows (progress, losses, the latest sample grid). No window is needed to drive it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use super::train_settings::RunSpec;
use crate::diffusion::distill_run::model_file_name;
use crate::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
use crate::gpu::{Gpu, GpuOptions};
use crate::image::{image_grid, save_png};

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

/// A run in progress (or the last one) and what the tab shows of it.
#[derive(Default)]
pub struct TrainRunner {
    job: Option<Job>,
    /// Updates done and in all.
    pub progress: (u64, u64),
    pub what: String,
    pub losses: Vec<[f64; 2]>,
    /// The last metrics line, in words.
    pub last: String,
    /// How the last run ended: its message and whether it failed.
    pub ended: Option<(String, bool)>,
    /// The newest sample grid written by the run.
    pub preview: Option<PathBuf>,
}

impl TrainRunner {
    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    /// Starts `spec` on a new thread; `command` is what its model files record, `wake` is
    /// called after each message (the app asks for a repaint).
    pub fn start(&mut self, spec: RunSpec, command: String, wake: impl Fn() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("fewstep-train".into())
            .spawn(move || {
                let send = |m: Msg| {
                    let _ = tx.send(m);
                    wake();
                };
                // A panic (a bug) ends the job with its message instead of a silent thread
                // death that would leave the tab "running" (poll() also catches a hang-up).
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_blocking(&spec, command, &flag, &send)
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
            });
        *self = TrainRunner::default();
        match spawned {
            Ok(_) => self.job = Some(Job { stop, rx }),
            Err(e) => self.ended = Some((format!("cannot start a thread: {e}"), true)),
        }
    }

    /// Asks the run to write a checkpoint and stop.
    pub fn stop(&self) {
        if let Some(j) = &self.job {
            j.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Takes the thread's messages (every frame, whichever tab is shown).
    pub fn poll(&mut self) {
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
                Msg::Preview(path) => self.preview = Some(path),
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
}

/// Runs `spec` on this thread until it is done or `stop` is set; what the runner's thread does.
pub fn run_blocking(
    spec: &RunSpec,
    command: String,
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    // `open` checks the spec itself.
    match spec {
        RunSpec::Train(s) => train(s, command, stop, send),
        RunSpec::Distill(s) => distill(s, command, stop, send),
    }
}

fn train(
    spec: &crate::diffusion::run_spec::TrainSpec,
    command: String,
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    let gpu = Gpu::new_blocking(GpuOptions::for_runs())?;
    let mut run = spec.open(&gpu, command)?;
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
    spec: &crate::diffusion::run_spec::DistillSpec,
    command: String,
    stop: &AtomicBool,
    send: &dyn Fn(Msg),
) -> anyhow::Result<String> {
    let gpu = Gpu::new_blocking(GpuOptions::for_runs())?;
    let mut run = spec.open(&gpu, command)?;
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

/// Samples 16 images of a finished student into DIR/samples/steps-N.png.
fn preview(gpu: &Gpu, file: &Path, steps: usize, dir: &Path) -> anyhow::Result<PathBuf> {
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
