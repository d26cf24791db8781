//! The app without a window: its state logic (choosing a model and a step count, scrubbing and
//! playing the steps, starting and stopping runs, which rows a comparison has, the web page's
//! query string), the kernel that draws samples into textures (against a CPU reference), and the
//! GPU worker end to end (its samples equal `Sampler`'s, i.e. what `fewstep sample` writes).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use eframe::egui::{self, TextureId};
use eframe::Storage;
use fewstep::app::engine::{self, Event, Job, ModelInfo, SharedDevice};
use fewstep::app::state::{AppState, Frame, PLAY_FPS, SCRUB_CAP_BYTES};
use fewstep::app::texture::{grid_size, GridPainter, PAD};
use fewstep::app::StartOptions;
use fewstep::bundled;
use fewstep::diffusion::{load_model_bytes, parse_model, SampleOptions, Sampler, SamplerKind};
use fewstep::tensor::Tensor;

/// unorm8 conversion rounds to the nearest of 256 levels: half a level, plus slack for the
/// driver's float-to-unorm rounding.
const UNORM_TOL: f64 = 0.6 / 255.0;

fn info(name: &str) -> ModelInfo {
    let b = bundled::find(name).expect("bundled");
    let (meta, tensors) = parse_model(std::path::Path::new(b.file), b.bytes()).expect("parses");
    ModelInfo {
        name: b.name.into(),
        meta,
        params: tensors.iter().map(|t| t.data.len()).sum(),
        file_bytes: b.bytes().len(),
    }
}

fn loaded_state() -> AppState {
    let mut s = AppState::default();
    for b in bundled::BUNDLED {
        s.add_model(info(b.name));
    }
    s
}

fn frame(i: usize) -> Frame {
    Frame {
        step: i,
        t: 1.0 - i as f64 / 4.0,
        z: TextureId::User(2 * i as u64),
        x_hat: (i > 0).then_some(TextureId::User(2 * i as u64 + 1)),
        ms: 10.0,
        bytes: 1000,
    }
}

#[test]
fn the_steps_kept_for_scrubbing_stay_under_the_memory_cap() {
    // 1024 steps of 64 images of 28x28: two 233 x 233 RGBA8 textures a step (~434 KB), ~445
    // MB in all without the cap.
    let [w, h] = grid_size(64, 8, 28, 28);
    let per_texture = 4 * w as u64 * h as u64;
    let mut s = loaded_state();
    let (run, _, _) = s.start_sample().unwrap();
    let v = s.sample_view_for(run).unwrap();
    let mut freed = Vec::new();
    let steps = 1024;
    for i in 0..=steps {
        let mut f = frame(i);
        f.bytes = per_texture * if i > 0 { 2 } else { 1 };
        freed.extend(v.push(f));
        assert!(
            v.scrub_bytes() <= SCRUB_CAP_BYTES,
            "step {i}: {} bytes",
            v.scrub_bytes()
        );
        assert_eq!(v.frames.last().unwrap().step, i, "the newest step is shown");
        if i == 300 {
            v.scrub(v.frames.len() / 2);
        }
    }
    let kept: Vec<usize> = v.frames.iter().map(|f| f.step).collect();
    assert_eq!(kept[0], 0, "the noise stays");
    assert!(v.stride.is_power_of_two() && v.stride > 1);
    assert!(
        kept.iter().all(|k| k % v.stride == 0) && kept.len() == steps / v.stride + 1,
        "every {}th step, evenly: {kept:?}",
        v.stride
    );
    assert!(v.peak_bytes <= SCRUB_CAP_BYTES && v.peak_bytes >= v.scrub_bytes());
    assert!(
        v.scrub_bytes() > SCRUB_CAP_BYTES / 4,
        "the cap is used, not thrown away: {} bytes",
        v.scrub_bytes()
    );
    // No texture leaks or is freed twice: every pushed texture is kept or freed, once.
    let mut all: Vec<TextureId> = v
        .textures()
        .into_iter()
        .chain(freed.iter().copied())
        .collect();
    let n = all.len();
    all.sort_by_key(|t| format!("{t:?}"));
    all.dedup();
    assert_eq!((all.len(), n), (2 * steps + 1, 2 * steps + 1));
    // A view the user scrubbed stays about where it was (the kept step at or after it).
    let shown = v.frames[v.shown].step;
    assert!(
        !v.follow && shown > 0 && shown < steps,
        "shown step {shown}"
    );
    assert!(
        (v.steps_ms() - 10.0 * (steps + 1) as f64).abs() < 1e-6,
        "all steps' time counts"
    );
}

