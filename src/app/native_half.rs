//! The desktop half of the app: what `FewstepApp` does only natively, behind the same functions
//! as `web_half.rs`, so `app/mod.rs` calls `platform::…` without `cfg`. Natively the bundled
//! models are compiled in, a model opens from a path (a file, or a diffusers folder or one of its
//! files), the Train tab runs `train`/`distill` on a thread, and `--screenshot` saves the window.

use std::path::{Path, PathBuf};

use eframe::{egui, egui_wgpu};

use super::engine::{EngineHandle, Job};
use super::remembered::Remembered;
use super::{train_panel, FewstepApp, StartOptions, Tab};

/// What only the desktop app holds.
#[derive(Default)]
pub struct Half {
    /// The Models tab's path field.
    pub open_path: String,
    pub train: train_panel::TrainPanel,
}

impl Half {
    pub(super) fn new(_cc: &eframe::CreationContext<'_>, _start: &StartOptions) -> Half {
        Half::default()
    }
}

/// The device is eframe's; nothing else shares it natively, so no fault watch is handed on.
pub(super) fn on_device(
    _app: &mut FewstepApp,
    _rs: &egui_wgpu::RenderState,
    _info: &wgpu::AdapterInfo,
) -> Option<crate::gpu::FaultWatch> {
    None
}

/// The bundled models (compiled in), and `--model FILE` when it is not a bundled name.
pub(super) fn load_models(
    app: &mut FewstepApp,
    engine: &EngineHandle,
    _cc: &eframe::CreationContext<'_>,
) {
    for b in crate::bundled::BUNDLED {
        engine.send(Job::Load {
            name: b.name.into(),
            bytes: b.bytes().to_vec(),
        });
    }
    if let Some(m) = app.start.model.clone() {
        if crate::bundled::find(&m).is_none() {
            match model_bytes_at(Path::new(&m)) {
                Ok(bytes) => {
                    app.loading.expected += 1;
                    engine.send(Job::Load { name: m, bytes });
                }
                Err(e) => app.status = e,
            }
        }
    }
}

/// A removed model holds nothing natively beyond the worker's copy.
pub(super) fn forget_model(_name: &str) {}

pub(super) fn restore_remembered(app: &mut FewstepApp, r: &Remembered) {
    app.platform.train.settings = r.train.clone();
}

/// Runs the address starts: the desktop app has no `?train=`/`?distill=` (the command line has
/// `fewstep train` and `distill`), so nothing is started here.
pub(super) fn start_from_address(_app: &mut FewstepApp, _o: &StartOptions) -> bool {
    false
}

pub(super) fn remembered(app: &FewstepApp) -> Remembered {
    Remembered::capture(&app.state, &app.platform.train.settings)
}

/// Model files dropped on the window, by path: a model file, or a diffusers folder or one of its
/// files (the files of one pipeline dropped together open it once); bytes where no path came.
pub(super) fn take_dropped_files(app: &mut FewstepApp, ctx: &egui::Context) {
    let dropped = ctx.input(|i| i.raw.dropped_files.clone());
    let mut opened = std::collections::HashSet::new();
    for f in dropped {
        let name = f.path().display().to_string();
        if f.path().as_os_str().is_empty() {
            match f.bytes() {
                Ok(bytes) => app.open_model(name, bytes),
                Err(e) => app.status = format!("cannot read {name}: {e}"),
            }
        } else if opened.insert(model_path_of(f.path())) {
            app.open_path(&name)
        }
    }
}

pub(super) fn before_draw(app: &mut FewstepApp, ctx: &egui::Context) {
    app.platform.train.poll(ctx);
}

pub(super) fn after_draw(app: &mut FewstepApp, ctx: &egui::Context) {
    screenshot_when_done(app, ctx);
}

/// `fewstep app --screenshot PATH`: once the started run is done, save the window and close.
fn screenshot_when_done(app: &mut FewstepApp, ctx: &egui::Context) {
    let Some(path) = app.start.screenshot.clone() else {
        return;
    };
    let done = match app.tab {
        Tab::Sample => app.state.sample_view.as_ref().is_some_and(|v| !v.running),
        Tab::Compare => app.state.compare_view.as_ref().is_some_and(|v| !v.running),
        Tab::Models => app.options_applied,
        Tab::Train => true,
    };
    if !done {
        return;
    }
    app.start.screenshot = None;
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

impl FewstepApp {
    /// Opens a model file or a diffusers model folder from a path (natively).
    pub fn open_path(&mut self, path: &str) {
        match model_bytes_at(Path::new(path)) {
            Ok(bytes) => self.open_model(path.to_string(), bytes),
            Err(e) => self.status = e,
        }
    }
}

/// Where the model a path belongs to is: the path itself, or for one of a diffusers pipeline's
/// files (dropped or opened by itself) the folder it is part of.
pub fn model_path_of(path: &Path) -> PathBuf {
    use crate::diffusers::PipelineFiles;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    match name {
        Some(n) if path.is_file() && PipelineFiles::is_part(&n) => {
            let folder = path.parent().unwrap_or(Path::new("."));
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
pub fn model_bytes_at(path: &Path) -> Result<Vec<u8>, String> {
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
