//! Browser entry points (wasm32 only).
//! - `start_app(canvas_id)`: the fewstep app (index.html), configured by the page's query string.
//! - `fewstep_result()`: the last finished sample run as JSON, for the headless-Chromium test
//!   that checks the page draws what native `fewstep sample` draws.
//! - `run_selftest(seed)`: the kernel self-test (web/selftest.html).

use std::cell::RefCell;

use futures_channel::mpsc::UnboundedSender;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::app::engine::Job;
use crate::app::state::AppState;
use crate::app::{wgpu_options, FewstepApp, StartOptions};
use crate::gpu::{Gpu, GpuOptions};

#[wasm_bindgen(start)]
pub fn start() {
    // A panic aborts the WebAssembly instance: after logging it, the page says so (and what to
    // do) instead of leaving a frozen canvas or a spinner.
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_crash(&info.to_string());
    }));
}

/// Replaces the page with the message panel of index.html, naming the bug.
fn show_crash(what: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let set_hidden = |id: &str, hidden: bool| {
        if let Some(e) = document
            .get_element_by_id(id)
            .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
        {
            e.set_hidden(hidden);
        }
    };
    for id in ["app", "loading", "status"] {
        set_hidden(id, true);
    }
    if let Some(text) = document.get_element_by_id("message-text") {
        text.set_text_content(Some(&format!(
            "fewstep stopped because of a bug: {what}. Reload the page to start again; the \
             browser console has the details."
        )));
    }
    set_hidden("message", false);
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"fewstepError".into(), &what.into());
    }
}

thread_local! {
    static STATUS: RefCell<Option<String>> = const { RefCell::new(None) };
    static RESULT: RefCell<Option<String>> = const { RefCell::new(None) };
    static LAYOUT: RefCell<Option<String>> = const { RefCell::new(None) };
    static RUNNER: RefCell<Option<eframe::WebRunner>> = const { RefCell::new(None) };
}

/// Starts the app on the canvas with this id. Rejects with a readable message when the browser
/// has no WebGPU or the query string is wrong; the page shows it.
#[wasm_bindgen]
pub async fn start_app(canvas_id: String) -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let canvas = document
        .get_element_by_id(&canvas_id)
        .ok_or_else(|| format!("no element with id {canvas_id}"))?
        .dyn_into::<web_sys::HtmlCanvasElement>()?;
    let search = window.location().search().unwrap_or_default();
    let start = StartOptions::from_query(&search).map_err(|e| JsValue::from_str(&e))?;
    let options = eframe::WebOptions {
        wgpu_options: wgpu_options(),
        ..Default::default()
    };
    let runner = eframe::WebRunner::new();
    runner
        .start(
            canvas,
            options,
            Box::new(move |cc| Ok(Box::new(FewstepApp::new(cc, start)))),
        )
        .await?;
    RUNNER.with(|r| *r.borrow_mut() = Some(runner));
    Ok(())
}

/// Where the Sample tab drew its two grids in the last frame, as JSON: {pixelsPerPoint,
/// textureSize: [w, h], pad, step, steps, grids: [{name, x, y, w, h}]} (rectangles in CSS
/// pixels); null before a run is drawn. With `fewstep_result()` a test can predict every canvas
/// pixel of the grids (texel = value * 127.5 + 127.5, nearest filtering, integer scale).
#[wasm_bindgen]
pub fn fewstep_layout() -> Option<String> {
    LAYOUT.with(|r| r.borrow().clone())
}

pub(crate) fn publish_layout(
    pixels_per_point: f32,
    texture_size: [u32; 2],
    step: usize,
    steps: usize,
    rects: [Option<eframe::egui::Rect>; 2],
) {
    let grids: Vec<_> = ["z_t", "x_hat"]
        .iter()
        .zip(rects)
        .filter_map(|(name, r)| {
            r.map(|r| {
                serde_json::json!({
                    "name": name, "x": r.min.x, "y": r.min.y, "w": r.width(), "h": r.height(),
                })
            })
        })
        .collect();
    let json = serde_json::json!({
        "pixelsPerPoint": pixels_per_point,
        "textureSize": texture_size,
        "pad": crate::app::texture::PAD,
        "step": step,
        "steps": steps,
        "grids": grids,
    });
    LAYOUT.with(|r| *r.borrow_mut() = Some(json.to_string()));
}

/// What the app tells the visitor, as JSON: {status, loadingDone, loadingExpected, models}:
/// the status line's text (an error such as a model file that could not be loaded), how many
/// model files have been handled of those expected, and the names of the models loaded.
#[wasm_bindgen]
pub fn fewstep_status() -> Option<String> {
    STATUS.with(|r| r.borrow().clone())
}

