//! The fewstep app (eframe), the same code natively and in the browser: pick a model and a step
//! count, watch the image form step by step, put step counts side by side.
//!
//! GPU work runs in [`engine`] (a thread natively, a task on the web) on eframe's own device;
//! [`state`] holds everything the UI shows, without a window; [`ui`] draws it.

pub mod engine;
pub mod remembered;
pub mod state;
pub mod texture;
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
pub mod web_distill;
#[cfg(target_arch = "wasm32")]
pub mod web_page;

use std::sync::Arc;

use eframe::{egui, egui_wgpu};

use engine::{EngineHandle, Event, Job, SharedDevice};
use state::{AppState, Frame};
use texture::GridTexture;

use crate::diffusion::SamplerKind;

/// What the app does when it opens: a model to select and a run to start (the web page's query
/// string, or `fewstep app --model … --steps …` natively), so a link reproduces a picture.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StartOptions {
    pub model: Option<String>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
    pub count: Option<usize>,
    pub sampler: Option<SamplerKind>,
    pub clip: Option<bool>,
    /// Start a sample run as soon as the models are loaded.
    pub run: bool,
    /// Start a comparison (the Compare tab's defaults) instead of a sample run.
    pub compare: bool,
    /// Natively: when the started run is done, save the window as this PNG and close.
    pub screenshot: Option<String>,
    /// On the web: start a distillation in the Train tab (`distill=MODEL&to=2&updates=…&batch=…
    /// &lr=…&seed=…`, `from=` for a teacher's step count) instead of a sample run.
    pub distill: Option<DistillStart>,
    /// On the web: train a teacher in the Train tab (`train=tiny&updates=…&batch=…&lr=…&seed=…`).
    pub train: Option<TrainStart>,
}

/// A teacher training asked for in the address; unset values keep the tab's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainStart {
    pub preset: String,
    pub updates: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
}

/// A distillation asked for in the address; unset values keep the tab's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DistillStart {
    pub teacher: String,
    pub from_steps: Option<usize>,
    pub to_steps: Option<usize>,
    pub updates: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
}

impl StartOptions {
    /// Parses `model=…&steps=4&seed=1&count=16&sampler=ddim&clip=0&run=1` (percent-encoded, `+`
    /// for a space, as browsers write it); any of model, steps or seed starts a run unless
    /// `run=0` says otherwise. Unknown keys are ignored, bad values are reported.
    pub fn from_query(query: &str) -> Result<StartOptions, String> {
        let mut o = StartOptions::default();
        let mut run = None;
        let mut distill = DistillStart::default();
        let mut train: Option<String> = None;
        let q = query.trim_start_matches('?');
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode_query_part(k)?, decode_query_part(v)?);
            let bad = |what: &str| format!("in the address, {k}={v}: {what}");
            fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("in the address, '{v}' is not a whole number"))
            }
            let switch = |v: &str| match v {
                "" | "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(bad("give 1 or 0")),
            };
            match k.as_str() {
                "model" => o.model = Some(v.clone()),
                "steps" => o.steps = Some(v.parse().map_err(|_| bad("steps must be a number"))?),
                "seed" => o.seed = Some(v.parse().map_err(|_| bad("seed must be a number"))?),
                "count" => o.count = Some(v.parse().map_err(|_| bad("count must be a number"))?),
                "sampler" => {
                    o.sampler = Some(match v.as_str() {
                        "ddim" => SamplerKind::Ddim,
                        "ancestral" => SamplerKind::Ancestral,
                        _ => return Err(bad("sampler is ddim or ancestral")),
                    })
                }
                "clip" => o.clip = Some(switch(&v)?),
                "run" => run = Some(switch(&v)?),
                "distill" => distill.teacher = v.clone(),
                "train" => train = Some(v.clone()),
                "from" => distill.from_steps = Some(number(&v)?),
                "to" => distill.to_steps = Some(number(&v)?),
                "updates" => distill.updates = Some(number(&v)?),
                "batch" => distill.batch = Some(number(&v)?),
                "lr" => distill.lr = Some(v.parse().map_err(|_| bad("lr must be a number"))?),
                _ => {}
            }
        }
        if let Some(preset) = train {
            if !crate::nn::PRESETS.contains(&preset.as_str()) || preset == "cifar" {
                return Err(format!(
                    "in the address, train={preset}: give tiny or small"
                ));
            }
            o.train = Some(TrainStart {
                preset,
                updates: distill.updates,
                batch: distill.batch,
                lr: distill.lr,
                seed: o.seed.take(),
            });
            o.run = false;
            return Ok(o);
        }
        if !distill.teacher.is_empty() {
            distill.seed = o.seed.take();
            o.distill = Some(distill);
            o.run = false;
            return Ok(o);
        }
        o.run = run.unwrap_or(o.model.is_some() || o.steps.is_some() || o.seed.is_some());
        Ok(o)
    }
}