#[test]
fn bundled_models_are_a_distilled_family_with_its_teacher() {
    let teacher = info("fmnist-teacher");
    assert_eq!(teacher.meta.steps, None);
    for (name, k) in [
        ("fmnist-4step", 4),
        ("fmnist-2step", 2),
        ("fmnist-1step", 1),
    ] {
        let m = info(name);
        assert_eq!(m.meta.steps, Some(k), "{name}");
        assert_eq!(m.meta.image, teacher.meta.image, "{name}");
        assert!(m.meta.lineage.halvings >= 1, "{name} has a lineage");
        assert_eq!(m.meta.lineage.steps_path.last(), Some(&k), "{name}");
        assert!(m.file_bytes < 4_000_000, "{name} is kept small (f16)");
    }
    assert_eq!(
        bundled::find(bundled::DEFAULT_MODEL).unwrap().name,
        "fmnist-4step"
    );
}

#[test]
fn choosing_a_model_sets_its_step_count_and_a_teacher_keeps_any() {
    let mut s = AppState::default();
    assert!(
        s.start_sample().is_err(),
        "nothing loaded: a message, not a panic"
    );
    s = loaded_state();
    // The first model added is selected, with its own count.
    assert_eq!(s.selected_model().unwrap().name, "fmnist-4step");
    assert_eq!(s.settings.steps, 4);
    assert!(s.select_by_name("fmnist-1step"));
    assert_eq!(s.settings.steps, 1);
    assert!(s.select_by_name("fmnist-teacher"));
    assert_eq!(s.settings.steps, 1, "a teacher keeps the chosen count");
    s.settings.steps = 37;
    let (run, rows, old) = s.start_sample().unwrap();
    assert!(old.is_empty());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].opts.steps, 37);
    assert_eq!(rows[0].model, 3);
    assert!(s.sample_view.as_ref().unwrap().running);
    assert!(!s.select_by_name("no-such-model"));
    // Bad settings are refused with a message.
    s.settings.steps = 0;
    assert!(s.start_sample().unwrap_err().contains("steps"));
    s.settings.steps = 4;
    s.settings.count = 1000;
    assert!(s.start_sample().unwrap_err().contains("images"));
    // A new run replaces the old view and hands back its textures to free.
    s.settings.count = 4;
    s.sample_view.as_mut().unwrap().push(frame(0));
    let (run2, _, old) = s.start_sample().unwrap();
    assert!(run2 > run);
    assert_eq!(old, vec![TextureId::User(0)]);
}

#[test]
fn removing_a_model_keeps_the_selection_sensible() {
    let mut s = loaded_state();
    let names = |s: &AppState| s.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let all = names(&s);
    assert!(s.select_by_name("fmnist-1step"));
    let chosen = s.selected.unwrap();
    // Removing one before it keeps the same model selected (its index moves).
    assert_eq!(s.remove_model(0).unwrap(), all[0]);
    assert_eq!(s.selected_model().unwrap().name, "fmnist-1step");
    // Removing the selected one selects its neighbour, with its own step count.
    let at = s.selected.unwrap();
    assert_eq!(at, chosen - 1);
    s.remove_model(at).unwrap();
    let now = s.selected_model().unwrap();
    assert!(!names(&s).contains(&"fmnist-1step".to_string()));
    assert_eq!(
        Some(s.settings.steps as u32),
        now.meta.steps.or(Some(s.settings.steps as u32))
    );
    // Refused while a run uses the list; an index past the end is refused too.
    s.start_sample().unwrap();
    assert!(s.remove_model(0).unwrap_err().contains("stop the run"));
    s.sample_view.as_mut().unwrap().running = false;
    assert!(s.remove_model(99).is_err());
    while !s.models.is_empty() {
        s.remove_model(0).unwrap();
    }
    assert_eq!(s.selected, None);
    assert!(
        s.start_sample().is_err(),
        "nothing left: a message, not a panic"
    );
}

#[test]
fn scrubbing_and_playing_the_steps() {
    let mut s = loaded_state();
    let (run, _, _) = s.start_sample().unwrap();
    let v = s.sample_view_for(run).unwrap();
    for i in 0..3 {
        v.push(frame(i));
    }
    assert_eq!(v.shown, 2, "follows the run");
    v.scrub(0);
    assert_eq!((v.shown, v.follow), (0, false));
    v.push(frame(3));
    assert_eq!(v.shown, 0, "a scrubbed view stays where the user put it");
    v.scrub(99);
    assert_eq!(
        (v.shown, v.follow),
        (3, true),
        "clamped to the newest, follows again"
    );
    v.push(frame(4));
    assert_eq!(v.shown, 4);
    v.running = false;
    // Play from the end restarts at the first frame and stops at the last.
    v.toggle_play();
    assert!(v.playing);
    assert_eq!(v.shown, 0);
    v.tick(1.0 / PLAY_FPS + 1e-9);
    assert_eq!(v.shown, 1);
    v.toggle_play();
    assert!(!v.playing);
    assert!(!v.tick(10.0), "paused: no movement");
    assert_eq!(v.shown, 1);
    v.toggle_play();
    while v.tick(1.0 / PLAY_FPS) {}
    assert_eq!(v.shown, 4);
    assert!(!v.playing);
    assert_eq!(v.frame().unwrap().step, 4);
    assert!((v.steps_ms() - 50.0).abs() < 1e-9);
    assert_eq!(v.textures().len(), 9);
}

