//! The Train / distill tab on the web: progressive distillation of a loaded model inside the
//! browser tab (diffusion/distill_memory.rs: the same updates and model files as `fewstep
//! distill`). The run is a task on the page's event loop that awaits the GPU after every update
//! and yields to the page, so the tab stays responsive; each finished student is loaded into the
//! app at once (Sample, Compare) and can be downloaded as a model file the CLI and the desktop
//! app open. Each model made is kept in the browser's storage, and the run checkpoints there
//! (checkpoint.rs), so a reload or a closed tab offers to resume it.

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

mod checkpoint;
mod panel;
mod runner;
mod settings;

pub use crate::app::train_mode::Mode;
pub use checkpoint::{interrupted_run_waits, look_for_interrupted, offer_appeared};
use panel::duration;
pub use panel::WebTrainPanel;
use runner::{distill, download, train_teacher};
pub use settings::{Settings, TrainSettings};

pub use crate::app::web_page::DATA_DIR;
const DATA_NOTE: &str = "the first 10,000 Fashion-MNIST training images, shipped with the page \
                         (4.3 MB, fetched when a run starts)";

thread_local! {
    /// Model file bytes by model name (fetched, dropped, or made here): what a run starts from
    /// and what Download saves.
    static FILES: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    /// The runs' state, for `fewstep_distilled()` (tests and scripts).
    static LAST: RefCell<Option<Rc<RefCell<Shared>>>> = const { RefCell::new(None) };
    /// A run that was going when the GPU device was lost: what the tab on the new device
    /// offers to start again.
    static LOST: RefCell<Option<LostRun>> = const { RefCell::new(None) };
}

/// What a run lost with its device was asked to do.
#[derive(Clone, Debug)]
pub struct LostRun {
    pub mode: Mode,
    pub settings: Settings,
    pub train: TrainSettings,
    /// How far it got ("12 of 200 updates").
    pub progress: String,
}

/// The model files kept so far (bundled, opened and made here), by name: what a page recreated
/// on a new device loads again.
pub fn kept_files() -> Vec<(String, Vec<u8>)> {
    FILES.with(|f| {
        let mut v: Vec<_> = f
            .borrow()
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    })
}

/// Keeps a model file's bytes so that it can be distilled or downloaded later.
pub fn remember_file(name: &str, bytes: &[u8]) {
    FILES.with(|f| f.borrow_mut().insert(name.to_string(), bytes.to_vec()));
}

/// Keeps a model the visitor made or opened (`origin`: "made" or "opened") in memory and in the
/// browser's storage, so that it is listed again after a reload (app/web_store.rs).
pub fn keep_file(name: &str, bytes: &[u8], origin: &'static str) {
    remember_file(name, bytes);
    crate::app::web_store::keep_model(name, bytes, origin);
}

/// [`keep_file`], returning once the storage has it (or refused it).
pub async fn keep_file_now(name: &str, bytes: &[u8], origin: &'static str) {
    remember_file(name, bytes);
    crate::app::web_store::keep_model_now(name, bytes, origin).await;
}

/// Lets a model's bytes go (it left the model list), from the browser's storage too.
pub fn forget_file(name: &str) {
    FILES.with(|f| f.borrow_mut().remove(name));
    crate::app::web_store::drop_model(name);
}

fn file_of(name: &str) -> Option<Vec<u8>> {
    FILES.with(|f| f.borrow().get(name).cloned())
}

/// Whether a model file is kept under `name` (asked every frame: no copy of the bytes).
fn has_file(name: &str) -> bool {
    FILES.with(|f| f.borrow().contains_key(name))
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
    /// What the run's checkpoints cost so far (checkpoint.rs), and why the last one failed.
    pub checkpoints: Option<checkpoint::CheckpointCost>,
    pub checkpoint_error: Option<String>,
    /// The run continues a checkpoint (from this update).
    pub resumed_from: Option<u64>,
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
                "checkpoints": s.checkpoints,
                "checkpointError": s.checkpoint_error,
                "resumedFrom": s.resumed_from,
            })
            .to_string(),
        )
    })
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
