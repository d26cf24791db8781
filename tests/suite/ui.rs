//! The whole app, headless (issue 14): egui_kittest drives the real `FewstepApp` on a wgpu device
//! (lavapipe in CI) through AccessKit, as a person would with the mouse: it picks a model on the
//! Models tab, samples it, scrubs the steps, compares step counts, and starts and stops a short
//! distillation on the Train tab, checking what each tab shows.

use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fewstep::app::{FewstepApp, StartOptions, Tab};

/// Steps the app (its worker runs on its own thread) until `done` holds.
fn step_until(h: &mut Harness<'_, FewstepApp>, what: &str, done: impl Fn(&FewstepApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(30));
    }
    h.step();
}

/// Clicks the last widget labelled `label` (tabs come first; a tab and a button can share it).
fn click(h: &mut Harness<'_, FewstepApp>, label: &str) {
    h.get_all_by_label(label)
        .last()
        .unwrap_or_else(|| panic!("no widget labelled {label}"))
        .click();
    h.step();
    h.step();
}

#[test]
fn every_tab_works_from_the_mouse() {
    let mut h = Harness::builder()
        .with_size([1100.0, 760.0])
        .wgpu_setup(fewstep::app::wgpu_options().wgpu_setup)
        .build_eframe(|cc| FewstepApp::new(cc, StartOptions::default()));
    step_until(&mut h, "the bundled models", |a| {
        a.loading.expected > 0 && a.loading.done >= a.loading.expected
    });
    assert!(h.state().status.is_empty(), "{}", h.state().status);

    // Models tab: every bundled model is listed; clicking one selects it.
    click(&mut h, "Models");
    assert_eq!(h.state().tab, Tab::Models);
    for b in fewstep::bundled::BUNDLED {
        assert!(h.query_by_label(b.name).is_some(), "{} not listed", b.name);
    }
    click(&mut h, "fmnist-2step");
    assert_eq!(
        h.state().state.selected_model().map(|m| m.name.as_str()),
        Some("fmnist-2step")
    );
    assert_eq!(
        h.state().state.settings.steps,
        2,
        "a student sets its steps"
    );

    // Sample tab: Sample draws every step; the slider scrubs back to the noise.
    click(&mut h, "Sample");
    assert_eq!(h.state().tab, Tab::Sample);
    click(&mut h, "Sample");
    step_until(&mut h, "the sample run", |a| {
        a.state.sample_view.as_ref().is_some_and(|v| !v.running)
    });
    {
        let v = h.state().state.sample_view.as_ref().unwrap();
        assert!(v.error.is_none(), "{:?}", v.error);
        assert_eq!(v.frames.len(), 3, "the noise and 2 steps");
        assert_eq!(v.shown, 2, "the last step is shown");
    }
    assert!(h.query_by_label_contains("step 2 of 2").is_some());
    let slider = h.get_by_role(egui::accesskit::Role::Slider);
    slider.set_value_accesskit(0.0);
    h.step();
    h.step();
    assert_eq!(h.state().state.sample_view.as_ref().unwrap().shown, 0);
    assert!(h.query_by_label_contains("step 0 of 2").is_some());

    // Compare tab: 1, 2 and 4 steps, distilled against the teacher's DDIM: six rows.
    click(&mut h, "Compare");
    assert_eq!(h.state().tab, Tab::Compare);
    click(&mut h, "Compare");
    step_until(&mut h, "the comparison", |a| {
        a.state.compare_view.as_ref().is_some_and(|v| !v.running)
    });
    {
        let c = h.state().state.compare_view.as_ref().unwrap();
        assert!(c.error.is_none(), "{:?}", c.error);
        assert_eq!(c.rows.len(), 6);
        assert!(c.rows.iter().all(|r| r.image.is_some() && r.ms.is_some()));
    }
    for label in ["1 distilled", "1 DDIM", "4 distilled", "4 DDIM"] {
        assert!(h.query_by_label(label).is_some(), "row {label} not shown");
    }

    // Train tab: a short distillation of the bundled teacher, stopped after its first update.
    if !std::path::Path::new("/usr/share/datasets/fashion-mnist").exists() {
        eprintln!("Train tab skipped: needs apt-get install dataset-fashion-mnist (.ci/run does)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    click(&mut h, "Train / distill");
    click(&mut h, "Distill");
    {
        let s = &mut h.state_mut().platform.train.settings;
        s.teacher = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/fmnist-small-teacher.safetensors"
        )
        .into();
        s.from_steps = 8;
        s.to_steps = 4;
        s.distill_updates = 50;
        s.batch = 2;
        s.distill_out = tmp.path().join("d").display().to_string();
    }
    h.step();
    assert!(h
        .query_by_label_contains("fewstep distill --teacher")
        .is_some());
    click(&mut h, "Start");
    // The run has loaded its teacher and data and reports its size (metrics lines come every
    // 50 updates, later than this test waits).
    step_until(&mut h, "the run to start", |a| {
        a.platform.train.runner.progress.1 > 0 || a.platform.train.runner.ended.is_some()
    });
    assert_eq!(h.state().platform.train.runner.progress.1, 50);
    assert!(
        h.state().platform.train.running(),
        "{:?}",
        h.state().platform.train.runner.ended
    );
    click(&mut h, "Stop");
    step_until(&mut h, "the stop", |a| !a.platform.train.running());
    let (text, error) = h.state().platform.train.runner.ended.clone().unwrap();
    assert!(!error && text.contains("stopped"), "{text}");
    assert!(h
        .query_by_label_contains("stopped in the 4-step halving")
        .is_some());
    assert!(tmp.path().join("d/distill-state.safetensors").exists());
}