impl StartOptions {
    /// The query string [`Self::from_query`] reads back as these options (a link to a picture).
    pub fn to_query(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // What a URL's query may hold as it is (RFC 3986 unreserved): fmnist-4step stays legible.
        const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let mut parts = Vec::new();
        if let Some(m) = &self.model {
            parts.push(format!("model={}", utf8_percent_encode(m, ESCAPE)));
        }
        if let Some(v) = self.steps {
            parts.push(format!("steps={v}"));
        }
        if let Some(v) = self.seed {
            parts.push(format!("seed={v}"));
        }
        if let Some(v) = self.count {
            parts.push(format!("count={v}"));
        }
        if let Some(k) = self.sampler {
            parts.push(format!("sampler={}", sampler_word(k)));
        }
        if let Some(c) = self.clip {
            parts.push(format!("clip={}", c as u8));
        }
        parts.push(format!("run={}", self.run as u8));
        parts.join("&")
    }

    /// The `fewstep sample` command that draws the same picture into sample.png.
    pub fn sample_command(&self) -> String {
        let mut c = String::from("fewstep sample");
        if let Some(m) = &self.model {
            if m.contains(char::is_whitespace) {
                c += &format!(" --model '{m}'");
            } else {
                c += &format!(" --model {m}");
            }
        }
        if let Some(v) = self.steps {
            c += &format!(" --steps {v}");
        }
        if let Some(v) = self.seed {
            c += &format!(" --seed {v}");
        }
        if let Some(v) = self.count {
            c += &format!(" --count {v}");
        }
        if let Some(k) = self.sampler {
            if k != SamplerKind::Ddim {
                c += &format!(" --sampler {}", sampler_word(k));
            }
        }
        if self.clip == Some(false) {
            c += " --no-clip";
        }
        c + " --out sample.png"
    }
}

fn sampler_word(k: SamplerKind) -> &'static str {
    match k {
        SamplerKind::Ddim => "ddim",
        SamplerKind::Ancestral => "ancestral",
    }
}

/// One key or value of a query string: `+` is a space, `%XX` a byte of UTF-8.
fn decode_query_part(s: &str) -> Result<String, String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("in the address, `{s}` is not valid percent-encoded UTF-8"))
}

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

