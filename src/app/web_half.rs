//! The browser half of the app: what `FewstepApp` does only in a tab, behind the same functions
//! as `native_half.rs`, so `app/mod.rs` calls `platform::…` without `cfg`. On the web the bundled
//! models are fetched (cached by the service worker), models made or opened are kept in the
//! browser's storage, the Train tab runs on eframe's own device between frames, the address can
//! start a training or distillation, and a lost GPU ends the page's work with an offer to reload.

use eframe::{egui, egui_wgpu};

use super::engine::{EngineHandle, Job};
use super::remembered::Remembered;
use super::{
    events, web_distill, web_models, web_page, DistillStart, FewstepApp, RenderTextures,
    StartOptions, Tab,
};

/// What only the page holds.
pub struct Half {
    pub web_train: web_distill::WebTrainPanel,
    /// The device the web Train tab distills on (eframe's, as the worker's).
    pub web_gpu: Option<crate::gpu::Gpu>,
    egui_ctx: Option<egui::Context>,
    /// Whether the page already shows that the GPU device failed.
    fault_shown: bool,
    /// How many tuned kernels the status line last told of.
    tuned_shown: usize,
}

impl Half {
    pub(super) fn new(cc: &eframe::CreationContext<'_>, start: &StartOptions) -> Half {
        let mut web_train = web_distill::WebTrainPanel::default();
        web_train.checkpoint_every = start.checkpoint;
        Half {
            web_train,
            web_gpu: None,
            egui_ctx: Some(cc.egui_ctx.clone()),
            fault_shown: false,
            tuned_shown: 0,
        }
    }
}

/// The Train tab's `Gpu` on eframe's device; the worker records its faults in the same watch,
/// since a device has one error handler and one lost callback.
pub(super) fn on_device(
    app: &mut FewstepApp,
    rs: &egui_wgpu::RenderState,
    info: &wgpu::AdapterInfo,
) -> Option<crate::gpu::FaultWatch> {
    web_page::look_up_adapter_name();
    let gpu = crate::gpu::Gpu::from_device(rs.device.clone(), rs.queue.clone(), info.clone(), None);
    // Tuned as the worker's device is (`Job::Tuning`), between the tab's updates.
    let default = crate::gpu::GpuOptions::for_runs().tunes(info);
    gpu.set_tuning(app.start.tune.unwrap_or(default));
    if let Some(seed) = app.start.tune_clock {
        let clock = crate::tensor::tuner::made_up_clock(seed);
        crate::tensor::tuner::set_clock(&gpu, Some(clock));
    }
    let watch = gpu.fault_watch();
    app.platform.web_gpu = Some(gpu);
    web_page::remember_device(rs.device.clone());
    Some(watch)
}

/// The bundled models (fetched), then `?model=` when it is not a bundled name, then what the
/// browser's storage keeps; after a device loss, the models of the lost page from memory.
pub(super) fn load_models(
    app: &mut FewstepApp,
    engine: &EngineHandle,
    cc: &eframe::CreationContext<'_>,
) {
    if app.start.tune.is_some() || app.start.tune_clock.is_some() {
        engine.send(Job::Tuning {
            on: app.start.tune,
            clock: app.start.tune_clock,
        });
    }
    // `?model=PATH.safetensors` that is no bundled name: a model file hosted beside the page
    // (same origin), fetched after the bundled ones, as `--model FILE` natively;
    // `?model=FOLDER/`: a diffusers pipeline folder hosted there.
    let extra = app.start.model.clone().filter(|m| {
        crate::bundled::find(m).is_none()
            && (m.ends_with(".safetensors") || web_page::names_a_folder(m))
    });
    if extra.is_some() {
        app.loading.expected += 1;
    }
    // After a device loss the kept models come from memory (below), not storage.
    web_models::fetch_bundled(
        engine.job_sender(),
        extra.clone(),
        !app.start.recovered,
        cc.egui_ctx.clone(),
    );
    if app.start.recovered {
        // On a new device after a loss: the models opened or made before come back (the
        // bundled ones come from the page's cache), and a lost run is offered.
        for (name, bytes) in web_distill::kept_files() {
            if crate::bundled::find(&name).is_none() && Some(&name) != extra.as_ref() {
                app.loading.expected += 1;
                engine.send(Job::Load { name, bytes });
            }
        }
        app.platform.web_train = web_distill::WebTrainPanel::after_device_loss();
        app.platform.web_train.checkpoint_every = app.start.checkpoint;
        if app.platform.web_train.has_lost_run() {
            app.tab = Tab::Train;
        }
    }
}

