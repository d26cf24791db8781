//! The fewstep app (eframe), the same code natively and in the browser: pick a model and a step
//! count, watch the image form step by step, put step counts side by side.
//!
//! GPU work runs in [`engine`] (a thread natively, a task on the web) on eframe's own device;
//! [`state`] holds everything the UI shows, without a window; `ui` draws it.

mod device;
pub mod engine;
pub mod events;
pub mod remembered;
mod schedule_plot;
mod start_options;
pub mod state;
pub mod texture;
pub mod train_mode;
mod ui;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod train_panel;
#[cfg(not(target_arch = "wasm32"))]
pub mod train_runner;
#[cfg(not(target_arch = "wasm32"))]
pub mod train_settings;
#[cfg(target_arch = "wasm32")]
mod web_cache;
#[cfg(target_arch = "wasm32")]
pub mod web_distill;
#[cfg(target_arch = "wasm32")]
mod web_models;
#[cfg(target_arch = "wasm32")]
pub mod web_page;
#[cfg(target_arch = "wasm32")]
mod web_status;
#[cfg(target_arch = "wasm32")]
mod web_store;

use eframe::{egui, egui_wgpu};

use engine::{EngineHandle, Job, SharedDevice};
use state::AppState;
use texture::GridTexture;

pub use device::{
    device_coop, device_coop_for, device_descriptor, device_descriptor_for, wgpu_options,
};
pub use start_options::{DistillStart, StartOptions, TrainStart};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Sample,
    Compare,
    Models,
    Train,
}

/// Models still on their way (fetched on the web, uploaded natively).
#[derive(Default)]
pub struct Loading {
    pub expected: usize,
    pub done: usize,
    pub current: String,
    /// (bytes fetched, bytes in all) where the loader counts bytes (the web page).
    pub bytes: Option<(u64, u64)>,
    /// The file being loaded comes from the page's cache (a visit before this one).
    pub cached: bool,
    /// The status line says a file is held until the rest of its pipeline arrives.
    pub held: bool,
}

pub struct FewstepApp {
    pub state: AppState,
    engine: Option<EngineHandle>,
    render: Option<egui_wgpu::RenderState>,
    pub tab: Tab,
    pub status: String,
    pub loading: Loading,
    start: StartOptions,
    /// From the last launch; applied with the start options once the models are in.
    remembered: Option<remembered::Remembered>,
    options_applied: bool,
    adapter: String,
    #[cfg(not(target_arch = "wasm32"))]
    pub open_path: String,
    #[cfg(not(target_arch = "wasm32"))]
    pub train: train_panel::TrainPanel,
    #[cfg(target_arch = "wasm32")]
    pub web_train: web_distill::WebTrainPanel,
    /// The device the web Train tab distills on (eframe's, as the worker's).
    #[cfg(target_arch = "wasm32")]
    pub web_gpu: Option<crate::gpu::Gpu>,
    #[cfg(target_arch = "wasm32")]
    egui_ctx: Option<egui::Context>,
    /// Whether the page already shows that the GPU device failed (web).
    #[cfg(target_arch = "wasm32")]
    fault_shown: bool,
}

