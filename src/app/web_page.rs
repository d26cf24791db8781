//! The web page around the app (wasm32 only), as a leaf that imports nothing else of `app/`: the
//! JSON the app publishes for the page's scripts and tests (`fewstep_result`, `fewstep_layout`,
//! `fewstep_status` in web.rs read it; web_status.rs makes it), where widgets were drawn, the
//! page's status line and message panel, the adapter's name, fetching bytes, the shipped data
//! set, and test hooks. Loading models is web_models.rs. The app calls into this module; web.rs
//! (the entry points) calls the app: one direction.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

thread_local! {
    static STATUS: RefCell<Option<String>> = const { RefCell::new(None) };
    static RESULT: RefCell<Option<String>> = const { RefCell::new(None) };
    static LAYOUT: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The adapter's name from the page's own WebGPU lookup, once it answers.
    static ADAPTER: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Where some widgets were drawn last (CSS pixels), for the page's tests to click them.
    static RECTS: RefCell<std::collections::BTreeMap<String, eframe::egui::Rect>> =
        const { RefCell::new(std::collections::BTreeMap::new()) };
    /// eframe's device (shared by the engine and the Train tab), for the lost-device test hook.
    static DEVICE: RefCell<Option<wgpu::Device>> = const { RefCell::new(None) };
}

/// Records where a widget was drawn (published in `fewstep_status()` as `rects`).
pub(crate) fn publish_rect(name: impl Into<String>, rect: eframe::egui::Rect) {
    RECTS.with(|r| r.borrow_mut().insert(name.into(), rect));
}

thread_local! {
    static TEST_SCRUB: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// Test hook (`fewstep_test_scrub`): asks the app for a run of blank steps.
pub(crate) fn ask_test_scrub(steps: usize, count: usize) {
    TEST_SCRUB.with(|t| t.set(Some((steps, count))));
}

pub(crate) fn take_test_scrub() -> Option<(usize, usize)> {
    TEST_SCRUB.with(|t| t.take())
}

pub(crate) fn remember_device(device: wgpu::Device) {
    DEVICE.with(|d| *d.borrow_mut() = Some(device));
}

/// Test hook (`fewstep_test_lose_device` in web.rs): destroys the page's device, a stand-in for
/// a GPU the browser lost. Returns whether there was one.
pub(crate) fn lose_device_for_test() -> bool {
    DEVICE.with(|d| d.borrow().as_ref().map(|dev| dev.destroy()).is_some())
}

/// Replaces the app with index.html's message panel: what happened to the GPU, what is lost,
/// and a button that reloads the page (`window.fewstepError` holds the text, for tests).
pub(crate) fn show_gpu_fault(e: &crate::gpu::GpuError) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let lost = matches!(e, crate::gpu::GpuError::Lost { .. });
    let title = if lost {
        "The GPU device was lost"
    } else {
        "The GPU reported an error"
    };
    let detail = match e {
        crate::gpu::GpuError::Lost { message, .. } => format!("WebGPU device {message}"),
        other => other.to_string(),
    };
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let html = if lost {
        format!(
            "<h1>{title}</h1><p>{}</p><p>What was running stopped. fewstep can start again on \
             a new device: the models come back from this page's cache, the students finished \
             so far stay in the list, and a lost training run is offered again.</p>\
             <p><button id=\"recover\" onclick=\"window.fewstepRecover()\">Start again on a \
             new device</button> <button id=\"reload\" onclick=\"location.reload()\">Reload \
             the page</button></p>",
            escape(&detail)
        )
    } else {
        format!(
            "<h1>{title}</h1><p>{}</p><p>fewstep cannot go on with it: what was running \
             stopped (students already finished and downloaded are safe; the others are gone). \
             Reloading the page starts again on a new device.</p>\
             <p><button id=\"reload\" onclick=\"location.reload()\">Reload the page</button></p>",
            escape(&detail)
        )
    };
    for id in ["app", "loading", "status"] {
        set_hidden(id, true);
    }
    if let Some(text) = document.get_element_by_id("message-text") {
        text.set_inner_html(&html);
    }
    set_hidden("message", false);
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(
            &w,
            &"fewstepError".into(),
            &format!("{title}: {detail}").into(),
        );
    }
}

