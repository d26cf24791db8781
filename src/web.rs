//! Browser entry points (wasm32 only).
//! - `start_app(canvas_id)`: the fewstep app (index.html), configured by the page's query string.
//! - `fewstep_result()`: the last finished sample run as JSON, for the headless-Chromium test
//!   that checks the page draws what native `fewstep sample` draws.
//! - `run_selftest(seed)`: the kernel self-test (web/selftest.html).

use std::cell::RefCell;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::app::{web_page, wgpu_options, FewstepApp, StartOptions};
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
    use web_page::set_hidden;
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
    static RUNNER: RefCell<Option<eframe::WebRunner>> = const { RefCell::new(None) };
    /// The canvas and the start options of the running app, for `fewstep_recover`.
    static STARTED: RefCell<Option<(String, StartOptions)>> = const { RefCell::new(None) };
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
    STARTED.with(|s| *s.borrow_mut() = Some((canvas_id, start.clone())));
    run_app(canvas, start).await
}

async fn run_app(canvas: web_sys::HtmlCanvasElement, start: StartOptions) -> Result<(), JsValue> {
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

/// After the page's GPU device was lost (its message's "Start again on a new device"): ends the
/// app on the lost device and starts it again on a new one, on the same canvas. Models kept
/// before (bundled ones from the page's cache, those opened or made here from memory) are
/// loaded again and a run that was lost is offered in the Train tab; nothing starts by itself.
#[wasm_bindgen]
pub async fn fewstep_recover() -> Result<(), JsValue> {
    let (canvas_id, first) = STARTED
        .with(|s| s.borrow().clone())
        .ok_or("the app was never started")?;
    if let Some(old) = RUNNER.with(|r| r.borrow_mut().take()) {
        old.destroy();
    }
    web_page::hide_gpu_fault();
    let canvas = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(&canvas_id))
        .ok_or("the page lost its canvas")?
        .dyn_into::<web_sys::HtmlCanvasElement>()?;
    let start = StartOptions {
        // A hosted model named in the address is fetched again; no run starts by itself.
        model: first.model.filter(|m| m.ends_with(".safetensors")),
        recovered: true,
        ..Default::default()
    };
    run_app(canvas, start).await
}

/// Where the Sample tab drew its two grids in the last frame, as JSON: {pixelsPerPoint,
/// textureSize: [w, h], pad, step, steps, grids: [{name, x, y, w, h}]} (rectangles in CSS
/// pixels); null before a run is drawn. With `fewstep_result()` a test can predict every canvas
/// pixel of the grids (texel = value * 127.5 + 127.5, nearest filtering, a scale of at least 1).
#[wasm_bindgen]
pub fn fewstep_layout() -> Option<String> {
    web_page::layout_json()
}

/// What the app tells the visitor, as JSON: {adapter, status, loadingDone, loadingExpected,
/// models}: the adapter named in the top bar,
/// the status line's text (an error such as a model file that could not be loaded), how many
/// model files have been handled of those expected, and the names of the models loaded.
#[wasm_bindgen]
pub fn fewstep_status() -> Option<String> {
    web_page::status_json()
}

/// The last finished sample run: {model, steps, seed, count, sampler, clip, shape, ms, values},
/// values being the samples (N x C x H x W, in [-1, 1]); null before the first run finishes.
#[wasm_bindgen]
pub fn fewstep_result() -> Option<String> {
    web_page::result_json()
}

/// The last distillation of the Train tab: {done, total, seconds, ended, failed, losses,
/// students: [{name, steps, file (base64 model file)}]}; null before the first one starts.
#[wasm_bindgen]
pub fn fewstep_distilled() -> Option<String> {
    crate::app::web_distill::last_run_json()
}

/// Test hook: destroys the page's WebGPU device (a stand-in for one the browser lost); the page
/// then shows its lost-device message. Returns whether there was a device.
#[wasm_bindgen]
pub fn fewstep_test_lose_device() -> bool {
    web_page::lose_device_for_test()
}

/// Test hook: a run of `steps` blank steps of `count` images of the selected model, drawn into
/// textures as sampling would (no model evaluated, so a 1024-step run takes seconds on a
/// software adapter); `fewstepLayout()` then says what the step slider holds on the GPU.
#[wasm_bindgen]
pub fn fewstep_test_scrub(steps: usize, count: usize) {
    web_page::ask_test_scrub(steps, count);
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