pub(crate) fn publish_status(status: &str, done: usize, expected: usize, models: Vec<String>) {
    let json = serde_json::json!({
        "status": status,
        "loadingDone": done,
        "loadingExpected": expected,
        "models": models,
    });
    STATUS.with(|r| *r.borrow_mut() = Some(json.to_string()));
}

/// The last finished sample run: {model, steps, seed, count, sampler, clip, shape, ms, values},
/// values being the samples (N x C x H x W, in [-1, 1]); null before the first run finishes.
#[wasm_bindgen]
pub fn fewstep_result() -> Option<String> {
    RESULT.with(|r| r.borrow().clone())
}

pub(crate) fn publish_result(state: &AppState, samples: &[f32], shape: [usize; 4], ms: f64) {
    let s = &state.settings;
    let json = serde_json::json!({
        "model": state.selected_model().map(|m| m.name.clone()),
        "steps": s.steps,
        "seed": s.seed,
        "count": s.count,
        "sampler": s.kind,
        "clip": s.clip,
        "shape": shape,
        "ms": ms,
        "values": samples,
    });
    RESULT.with(|r| *r.borrow_mut() = Some(json.to_string()));
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("fetching {url} failed: {e:?}"))?
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_string())?;
    if !resp.ok() {
        return Err(format!(
            "fetching {url}: HTTP {} (serve the repository root, where assets/ lives)",
            resp.status()
        ));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("reading {url}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Shows `text` in the page's status line (#status in index.html, a strip along the bottom
/// that never covers the grids), or hides the line when `text` is None. The canvas shows the same
/// progress; the line is there for people and tools that read the page's text.
fn page_status(text: Option<&str>) {
    let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("status"))
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    else {
        return;
    };
    el.set_text_content(text);
    el.set_hidden(text.is_none());
}

/// Fetches the bundled models one after another from assets/ and hands them to the worker.
pub(crate) fn fetch_bundled(jobs: UnboundedSender<Job>) {
    wasm_bindgen_futures::spawn_local(async move {
        let total = crate::bundled::BUNDLED.len();
        for (i, b) in crate::bundled::BUNDLED.iter().enumerate() {
            page_status(Some(&format!(
                "Loading models: {} ({} of {total})…",
                b.name,
                i + 1
            )));
            let _ = jobs.unbounded_send(Job::Progress {
                current: format!("{} from assets/{}", b.name, b.file),
            });
            let job = match fetch_bytes(&format!("assets/{}", b.file)).await {
                Ok(bytes) => Job::Load {
                    name: b.name.into(),
                    bytes,
                },
                Err(error) => Job::LoadError {
                    name: b.name.into(),
                    error,
                },
            };
            let _ = jobs.unbounded_send(job);
        }
        page_status(None);
    });
}

/// Opens the browser's file picker; the chosen model file goes to the worker.
pub(crate) fn pick_file(jobs: UnboundedSender<Job>) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Ok(input) = document.create_element("input").and_then(|e| {
        e.dyn_into::<web_sys::HtmlInputElement>()
            .map_err(Into::into)
    }) else {
        return;
    };
    input.set_type("file");
    input.set_accept(".safetensors");
    let picked = input.clone();
    let on_change = Closure::once(move || {
        let Some(file) = picked.files().and_then(|f| f.get(0)) else {
            return;
        };
        wasm_bindgen_futures::spawn_local(async move {
            let name = file.name();
            let job = match JsFuture::from(file.array_buffer()).await {
                Ok(buf) => Job::Load {
                    name,
                    bytes: js_sys::Uint8Array::new(&buf).to_vec(),
                },
                Err(e) => Job::LoadError {
                    name,
                    error: format!("{e:?}"),
                },
            };
            let _ = jobs.unbounded_send(job);
        });
    });
    input.set_onchange(Some(on_change.as_ref().unchecked_ref()));
    on_change.forget();
    input.click();
}

/// Creates the WebGPU device and runs `selftest::run`; resolves to the report as JSON, or rejects
/// with a message that says what is missing (e.g. no WebGPU in this browser).
#[wasm_bindgen]
pub async fn run_selftest(seed: f64) -> Result<String, JsValue> {
    let gpu = Gpu::new(GpuOptions::default())
        .await
        .map_err(|e| JsValue::from_str(&e.to_string()))?;
    let report = crate::selftest::run(&gpu, seed as u64).await;
    serde_json::to_string(&report).map_err(|e| JsValue::from_str(&e.to_string()))
}
