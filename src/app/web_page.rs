//! The web page around the app (wasm32 only): what the app publishes for the page's scripts and
//! tests (`fewstep_result`, `fewstep_layout`, `fewstep_status` in web.rs read it), the page's
//! status line, fetching the bundled models and the file picker. The app calls into this module;
//! web.rs (the entry points) calls the app: one direction.

use std::cell::RefCell;

use futures_channel::mpsc::UnboundedSender;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::engine::Job;
use super::state::AppState;

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

pub fn layout_json() -> Option<String> {
    LAYOUT.with(|r| r.borrow().clone())
}

pub fn status_json() -> Option<String> {
    STATUS.with(|r| r.borrow().clone())
}

pub fn result_json() -> Option<String> {
    RESULT.with(|r| r.borrow().clone())
}

pub(crate) fn publish_layout(
    pixels_per_point: f32,
    texture_size: [u32; 2],
    step: usize,
    view: &crate::app::state::SampleView,
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
        "steps": view.steps,
        "grids": grids,
        // What the run holds on the GPU for scrubbing, against its cap.
        "scrubBytes": view.scrub_bytes(),
        "scrubPeak": view.peak_bytes,
        "scrubCap": crate::app::state::SCRUB_CAP_BYTES,
        "scrubFrames": view.frames.len(),
        "scrubStride": view.stride,
        "newestStep": view.newest_step,
    });
    LAYOUT.with(|r| *r.borrow_mut() = Some(json.to_string()));
}

