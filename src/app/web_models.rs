//! Models coming into the page (wasm32 only): the bundled ones, the ones kept in the browser's
//! storage, a model or diffusers pipeline the address names, and files the visitor drops or
//! picks; each is kept by name (web_distill) and handed to the worker as a `Job`.

use std::cell::RefCell;

use futures_channel::mpsc::UnboundedSender;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::engine::Job;
use super::web_page::{self, names_a_folder};

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
                web_page::page_status(Some(&format!(
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
            let job = match web_page::fetch_bytes(&format!("assets/{}", b.file), |got, cached| {
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
            web_page::page_status(Some(&format!("Loading {path}…")));
            let fetched = if names_a_folder(&path) {
                fetch_pipeline(&path).await
            } else {
                web_page::fetch_bytes(&path, |_, _| {}).await
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
        web_page::page_status(None);
    });
}

/// A diffusers pipeline folder hosted beside the page: its unet config, weights and scheduler
/// config fetched and made into a fewstep model file, as `--model FOLDER` does natively.
async fn fetch_pipeline(folder: &str) -> Result<Vec<u8>, String> {
    use crate::diffusers::PipelineParts;
    let text = |bytes: Vec<u8>, file: &str| {
        String::from_utf8(bytes).map_err(|_| format!("{folder}{file} is not UTF-8 text"))
    };
    let get = |file: &'static str| async move {
        web_page::fetch_bytes(&format!("{folder}{file}"), |_, _| {}).await
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
}