#[test]
fn stopping_a_run_and_failures_end_it() {
    let mut s = loaded_state();
    let (run, _, _) = s.start_sample().unwrap();
    s.end_run(run + 5, None);
    assert!(
        s.sample_view.as_ref().unwrap().running,
        "another run's end is ignored"
    );
    s.end_run(run, None);
    let v = s.sample_view.as_ref().unwrap();
    assert!(!v.running && v.stopped && v.error.is_none());
    let (run, _, _) = s.start_compare().unwrap();
    s.end_run(run, Some("device lost".into()));
    let c = s.compare_view.as_ref().unwrap();
    assert!(!c.running);
    assert_eq!(c.error.as_deref(), Some("device lost"));
}

#[test]
fn a_comparison_pairs_each_distilled_model_with_the_teachers_ddim() {
    let mut s = loaded_state();
    // Default choice: 1, 2, 4.
    let rows = s.compare_rows().unwrap();
    let labels: Vec<_> = rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "1 distilled",
            "1 DDIM",
            "2 distilled",
            "2 DDIM",
            "4 distilled",
            "4 DDIM"
        ]
    );
    let teacher = s.teacher().unwrap();
    assert_eq!(s.models[teacher].name, "fmnist-teacher");
    for r in &rows {
        let k: usize = r.label.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(r.opts.steps, k);
        assert_eq!(r.opts.seed, s.compare.seed, "the same noise in every row");
        if r.label.ends_with("DDIM") {
            assert_eq!(r.model, teacher);
        } else {
            assert_eq!(s.models[r.model].meta.steps, Some(k as u32));
        }
    }
    // 8 steps has no distilled model here: only the teacher's row.
    for (k, on) in s.compare.counts.iter_mut() {
        *on = *k == 8;
    }
    let labels: Vec<_> = s
        .compare_rows()
        .unwrap()
        .into_iter()
        .map(|r| r.label)
        .collect();
    assert_eq!(labels, ["8 DDIM"]);
    for (_, on) in s.compare.counts.iter_mut() {
        *on = false;
    }
    assert!(s.compare_rows().is_err());
}

/// eframe's storage in memory: what a restart of the app reads back.
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);
impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

/// Issue 14: the last model, step count, seed, sampler settings and the Train tab's settings
/// survive a restart; a remembered model that is gone is skipped.
#[test]
fn the_apps_settings_survive_a_restart() {
    use fewstep::app::remembered::Remembered;
    use fewstep::app::train_panel::{Mode, TrainSettings};
    let mut before = loaded_state();
    assert!(before.select_by_name("fmnist-2step"));
    before.settings.steps = 2;
    before.settings.seed = 1234;
    before.settings.count = 9;
    before.settings.kind = SamplerKind::Ancestral;
    before.settings.clip = false;
    let train = TrainSettings {
        mode: Mode::Distill,
        teacher: "my/teacher.safetensors".into(),
        distill_updates: 777,
        batch: 12,
        ..TrainSettings::default()
    };
    let mut storage = MemoryStorage::default();
    Remembered::capture(&before, &train).save(&mut storage);
    // A new launch: fresh state, the same models, what the storage holds.
    let read = Remembered::load(&storage).expect("a remembered value");
    assert_eq!(read.train, train);
    let mut after = loaded_state();
    read.restore(&mut after);
    assert_eq!(
        after.selected_model().map(|m| m.name.as_str()),
        Some("fmnist-2step")
    );
    assert_eq!(after.settings, before.settings);
    // A model that is no longer there: the rest still applies, nothing fails.
    let gone = Remembered {
        model: Some("deleted-model".into()),
        ..read
    };
    let mut other = loaded_state();
    gone.restore(&mut other);
    assert_eq!(other.settings.seed, 1234);
    // What an older version wrote (fewer fields) still reads, with defaults for the rest.
    storage.set_string(fewstep::app::remembered::KEY, "(seed: Some(5))".into());
    let old = Remembered::load(&storage).expect("an older value reads");
    assert_eq!(old.seed, Some(5));
    assert_eq!(old.train, TrainSettings::default());
}