/// A removed model's file bytes are let go (and its kept copy deleted).
pub(super) fn forget_model(name: &str) {
    web_distill::forget_file(name);
}

/// The page remembers only the sample settings (`Remembered::restore`).
pub(super) fn restore_remembered(_app: &mut FewstepApp, _r: &Remembered) {}

pub(super) fn remembered(app: &FewstepApp) -> Remembered {
    Remembered::capture(&app.state)
}

/// `?train=…` and `?distill=…`: the Train tab with those settings, started; true when the
/// address asked for a run (started, or refused with a status).
pub(super) fn start_from_address(app: &mut FewstepApp, o: &StartOptions) -> bool {
    if (o.distill.is_some() || o.train.is_some()) && web_distill::interrupted_run_waits() {
        // A reload of the link that started a run must not start it afresh over its
        // checkpoint: the Train tab offers to resume it (or to start anew).
        app.tab = Tab::Train;
        app.status = "the run this address starts was interrupted before: the Train tab \
                      offers to resume it from its last checkpoint, or to discard it"
            .into();
        return true;
    }
    if let Some(d) = &o.distill {
        start_distill(app, d);
        return true;
    }
    let Some(t) = &o.train else {
        return false;
    };
    app.tab = Tab::Train;
    let s = &mut app.platform.web_train.train;
    s.preset = t.preset.clone();
    s.lr =
        t.lr.unwrap_or_else(|| crate::diffusion::trainer::default_lr(&t.preset));
    s.updates = t.updates.unwrap_or(s.updates);
    s.batch = t.batch.unwrap_or(s.batch);
    s.seed = t.seed.unwrap_or(s.seed);
    s.classes = t.classes;
    s.uncond_prob = t.uncond_prob.unwrap_or(s.uncond_prob);
    app.platform.web_train.mode = web_distill::Mode::Teacher;
    start_train_tab(app);
    true
}

/// `?distill=MODEL&…`: the Train tab with those settings, started.
fn start_distill(app: &mut FewstepApp, d: &DistillStart) {
    app.tab = Tab::Train;
    app.platform.web_train.mode = web_distill::Mode::Distill;
    let Some(m) = app.state.models.iter().find(|m| m.name == d.teacher) else {
        app.status = format!("distill={}: no such model is loaded", d.teacher);
        return;
    };
    let s = &mut app.platform.web_train.settings;
    s.teacher = d.teacher.clone();
    s.from_steps = m
        .meta
        .steps
        .map(|k| k as usize)
        .or(d.from_steps)
        .unwrap_or(s.from_steps);
    s.to_steps = d.to_steps.unwrap_or(s.from_steps / 2);
    s.updates = d.updates.unwrap_or(s.updates);
    s.batch = d.batch.unwrap_or(s.batch);
    s.lr = d.lr.unwrap_or(s.lr);
    s.seed = d.seed.unwrap_or(s.seed);
    s.guided = d.guided;
    s.w_range = d.w_range.unwrap_or(s.w_range);
    s.guidance_updates = d.guidance_updates.unwrap_or(s.updates);
    start_train_tab(app);
}

fn start_train_tab(app: &mut FewstepApp) {
    let jobs = app.job_sender();
    let h = &mut app.platform;
    if let (Some(gpu), Some(jobs), Some(ctx)) = (h.web_gpu.clone(), jobs, h.egui_ctx.clone()) {
        h.web_train.start(gpu, jobs, ctx);
    }
}

