//! The Models tab's view of what the page keeps in the browser (wasm32 only): sw.js stores the
//! wasm, the models and the data in the Cache API, keyed by content hash (files.json), so a
//! second visit fetches nothing it has and the page works offline. index.html's
//! `fewstepCacheInfo()` and `fewstepCacheClear()` read and empty that cache; this module calls
//! them and draws the result with a button that clears it.

use std::cell::RefCell;

use eframe::egui::{self, Color32, RichText, Ui};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// What the cache holds, as the page last reported it.
#[derive(Clone, Debug, Default)]
struct Info {
    files: usize,
    bytes: f64,
    usage: Option<f64>,
    quota: Option<f64>,
    persisted: Option<bool>,
    /// Files sw.js could not store (e.g. over the quota): kept in memory for this visit only.
    errors: Vec<String>,
}

thread_local! {
    static INFO: RefCell<Option<Result<Info, String>>> = const { RefCell::new(None) };
    /// Whether a query or a clearing is under way (one at a time).
    static BUSY: RefCell<bool> = const { RefCell::new(false) };
    static NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn page_function(name: &str) -> Option<js_sys::Function> {
    let w = web_sys::window()?;
    js_sys::Reflect::get(&w, &name.into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()
}

async fn call(name: &str) -> Result<wasm_bindgen::JsValue, String> {
    let f = page_function(name)
        .ok_or_else(|| "this page has no cache (index.html without sw.js)".to_string())?;
    let promise = f
        .call0(&wasm_bindgen::JsValue::NULL)
        .map_err(|e| format!("{e:?}"))?;
    JsFuture::from(js_sys::Promise::from(promise))
        .await
        .map_err(|e| format!("{e:?}"))
}

fn number(v: &wasm_bindgen::JsValue, key: &str) -> Option<f64> {
    js_sys::Reflect::get(v, &key.into()).ok()?.as_f64()
}

async fn read_info() -> Result<Info, String> {
    let v = call("fewstepCacheInfo").await?;
    let get = |k: &str| js_sys::Reflect::get(&v, &k.into()).ok();
    let files = get("files")
        .map(|f| js_sys::Array::from(&f).length() as usize)
        .unwrap_or(0);
    let errors = get("errors")
        .map(|e| {
            js_sys::Array::from(&e)
                .iter()
                .map(|x| {
                    let path = js_sys::Reflect::get(&x, &"path".into())
                        .ok()
                        .and_then(|p| p.as_string());
                    let error = js_sys::Reflect::get(&x, &"error".into())
                        .ok()
                        .and_then(|p| p.as_string());
                    format!(
                        "{} ({})",
                        path.unwrap_or_default(),
                        error.unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Info {
        files,
        bytes: number(&v, "bytes").unwrap_or(0.0),
        usage: number(&v, "usage"),
        quota: number(&v, "quota"),
        persisted: get("persisted").and_then(|p| p.as_bool()),
        errors,
    })
}

/// Asks the page again (after loading, clearing, or when the tab opens).
pub fn refresh(ctx: &egui::Context) {
    if BUSY.with(|b| b.replace(true)) {
        return;
    }
    let ctx = ctx.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let info = read_info().await;
        INFO.with(|i| *i.borrow_mut() = Some(info));
        BUSY.with(|b| *b.borrow_mut() = false);
        ctx.request_repaint();
    });
}

fn clear(ctx: &egui::Context) {
    if BUSY.with(|b| b.replace(true)) {
        return;
    }
    let ctx = ctx.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let note = match call("fewstepCacheClear").await {
            Ok(freed) => format!(
                "cleared {:.1} MB: the next visit downloads everything again (the models stay \
                 loaded for this one)",
                freed.as_f64().unwrap_or(0.0) / 1e6
            ),
            Err(e) => format!("could not clear the cache: {e}"),
        };
        NOTE.with(|n| *n.borrow_mut() = Some(note));
        BUSY.with(|b| *b.borrow_mut() = false);
        refresh(&ctx);
    });
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

/// The Models tab's cache section.
pub fn show(ui: &mut Ui) {
    let info = INFO.with(|i| i.borrow().clone());
    let Some(info) = info else {
        refresh(ui.ctx());
        ui.label("stored in this browser: asking…");
        return;
    };
    ui.horizontal_wrapped(|ui| {
        match &info {
            Ok(i) => {
                let mut text = format!(
                    "stored in this browser for the next visit and offline use: {} files, {}",
                    i.files,
                    mb(i.bytes)
                );
                if let (Some(u), Some(q)) = (i.usage, i.quota) {
                    text += &format!(
                        " (this site uses {} of the {} the browser allows",
                        mb(u),
                        mb(q)
                    );
                    text += match i.persisted {
                        Some(true) => "; kept until you clear it)",
                        Some(false) => "; the browser may evict it when space runs low)",
                        None => ")",
                    };
                }
                ui.label(text);
            }
            Err(e) => {
                ui.label(format!("stored in this browser: nothing ({e})"));
            }
        }
        let can_clear = matches!(&info, Ok(i) if i.files > 0);
        let button = ui.add_enabled(can_clear, egui::Button::new("Clear the cache"));
        crate::app::web_page::publish_rect("clearCache", button.rect);
        if button.clicked() {
            clear(ui.ctx());
        }
        if ui
            .small_button("Refresh")
            .on_hover_text("ask the browser again")
            .clicked()
        {
            refresh(ui.ctx());
        }
    });
    if let Ok(i) = &info {
        for e in &i.errors {
            ui.label(
                RichText::new(format!(
                    "could not store {e}: it stays in memory for this visit only"
                ))
                .color(Color32::from_rgb(230, 180, 80)),
            );
        }
    }
    if let Some(n) = NOTE.with(|n| n.borrow().clone()) {
        ui.label(RichText::new(n).weak());
    }
}

/// For fewstep_status(): what the section shows.
pub fn status_json() -> serde_json::Value {
    let info = INFO.with(|i| i.borrow().clone());
    let ok = info.as_ref().and_then(|i| i.as_ref().ok());
    serde_json::json!({
        "files": ok.map(|i| i.files),
        "bytes": ok.map(|i| i.bytes),
        "errors": ok.map(|i| i.errors.clone()),
        "note": NOTE.with(|n| n.borrow().clone()),
    })
}
