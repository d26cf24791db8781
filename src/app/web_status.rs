//! What the app publishes for the page's scripts and tests (wasm32 only): the sample view's
//! layout, the app's status (models, loading, the cache and the kept models, where widgets
//! were drawn) and the last run's values, as JSON handed to web_page.rs.

use super::state::{AppState, SampleView, SCRUB_CAP_BYTES};
use super::web_page;

pub(crate) fn publish_layout(
    pixels_per_point: f32,
    texture_size: [u32; 2],
    step: usize,
    view: &SampleView,
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
        "pad": super::texture::PAD,
        "step": step,
        "steps": view.steps,
        "grids": grids,
        // What the run holds on the GPU for scrubbing, against its cap.
        "scrubBytes": view.scrub_bytes(),
        "scrubPeak": view.peak_bytes,
        "scrubCap": SCRUB_CAP_BYTES,
        "scrubFrames": view.frames.len(),
        "scrubStride": view.stride,
        "newestStep": view.newest_step,
    });
    web_page::set_layout(json.to_string());
}

pub(crate) fn publish_status(
    ctx: &eframe::egui::Context,
    adapter: &str,
    status: &str,
    done: usize,
    expected: usize,
    models: Vec<String>,
    gpu: Option<&crate::gpu::Gpu>,
) {
    let tuned = crate::tensor::tuner::tuned_so_far();
    let json = serde_json::json!({
        "adapter": adapter,
        "status": status,
        "loadingDone": done,
        "loadingExpected": expected,
        "models": models,
        "cache": super::web_cache::status_json(),
        "kept": super::web_store::status_json(),
        // The GEMM kernel plan: whether the page tunes, what it tuned between steps so far, and
        // how many entries local storage keeps for this GPU.
        "tuning": {
            "on": gpu.is_some_and(|g| g.tunes()),
            "tuned": tuned.problems,
            "seconds": tuned.seconds,
            "plan": gpu.filter(|g| g.tunes()).map_or(0, crate::tensor::tuner::kept_entries),
        },
        // How far right anything was laid out, against the page's width (CSS pixels): more
        // than the width means something runs past the edge (a phone's 390 px).
        "usedRight": ctx.globally_used_rect().max.x,
        "screenWidth": ctx.content_rect().width(),
        "rects": web_page::rects_json(),
    });
    web_page::set_status(json.to_string());
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
    web_page::set_result(json.to_string());
}