/// The Sample tab's "Copy" link reads back as the run it came from; the command names the same
/// settings in `fewstep sample`'s words.
#[test]
fn a_runs_link_and_command_reproduce_its_settings() {
    for o in [
        StartOptions {
            model: Some("fmnist-4step".into()),
            steps: Some(4),
            seed: Some(7),
            count: Some(16),
            sampler: Some(SamplerKind::Ddim),
            clip: Some(true),
            run: true,
            ..Default::default()
        },
        StartOptions {
            model: Some("my model (v2)+ü.safetensors".into()),
            steps: Some(3),
            seed: Some(u64::MAX),
            count: Some(1),
            sampler: Some(SamplerKind::Ancestral),
            clip: Some(false),
            run: true,
            ..Default::default()
        },
    ] {
        let q = o.to_query();
        assert_eq!(StartOptions::from_query(&q).unwrap(), o, "{q}");
        let c = o.sample_command();
        for want in [
            format!("--steps {}", o.steps.unwrap()),
            format!("--seed {}", o.seed.unwrap()),
            format!("--count {}", o.count.unwrap()),
        ] {
            assert!(c.contains(&want), "{c} lacks {want}");
        }
        assert_eq!(
            c.contains("--sampler ancestral"),
            o.sampler == Some(SamplerKind::Ancestral)
        );
        assert_eq!(c.contains("--no-clip"), o.clip == Some(false));
    }
    // A strip from one seed to another: both seeds, no --seed (the two conflict).
    let strip = StartOptions {
        model: Some("fmnist-2step".into()),
        interpolate: Some((3, 9)),
        count: Some(8),
        run: true,
        ..Default::default()
    };
    let q = strip.to_query();
    assert!(q.contains("interpolate=3,9"), "{q}");
    assert_eq!(StartOptions::from_query(&q).unwrap(), strip);
    let c = strip.sample_command();
    assert!(
        c.contains("--interpolate 3,9 --count 8") && !c.contains("--seed"),
        "{c}"
    );
    assert!(StartOptions::from_query("?interpolate=3")
        .unwrap_err()
        .contains("A,B"));
    let mut s = loaded_state();
    s.settings.interpolate_to = Some(9);
    s.settings.seed = 3;
    s.settings.count = 1;
    assert!(s.start_sample().unwrap_err().contains("2 to 64 images"));
    s.settings.count = 8;
    let (_, rows, _) = s.start_sample().unwrap();
    assert_eq!(rows[0].strip, Some((3, 9)));
    let link = s.sample_view.as_ref().unwrap().reproduce.clone().unwrap();
    assert_eq!((link.interpolate, link.seed), (Some((3, 9)), None));
    let plain = StartOptions {
        model: Some("fmnist-4step".into()),
        ..Default::default()
    };
    assert!(plain
        .sample_command()
        .starts_with("fewstep sample --model fmnist-4step"));
    assert!(
        plain.to_query().starts_with("model=fmnist-4step&"),
        "{}",
        plain.to_query()
    );
}