/// Shows or hides one of index.html's elements by id (nothing happens where it is missing).
pub(crate) fn set_hidden(id: &str, hidden: bool) {
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id))
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        el.set_hidden(hidden);
    }
}

/// Undoes `show_gpu_fault`: the canvas again, no message (the app starts anew on it).
pub(crate) fn hide_gpu_fault() {
    set_hidden("message", true);
    set_hidden("app", false);
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::delete_property(&w, &"fewstepError".into());
    }
}

/// Resolves in a task of its own (one round trip through a `MessageChannel`): the page handles
/// input and draws in between. Not a timer, which a hidden tab clamps to one a second or a minute.
pub(crate) async fn next_task() {
    let Ok(channel) = web_sys::MessageChannel::new() else {
        return;
    };
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        channel.port1().set_onmessage(Some(&resolve));
        let _ = channel.port2().post_message(&JsValue::UNDEFINED);
    });
    let _ = JsFuture::from(promise).await;
    // Held until the message came: a port with no reference left may be collected first.
    channel.port1().set_onmessage(None);
}

/// This page's address (without its query string) followed by `?query`.
pub(crate) fn page_address(query: &str) -> String {
    let base = web_sys::window()
        .and_then(|w| {
            let l = w.location();
            Some(format!("{}{}", l.origin().ok()?, l.pathname().ok()?))
        })
        .unwrap_or_default();
    format!("{base}?{query}")
}

/// The adapter's name as the page's lookup found it (taken once).
pub(crate) fn adapter_name() -> Option<String> {
    ADAPTER.with(|r| r.borrow_mut().take())
}

/// Asks the browser for its WebGPU adapter's info (vendor, architecture, description) and keeps a
/// name made of them for the top bar: wgpu's name is the description alone, which browsers often
/// leave empty. Nothing happens where the lookup fails; the generic label stays.
pub(crate) fn look_up_adapter_name() {
    wasm_bindgen_futures::spawn_local(async {
        let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &JsValue::from_str(k)).ok();
        let text = |o: &JsValue, k: &str| {
            get(o, k)
                .and_then(|v| v.as_string())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(window) = web_sys::window() else {
            return;
        };
        let Some(gpu) = get(&window.navigator().into(), "gpu").filter(|g| g.is_object()) else {
            return;
        };
        let Some(request) =
            get(&gpu, "requestAdapter").and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        else {
            return;
        };
        let Ok(promise) = request.call0(&gpu) else {
            return;
        };
        let Ok(adapter) = JsFuture::from(js_sys::Promise::from(promise)).await else {
            return;
        };
        let Some(info) = get(&adapter, "info").filter(|i| i.is_object()) else {
            return;
        };
        let fallback = get(&info, "isFallbackAdapter").and_then(|v| v.as_bool()) == Some(true);
        let parts: Vec<String> = ["vendor", "architecture", "description"]
            .iter()
            .filter_map(|k| text(&info, k))
            .collect();
        if parts.is_empty() {
            return;
        }
        let name = format!(
            "{} (WebGPU in the browser{})",
            parts.join(" "),
            if fallback { ", software fallback" } else { "" }
        );
        ADAPTER.with(|r| *r.borrow_mut() = Some(name));
    });
}

/// What web_status.rs publishes for the page's scripts (read back by web.rs).
pub(crate) fn set_layout(json: String) {
    LAYOUT.with(|r| *r.borrow_mut() = Some(json));
}
pub(crate) fn set_status(json: String) {
    STATUS.with(|r| *r.borrow_mut() = Some(json));
}
pub(crate) fn set_result(json: String) {
    RESULT.with(|r| *r.borrow_mut() = Some(json));
}