pub(crate) fn publish_status(
    ctx: &eframe::egui::Context,
    adapter: &str,
    status: &str,
    done: usize,
    expected: usize,
    models: Vec<String>,
) {
    let json = serde_json::json!({
        "adapter": adapter,
        "status": status,
        "loadingDone": done,
        "loadingExpected": expected,
        "models": models,
        "cache": super::web_cache::status_json(),
        "kept": super::web_store::status_json(),
        // How far right anything was laid out, against the page's width (CSS pixels): more
        // than the width means something runs past the edge (a phone's 390 px).
        "usedRight": ctx.globally_used_rect().max.x,
        "screenWidth": ctx.content_rect().width(),
        "rects": RECTS.with(|r| r.borrow().iter().map(|(k, r)| (k.to_string(), serde_json::json!({
            "x": r.min.x, "y": r.min.y, "w": r.width(), "h": r.height(),
        }))).collect::<serde_json::Map<_, _>>()),
    });
    STATUS.with(|r| *r.borrow_mut() = Some(json.to_string()));
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

/// Fetches `url`, reading the body as a stream so that `on_bytes` hears how many bytes have
/// arrived after each chunk (the loading bar moves by bytes, not by file) and whether the page's
/// service worker (sw.js) answered from its cache.
async fn fetch_bytes(url: &str, mut on_bytes: impl FnMut(u64, bool)) -> Result<Vec<u8>, String> {
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

/// Fetches the bundled models one after another from assets/ and hands them to the worker;
/// progress goes to the worker (bytes) and to the page's status line. Then, with `with_kept`,
/// the models kept in the browser's storage (web_store.rs), and last `extra`: a model file the
/// address names (a path relative to the page), or its kept copy when the fetch fails.
pub(crate) fn fetch_bundled(
    jobs: UnboundedSender<Job>,
    extra: Option<String>,
    with_kept: bool,
    ctx: eframe::egui::Context,
) {
    wasm_bindgen_futures::spawn_local(async move {
        // Before any model loads, so that the start options (applied once they have) know
        // whether a run waits to be resumed.
        super::web_distill::look_for_interrupted(&ctx).await;
        let mut kept = if with_kept {
            super::web_store::kept_models().await
        } else {
            Vec::new()
        };
        // A kept copy of the address's model stands in for it only when the fetch fails.
        let kept_extra = extra
            .as_ref()
            .and_then(|x| kept.iter().position(|k| &k.name == x))
            .map(|i| kept.remove(i));
        kept.retain(|k| crate::bundled::find(&k.name).is_none());
        if !kept.is_empty() {
            let _ = jobs.unbounded_send(Job::Expect { more: kept.len() });
        }
        let total = crate::bundled::BUNDLED.len();
        let total_bytes = crate::bundled::total_size() as u64;
        let mut before = 0u64;
        for (i, b) in crate::bundled::BUNDLED.iter().enumerate() {
            let current = format!("{} from assets/{}", b.name, b.file);
            // `cached`: None before the response came (the count so far is shown).
            let progress = |got: u64, cached: Option<bool>| {
                let done = (before + got).min(total_bytes);
                let amount = match cached {
                    Some(true) => ", cached".to_string(),
                    None | Some(false) => format!(
                        ", {:.1} of {:.1} MB",
                        done as f64 / 1e6,
                        total_bytes as f64 / 1e6
                    ),
                };
                page_status(Some(&format!(
                    "Loading models: {} ({} of {total}){amount}…",
                    b.name,
                    i + 1,
                )));
                let _ = jobs.unbounded_send(Job::Progress {
                    current: current.clone(),
                    bytes: Some((done, total_bytes)),
                    cached: cached == Some(true),
                });
            };
            progress(0, None);
            let job = match fetch_bytes(&format!("assets/{}", b.file), |got, cached| {
                progress(got, Some(cached))
            })
            .await
            {
                Ok(bytes) => {
                    super::web_distill::remember_file(b.name, &bytes);
                    Job::Load {
                        name: b.name.into(),
                        bytes,
                    }
                }
                Err(error) => Job::LoadError {
                    name: b.name.into(),
                    error,
                },
            };
            before += b.size as u64;
            let _ = jobs.unbounded_send(job);
        }
        for k in kept {
            super::web_distill::remember_file(&k.name, &k.bytes);
            let _ = jobs.unbounded_send(Job::Load {
                name: k.name,
                bytes: k.bytes,
            });
        }
        if let Some(path) = extra {
            page_status(Some(&format!("Loading {path}…")));
            let fetched = if names_a_folder(&path) {
                fetch_pipeline(&path).await
            } else {
                fetch_bytes(&path, |_, _| {}).await
            };
            let job = match (fetched, kept_extra) {
                (Ok(bytes), kept) => {
                    if kept.is_some_and(|k| k.bytes == bytes) {
                        super::web_distill::remember_file(&path, &bytes);
                    } else {
                        super::web_distill::keep_file(&path, &bytes, "opened");
                    }
                    Job::Load { name: path, bytes }
                }
                (Err(_), Some(k)) => {
                    super::web_distill::remember_file(&path, &k.bytes);
                    Job::Load {
                        name: path,
                        bytes: k.bytes,
                    }
                }
                (Err(error), None) => Job::LoadError { name: path, error },
            };
            let _ = jobs.unbounded_send(job);
        }
        page_status(None);
    });
}

/// Whether `?model=` names a folder (a diffusers pipeline hosted beside the page) rather than a
/// model file: it ends with a slash.
pub(crate) fn names_a_folder(path: &str) -> bool {
    path.ends_with('/')
}

/// A diffusers pipeline folder hosted beside the page: its unet config, weights and scheduler
/// config fetched and made into a fewstep model file, as `--model FOLDER` does natively.
async fn fetch_pipeline(folder: &str) -> Result<Vec<u8>, String> {
    use crate::diffusers::PipelineParts;
    let text = |bytes: Vec<u8>, file: &str| {
        String::from_utf8(bytes).map_err(|_| format!("{folder}{file} is not UTF-8 text"))
    };
    let get = |file: &'static str| async move {
        fetch_bytes(&format!("{folder}{file}"), |_, _| {}).await
    };
    let unet_config = text(get("unet/config.json").await?, "unet/config.json")?;
    let scheduler_config = text(
        get("scheduler/scheduler_config.json").await?,
        "scheduler/scheduler_config.json",
    )?;
    let weights = get("unet/diffusion_pytorch_model.safetensors").await?;
    let parts = PipelineParts {
        unet_config,
        scheduler_config,
        weights,
    };
    crate::diffusion::model_file::pipeline_model_bytes(&parts, folder).map_err(|e| e.to_string())
}

thread_local! {
    /// The files of a diffusers pipeline dropped so far (a browser gives a page the files of a
    /// drop, not their folders).
    static PIPELINE: RefCell<crate::diffusers::PipelineFiles> = RefCell::default();
    static DROPPED_PIPELINES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A file the visitor opened (dropped or picked): a model file is kept by name and loaded; one
/// of a diffusers pipeline's files waits for the rest ([`pipeline_part`]).
pub(crate) fn opened_file(name: String, bytes: Vec<u8>) -> Job {
    if crate::diffusers::PipelineFiles::is_part(&name) {
        return pipeline_part(name, bytes);
    }
    super::web_distill::keep_file(&name, &bytes, "opened");
    Job::Load { name, bytes }
}

/// One of a diffusers pipeline's files, dropped on the page: kept until the unet config, its
/// weights and the scheduler config have all arrived (in one drop or several), then the model.
fn pipeline_part(name: String, bytes: Vec<u8>) -> Job {
    PIPELINE.with(|p| {
        let mut p = p.borrow_mut();
        if let Err(e) = p.add(&name, bytes) {
            return Job::LoadError {
                name,
                error: e.to_string(),
            };
        }
        let Some(parts) = p.take_complete() else {
            return Job::Held {
                name,
                note: p.waiting_note(),
            };
        };
        // Several dropped pipelines without a recorded name are told apart by a number.
        let dropped = DROPPED_PIPELINES.with(|n| n.replace(n.get() + 1) + 1);
        let fallback = match dropped {
            1 => "dropped diffusers pipeline".to_string(),
            n => format!("dropped diffusers pipeline {n}"),
        };
        let model = crate::diffusers::model_name(&parts.unet_config, &fallback);
        match crate::diffusion::model_file::pipeline_model_bytes(&parts, &model) {
            Ok(bytes) => {
                super::web_distill::keep_file(&model, &bytes, "opened");
                Job::Load { name: model, bytes }
            }
            Err(e) => Job::LoadError {
                name: model,
                error: e.to_string(),
            },
        }
    })
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

/// Opens the browser's file picker; the chosen model files go to the worker (several at once:
/// a diffusers pipeline's files are picked together).
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
    input.set_accept(".safetensors,.json");
    input.set_multiple(true);
    let picked = input.clone();
    let on_change: Closure<dyn FnMut()> = Closure::once(move || {
        let Some(files) = picked.files() else {
            return;
        };
        let files: Vec<web_sys::File> = (0..files.length()).filter_map(|i| files.get(i)).collect();
        wasm_bindgen_futures::spawn_local(async move {
            for file in files {
                let name = file.name();
                let job = match JsFuture::from(file.array_buffer()).await {
                    Ok(buf) => opened_file(name, js_sys::Uint8Array::new(&buf).to_vec()),
                    Err(e) => Job::LoadError {
                        name,
                        error: format!("{e:?}"),
                    },
                };
                let _ = jobs.unbounded_send(job);
            }
        });
    });
    input.set_onchange(Some(on_change.as_ref().unchecked_ref()));
    // Kept until the picker opens again (that input is gone by then), not leaked each time.
    PICKER.with(|p| *p.borrow_mut() = Some(on_change));
    input.click();
}

thread_local! {
    /// The file picker's change handler (one picker at a time).
    static PICKER: RefCell<Option<Closure<dyn FnMut()>>> = const { RefCell::new(None) };
    static SUBSET: RefCell<Option<crate::data::Dataset>> = const { RefCell::new(None) };
}

/// The Fashion-MNIST subset the page ships (web_distill::DATA_DIR), fetched once.
pub(crate) async fn fashion_mnist_subset() -> anyhow::Result<crate::data::Dataset> {
    if let Some(d) = SUBSET.with(|s| s.borrow().clone()) {
        return Ok(d);
    }
    let dir = super::web_distill::DATA_DIR;
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
