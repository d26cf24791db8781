//! The app's GPU worker. Jobs (load a model, run samplers) go in through a channel; events (a
//! model loaded, a step drawn, a row finished) come out into a shared queue the UI drains each
//! frame. Natively the worker is its own thread, so GPU work never blocks the window; on the web
//! it is a task on the page's event loop that awaits the GPU between steps, so nothing blocks.
//! The worker shares eframe's wgpu device: samples are drawn into textures egui shows directly.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;

use super::texture::{GridPainter, GridTexture};
use crate::diffusion::{load_model_bytes, Denoiser, ModelMeta, SampleOptions, Sampler};
use crate::gpu::Gpu;

/// What the UI knows about a loaded model (the weights stay with the worker).
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub meta: ModelMeta,
    pub params: usize,
    pub file_bytes: usize,
}

/// One sampler run inside a job: which model, how, and the row's label.
#[derive(Clone, Debug)]
pub struct RowSpec {
    pub model: usize,
    pub opts: SampleOptions,
    pub label: String,
    /// The class asked for (None: no class) and the guidance weight.
    pub class: Option<u32>,
    pub guidance: f32,
    /// A strip from seed A's noise to seed B's (interpolate.rs), drawn as one row.
    pub strip: Option<(u64, u64)>,
}

impl RowSpec {
    fn cond(&self) -> crate::nn::NetCond {
        if self.class.is_none() && self.guidance == 0.0 {
            return crate::nn::NetCond::NONE;
        }
        crate::nn::NetCond::uniform(self.opts.count, self.class, self.guidance)
    }
}

pub enum Job {
    /// The device's cooperative matrices (`app::device_coop`): with sizes, the worker settles
    /// the coop family on its self-check, as `fewstep sample --precision mixed` does.
    Coop(Result<(u32, u32), String>),
    /// The page's `tune=on|off` and `tune_clock=SEED` (`StartOptions`): whether the worker tunes
    /// its GEMM kernels, and made-up times in place of measuring (tests).
    Tuning {
        on: Option<bool>,
        clock: Option<u64>,
    },
    Load {
        name: String,
        bytes: Vec<u8>,
    },
    /// A model could not be fetched (the web page's loader reports through the worker so that
    /// events keep their order).
    LoadError {
        name: String,
        error: String,
    },
    /// A file was taken but makes no model yet (one of a diffusers pipeline's files, dropped
    /// before the others): `note` says what else is needed.
    Held {
        name: String,
        note: String,
    },
    /// The loader found `more` models to load beyond those counted at the start (the web
    /// page's kept models), sent before any of them.
    Expect {
        more: usize,
    },
    /// The loader is on `current` (shown next to the progress bar); `bytes`: (fetched so far,
    /// all files together) where the loader counts bytes (the web page); `cached`: the file
    /// came from the page's cache, not the network.
    Progress {
        current: String,
        bytes: Option<(u64, u64)>,
        cached: bool,
    },
    /// For the page's memory test: draws `steps` steps of blank images of the row's shape into
    /// textures, as a run of that many steps would (no model evaluated), one at a time.
    TestFrames {
        run: u64,
        row: RowSpec,
        steps: usize,
    },
    /// Forgets the model at this index of the list (the UI removed it; no run uses it).
    Remove {
        index: usize,
    },
    /// Runs the rows one after another; `draw_steps` draws every step (the sample view), else
    /// only each row's result (the compare view).
    Run {
        run: u64,
        rows: Vec<RowSpec>,
        draw_steps: bool,
    },
}

pub enum Event {
    Loaded(Box<ModelInfo>),
    Expect {
        more: usize,
    },
    Progress {
        current: String,
        bytes: Option<(u64, u64)>,
        cached: bool,
    },
    LoadFailed {
        name: String,
        error: String,
    },
    Held {
        name: String,
        note: String,
    },
    /// Step `step` (1-based) of row `row` is done: z_t after it and the model's x_hat.
    Step {
        run: u64,
        row: usize,
        step: usize,
        t: f64,
        z: GridTexture,
        x_hat: GridTexture,
        ms: f64,
    },
    /// The start of a row: the initial noise z_1.
    Start {
        run: u64,
        row: usize,
        z: GridTexture,
    },
    RowDone {
        run: u64,
        row: usize,
        image: GridTexture,
        ms: f64,
        samples: Vec<f32>,
        shape: [usize; 4],
    },
    Stopped {
        run: u64,
    },
    Failed {
        run: u64,
        error: String,
    },
}