/// Where the published widgets were drawn, as JSON (`fewstep_status().rects`).
pub(crate) fn rects_json() -> serde_json::Value {
    RECTS.with(|r| {
        r.borrow()
            .iter()
            .map(|(k, r)| {
                (
                    k.to_string(),
                    serde_json::json!({ "x": r.min.x, "y": r.min.y, "w": r.width(), "h": r.height() }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    })
}

pub fn layout_json() -> Option<String> {
    LAYOUT.with(|r| r.borrow().clone())
}

pub fn status_json() -> Option<String> {
    STATUS.with(|r| r.borrow().clone())
}

pub fn result_json() -> Option<String> {
    RESULT.with(|r| r.borrow().clone())
}

/// Fetches `url`, reading the body as a stream so that `on_bytes` hears how many bytes have
/// arrived after each chunk (the loading bar moves by bytes, not by file) and whether the page's
/// service worker (sw.js) answered from its cache.
pub(crate) async fn fetch_bytes(
    url: &str,
    mut on_bytes: impl FnMut(u64, bool),
) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("fetching {url} failed: {e:?}"))?
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_string())?;
    if !resp.ok() {
        return Err(format!(
            "fetching {url}: HTTP {} (serve the folder web/site builds, or the repository \
             root, where assets/ lives)",
            resp.status()
        ));
    }
    // sw.js marks what it answered from its cache (a visit before this one stored it).
    let cached = resp
        .headers()
        .get("x-fewstep-cache")
        .ok()
        .flatten()
        .as_deref()
        == Some("hit");
    on_bytes(0, cached);
    let Some(body) = resp.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| "the response body has no default reader".to_string())?;
    let mut bytes = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("reading {url}: {e:?}"))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(|e| format!("reading {url}: {e:?}"))?;
        bytes.extend_from_slice(&js_sys::Uint8Array::new(&value).to_vec());
        on_bytes(bytes.len() as u64, cached);
    }
    Ok(bytes)
}

/// Shows `text` in the page's status line (#status in index.html, a strip along the bottom
/// that never covers the grids), or hides the line when `text` is None. The canvas shows the same
/// progress; the line is there for people and tools that read the page's text.
pub(crate) fn page_status(text: Option<&str>) {
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

/// Whether `?model=` names a folder (a diffusers pipeline hosted beside the page) rather than a
/// model file: it ends with a slash.
pub(crate) fn names_a_folder(path: &str) -> bool {
    path.ends_with('/')
}

/// A dropped item the browser could not read: a folder, most likely (a page is given the files
/// of a drop, never a folder's contents), which gets a message saying what works instead.
pub(crate) fn explain_unreadable_drop(name: &str, error: String) -> String {
    if name.contains('.') {
        return error;
    }
    format!(
        "{name} looks like a folder, and a browser gives a web page only the files of a drop: \
         drop the files inside a diffusers pipeline folder instead (unet/config.json, \
         unet/diffusion_pytorch_model.safetensors and scheduler/scheduler_config.json, together \
         or one after another), or host the folder beside the page and open \
         ?model={name}/ ({error})"
    )
}

thread_local! {
    static SUBSET: RefCell<Option<crate::data::Dataset>> = const { RefCell::new(None) };
}

/// The data set the page ships (the first 10,000 Fashion-MNIST training images, IDX + gzip).
pub const DATA_DIR: &str = "assets/fmnist-10k";

/// The Fashion-MNIST subset the page ships ([`DATA_DIR`]), fetched once.
pub(crate) async fn fashion_mnist_subset() -> anyhow::Result<crate::data::Dataset> {
    if let Some(d) = SUBSET.with(|s| s.borrow().clone()) {
        return Ok(d);
    }
    let dir = DATA_DIR;
    let get = |f: &'static str| async move {
        fetch_bytes(&format!("{dir}/{f}"), |_, _| {})
            .await
            .map_err(anyhow::Error::msg)
    };
    let images = get("train-images-idx3-ubyte.gz").await?;
    let labels = get("train-labels-idx1-ubyte.gz").await?;
    let data = crate::data::idx_from_gz_bytes("fashion-mnist", &images, &labels, true)?;
    SUBSET.with(|s| *s.borrow_mut() = Some(data.clone()));
    Ok(data)
}
