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

// The platform halves: `platform` is the one this build runs, with the same functions in both
// files, so the rest of this file needs no `cfg`.
#[cfg(not(target_arch = "wasm32"))]
mod native_half;
#[cfg(not(target_arch = "wasm32"))]
use native_half as platform;
#[cfg(not(target_arch = "wasm32"))]
pub use native_half::{model_bytes_at, model_path_of};
#[cfg(target_arch = "wasm32")]
mod web_half;
#[cfg(target_arch = "wasm32")]
use web_half as platform;

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
    /// What only the desktop app (`native_half.rs`) or only the page (`web_half.rs`) holds.
    pub platform: platform::Half,
}

impl FewstepApp {
    pub fn new(cc: &eframe::CreationContext<'_>, start: StartOptions) -> FewstepApp {
        let render = cc.wgpu_render_state.clone();
        let platform = platform::Half::new(cc, &start);
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
            platform,
        };
        let Some(rs) = render else {
            app.status = "fewstep needs a wgpu renderer with compute shaders (WebGPU, Vulkan, \
                          Metal or DX12); none was created"
                .into();
            return app;
        };
        let info = rs.adapter.get_info();
        app.adapter = adapter_label(&info);
        let fault = platform::on_device(&mut app, &rs, &info);
        let engine = engine::spawn(
            SharedDevice {
                device: rs.device.clone(),
                queue: rs.queue.clone(),
                info,
                fault,
            },
            cc.egui_ctx.clone(),
        );
        engine.send(Job::Coop(device_coop(&rs.adapter)));
        app.loading.expected = crate::bundled::BUNDLED.len();
        platform::load_models(&mut app, &engine, cc);
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

    /// The Models tab's Remove: out of the list, out of the worker, and on the web its file
    /// bytes are let go.
    pub fn remove_model(&mut self, index: usize) {
        match self.state.remove_model(index) {
            Ok(_name) => {
                if let Some(e) = &self.engine {
                    e.send(Job::Remove { index });
                }
                platform::forget_model(&_name);
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
            platform::restore_remembered(self, &r);
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
        if platform::start_from_address(self, &o) {
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

impl eframe::App for FewstepApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.handle_events();
        platform::before_draw(self, ui.ctx());
        let dt = ui.ctx().input(|i| i.stable_dt as f64);
        if let Some(v) = self.state.sample_view.as_mut() {
            if v.tick(dt) {
                ui.ctx().request_repaint();
            }
        }
        platform::take_dropped_files(self, ui.ctx());
        ui::draw(self, ui);
        platform::after_draw(self, ui.ctx());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        // Before the models are in, the selection is not the user's yet: keep the old value.
        if let Some(r) = &self.remembered {
            r.save(storage);
            return;
        }
        platform::remembered(self).save(storage);
    }

    /// The page reaches the app through eframe's runner (`web.rs`; eframe has it on the web
    /// only).
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