#[test]
fn the_query_string_configures_a_run() {
    let o = StartOptions::from_query("?model=fmnist-4step&steps=4&seed=1&count=16").unwrap();
    assert_eq!(o.model.as_deref(), Some("fmnist-4step"));
    assert_eq!((o.steps, o.seed, o.count), (Some(4), Some(1), Some(16)));
    assert!(o.run, "a link with a model starts the run");
    let o = StartOptions::from_query("?steps=8&run=0&sampler=ancestral&clip=0").unwrap();
    assert!(!o.run);
    assert_eq!(o.sampler, Some(SamplerKind::Ancestral));
    assert_eq!(o.clip, Some(false));
    assert_eq!(
        StartOptions::from_query("").unwrap(),
        StartOptions::default()
    );
    // A distillation in the Train tab (web): its settings, and no sample run.
    let o =
        StartOptions::from_query("?distill=fmnist-4step&to=2&updates=2&batch=2&lr=0.0001&seed=3")
            .unwrap();
    assert!(!o.run);
    assert_eq!(
        o.distill,
        Some(fewstep::app::DistillStart {
            teacher: "fmnist-4step".into(),
            from_steps: None,
            to_steps: Some(2),
            updates: Some(2),
            batch: Some(2),
            lr: Some(1e-4),
            seed: Some(3),
            guided: false,
            w_range: None,
            guidance_updates: None,
        })
    );
    assert!(StartOptions::from_query("?distill=fmnist-teacher&updates=lots").is_err());
    // Issue 35: a guided distillation, and a class-conditional teacher, from the address.
    let o = StartOptions::from_query("?distill=cond&to=2&guided=1&wrange=0.5,3&stage1=7").unwrap();
    let d = o.distill.unwrap();
    assert!(d.guided);
    assert_eq!((d.w_range, d.guidance_updates), (Some([0.5, 3.0]), Some(7)));
    for bad in [
        "wrange=3,1",
        "wrange=-1,2",
        "wrange=2",
        "guided=maybe",
        "stage1=x",
    ] {
        assert!(
            StartOptions::from_query(&format!("?distill=cond&{bad}")).is_err(),
            "{bad} was taken"
        );
    }
    let t = StartOptions::from_query("?train=tiny&classes=1&uncond=0.2")
        .unwrap()
        .train
        .unwrap();
    assert!(t.classes && t.uncond_prob == Some(0.2));
    assert!(StartOptions::from_query("?train=tiny&classes=1&uncond=1").is_err());
    // A teacher trained in the tab (web).
    let o = StartOptions::from_query("?train=tiny&updates=2&batch=2&seed=3").unwrap();
    assert!(!o.run && o.distill.is_none());
    assert_eq!(
        o.train,
        Some(fewstep::app::TrainStart {
            preset: "tiny".into(),
            updates: Some(2),
            batch: Some(2),
            lr: None,
            seed: Some(3),
            classes: false,
            uncond_prob: None,
        })
    );
    assert!(StartOptions::from_query("?train=huge").is_err());
    let e = StartOptions::from_query("?steps=four").unwrap_err();
    assert!(e.contains("steps=four"), "{e}");
    assert!(StartOptions::from_query("?sampler=euler").is_err());
    // Issue 13, item 10: `run=false` (not only `run=0`) keeps a configured run from starting,
    // and keys and values are percent-decoded as browsers encode them.
    for off in ["run=false", "run=no", "run=0", "run=off"] {
        let o = StartOptions::from_query(&format!("?model=fmnist-4step&{off}")).unwrap();
        assert!(!o.run, "{off} still runs");
    }
    let o = StartOptions::from_query("?model=my%20model+v2&st%65ps=%32").unwrap();
    assert_eq!(o.model.as_deref(), Some("my model v2"));
    assert_eq!(o.steps, Some(2));
    assert!(o.run);
    let e = StartOptions::from_query("?run=maybe").unwrap_err();
    assert!(e.contains("run=maybe"), "{e}");
    assert!(StartOptions::from_query("?model=%FF").is_err());
}

/// Reads an rgba8 texture back (rows padded to 256 bytes, as copies require).
fn read_texture(gpu: &fewstep::gpu::Gpu, tex: &wgpu::Texture, size: [u32; 2]) -> Vec<u8> {
    let row = (size[0] * 4).div_ceil(256) * 256;
    let buf = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (row * size[1]) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        tex.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: None,
            },
        },
        wgpu::Extent3d {
            width: size[0],
            height: size[1],
            depth_or_array_layers: 1,
        },
    );
    gpu.queue().submit([enc.finish()]);
    buf.slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let data = buf.slice(..).get_mapped_range().expect("mapped").to_vec();
    let mut out = Vec::new();
    for y in 0..size[1] as usize {
        out.extend_from_slice(&data[y * row as usize..y * row as usize + size[0] as usize * 4]);
    }
    out
}

#[test]
fn samples_are_drawn_into_textures_as_the_cpu_reference_says() {
    let gpu = gpu();
    let painter = GridPainter::new(&gpu);
    let mut rng = rng("to_image");
    for &(n, c, h, w) in &[
        (5usize, 1usize, 7usize, 6usize),
        (3, 3, 4, 9),
        (1, 1, 28, 28),
    ] {
        // Values beyond [-1, 1] check the clamp.
        let x = uniform(&mut rng, n * c * h * w, 1.3);
        let t = Tensor::from_slice(&gpu, &[n, c, h, w], &x);
        for row in [false, true] {
            // An about square grid (the sample view) and one row (a comparison).
            let cols = if row {
                n
            } else {
                ((n as f64).sqrt().ceil()) as usize
            };
            let tex = if row {
                painter.paint_cols(&gpu, &t, n)
            } else {
                painter.paint(&gpu, &t)
            };
            assert_eq!(tex.size, grid_size(n, cols, h, w));
            let got = read_texture(&gpu, &tex.texture, tex.size);
            let pad = PAD as usize;
            let mut worst = 0.0f64;
            for ty in 0..tex.size[1] as usize {
                for tx in 0..tex.size[0] as usize {
                    let (cx, cy) = (tx / (w + pad), ty / (h + pad));
                    let (ix, iy) = (tx % (w + pad), ty % (h + pad));
                    let i = cy * cols + cx;
                    let want: [f64; 3] = if ix >= pad && iy >= pad && cx < cols && i < n {
                        let at = |ch: usize| {
                            let v =
                                x[((i * c + ch.min(c - 1)) * h + iy - pad) * w + ix - pad] as f64;
                            (v * 0.5 + 0.5).clamp(0.0, 1.0)
                        };
                        [at(0), at(1), at(2)]
                    } else {
                        [0.12; 3]
                    };
                    let p = (ty * tex.size[0] as usize + tx) * 4;
                    for k in 0..3 {
                        worst = worst.max((got[p + k] as f64 / 255.0 - want[k]).abs());
                    }
                    assert_eq!(got[p + 3], 255);
                }
            }
            assert!(
            worst <= UNORM_TOL,
            "{n}x{c}x{h}x{w} in {cols} columns: worst texel off by {worst} (tolerance {UNORM_TOL})"
        );
        }
    }
}

