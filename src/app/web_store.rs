//! What the tab keeps in the browser's own storage (wasm32 only), through `window.fewstepStore`
//! (web/store.js: OPFS, else IndexedDB): every model the visitor made or opened (a file, a link,
//! a dropped pipeline), listed again after a reload until removed in the Models tab, and the
//! checkpoint of an in-tab run. A model the storage refuses (a full quota) stays usable for the
//! visit and the Models tab says what to do; nothing kept before is touched.

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The storage's spaces (web/store.js SPACES).
pub const MODELS: &str = "models";
pub const RUNS: &str = "runs";

/// One kept entry.
pub struct Entry {
    pub name: String,
    pub bytes: Vec<u8>,
    /// What the entry takes in storage (the bytes and a small header).
    pub stored: u64,
    /// The JSON kept with it: `kept` (ms since 1970), and what the writer gave (a model's
    /// `origin`: "made" or "opened"; a run's `run`).
    pub info: serde_json::Value,
}

thread_local! {
    /// The models kept, by name: what each takes in storage (the Models tab's summary).
    static KEPT: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
    /// The models kept or being written: one removed while its write is under way is deleted
    /// once the write ends.
    static WANTED: RefCell<std::collections::BTreeSet<String>> =
        const { RefCell::new(std::collections::BTreeSet::new()) };
    /// Models the storage refused, as the Models tab explains them.
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// 'opfs', 'indexeddb', or why there is none.
    static KIND: RefCell<Option<Result<String, String>>> = const { RefCell::new(None) };
}

fn store() -> Result<JsValue, String> {
    let w = web_sys::window().ok_or("no window")?;
    let s = js_sys::Reflect::get(&w, &"fewstepStore".into()).map_err(|e| format!("{e:?}"))?;
    if s.is_undefined() {
        return Err("this page has no web/store.js (index.html without it)".into());
    }
    Ok(s)
}

fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn call(method: &str, args: &[JsValue]) -> Result<JsValue, String> {
    let s = store()?;
    let f: js_sys::Function = js_sys::Reflect::get(&s, &method.into())
        .map_err(js_error)?
        .dyn_into()
        .map_err(|_| format!("fewstepStore.{method} is not a function"))?;
    let array: js_sys::Array = args.iter().collect();
    let promise = f.apply(&s, &array).map_err(js_error)?;
    JsFuture::from(js_sys::Promise::from(promise))
        .await
        .map_err(js_error)
}

fn entry_of(v: &JsValue) -> Option<Entry> {
    let get = |k: &str| js_sys::Reflect::get(v, &k.into()).ok();
    let name = get("name")?.as_string()?;
    let bytes = js_sys::Uint8Array::new(&get("bytes")?).to_vec();
    let stored = get("stored").and_then(|s| s.as_f64()).unwrap_or(0.0) as u64;
    let info = get("json")
        .and_then(|j| j.as_string())
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    Some(Entry {
        name,
        bytes,
        stored,
        info,
    })
}

/// Every entry of a space.
pub async fn list(space: &str) -> Result<Vec<Entry>, String> {
    let v = call("list", &[space.into()]).await?;
    Ok(js_sys::Array::from(&v)
        .iter()
        .filter_map(|e| entry_of(&e))
        .collect())
}

/// One entry, or None.
pub async fn get(space: &str, name: &str) -> Result<Option<Entry>, String> {
    let v = call("get", &[space.into(), name.into()]).await?;
    Ok(if v.is_null() || v.is_undefined() {
        None
    } else {
        entry_of(&v)
    })
}

/// The names of a space's entries.
pub async fn names(space: &str) -> Result<Vec<String>, String> {
    let v = call("names", &[space.into()]).await?;
    Ok(js_sys::Array::from(&v)
        .iter()
        .filter_map(|n| n.as_string())
        .collect())
}

/// Keeps `bytes` under `name` with `info` (a JSON object), replacing the old entry only once
/// the new one is whole; resolves to what it takes in storage.
pub async fn put(
    space: &str,
    name: &str,
    bytes: &[u8],
    info: serde_json::Value,
) -> Result<u64, String> {
    let info = js_sys::JSON::parse(&info.to_string()).map_err(js_error)?;
    let v = call(
        "put",
        &[
            space.into(),
            name.into(),
            js_sys::Uint8Array::from(bytes).into(),
            info,
        ],
    )
    .await?;
    Ok(v.as_f64().unwrap_or(0.0) as u64)
}

pub async fn remove(space: &str, name: &str) -> Result<bool, String> {
    Ok(call("remove", &[space.into(), name.into()])
        .await?
        .as_bool()
        .unwrap_or(false))
}

/// The models kept before this visit (read once as the page starts), oldest first.
pub async fn kept_models() -> Vec<Entry> {
    let kind = call("kind", &[]).await.map(|k| {
        k.as_string()
            .unwrap_or_else(|| "none (neither OPFS nor IndexedDB)".into())
    });
    KIND.with(|k| *k.borrow_mut() = Some(kind));
    let mut models = match list(MODELS).await {
        Ok(m) => m,
        Err(e) => {
            note_error(format!(
                "could not read the models kept in this browser: {e}"
            ));
            return Vec::new();
        }
    };
    let at = |e: &Entry| e.info.get("kept").and_then(|k| k.as_f64()).unwrap_or(0.0);
    models.sort_by(|a, b| at(a).total_cmp(&at(b)).then(a.name.cmp(&b.name)));
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        for m in &models {
            k.insert(m.name.clone(), m.stored);
        }
    });
    WANTED.with(|w| w.borrow_mut().extend(models.iter().map(|m| m.name.clone())));
    models
}

