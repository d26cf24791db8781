//! The app's state without a window: the model list, steps and scrubbing, runs, comparisons,
//! and the engine's events applied to it.

use super::*;

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