impl FewstepApp {
    pub fn new(cc: &eframe::CreationContext<'_>, start: StartOptions) -> FewstepApp {
        let render = cc.wgpu_render_state.clone();
        let mut app = FewstepApp {
            state: AppState::default(),
            engine: None,
            render: render.clone(),
            tab: Tab::Sample,
            status: String::new(),
            loading: Loading::default(),
            // A screenshot run is reproducible: it ignores what earlier launches left.
            remembered: cc
                .storage
                .filter(|_| start.screenshot.is_none())
                .and_then(remembered::Remembered::load),
            start,
            options_applied: false,
            adapter: String::new(),
            #[cfg(not(target_arch = "wasm32"))]
            open_path: String::new(),
            #[cfg(not(target_arch = "wasm32"))]
            train: train_panel::TrainPanel::default(),
            #[cfg(target_arch = "wasm32")]
            web_train: web_distill::WebTrainPanel::default(),
            #[cfg(target_arch = "wasm32")]
            web_gpu: None,
            #[cfg(target_arch = "wasm32")]
            egui_ctx: Some(cc.egui_ctx.clone()),
            #[cfg(target_arch = "wasm32")]
            fault_shown: false,
        };
        let Some(rs) = render else {
            app.status = "fewstep needs a wgpu renderer with compute shaders (WebGPU, Vulkan, \
                          Metal or DX12); none was created"
                .into();
            return app;
        };
        let info = rs.adapter.get_info();
        app.adapter = adapter_label(&info);
        #[cfg(target_arch = "wasm32")]
        {
            web_page::look_up_adapter_name();
            app.web_gpu = Some(crate::gpu::Gpu::from_device(
                rs.device.clone(),
                rs.queue.clone(),
                info.clone(),
                None,
            ));
            web_page::remember_device(rs.device.clone());
        }
        let engine = engine::spawn(
            SharedDevice {
                device: rs.device.clone(),
                queue: rs.queue.clone(),
                info,
                #[cfg(target_arch = "wasm32")]
                fault: app.web_gpu.as_ref().map(|g| g.fault_watch()),
                #[cfg(not(target_arch = "wasm32"))]
                fault: None,
            },
            cc.egui_ctx.clone(),
        );
        engine.send(Job::Coop(device_coop(&rs.adapter)));
        app.loading.expected = crate::bundled::BUNDLED.len();
        #[cfg(not(target_arch = "wasm32"))]
        {
            for b in crate::bundled::BUNDLED {
                engine.send(Job::Load {
                    name: b.name.into(),
                    bytes: b.bytes().to_vec(),
                });
            }
            // `--model FILE` natively: a file that is not a bundled name is loaded too.
            if let Some(m) = app.start.model.clone() {
                if crate::bundled::find(&m).is_none() {
                    match model_bytes_at(std::path::Path::new(&m)) {
                        Ok(bytes) => {
                            app.loading.expected += 1;
                            engine.send(Job::Load { name: m, bytes });
                        }
                        Err(e) => app.status = e,
                    }
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            // `?model=PATH.safetensors` that is no bundled name: a model file hosted beside the
            // page (same origin), fetched after the bundled ones, as `--model FILE` natively;
            // `?model=FOLDER/`: a diffusers pipeline folder hosted there.
            let extra = app.start.model.clone().filter(|m| {
                crate::bundled::find(m).is_none()
                    && (m.ends_with(".safetensors") || web_page::names_a_folder(m))
            });
            if extra.is_some() {
                app.loading.expected += 1;
            }
            // After a device loss the kept models come from memory (below), not storage.
            crate::app::web_models::fetch_bundled(
                engine.job_sender(),
                extra.clone(),
                !app.start.recovered,
                cc.egui_ctx.clone(),
            );
            app.web_train.checkpoint_every = app.start.checkpoint;
            if app.start.recovered {
                // On a new device after a loss: the models opened or made before come back
                // (the bundled ones come from the page's cache), and a lost run is offered.
                for (name, bytes) in web_distill::kept_files() {
                    if crate::bundled::find(&name).is_none() && Some(&name) != extra.as_ref() {
                        app.loading.expected += 1;
                        engine.send(Job::Load { name, bytes });
                    }
                }
                app.web_train = web_distill::WebTrainPanel::after_device_loss();
                if app.web_train.has_lost_run() {
                    app.tab = Tab::Train;
                }
            }
        }
        app.engine = Some(engine);
        app
    }

    /// Sends a model the user opened (a file dialog, a path, a dropped file) to the worker.
    pub fn open_model(&mut self, name: String, bytes: Vec<u8>) {
        if let Some(e) = &self.engine {
            self.loading.expected += 1;
            e.send(Job::Load { name, bytes });
        }
    }

    pub fn job_sender(&self) -> Option<futures_channel::mpsc::UnboundedSender<Job>> {
        self.engine.as_ref().map(|e| e.job_sender())
    }

    pub fn start_sample(&mut self) {
        let started = self.state.start_sample();
        self.launch(started, true);
    }

    pub fn start_compare(&mut self) {
        let started = self.state.start_compare();
        self.launch(started, false);
    }

    /// Sends a run the state accepted to the worker (freeing the replaced run's textures), or
    /// shows why it was refused.
    fn launch(&mut self, started: state::Started, draw_steps: bool) {
        match started {
            Ok((run, rows, old)) => {
                events::TextureSink::free(&mut RenderTextures(self.render.as_ref()), old);
                if let Some(e) = &self.engine {
                    e.send(Job::Run {
                        run,
                        rows,
                        draw_steps,
                    });
                }
                self.status.clear();
            }
            Err(e) => self.status = e,
        }
    }

    /// The page's memory test (`fewstep_test_scrub`): a sample view of `steps` blank steps of
    /// `count` images of the selected model, drawn into textures as a run would.
    #[cfg(target_arch = "wasm32")]
    fn start_test_frames(&mut self, steps: usize, count: usize) {
        self.state.settings.steps = steps;
        self.state.settings.count = count;
        self.state.settings.interpolate_to = None;
        match self.state.start_sample() {
            Ok((run, rows, old)) => {
                events::TextureSink::free(&mut RenderTextures(self.render.as_ref()), old);
                if let (Some(e), Some(row)) = (&self.engine, rows.into_iter().next()) {
                    e.send(Job::TestFrames { run, row, steps });
                }
            }
            Err(e) => self.status = e,
        }
    }

    /// The Models tab's Remove: out of the list, out of the worker, and on the web its file
    /// bytes are let go.
    pub fn remove_model(&mut self, index: usize) {
        match self.state.remove_model(index) {
            Ok(_name) => {
                if let Some(e) = &self.engine {
                    e.send(Job::Remove { index });
                }
                #[cfg(target_arch = "wasm32")]
                web_distill::forget_file(&_name);
                self.status.clear();
            }
            Err(e) => self.status = e,
        }
    }

    pub fn stop(&mut self) {
        if let Some(e) = &self.engine {
            e.stop();
        }
    }

    fn apply_start_options(&mut self) {
        if let Some(r) = self.remembered.take() {
            r.restore(&mut self.state);
            #[cfg(not(target_arch = "wasm32"))]
            {
                self.train.settings = r.train.clone();
            }
        }
        let o = self.start.clone();
        if let Some(m) = &o.model {
            if !self.state.select_by_name(m) {
                self.status = format!(
                    "no model named '{m}'; bundled: {}",
                    crate::bundled::BUNDLED
                        .iter()
                        .map(|b| b.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return;
            }
        }
        let s = &mut self.state.settings;
        if let Some(v) = o.steps {
            s.steps = v;
        }
        if let Some(v) = o.seed {
            s.seed = v;
        }
        if let Some((a, b)) = o.interpolate {
            s.seed = a;
            s.interpolate_to = Some(b);
        }
        if let Some(v) = o.count {
            s.count = v;
        }
        if let Some(v) = o.sampler {
            s.kind = v;
        }
        if let Some(v) = o.clip {
            s.clip = v;
        }
        if let Some(w) = o.guidance {
            s.guidance = w;
        }
        if let Some(c) = &o.class {
            let arch = self.state.selected_model().map(|m| m.meta.arch.clone());
            let parsed = arch
                .ok_or_else(|| "no model is selected".to_string())
                .and_then(|a| crate::diffusion::guidance::parse_class(&a, c));
            match parsed {
                Ok(l) => self.state.settings.class = Some(l),
                Err(e) => {
                    self.status = format!("in the address, class={c}: {e}");
                    return;
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        if (o.distill.is_some() || o.train.is_some()) && web_distill::interrupted_run_waits() {
            // A reload of the link that started a run must not start it afresh over its
            // checkpoint: the Train tab offers to resume it (or to start anew).
            self.tab = Tab::Train;
            self.status = "the run this address starts was interrupted before: the Train tab \
                           offers to resume it from its last checkpoint, or to discard it"
                .into();
            return;
        }
        #[cfg(target_arch = "wasm32")]
        if let Some(d) = &o.distill {
            self.start_distill_from_address(d);
            return;
        }
        #[cfg(target_arch = "wasm32")]
        if let Some(t) = &o.train {
            self.tab = Tab::Train;
            let s = &mut self.web_train.train;
            s.preset = t.preset.clone();
            s.lr =
                t.lr.unwrap_or_else(|| crate::diffusion::trainer::default_lr(&t.preset));
            s.updates = t.updates.unwrap_or(s.updates);
            s.batch = t.batch.unwrap_or(s.batch);
            s.seed = t.seed.unwrap_or(s.seed);
            s.classes = t.classes;
            s.uncond_prob = t.uncond_prob.unwrap_or(s.uncond_prob);
            self.web_train.mode = web_distill::Mode::Teacher;
            if let (Some(gpu), Some(jobs), Some(ctx)) = (
                self.web_gpu.clone(),
                self.job_sender(),
                self.egui_ctx.clone(),
            ) {
                self.web_train.start(gpu, jobs, ctx);
            }
            return;
        }
        if o.compare {
            self.tab = Tab::Compare;
            self.start_compare();
        } else if o.run {
            self.tab = Tab::Sample;
            self.start_sample();
        }
    }

    /// `?distill=MODEL&…`: the Train tab with those settings, started.
    #[cfg(target_arch = "wasm32")]
    fn start_distill_from_address(&mut self, d: &DistillStart) {
        self.tab = Tab::Train;
        self.web_train.mode = web_distill::Mode::Distill;
        let Some(m) = self.state.models.iter().find(|m| m.name == d.teacher) else {
            self.status = format!("distill={}: no such model is loaded", d.teacher);
            return;
        };
        let s = &mut self.web_train.settings;
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
        if let (Some(gpu), Some(jobs), Some(ctx)) = (
            self.web_gpu.clone(),
            self.job_sender(),
            self.egui_ctx.clone(),
        ) {
            self.web_train.start(gpu, jobs, ctx);
        }
    }

    /// Once the first models are in, the start options (query string, command line) apply.
    fn after_load(&mut self) {
        if !self.options_applied && self.loading.done >= self.loading.expected {
            self.options_applied = true;
            self.apply_start_options();
        }
    }

    fn handle_events(&mut self) {
        let Some(engine) = &self.engine else { return };
        let events = engine.drain();
        // A clone (a few Arcs) so that the loop may call back into the app.
        let render = self.render.clone();
        let mut textures = RenderTextures(render.as_ref());
        for ev in events {
            let applied = self.state.apply(
                ev,
                &mut self.loading,
                &mut self.status,
                &mut textures,
                self.options_applied,
            );
            if applied.model_handled {
                self.after_load();
            }
        }
    }
}

/// Textures registered with the window's renderer (none without one).
struct RenderTextures<'a>(Option<&'a egui_wgpu::RenderState>);

impl events::TextureSink for RenderTextures<'_> {
    fn register(&mut self, tex: &GridTexture) -> Option<egui::TextureId> {
        let rs = self.0?;
        let view = tex.texture.create_view(&Default::default());
        Some(rs.renderer.write().register_native_texture(
            &rs.device,
            &view,
            wgpu::FilterMode::Nearest,
        ))
    }
    fn free(&mut self, ids: Vec<egui::TextureId>) {
        if let Some(rs) = self.0 {
            let mut r = rs.renderer.write();
            for id in ids {
                r.free_texture(&id);
            }
        }
    }
}

/// Where the model a path belongs to is: the path itself, or for one of a diffusers pipeline's
/// files (dropped or opened by itself) the folder it is part of.
#[cfg(not(target_arch = "wasm32"))]
pub fn model_path_of(path: &std::path::Path) -> std::path::PathBuf {
    use crate::diffusers::PipelineFiles;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    match name {
        Some(n) if path.is_file() && PipelineFiles::is_part(&n) => {
            let folder = path.parent().unwrap_or(std::path::Path::new("."));
            // scheduler/scheduler_config.json belongs to the pipeline folder above it; the
            // others to unet/ (a bare unet/ folder is read with scheduler/ beside it) or the
            // pipeline folder itself (model_index.json).
            if n == "scheduler_config.json" {
                folder.parent().unwrap_or(folder).to_path_buf()
            } else {
                folder.to_path_buf()
            }
        }
        _ => path.to_path_buf(),
    }
}

/// The model file bytes at a path: a model file (by the one reading rule), or a diffusers model
/// folder (or one of its files) made into a fewstep model file in memory (see
/// `crate::diffusers`).
#[cfg(not(target_arch = "wasm32"))]
pub fn model_bytes_at(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use crate::diffusion::model_file::{import_diffusers, model_bytes};
    let path = &model_path_of(path);
    if path.is_dir() {
        let (meta, tensors) = import_diffusers(path).map_err(|e| e.to_string())?;
        return model_bytes(
            &path.display().to_string(),
            &meta,
            &tensors,
            crate::nn::StoreAs::F32,
        )
        .map_err(|e| e.to_string());
    }
    crate::input_file::read(path, crate::input_file::MODEL_MAX)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl FewstepApp {
    /// Model files dropped on the window (natively a path, on the web the bytes).
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        // Natively, the files of one diffusers pipeline dropped together open it once.
        #[cfg(not(target_arch = "wasm32"))]
        let mut opened = std::collections::HashSet::new();
        for f in dropped {
            let name = f.path().display().to_string();
            // A path (a model file, or a diffusers folder or one of its files) by the reading
            // rule; else the bytes.
            #[cfg(not(target_arch = "wasm32"))]
            if f.path().as_os_str().is_empty() {
                match f.bytes() {
                    Ok(bytes) => self.open_model(name, bytes),
                    Err(e) => self.status = format!("cannot read {name}: {e}"),
                }
            } else if opened.insert(model_path_of(f.path())) {
                self.open_path(&name)
            }
            #[cfg(target_arch = "wasm32")]
            if let Some(jobs) = self.job_sender() {
                self.loading.expected += 1;
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
    }

    /// `fewstep app --screenshot PATH`: once the started run is done, save the window and close.
    #[cfg(not(target_arch = "wasm32"))]
    fn screenshot_when_done(&mut self, ctx: &egui::Context) {
        let Some(path) = self.start.screenshot.clone() else {
            return;
        };
        let done = match self.tab {
            Tab::Sample => self.state.sample_view.as_ref().is_some_and(|v| !v.running),
            Tab::Compare => self.state.compare_view.as_ref().is_some_and(|v| !v.running),
            Tab::Models => self.options_applied,
            Tab::Train => true,
        };
        if !done {
            return;
        }
        self.start.screenshot = None;
        let c = ctx.clone();
        ctx.request_screenshot(move |img| {
            let rgba: Vec<u8> = img.pixels.iter().flat_map(|p| p.to_array()).collect();
            let saved = image::RgbaImage::from_raw(img.size[0] as u32, img.size[1] as u32, rgba)
                .map(|i| i.save(&path));
            match saved {
                Some(Ok(())) => eprintln!("screenshot -> {path}"),
                Some(Err(e)) => eprintln!("could not save the screenshot to {path}: {e}"),
                None => eprintln!("the screenshot had an unexpected size"),
            }
            c.send_viewport_cmd(egui::ViewportCommand::Close);
        });
        ctx.request_repaint();
    }

    /// Opens a model file or a diffusers model folder from a path (natively).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_path(&mut self, path: &str) {
        match model_bytes_at(std::path::Path::new(path)) {
            Ok(bytes) => self.open_model(path.to_string(), bytes),
            Err(e) => self.status = e,
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl FewstepApp {
    /// A lost device (or a kernel that failed to build) ends the page's work: the message panel
    /// says what happened and offers a reload, instead of runs going on with stale data. The
    /// device-lost callback runs between frames, so an idle page looks twice a second.
    fn watch_for_gpu_faults(&mut self, ctx: &egui::Context) {
        if self.fault_shown {
            return;
        }
        match self.web_gpu.as_ref().and_then(|g| g.fault_watch().error()) {
            Some(e) => {
                self.fault_shown = true;
                if matches!(e, crate::gpu::GpuError::Lost { .. }) {
                    self.web_train.remember_lost_run();
                }
                web_page::show_gpu_fault(&e);
            }
            None => ctx.request_repaint_after(std::time::Duration::from_millis(500)),
        }
    }
}

impl eframe::App for FewstepApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.handle_events();
        #[cfg(not(target_arch = "wasm32"))]
        self.train.poll(ui.ctx());
        let dt = ui.ctx().input(|i| i.stable_dt as f64);
        if let Some(v) = self.state.sample_view.as_mut() {
            if v.tick(dt) {
                ui.ctx().request_repaint();
            }
        }
        self.take_dropped_files(ui.ctx());
        #[cfg(target_arch = "wasm32")]
        if let Some(name) = web_page::adapter_name() {
            self.adapter = name;
        }
        #[cfg(target_arch = "wasm32")]
        self.watch_for_gpu_faults(ui.ctx());
        #[cfg(target_arch = "wasm32")]
        if let Some((steps, count)) = web_page::take_test_scrub() {
            self.start_test_frames(steps, count);
        }
        #[cfg(target_arch = "wasm32")]
        if web_distill::offer_appeared() && !self.web_train.running() {
            // A run the last page left: the Train tab offers to resume it.
            self.tab = Tab::Train;
        }
        ui::draw(self, ui);
        #[cfg(target_arch = "wasm32")]
        crate::app::web_status::publish_status(
            ui.ctx(),
            &self.adapter,
            &self.status,
            self.loading.done,
            self.loading.expected,
            self.state.models.iter().map(|m| m.name.clone()).collect(),
        );
        #[cfg(not(target_arch = "wasm32"))]
        self.screenshot_when_done(ui.ctx());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        // Before the models are in, the selection is not the user's yet: keep the old value.
        if let Some(r) = &self.remembered {
            r.save(storage);
            return;
        }
        remembered::Remembered::capture(
            &self.state,
            #[cfg(not(target_arch = "wasm32"))]
            &self.train.settings,
        )
        .save(storage);
    }

    #[cfg(target_arch = "wasm32")]
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(&mut *self)
    }
}

/// The adapter as the top bar names it. Browsers often leave WebGPU's adapter description empty
/// (wgpu's name); then the page's own lookup (`web_page::look_up_adapter_name`: vendor and
/// architecture) replaces this when it answers.
pub(crate) fn adapter_label(info: &wgpu::AdapterInfo) -> String {
    match (info.name.trim(), info.backend) {
        ("", wgpu::Backend::BrowserWebGpu) if info.device_type == wgpu::DeviceType::Cpu => {
            "WebGPU in the browser (software fallback adapter)".into()
        }
        ("", wgpu::Backend::BrowserWebGpu) => "WebGPU in the browser".into(),
        ("", b) => format!("unnamed adapter ({b:?})"),
        (name, b) => format!("{name} ({b:?})"),
    }
}