/// The UI's end: send jobs, drain events, stop the current run.
pub struct EngineHandle {
    jobs: mpsc::UnboundedSender<Job>,
    events: Arc<Mutex<Vec<Event>>>,
    /// The run the worker should be doing; a job whose id differs stops at its next step.
    current: Arc<AtomicU64>,
}

impl EngineHandle {
    pub fn send(&self, job: Job) {
        if let Job::Run { run, .. } = &job {
            self.current.store(*run, Ordering::SeqCst);
        }
        // The worker lives as long as the app; a send can only fail while shutting down.
        let _ = self.jobs.unbounded_send(job);
    }
    /// Makes the current run stop after its current step.
    pub fn stop(&self) {
        self.current.store(0, Ordering::SeqCst);
    }
    /// For loaders running beside the UI (the web page's fetches).
    pub fn job_sender(&self) -> mpsc::UnboundedSender<Job> {
        self.jobs.clone()
    }
    pub fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().expect("event queue"))
    }
}

/// The worker's state: the device and the models loaded on it.
struct Worker {
    gpu: Gpu,
    painter: GridPainter,
    models: Vec<Denoiser>,
    events: Arc<Mutex<Vec<Event>>>,
    current: Arc<AtomicU64>,
    repaint: eframe::egui::Context,
}

/// The device the worker runs on: a clone of eframe's.
#[derive(Clone)]
pub struct SharedDevice {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Where another `Gpu` on this device (the web Train tab's) records faults: shared, since a
    /// device has one error handler and one lost callback.
    pub fault: Option<crate::gpu::FaultWatch>,
}

pub fn spawn(shared: SharedDevice, repaint: eframe::egui::Context) -> EngineHandle {
    let (tx, rx) = mpsc::unbounded();
    // On wasm32 (one thread, wgpu types not Send there) the Arc is only shared within the page's
    // thread; natively the events cross from the worker thread to the UI.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    let events = Arc::new(Mutex::new(Vec::new()));
    let current = Arc::new(AtomicU64::new(0));
    let (ev, cur) = (events.clone(), current.clone());
    let make_worker = move || {
        let gpu =
            Gpu::from_device_watched(shared.device, shared.queue, shared.info, None, shared.fault);
        // As `fewstep sample` does, so the command shown under a run makes the same picture
        // (in the browser the tuning is deferred to between steps: tensor/tuner).
        gpu.set_tuning(crate::gpu::GpuOptions::for_runs().tunes(gpu.info()));
        Worker {
            painter: GridPainter::new(&gpu),
            gpu,
            models: Vec::new(),
            events: ev,
            current: cur,
            repaint,
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    std::thread::Builder::new()
        .name("fewstep-gpu".into())
        .spawn(move || make_worker().serve_catching_panics(rx))
        .expect("spawning the GPU worker thread");
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_futures::spawn_local(async move {
        // A panic aborts the wasm instance; the page's panic hook says so (web.rs).
        let mut worker = make_worker();
        let mut rx = rx;
        while let Some(job) = Next(&mut rx).await {
            worker.handle(job).await;
        }
    });
    EngineHandle {
        jobs: tx,
        events,
        current,
    }
}

/// Awaits the next item of a stream (what `StreamExt::next` does, without the dependency).
struct Next<'a, S>(&'a mut S);
impl<S: Stream + Unpin> Future for Next<'_, S> {
    type Output = Option<S::Item>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}

impl Worker {
    fn emit(&self, e: Event) {
        self.events.lock().expect("event queue").push(e);
        self.repaint.request_repaint();
    }