/// eframe's wgpu set-up for fewstep: the device asks for what the engine's kernels want
/// (subgroups, the adapter's full limits); on the web, WebGPU only (WebGL has no compute).
pub fn wgpu_options() -> egui_wgpu::WgpuConfiguration {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    #[cfg(target_arch = "wasm32")]
    {
        setup.instance_descriptor.backends = wgpu::Backends::BROWSER_WEBGPU;
    }
    setup.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| {
        let mut limits = adapter.limits();
        limits.max_texture_dimension_2d = limits.max_texture_dimension_2d.max(2048);
        wgpu::DeviceDescriptor {
            label: Some("fewstep app"),
            required_features: crate::gpu::Gpu::wanted_features(adapter),
            required_limits: limits,
            ..Default::default()
        }
    });
    egui_wgpu::WgpuConfiguration {
        wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup),
        ..Default::default()
    }
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
                    match std::fs::read(&m) {
                        Ok(bytes) => {
                            app.loading.expected += 1;
                            engine.send(Job::Load { name: m, bytes });
                        }
                        Err(e) => app.status = format!("cannot read {m}: {e}"),
                    }
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        crate::app::web_page::fetch_bundled(engine.job_sender());
        app.engine = Some(engine);
        app
    }

    fn register(&self, tex: &GridTexture) -> Option<egui::TextureId> {
        let rs = self.render.as_ref()?;
        let view = tex.texture.create_view(&Default::default());
        Some(rs.renderer.write().register_native_texture(
            &rs.device,
            &view,
            wgpu::FilterMode::Nearest,
        ))
    }

    fn free(&self, ids: Vec<egui::TextureId>) {
        if let Some(rs) = &self.render {
            let mut r = rs.renderer.write();
            for id in ids {
                r.free_texture(&id);
            }
        }
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
                self.free(old);
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
        if let Some(v) = o.count {
            s.count = v;
        }
        if let Some(v) = o.sampler {
            s.kind = v;
        }
        if let Some(v) = o.clip {
            s.clip = v;
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
            self.web_train.mode = web_distill::Mode::Train;
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
        for ev in engine.drain() {
            match ev {
                Event::Loaded(info) => {
                    self.loading.done += 1;
                    self.loading.expected = self.loading.expected.max(self.loading.done);
                    let name = info.name.clone();
                    self.state.add_model(info);
                    if self.options_applied {
                        // A model the user opened: show it.
                        self.state.select(self.state.models.len() - 1);
                    } else if name == crate::bundled::DEFAULT_MODEL {
                        self.state.select_by_name(&name);
                    }
                    self.after_load();
                }
                Event::LoadFailed { name, error } => {
                    self.loading.done += 1;
                    self.loading.expected = self.loading.expected.max(self.loading.done);
                    self.status = format!("could not load {name}: {error}");
                    self.after_load();
                }
                Event::Progress { current, bytes } => {
                    self.loading.current = current;
                    self.loading.bytes = bytes.or(self.loading.bytes);
                }
                Event::Start { run, z, .. } => {
                    let id = self.register(&z);
                    match (id, self.state.sample_view_for(run)) {
                        (Some(id), Some(v)) => {
                            v.texture_size = z.size;
                            v.push(Frame {
                                step: 0,
                                t: 1.0,
                                z: id,
                                x_hat: None,
                                ms: 0.0,
                            });
                        }
                        (Some(id), None) => self.free(vec![id]),
                        _ => {}
                    }
                }
                Event::Step {
                    run,
                    step,
                    t,
                    z,
                    x_hat,
                    ms,
                    ..
                } => {
                    let ids = (self.register(&z), self.register(&x_hat));
                    match (ids, self.state.sample_view_for(run)) {
                        ((Some(z), Some(x)), Some(v)) => v.push(Frame {
                            step,
                            t,
                            z,
                            x_hat: Some(x),
                            ms,
                        }),
                        ((a, b), _) => self.free(a.into_iter().chain(b).collect()),
                    }
                }
                Event::RowDone {
                    run,
                    row,
                    image,
                    ms,
                    samples,
                    shape,
                } => {
                    if let Some(v) = self.state.sample_view_for(run) {
                        v.running = false;
                        v.total_ms = Some(ms);
                        #[cfg(not(target_arch = "wasm32"))]
                        eprintln!(
                            "{}: {} steps in {ms:.1} ms ({:.1} ms per step)",
                            v.label,
                            v.steps,
                            ms / v.steps as f64
                        );
                        #[cfg(target_arch = "wasm32")]
                        crate::app::web_page::publish_result(&self.state, &samples, shape, ms);
                        if let Some(v) = self.state.sample_view_for(run) {
                            v.samples = Some((samples, shape));
                        }
                    } else {
                        let id = self.register(&image);
                        if let Some(v) = self.state.compare_view_for(run) {
                            if let Some(r) = v.rows.get_mut(row) {
                                r.image = id;
                                r.ms = Some(ms);
                                r.size = image.size;
                            }
                            if row + 1 == v.rows.len() {
                                v.running = false;
                            }
                        } else if let Some(id) = id {
                            self.free(vec![id]);
                        }
                    }
                }
                Event::Stopped { run } => self.state.end_run(run, None),
                Event::Failed { run, error } => {
                    self.status = error.clone();
                    self.state.end_run(run, Some(error));
                }
            }
        }
    }
}

impl FewstepApp {
    /// Model files dropped on the window (natively a path, on the web the bytes).
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for f in dropped {
            let name = f.path().display().to_string();
            #[cfg(not(target_arch = "wasm32"))]
            match f.bytes() {
                Ok(bytes) => self.open_model(name, bytes),
                Err(e) => self.status = format!("cannot read {name}: {e}"),
            }
            #[cfg(target_arch = "wasm32")]
            if let Some(jobs) = self.job_sender() {
                self.loading.expected += 1;
                wasm_bindgen_futures::spawn_local(async move {
                    let job = match f.bytes_async().await {
                        Ok(bytes) => {
                            web_distill::remember_file(&name, &bytes);
                            Job::Load { name, bytes }
                        }
                        Err(error) => Job::LoadError { name, error },
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

    /// Reads a model file from a path (natively).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_path(&mut self, path: &str) {
        match std::fs::read(path) {
            Ok(bytes) => self.open_model(path.to_string(), bytes),
            Err(e) => self.status = format!("cannot read {path}: {e}"),
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
        ui::draw(self, ui);
        #[cfg(target_arch = "wasm32")]
        crate::app::web_page::publish_status(
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