#[test]
fn the_worker_samples_what_the_sampler_does_and_stops_when_asked() {
    let gpu = gpu();
    let shared = SharedDevice {
        device: gpu.device().clone(),
        queue: gpu.queue().clone(),
        info: gpu.info().clone(),
        fault: Some(gpu.fault_watch()),
    };
    let handle = engine::spawn(shared, egui::Context::default());
    let b = bundled::find("fmnist-4step").unwrap();
    handle.send(Job::Load {
        name: b.name.into(),
        bytes: b.bytes().to_vec(),
    });
    handle.send(Job::Load {
        name: "broken".into(),
        bytes: b.bytes()[..1000].to_vec(),
    });
    let opts = SampleOptions {
        steps: 4,
        count: 3,
        seed: 7,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let row = engine::RowSpec {
        model: 0,
        opts,
        label: "4 distilled".into(),
        class: None,
        guidance: 0.0,
        strip: None,
    };
    handle.send(Job::Run {
        run: 1,
        rows: vec![row.clone()],
        draw_steps: true,
    });
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !events.iter().any(|e| matches!(e, Event::RowDone { .. })) {
        assert!(Instant::now() < deadline, "the worker did not finish");
        std::thread::sleep(Duration::from_millis(20));
        events.extend(handle.drain());
    }
    assert!(matches!(&events[0], Event::Loaded(m) if m.name == "fmnist-4step"));
    assert!(
        matches!(&events[1], Event::LoadFailed { name, error } if name == "broken" && !error.is_empty())
    );
    assert!(matches!(events[2], Event::Start { run: 1, row: 0, .. }));
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "every step drawn, in order");
    let Some(Event::RowDone { samples, shape, .. }) = events.last() else {
        panic!("the run ends with its row")
    };
    assert_eq!(*shape, [3, 1, 28, 28]);
    // The same model and options through the Sampler directly (what `fewstep sample` runs).
    let (model, _) = load_model_bytes(&gpu, std::path::Path::new(b.file), b.bytes()).unwrap();
    let want = Sampler::new(&model, opts)
        .run(&model)
        .to_vec_blocking()
        .unwrap();
    let worst = samples
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "worker vs Sampler: max |diff| {worst}");

    // A run that is stopped ends with Stopped, before its last step.
    let mut long = row.clone();
    long.opts.steps = 64;
    handle.send(Job::Run {
        run: 2,
        rows: vec![long],
        draw_steps: true,
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(20));
        let new = handle.drain();
        if new.iter().any(|e| matches!(e, Event::Step { run: 2, .. })) {
            handle.stop();
        }
        seen.extend(new);
        if seen.iter().any(|e| matches!(e, Event::Stopped { run: 2 })) {
            break;
        }
    }
    let steps = seen
        .iter()
        .filter(|e| matches!(e, Event::Step { run: 2, .. }))
        .count();
    assert!(steps < 64, "stopped after {steps} of 64 steps");
    assert!(!seen
        .iter()
        .any(|e| matches!(e, Event::RowDone { run: 2, .. })));

    // A strip from seed 7 to seed 8 (interpolate.rs): one row, what Sampler::from_start makes.
    let mut strip = row.clone();
    strip.strip = Some((7, 8));
    handle.send(Job::Run {
        run: 5,
        rows: vec![strip],
        draw_steps: true,
    });
    // And the page's memory test: 20 blank steps drawn as a run draws them.
    handle.send(Job::TestFrames {
        run: 6,
        row: row.clone(),
        steps: 20,
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !seen.iter().any(|e| matches!(e, Event::Stopped { run: 6 })) {
        assert!(
            Instant::now() < deadline,
            "the worker did not finish the strip and the frames"
        );
        std::thread::sleep(Duration::from_millis(20));
        seen.extend(handle.drain());
    }
    let strip_samples = seen.iter().find_map(|e| match e {
        Event::RowDone {
            run: 5, samples, ..
        } => Some(samples.clone()),
        _ => None,
    });
    let start = pollster::block_on(fewstep::diffusion::interpolate::strip_start(
        &model,
        (7, 8),
        3,
    ))
    .unwrap();
    let want = Sampler::from_start(opts, start)
        .run(&model)
        .to_vec_blocking()
        .unwrap();
    let got = strip_samples.expect("the strip's row finished");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "worker strip vs Sampler::from_start: max |diff| {worst}"
    );
    let strip_size = seen.iter().find_map(|e| match e {
        Event::Start { run: 5, z, .. } => Some(z.size),
        _ => None,
    });
    assert_eq!(
        strip_size,
        Some(grid_size(3, 3, 28, 28)),
        "a strip is one row"
    );
    let frames = seen
        .iter()
        .filter(|e| matches!(e, Event::Step { run: 6, .. }))
        .count();
    assert_eq!(frames, 20, "every blank step drawn");

    // Issue 13, item 10: a job that panics (a sampler asked for 0 steps, which the UI never
    // sends, asserts) ends its run with a message instead of killing the worker, and the next
    // run still works.
    let mut broken = row.clone();
    broken.opts.steps = 0;
    handle.send(Job::Run {
        run: 3,
        rows: vec![broken],
        draw_steps: true,
    });
    handle.send(Job::Run {
        run: 4,
        rows: vec![row],
        draw_steps: false,
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !seen
        .iter()
        .any(|e| matches!(e, Event::RowDone { run: 4, .. }))
    {
        assert!(
            Instant::now() < deadline,
            "the worker died with the panicking job"
        );
        std::thread::sleep(Duration::from_millis(20));
        seen.extend(handle.drain());
    }
    assert!(
        seen.iter().any(
            |e| matches!(e, Event::Failed { run: 3, error } if error.contains("bug") && error.contains("sampling step"))
        ),
        "the panicking run ends with its message"
    );
}

#[test]
fn the_train_tab_distills_stops_with_a_checkpoint_and_resumes() {
    use fewstep::app::train_panel::{run_blocking, Msg, RunSpec};
    use fewstep::diffusion::run_spec::DistillSpec;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !std::path::Path::new("/usr/share/datasets/fashion-mnist").exists() {
        eprintln!("skipped: needs apt-get install dataset-fashion-mnist (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    // What the tab's widgets build: a library spec, no command line in between.
    let spec = |resume: bool| DistillSpec {
        teacher: Some("assets/fmnist-small-teacher.safetensors".into()),
        from_steps: Some(8),
        to_steps: Some(4),
        updates: Some(4),
        batch: Some(2),
        log_every: Some(1),
        out: out.clone(),
        resume,
        ..DistillSpec::default()
    };
    let words = |resume: bool| RunSpec::Distill(spec(resume));
    let command = || "fewstep distill (test)".to_string();
    // Stop after the first logged update: a checkpoint, no model file yet.
    let stop = AtomicBool::new(false);
    let lines = std::cell::RefCell::new(Vec::new());
    let send = |m: Msg| {
        if let Msg::Line { at, loss, .. } = m {
            lines.borrow_mut().push((at, loss));
            stop.store(true, Ordering::SeqCst);
        }
    };
    let text = run_blocking(&words(false), command(), &stop, &send).unwrap();
    assert!(text.contains("stopped"), "{text}");
    assert_eq!(lines.borrow().len(), 1);
    assert!(out.join("distill-state.safetensors").exists());
    assert!(!out.join("steps-4.safetensors").exists());
    // Resume runs the remaining updates and writes the 4-step student.
    let stop = AtomicBool::new(false);
    let lines = std::cell::RefCell::new(Vec::new());
    let send = |m: Msg| {
        if let Msg::Line { at, loss, .. } = m {
            lines.borrow_mut().push((at, loss));
        }
    };
    let text = run_blocking(&words(true), command(), &stop, &send).unwrap();
    assert!(text.starts_with("done"), "{text}");
    let at: Vec<u64> = lines.borrow().iter().map(|l| l.0).collect();
    assert_eq!(at, [2, 3, 4], "continues after the first update");
    assert!(lines.borrow().iter().all(|l| l.1.is_finite()));
    assert!(out.join("steps-4.safetensors").exists());
    // A bad setting is refused in the CLI's words.
    let bad = RunSpec::Distill(DistillSpec {
        from_steps: Some(6),
        ..spec(false)
    });
    let e = run_blocking(&bad, command(), &stop, &send).unwrap_err();
    assert!(format!("{e:#}").contains("power of 2"), "{e:#}");
}

/// Counts what the reducer registers and frees, handing out fresh ids (no renderer needed).
#[derive(Default)]
struct CountingTextures {
    next: u64,
    live: std::collections::HashSet<TextureId>,
}

impl fewstep::app::events::TextureSink for CountingTextures {
    fn register(&mut self, _tex: &fewstep::app::texture::GridTexture) -> Option<TextureId> {
        self.next += 1;
        let id = TextureId::User(self.next);
        self.live.insert(id);
        Some(id)
    }
    fn free(&mut self, ids: Vec<TextureId>) {
        for id in ids {
            assert!(
                self.live.remove(&id),
                "{id:?} freed twice or never registered"
            );
        }
    }
}

/// `AppState::apply` without a window: loading counters and the default selection, a refused
/// file in the status line, a run's frames and result, events of a stale run dropped with their
/// textures freed, and a failed run's error.
#[test]
fn engine_events_change_the_state_as_the_app_shows_them() {
    use fewstep::app::Loading;
    let g = gpu();
    let tex = || fewstep::app::texture::GridTexture {
        texture: g.device().create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: 4,
                height: 4,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        }),
        size: [4, 4],
    };
    let mut state = AppState::default();
    let mut loading = Loading {
        expected: 3,
        ..Default::default()
    };
    let mut status = String::new();
    let mut textures = CountingTextures::default();
    let apply = |state: &mut AppState,
                 ev,
                 loading: &mut Loading,
                 status: &mut String,
                 textures: &mut CountingTextures| {
        state.apply(ev, loading, status, textures, false)
    };
    for name in ["fmnist-teacher", bundled::DEFAULT_MODEL] {
        let a = apply(
            &mut state,
            Event::Loaded(Box::new(info(name))),
            &mut loading,
            &mut status,
            &mut textures,
        );
        assert!(a.model_handled);
    }
    let a = apply(
        &mut state,
        Event::LoadFailed {
            name: "broken.safetensors".into(),
            error: "not a model".into(),
        },
        &mut loading,
        &mut status,
        &mut textures,
    );
    assert!(a.model_handled);
    assert_eq!((loading.done, loading.expected), (3, 3));
    assert!(
        status.contains("could not load broken.safetensors"),
        "{status}"
    );
    assert_eq!(state.models.len(), 2);
    assert_eq!(
        state.models[state.selected.unwrap()].name,
        bundled::DEFAULT_MODEL,
        "the default model is selected while the start options wait"
    );

    let (run, _, _) = state.start_sample().expect("a run starts");
    let steps = state.sample_view.as_ref().unwrap().steps;
    apply(
        &mut state,
        Event::Start {
            run,
            row: 0,
            z: tex(),
        },
        &mut loading,
        &mut status,
        &mut textures,
    );
    for step in 1..=steps {
        apply(
            &mut state,
            Event::Step {
                run,
                row: 0,
                step,
                t: 1.0 - step as f64 / steps as f64,
                z: tex(),
                x_hat: tex(),
                ms: 1.0,
            },
            &mut loading,
            &mut status,
            &mut textures,
        );
    }
    // A stale run's step: its two textures are freed, nothing is shown.
    apply(
        &mut state,
        Event::Step {
            run: run + 100,
            row: 0,
            step: 1,
            t: 0.5,
            z: tex(),
            x_hat: tex(),
            ms: 1.0,
        },
        &mut loading,
        &mut status,
        &mut textures,
    );
    apply(
        &mut state,
        Event::RowDone {
            run,
            row: 0,
            image: tex(),
            ms: 9.0,
            samples: vec![0.25; 4],
            shape: [1, 1, 2, 2],
        },
        &mut loading,
        &mut status,
        &mut textures,
    );
    let v = state.sample_view.as_ref().unwrap();
    assert_eq!(
        v.frames.len(),
        steps + 1,
        "the start and one frame per step"
    );
    assert!(!v.running);
    assert_eq!(v.total_ms, Some(9.0));
    assert_eq!(v.samples.as_ref().map(|(s, _)| s.len()), Some(4));
    assert_eq!(
        textures.live.len(),
        1 + 2 * steps,
        "the stale step's textures were freed, the run's kept"
    );

    let (run2, _, _) = state.start_sample().expect("a second run");
    apply(
        &mut state,
        Event::Failed {
            run: run2,
            error: "the GPU device was lost".into(),
        },
        &mut loading,
        &mut status,
        &mut textures,
    );
    assert_eq!(status, "the GPU device was lost");
    assert_eq!(
        state.sample_view.as_ref().unwrap().error.as_deref(),
        Some("the GPU device was lost")
    );
}
