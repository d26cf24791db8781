//! The web Train tab's runs: tasks on the page's event loop that fetch the data, update,
//! checkpoint into the browser's storage (checkpoint.rs), load each finished model into the app
//! and make its preview.

use super::checkpoint::{Checkpoints, Resume, RunInfo};
use super::*;

/// How a run starts: afresh with the tab's settings, or from the checkpoint a page left.
pub(super) enum Begin<S> {
    New(S),
    Resume(Resume),
}

/// Samples 8 images from a model file just made (its own step count for a student, 16 DDIM
/// steps for a teacher) as a picture for the tab.
pub(super) async fn preview(
    gpu: &Gpu,
    name: &str,
    file: &[u8],
    version: u64,
) -> anyhow::Result<(String, egui::ColorImage, u64)> {
    use crate::diffusion::{load_model_bytes, SampleOptions, Sampler, SamplerKind};
    let (model, meta) = load_model_bytes(gpu, std::path::Path::new(name), file)?;
    let steps = meta.steps.map_or(16, |k| k as usize);
    let opts = SampleOptions {
        steps,
        count: 8,
        seed: 0,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let x = Sampler::new(&model, opts).run(&model).to_vec().await?;
    let [c, h, w] = model.image_shape();
    let img = crate::image::image_grid(&x, 8, c, h, w, 4, 3, 2);
    let image =
        egui::ColorImage::from_rgb([img.width() as usize, img.height() as usize], img.as_raw());
    Ok((
        format!("{name}: 8 samples in {steps} steps (seed 0)"),
        image,
        version,
    ))
}

/// The run itself: fetch the data, then update until done, stopped or failed.
pub(super) async fn distill(
    gpu: &Gpu,
    begin: Begin<Settings>,
    every: Option<u64>,
    shared: &Rc<RefCell<Shared>>,
    jobs: &UnboundedSender<Job>,
    ctx: &egui::Context,
) -> anyhow::Result<String> {
    ctx.request_repaint();
    let (mut run, base) = match begin {
        Begin::New(settings) => {
            let teacher = file_of(&settings.teacher)
                .ok_or_else(|| anyhow::anyhow!("{} is not loaded", settings.teacher))?;
            let data = crate::app::web_page::fashion_mnist_subset().await?;
            let plan = settings.plan(&settings.teacher);
            let run = MemoryDistill::new(gpu, plan, &teacher, data)?;
            (run, settings.teacher.clone())
        }
        Begin::Resume(r) => {
            let data = crate::app::web_page::fashion_mnist_subset().await?;
            let teacher = r.teacher.unwrap_or_default();
            let run = MemoryDistill::restore(gpu, &r.checkpoint, &teacher, data)?;
            shared.borrow_mut().resumed_from = Some(run.progress().0);
            (run, r.info.base)
        }
    };
    let mut saver = Checkpoints::new(every, run.progress().0);
    loop {
        if shared.borrow().stop {
            super::checkpoint::discard().await;
            let s = shared.borrow();
            return Ok(format!(
                "stopped after {} of {} updates; the students finished so far stay",
                s.done, s.total
            ));
        }
        let advanced = run.advance().await?;
        // Kernels this update met for the first time are timed now, before a checkpoint records
        // the plan (deferred tuning: tensor/tuner).
        crate::tensor::tuner::tune_pending(gpu).await;
        let (done, total) = run.progress();
        {
            let mut s = shared.borrow_mut();
            s.done = done;
            s.total = total;
            s.seconds = run.seconds();
            s.what = format!("training the {}-step student", run.student_steps());
            if let Advanced::Update { loss: Some(l) } = &advanced {
                s.losses.push([done as f64, *l as f64]);
            }
        }
        if let Advanced::Halving { student, done } = advanced {
            let name = match student.steps {
                // Stage 1 of a guided distillation: the teacher with w as an input.
                0 => unused_name(&format!("{base}-guided")),
                k => unused_name(&format!("{base}-to-{k}step")),
            };
            // Kept before the checkpoint moves past it (or, at the end, goes).
            keep_file_now(&name, &student.file, "made").await;
            let _ = jobs.unbounded_send(Job::Load {
                name: name.clone(),
                bytes: student.file.clone(),
            });
            shared.borrow_mut().what = format!("sampling a preview of {name}…");
            ctx.request_repaint();
            let version = shared.borrow().students.len() as u64 + 1;
            let shown = preview(gpu, &name, &student.file, version).await?;
            {
                let mut s = shared.borrow_mut();
                s.preview = Some(shown);
                s.students.push(Made {
                    name,
                    steps: student.steps,
                    file: student.file,
                });
            }
            if done {
                super::checkpoint::discard().await;
                let s = shared.borrow();
                let n = s.students.len();
                return Ok(format!(
                    "done: {n} student{} in {}",
                    if n == 1 { "" } else { "s" },
                    duration(s.seconds)
                ));
            }
        }
        // After a halving at once (its student is the next teacher), else when due.
        let halved = run.distiller.update == 0;
        if halved || saver.due(done) {
            let (done, total) = run.progress();
            let info = RunInfo {
                mode: Mode::Distill,
                base: base.clone(),
                done,
                total,
                teacher_sha256: Some(run.teacher_sha256().to_string()),
                every,
            };
            let teacher = Some((run.teacher_sha256(), run.teacher_file()));
            saver
                .save(run.checkpoint().await, teacher, info, shared)
                .await?;
        }
        ctx.request_repaint();
        yield_to_page(gpu).await?;
    }
}

/// Trains a teacher from scratch; at the end it joins the model list as `web-PRESET-teacher`.
pub(super) async fn train_teacher(
    gpu: &Gpu,
    begin: Begin<TrainSettings>,
    every: Option<u64>,
    shared: &Rc<RefCell<Shared>>,
    jobs: &UnboundedSender<Job>,
    ctx: &egui::Context,
) -> anyhow::Result<String> {
    let data = crate::app::web_page::fashion_mnist_subset().await?;
    let mut run = match begin {
        Begin::New(settings) => MemoryTrain::new(gpu, settings.plan(), data)?,
        Begin::Resume(r) => {
            let run = MemoryTrain::restore(gpu, &r.checkpoint, data)?;
            shared.borrow_mut().resumed_from = Some(run.trainer.step);
            run
        }
    };
    let t0 = web_time::Instant::now();
    let preset = run.plan.preset.clone();
    let total = run.plan.updates;
    shared.borrow_mut().total = total;
    let mut saver = Checkpoints::new(every, run.trainer.step);
    while !run.is_done() {
        if shared.borrow().stop {
            super::checkpoint::discard().await;
            let s = shared.borrow();
            return Ok(format!(
                "stopped after {} of {} updates (no model: a teacher is kept only when done)",
                s.done, s.total
            ));
        }
        let loss = run.advance().await?;
        crate::tensor::tuner::tune_pending(gpu).await;
        {
            let mut s = shared.borrow_mut();
            s.done = run.trainer.step;
            s.seconds = t0.elapsed().as_secs_f64();
            s.what = format!("training a {preset} teacher");
            if let Some(l) = loss {
                let at = s.done as f64;
                s.losses.push([at, l as f64]);
            }
        }
        let done = run.trainer.step;
        if !run.is_done() && saver.due(done) {
            let info = RunInfo {
                mode: Mode::Teacher,
                base: format!("web-{preset}-teacher"),
                done,
                total,
                teacher_sha256: None,
                every,
            };
            saver
                .save(run.checkpoint().await, None, info, shared)
                .await?;
        }
        ctx.request_repaint();
        yield_to_page(gpu).await?;
    }
    let file = run.model_file().await?;
    let name = unused_name(&format!("web-{preset}-teacher"));
    keep_file_now(&name, &file, "made").await;
    let _ = jobs.unbounded_send(Job::Load {
        name: name.clone(),
        bytes: file.clone(),
    });
    shared.borrow_mut().what = format!("sampling a preview of {name}…");
    ctx.request_repaint();
    super::checkpoint::discard().await;
    let shown = preview(gpu, &name, &file, 1).await?;
    let mut s = shared.borrow_mut();
    s.preview = Some(shown);
    s.students.push(Made {
        name: name.clone(),
        steps: 0,
        file,
    });
    Ok(format!("done: {name} in {}", duration(s.seconds)))
}

/// `base`, or `base-2`, `base-3`, … if a model by that name was made before.
pub(super) fn unused_name(base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 2;
    while has_file(&name) {
        name = format!("{base}-{k}");
        k += 1;
    }
    name
}

/// Between two updates: first waits for the GPU's queued work (so the loop never runs ahead of
/// the GPU, now that most updates read nothing back), then lets the page handle input and draw.
/// No timer: browsers clamp timers in a hidden tab to one a second and, after minutes, one a
/// minute, which stalled a run left in the background. A message through a `MessageChannel` is
/// a task of its own that hidden tabs do not clamp, and still gives input and frames their turn
/// while the tab is visible (.ci/browser/background.mjs measures both).
pub(super) async fn yield_to_page(gpu: &Gpu) -> anyhow::Result<()> {
    gpu.finish().await?;
    crate::app::web_page::next_task().await;
    Ok(())
}

/// Saves `bytes` as a file through the browser's download.
pub(super) fn download(name: &str, bytes: &[u8]) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let array = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let Ok(blob) = web_sys::Blob::new_with_u8_array_sequence(&array) else {
        return;
    };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Ok(a) = document
        .create_element("a")
        .map(|e| e.unchecked_into::<web_sys::HtmlAnchorElement>())
    {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    // Revoked a minute later, not at once: some browsers read the object URL only after
    // click() returns, and a revoked one cancels the download.
    let revoke = wasm_bindgen::closure::Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(w) = web_sys::window() {
        let _ =
            w.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    }
}