    /// Natively: serves jobs until the app closes. A job that panics (a bug) ends its run or its
    /// load with an error the UI shows, and the worker goes on with the next job, instead of
    /// dying and leaving the UI "running" forever.
    #[cfg(not(target_arch = "wasm32"))]
    fn serve_catching_panics(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        while let Some(job) = pollster::block_on(Next(&mut rx)) {
            let ends = match &job {
                Job::Run { run, .. } => Some(Ok(*run)),
                Job::Load { name, .. } => Some(Err(name.clone())),
                _ => None,
            };
            let Err(panic) =
                catch_unwind(AssertUnwindSafe(|| pollster::block_on(self.handle(job))))
            else {
                continue;
            };
            // The panicking job's half-recorded launches (and the buffers they hold) must not
            // reach the next job's submit.
            self.gpu.discard_pending();
            let what = super::train_runner::panic_text(panic.as_ref());
            let error = format!(
                "stopped by a bug in fewstep ({what}); other runs still work, and a report \
                 with this message helps"
            );
            match ends {
                Some(Ok(run)) => self.emit(Event::Failed { run, error }),
                Some(Err(name)) => self.emit(Event::LoadFailed { name, error }),
                None => {}
            }
        }
    }

    async fn handle(&mut self, job: Job) {
        match job {
            Job::Load { name, bytes } => self.load(name, bytes),
            Job::Coop(coop) => {
                self.gpu.adopt_coop(coop);
            }
            Job::Tuning { on, clock } => {
                if let Some(on) = on {
                    self.gpu.set_tuning(on);
                }
                if let Some(seed) = clock {
                    let clock = crate::tensor::tuner::made_up_clock(seed);
                    crate::tensor::tuner::set_clock(&self.gpu, Some(clock));
                }
            }
            Job::TestFrames { run, row, steps } => {
                if let Err(e) = self.test_frames(run, &row, steps).await {
                    self.emit(Event::Failed {
                        run,
                        error: format!("{e:#}"),
                    });
                }
            }
            Job::Remove { index } => {
                if index < self.models.len() {
                    self.models.remove(index);
                }
            }
            Job::LoadError { name, error } => self.emit(Event::LoadFailed { name, error }),
            Job::Held { name, note } => self.emit(Event::Held { name, note }),
            Job::Expect { more } => self.emit(Event::Expect { more }),
            Job::Progress {
                current,
                bytes,
                cached,
            } => self.emit(Event::Progress {
                current,
                bytes,
                cached,
            }),
            Job::Run {
                run,
                rows,
                draw_steps,
            } => {
                if let Err(e) = self.run(run, &rows, draw_steps).await {
                    // What the failed run recorded must not reach the next job's submit.
                    self.gpu.discard_pending();
                    self.emit(Event::Failed {
                        run,
                        error: format!("{e:#}"),
                    });
                }
            }
        }
    }

    fn load(&mut self, name: String, bytes: Vec<u8>) {
        match load_model_bytes(&self.gpu, Path::new(&name), &bytes) {
            Ok((model, meta)) => {
                let params = model.net.param_count();
                self.models.push(model);
                self.emit(Event::Loaded(Box::new(ModelInfo {
                    name,
                    meta,
                    params,
                    file_bytes: bytes.len(),
                })));
            }
            Err(e) => self.emit(Event::LoadFailed {
                name,
                error: e.to_string(),
            }),
        }
    }

    fn stopped(&self, run: u64) -> bool {
        self.current.load(Ordering::SeqCst) != run
    }