fn note_error(text: String) {
    ERRORS.with(|e| e.borrow_mut().push(text));
}

/// Keeps a model the visitor made or opened, in the background; a refusal is explained in the
/// Models tab (the model stays loaded for this visit either way).
pub fn keep_model(name: &str, bytes: &[u8], origin: &'static str) {
    let name = name.to_string();
    let bytes = bytes.to_vec();
    wasm_bindgen_futures::spawn_local(async move { keep_model_now(&name, &bytes, origin).await });
}

/// [`keep_model`], returning once the storage has it (or refused it).
pub async fn keep_model_now(name: &str, bytes: &[u8], origin: &'static str) {
    WANTED.with(|w| w.borrow_mut().insert(name.to_string()));
    match put(MODELS, name, bytes, serde_json::json!({ "origin": origin })).await {
        Ok(stored) => {
            if WANTED.with(|w| w.borrow().contains(name)) {
                KEPT.with(|k| k.borrow_mut().insert(name.to_string(), stored));
            } else {
                // Removed from the list while it was being written.
                let _ = remove(MODELS, name).await;
            }
        }
        Err(e) => note_error(refusal(name, bytes.len(), origin, &e).await),
    }
}

/// Why a model was not kept, and what the visitor can do.
async fn refusal(name: &str, size: usize, origin: &str, error: &str) -> String {
    let mb = |b: f64| format!("{:.1} MB", b / 1e6);
    // A model made here exists nowhere else; one opened is still where it came from.
    let keep = if origin == "made" {
        "download it from the Train tab (Download, beside it)"
    } else {
        "remove models you no longer need in this tab, then open it again"
    };
    let room = estimate()
        .await
        .map(|(u, q)| format!(" (this site uses {} of the {} it may)", mb(u), mb(q)))
        .unwrap_or_default();
    // Chromium reports a full quota as QuotaExceededError, but a write it cuts off for lack of
    // room can also end in AbortError ("Failed to write data to data pipe") or
    // NotReadableError; those are named as they came, with the likely cause.
    let why = if error.contains("QuotaExceeded") {
        format!("its storage is full{room}")
    } else {
        format!("the storage refused it ({error}), most often because it is full{room}")
    };
    format!(
        "could not keep {name} ({}) in this browser: {why}. It stays usable until the tab \
         closes; to keep it, {keep}. Nothing kept before was lost.",
        mb(size as f64)
    )
}

async fn estimate() -> Option<(f64, f64)> {
    // Through Reflect: web-sys's StorageManager is one more feature for one call.
    let storage = js_sys::Reflect::get(&web_sys::window()?.navigator(), &"storage".into()).ok()?;
    let estimate: js_sys::Function = js_sys::Reflect::get(&storage, &"estimate".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let promise = estimate.call0(&storage).ok()?;
    let v = JsFuture::from(js_sys::Promise::from(promise)).await.ok()?;
    let n = |k: &str| js_sys::Reflect::get(&v, &k.into()).ok()?.as_f64();
    Some((n("usage")?, n("quota")?))
}

/// The Models tab removed a model: its kept bytes go too.
pub fn drop_model(name: &str) {
    KEPT.with(|k| k.borrow_mut().remove(name));
    if !WANTED.with(|w| w.borrow_mut().remove(name)) {
        return;
    }
    let name = name.to_string();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = remove(MODELS, &name).await {
            note_error(format!(
                "could not delete {name} from this browser's storage ({e}): it comes back after \
                 a reload; remove it again then"
            ));
        }
    });
}

/// The Models tab's line on kept models, and the refusals.
pub fn show(ui: &mut eframe::egui::Ui) {
    use eframe::egui::{Color32, RichText};
    let (n, bytes) = KEPT.with(|k| {
        let k = k.borrow();
        (k.len(), k.values().sum::<u64>())
    });
    let kind = KIND.with(|k| k.borrow().clone());
    let text = match kind {
        None => "models kept in this browser: asking…".to_string(),
        Some(Err(e)) => format!("models kept in this browser: none ({e})"),
        Some(Ok(kind)) => format!(
            "kept in this browser ({kind}) until you remove them: {n} model{} you made or \
             opened, {:.1} MB",
            if n == 1 { "" } else { "s" },
            bytes as f64 / 1e6
        ),
    };
    ui.label(text);
    for e in ERRORS.with(|e| e.borrow().clone()) {
        ui.label(RichText::new(e).color(Color32::from_rgb(230, 180, 80)));
    }
}

/// For fewstep_status(): the kept models and the refusals.
pub fn status_json() -> serde_json::Value {
    serde_json::json!({
        "kind": KIND.with(|k| k.borrow().clone().map(|k| k.unwrap_or_else(|e| e))),
        "models": KEPT.with(|k| k.borrow().clone()),
        "errors": ERRORS.with(|e| e.borrow().clone()),
    })
}
