//! The GPU side of the app: samples drawn into textures, the worker end to end, the native
//! Train tab.

use super::*;

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