    async fn test_frames(&mut self, run: u64, row: &RowSpec, steps: usize) -> anyhow::Result<()> {
        let model = self
            .models
            .get(row.model)
            .ok_or_else(|| anyhow::anyhow!("no model #{}", row.model))?;
        let [c, h, w] = model.image_shape();
        let x = crate::tensor::Tensor::zeros(&self.gpu, &[row.opts.count, c, h, w]);
        let z = self.paint(row, &x);
        self.emit(Event::Start { run, row: 0, z });
        for step in 1..=steps {
            // At most 32 steps' textures (~28 MB at 64 images) wait for the UI, which takes (and
            // thins) them each frame; a software adapter draws a frame a second or slower.
            while self.events.lock().expect("event queue").len() >= 32 {
                #[cfg(target_arch = "wasm32")]
                crate::app::web_page::next_task().await;
                #[cfg(not(target_arch = "wasm32"))]
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let (z, x_hat) = (self.paint(row, &x), self.paint(row, &x));
            let t = 1.0 - step as f64 / steps as f64;
            self.emit(Event::Step {
                run,
                row: 0,
                step,
                t,
                z,
                x_hat,
                ms: 0.0,
            });
        }
        self.gpu.finish().await?;
        self.emit(Event::Stopped { run });
        Ok(())
    }

    /// A row's sampler: its seed's noise, or the strip's.
    async fn sampler(model: &Denoiser, spec: &RowSpec) -> anyhow::Result<Sampler> {
        let sampler = match spec.strip {
            Some(seeds) => {
                let z = crate::diffusion::interpolate::strip_start(model, seeds, spec.opts.count)
                    .await?;
                Sampler::from_start(spec.opts, z)
            }
            None => Sampler::new(model, spec.opts),
        };
        Ok(sampler.with_cond(spec.cond()))
    }

    /// Draws a row's images: a strip in one row, else an about square grid.
    fn paint(&self, spec: &RowSpec, x: &crate::tensor::Tensor) -> GridTexture {
        match spec.strip {
            Some(_) => self.painter.paint_cols(&self.gpu, x, spec.opts.count),
            None => self.painter.paint(&self.gpu, x),
        }
    }

    async fn run(&mut self, run: u64, rows: &[RowSpec], draw_steps: bool) -> anyhow::Result<()> {
        for (r, spec) in rows.iter().enumerate() {
            let model = self
                .models
                .get(spec.model)
                .ok_or_else(|| anyhow::anyhow!("no model #{}", spec.model))?;
            if r == 0 && !draw_steps {
                // Compiles the kernels before the first row's clock starts, so that every row
                // of a comparison is timed alike.
                let mut warm = Sampler::new(model, spec.opts).with_cond(spec.cond());
                warm.step(model);
                self.gpu.finish().await?;
                crate::tensor::tuner::tune_pending(&self.gpu).await;
            }
            let mut sampler = Self::sampler(model, spec).await?;
            if draw_steps {
                let z = self.paint(spec, sampler.z());
                self.emit(Event::Start { run, row: r, z });
            }
            let mut row_ms = 0.0;
            while !sampler.is_done() {
                if self.stopped(run) {
                    self.emit(Event::Stopped { run });
                    return Ok(());
                }
                let start = web_time::Instant::now();
                sampler.step(model);
                // Wait for the step so that its time is the GPU's, not the recording's; on
                // the web this is where the page gets its event loop back.
                self.gpu.finish().await?;
                let ms = start.elapsed().as_secs_f64() * 1e3;
                row_ms += ms;
                if draw_steps {
                    let z = self.paint(spec, sampler.z());
                    let x = sampler.x_hat().expect("a step was taken");
                    let x_hat = self.paint(spec, x);
                    self.emit(Event::Step {
                        run,
                        row: r,
                        step: sampler.steps_done(),
                        t: sampler.t(),
                        z,
                        x_hat,
                        ms,
                    });
                }
                // Kernels the step met for the first time are timed now, outside its time
                // (deferred tuning, the browser): the next step runs the fastest.
                crate::tensor::tuner::tune_pending(&self.gpu).await;
            }
            let image = if draw_steps {
                self.paint(spec, sampler.z())
            } else {
                self.painter
                    .paint_cols(&self.gpu, sampler.z(), spec.opts.count)
            };
            let z = sampler.z();
            let shape = [z.dim(0), z.dim(1), z.dim(2), z.dim(3)];
            let samples = z.to_vec().await?;
            self.emit(Event::RowDone {
                run,
                row: r,
                image,
                ms: row_ms,
                samples,
                shape,
            });
        }
        Ok(())
    }
}