/// Model files dropped on the page arrive as bytes, read without blocking the frame.
pub(super) fn take_dropped_files(app: &mut FewstepApp, ctx: &egui::Context) {
    let dropped = ctx.input(|i| i.raw.dropped_files.clone());
    for f in dropped {
        let name = f.path().display().to_string();
        let Some(jobs) = app.job_sender() else {
            continue;
        };
        app.loading.expected += 1;
        wasm_bindgen_futures::spawn_local(async move {
            let job = match f.bytes_async().await {
                Ok(bytes) => web_models::opened_file(name, bytes),
                Err(error) => {
                    let error = web_page::explain_unreadable_drop(&name, error);
                    Job::LoadError { name, error }
                }
            };
            let _ = jobs.unbounded_send(job);
        });
    }
}

pub(super) fn before_draw(app: &mut FewstepApp, ctx: &egui::Context) {
    if let Some(name) = web_page::adapter_name() {
        app.adapter = name;
    }
    say_what_was_tuned(app);
    watch_for_gpu_faults(app, ctx);
    if let Some((steps, count)) = web_page::take_test_scrub() {
        start_test_frames(app, steps, count);
    }
    if web_distill::offer_appeared() && !app.platform.web_train.running() {
        // A run the last page left: the Train tab offers to resume it.
        app.tab = Tab::Train;
    }
}

pub(super) fn after_draw(app: &mut FewstepApp, ctx: &egui::Context) {
    super::web_status::publish_status(
        ctx,
        &app.adapter,
        &app.status,
        app.loading.done,
        app.loading.expected,
        app.state.models.iter().map(|m| m.name.clone()).collect(),
        app.platform.web_gpu.as_ref(),
    );
}

/// Says in the status line when kernels were tuned on this GPU (between steps), and where the
/// plan is kept.
fn say_what_was_tuned(app: &mut FewstepApp) {
    let now = crate::tensor::tuner::tuned_so_far();
    if now.problems == app.platform.tuned_shown {
        return;
    }
    app.platform.tuned_shown = now.problems;
    if app.status.is_empty() || app.status.starts_with("tuned ") {
        app.status = format!(
            "tuned {} GEMM kernel{} for this GPU in {:.1} s between steps, {} (tune=off in the \
             address keeps the fixed rule)",
            now.problems,
            if now.problems == 1 { "" } else { "s" },
            now.seconds,
            crate::tensor::tuner::kept_where()
        );
    }
}

/// A lost device (or a kernel that failed to build) ends the page's work: the message panel
/// says what happened and offers a reload, instead of runs going on with stale data. The
/// device-lost callback runs between frames, so an idle page looks twice a second.
fn watch_for_gpu_faults(app: &mut FewstepApp, ctx: &egui::Context) {
    let h = &mut app.platform;
    if h.fault_shown {
        return;
    }
    match h.web_gpu.as_ref().and_then(|g| g.fault_watch().error()) {
        Some(e) => {
            h.fault_shown = true;
            if matches!(e, crate::gpu::GpuError::Lost { .. }) {
                h.web_train.remember_lost_run();
            }
            web_page::show_gpu_fault(&e);
        }
        None => ctx.request_repaint_after(std::time::Duration::from_millis(500)),
    }
}

/// The page's memory test (`fewstep_test_scrub`): a sample view of `steps` blank steps of
/// `count` images of the selected model, drawn into textures as a run would.
fn start_test_frames(app: &mut FewstepApp, steps: usize, count: usize) {
    app.state.settings.steps = steps;
    app.state.settings.count = count;
    app.state.settings.interpolate_to = None;
    match app.state.start_sample() {
        Ok((run, rows, old)) => {
            events::TextureSink::free(&mut RenderTextures(app.render.as_ref()), old);
            if let (Some(e), Some(row)) = (&app.engine, rows.into_iter().next()) {
                e.send(Job::TestFrames { run, row, steps });
            }
        }
        Err(e) => app.status = e,
    }
}
