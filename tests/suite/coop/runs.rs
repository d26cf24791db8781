//! Gradients, training, distillation, sampling and the app on the coop family (mixed precision),
//! against f32.

use super::*;

/// The U-Net's gradient with every GEMM of the backward (and forward) pass on the coop family
/// against central differences of the f32 forward pass, at the f32 test's tolerances.
#[test]
fn coop_unet_gradient_matches_finite_differences() {
    let Some(g) = coop_gpu_or_skip("coop_unet_gradient_matches_finite_differences") else {
        return;
    };
    let f32s = f32_family(&g);
    crate::training::unet_gradient_check(
        &g,
        KernelVariant::Coop,
        f32s,
        (crate::training::FD_ATOL, crate::training::FD_RTOL),
    );
}

/// The `tiny` training both coop training tests run on 8x8 patterns.
fn patterns_config() -> fewstep::diffusion::TrainConfig {
    use fewstep::diffusion::{Parameterization, TrainConfig, Weighting};
    TrainConfig {
        param: Parameterization::V,
        weighting: Weighting::SnrTrunc,
        batch: 16,
        lr: 2e-3,
        warmup: 20,
        ema_decay: 0.99,
        grad_clip: 1.0,
        seed: 1,
        adam: fewstep::tensor::AdamConfig::default(),
        uncond_prob: 0.0,
    }
}

/// Largest |a - b| / |b| over two loss curves.
fn worst_relative(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64 / y as f64).abs())
        .fold(0.0, f64::max)
}

/// PSNR of `a` against `b`, pixels in [-1, 1] (peak-to-peak 2).
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (4.0 / mse.max(1e-30)).log10()
}

/// Stated bounds of the coop family against f32 on the same adapter (measured on lavapipe,
/// ARCHITECTURE.md "Tensor cores (the coop family)": 0.04% and 0.03% worst, 79-83 dB): the mean
/// training loss of every 25 updates within 5% of f32's, the same for a distillation halving,
/// and DDIM samples of one model at least 50 dB PSNR from f32's.
const LOSS_REL_BOUND: f64 = 0.05;
const SAMPLE_PSNR_MIN: f64 = 50.0;

#[test]
fn coop_training_distillation_and_sampling_track_f32() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::{
        DistillConfig, Distiller, SampleOptions, Sampler, SamplerKind, Trainer,
    };
    use fewstep::nn::UNetConfig;
    use fewstep::tensor::AdamConfig;
    let test = "coop_training_distillation_and_sampling_track_f32";
    let Some(g) = coop_gpu_or_skip(test) else {
        return;
    };
    let f32s = f32_family(&g);
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let cfg = patterns_config();
    let (updates, every) = (200, 25);
    let train = |family| {
        assert_eq!(g.set_variant(family), family);
        let mut tr = Trainer::new(&g, arch.clone(), cfg.clone()).unwrap();
        let mut losses = vec![];
        for i in 0..updates {
            tr.step(&data);
            if (i + 1) % every == 0 {
                losses.push(pollster::block_on(tr.take_mean_loss()).unwrap().unwrap());
            }
        }
        assert_eq!(g.last_gemm().unwrap().0, family);
        (losses, tr.ema_model())
    };
    let (loss_f32, teacher) = train(f32s);
    let (loss_coop, _) = train(KernelVariant::Coop);
    let rel = worst_relative(&loss_coop, &loss_f32);
    eprintln!("{test}: training, mean loss per {every} updates\n  f32  {loss_f32:.4?}\n  coop {loss_coop:.4?}\n  worst relative difference {:.2}%", 100.0 * rel);
    assert!(loss_coop.iter().all(|l| l.is_finite()));
    assert!(
        rel <= LOSS_REL_BOUND,
        "coop training's loss strays {:.1}% from f32's (bound {:.0}%)",
        100.0 * rel,
        100.0 * LOSS_REL_BOUND
    );

    // One halving (8 -> 4 steps) of the f32-trained teacher, on each family.
    let dcfg = DistillConfig {
        teacher_steps: 8,
        updates: 50,
        batch: 16,
        lr: 5e-4,
        grad_clip: 1.0,
        seed: 4,
        adam: AdamConfig::default(),
        ema_decay: None,
        guidance_stage: false,
    };
    let distill = |family| {
        assert_eq!(g.set_variant(family), family);
        let copy = fewstep::diffusion::Denoiser {
            net: fewstep::nn::UNet::from_params(
                teacher.net.config.clone(),
                teacher.net.params.iter().map(|p| p.deep_clone()).collect(),
            )
            .unwrap(),
            param: teacher.param,
        };
        let mut d = Distiller::new(&g, copy, dcfg.clone());
        let mut losses = vec![];
        while !d.is_done() {
            d.step(&data);
            if d.update.is_multiple_of(every) {
                losses.push(pollster::block_on(d.take_mean_loss()).unwrap().unwrap());
            }
        }
        assert_eq!(g.last_gemm().unwrap().0, family);
        losses
    };
    let d_f32 = distill(f32s);
    let d_coop = distill(KernelVariant::Coop);
    let rel = worst_relative(&d_coop, &d_f32);
    eprintln!("{test}: halving 8 -> 4, mean loss per {every} updates\n  f32  {d_f32:.5?}\n  coop {d_coop:.5?}\n  worst relative difference {:.2}%", 100.0 * rel);
    assert!(
        rel <= LOSS_REL_BOUND,
        "coop distillation's loss strays {:.1}% from f32's (bound {:.0}%)",
        100.0 * rel,
        100.0 * LOSS_REL_BOUND
    );

    // DDIM samples of the same model.
    let sample = |family, steps| {
        assert_eq!(g.set_variant(family), family);
        let out = Sampler::new(
            &teacher,
            SampleOptions {
                steps,
                count: 16,
                seed: 5,
                kind: SamplerKind::Ddim,
                clip: true,
            },
        )
        .run(&teacher)
        .to_vec_blocking()
        .unwrap();
        assert_eq!(g.last_gemm().unwrap().0, family);
        out
    };
    for steps in [4, 16] {
        let p = psnr(&sample(KernelVariant::Coop, steps), &sample(f32s, steps));
        eprintln!("{test}: {steps}-step DDIM samples, coop against f32: {p:.1} dB");
        assert!(
            p >= SAMPLE_PSNR_MIN,
            "{steps} steps: {p:.1} dB < {SAMPLE_PSNR_MIN} dB"
        );
    }
}

/// How many GEMM operand values of a `tiny` training update fall outside f16's normal range
/// (measured on the f32 family: what rounding to f16 would do to them, per pass and operand
/// kind). Below 2^-14 f16 is subnormal (fewer significant bits), below 2^-25 a value rounds to
/// 0, above 65504 it saturates. Values (weights, activations) fit: fewer than 0.1% round to 0,
/// none saturate (the subnormal ones, ~3% of the matmuls' after 30-60 updates, are attention
/// probabilities below 2^-14, off by at most 2^-25 each in a row that sums to 1). Gradients need
/// scaling (measured: ARCHITECTURE.md "Tensor cores (the coop family)"): the coop family scales each
/// gradient operand by a power of 2 from its largest value (gemm_coop.wgsl), after which fewer
/// than 1% of them are subnormal and none saturate.
#[test]
fn gemm_operands_of_a_training_update_fit_f16_once_gradients_are_scaled() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::Trainer;
    use fewstep::nn::UNetConfig;
    use fewstep::tensor::gemm_census;
    let g = gpu();
    let f32s = f32_family(&g);
    g.set_variant(f32s);
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let cfg = patterns_config();
    let mut tr = Trainer::new(&g, arch, cfg).unwrap();
    const SUBNORMAL: f32 = 6.103_515_6e-5; // 2^-14
    const ZERO: f32 = 2.980_232_2e-8; // 2^-25
                                      // The scale gemm_coop.wgsl's pow2_scale gives a tensor of largest value `max`.
    let scale_of = |max: f32| {
        if max == 0.0 {
            1.0
        } else {
            2f32.powi((14 - max.log2().floor() as i32).clamp(-126, 126))
        }
    };
    // At the start (the output layer's zero init makes the first gradients tiny) and after
    // 30 updates.
    for (at, warm) in [(0, 0), (30, 30)] {
        for _ in 0..warm {
            tr.step(&data);
        }
        gemm_census::start();
        tr.step(&data);
        // (pass, gradient?) -> [nonzero, subnormal, to 0, saturate, subnormal once scaled]
        let mut counts: Vec<((&str, bool), [u64; 5])> = Vec::new();
        for (pass, operands) in gemm_census::take() {
            for (t, grad) in operands {
                let v = t.to_vec_blocking().unwrap();
                let i = match counts.iter().position(|(k, _)| *k == (pass, grad)) {
                    Some(i) => i,
                    None => {
                        counts.push(((pass, grad), [0; 5]));
                        counts.len() - 1
                    }
                };
                let c = &mut counts[i].1;
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = if grad { scale_of(max) } else { 1.0 };
                for x in v.iter().map(|x| x.abs()).filter(|&x| x > 0.0) {
                    c[0] += 1;
                    c[1] += (x < SUBNORMAL) as u64;
                    c[2] += (x < ZERO) as u64;
                    c[3] += (x * s > 65504.0) as u64;
                    c[4] += (x * s < SUBNORMAL) as u64;
                }
            }
        }
        for ((pass, grad), [n, sub, zero, sat, scaled_sub]) in &counts {
            let pct = |x: &u64| 100.0 * *x as f64 / (*n).max(1) as f64;
            let kind = if *grad { "gradient" } else { "value" };
            let line = format!(
                "update {at:>2}, {pass:<16} {kind:<8}: {n:>7} nonzero, unscaled {:.3}% subnormal in f16 and {:.4}% rounding to 0; {:.3}% subnormal once scaled, {:.4}% saturating",
                pct(sub),
                pct(zero),
                pct(scaled_sub),
                pct(sat)
            );
            eprintln!("{line}");
            assert_eq!(*sat, 0, "{line}");
            if *grad {
                assert!(pct(scaled_sub) < 1.0, "{line}");
            } else {
                assert!(pct(zero) < 0.1, "{line}");
            }
        }
        assert!(
            counts.iter().any(|((_, grad), _)| *grad),
            "no gradient operand was marked"
        );
    }
}

/// Every pipeline a training step, a distillation step and sampling compile on the coop family
/// (its GEMM cores, the operand scaling) is a registry variant, so the GPU-free naga check
/// (tests/suite/kernel_registry.rs) covers what runs on cooperative matrices.
#[test]
fn coop_pipelines_are_registered() {
    let Some(g) = coop_gpu_or_skip("coop_pipelines_are_registered") else {
        return;
    };
    let registered: std::collections::HashSet<_> = fewstep::tensor::registry::variants()
        .into_iter()
        .map(|v| v.key)
        .collect();
    crate::kernel_registry::one_of_everything(&g);
    assert_eq!(g.variant(), KernelVariant::Coop);
    let compiled = g.pipeline_keys();
    let coop: Vec<_> = compiled
        .iter()
        .filter(|k| k.label().contains(" S="))
        .collect();
    assert!(!coop.is_empty(), "no coop GEMM pipeline compiled");
    assert!(
        compiled.iter().any(|k| k.name == "abs_max"),
        "gradient scaling did not run"
    );
    let missing: Vec<String> = compiled
        .iter()
        .filter(|k| !registered.contains(*k))
        .map(|k| k.label())
        .collect();
    eprintln!(
        "{} pipelines compiled ({} coop GEMMs), all registered: {}",
        compiled.len(),
        coop.len(),
        missing.is_empty()
    );
    assert!(
        missing.is_empty(),
        "compiled but not in the registry:\n{}",
        missing.join("\n")
    );
}

/// `--precision mixed` runs the coop family and a run records it: its model file says so,
/// `--resume` without the flag continues in mixed and ends with the bytes of an uninterrupted
/// run, and `--resume --precision f32` is refused, naming the flag.
#[test]
fn a_mixed_precision_run_records_it_and_resumes_in_it() {
    let test = "a_mixed_precision_run_records_it_and_resumes_in_it";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    crate::common::bin::write_images(&imgs);
    let run = |args: Vec<String>| {
        let o = crate::common::bin::command()
            .args(&args)
            .env_remove("FEWSTEP_KERNELS")
            .env_remove("FEWSTEP_PRECISION")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        eprintln!("$ fewstep {}\n{err}", args.join(" "));
        (
            o.status.success(),
            err + &String::from_utf8_lossy(&o.stdout),
        )
    };
    let args = |out: &std::path::Path, steps: &str| {
        crate::common::bin::tiny_train_args(&imgs, out, &["--precision", "mixed", "--steps", steps])
    };
    let straight = tmp.path().join("straight");
    assert!(run(args(&straight, "4")).0);
    let part = tmp.path().join("part");
    assert!(run(args(&part, "2")).0);
    let resume = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--resume",
            "--out",
            part.to_str().unwrap(),
            "--steps",
            "4",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        run(a)
    };
    let (ok, text) = resume(&["--precision", "f32"]);
    assert!(
        !ok && text.contains("was made in mixed precision") && text.contains("--precision mixed"),
        "{text}"
    );
    let (ok, text) = resume(&[]);
    assert!(ok && text.contains("resuming in mixed precision"), "{text}");
    // The same model but for the command line each run recorded (--steps 4 and --steps 2).
    let model = crate::common::bin::model_of_run;
    assert!(
        model(&straight) == model(&part),
        "a resumed mixed run differs from an uninterrupted one"
    );
    let (ok, text) = run(vec![
        "info".into(),
        "--model".into(),
        straight.join("model.safetensors").to_str().unwrap().into(),
    ]);
    assert!(ok && text.contains("computed in mixed precision"), "{text}");
}

/// The app asks for the command line's device features (`app::device_descriptor`): with
/// `--precision mixed` its engine settles the coop family and samples exactly what `fewstep
/// sample --precision mixed` samples (the same kernels), which differs from f32's samples.
#[test]
fn the_app_samples_what_fewstep_sample_does_in_mixed_precision() {
    use fewstep::app::engine::{self, Event, Job, SharedDevice};
    use fewstep::diffusion::{load_model_bytes, SampleOptions, Sampler, SamplerKind};
    let test = "the_app_samples_what_fewstep_sample_does_in_mixed_precision";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let (adapter, _) = coop_adapter().unwrap();
    let mut opts = GpuOptions::from_env();
    opts.variant = None;
    opts.precision = Some(fewstep::gpu::Precision::Mixed);
    let desc = fewstep::app::device_descriptor_for(&adapter, &opts);
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let handle = engine::spawn(
        SharedDevice {
            device,
            queue,
            info: adapter.get_info(),
            fault: None,
        },
        eframe::egui::Context::default(),
    );
    handle.send(Job::Coop(fewstep::app::device_coop_for(&adapter, &opts)));
    let b = fewstep::bundled::find("fmnist-4step").unwrap();
    handle.send(Job::Load {
        name: b.name.into(),
        bytes: b.bytes().to_vec(),
    });
    let sample = SampleOptions {
        steps: 4,
        count: 3,
        seed: 7,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    handle.send(Job::Run {
        run: 1,
        rows: vec![engine::RowSpec {
            model: 0,
            opts: sample,
            label: "4 distilled".into(),
            class: None,
            guidance: 0.0,
            strip: None,
        }],
        draw_steps: false,
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let app = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let done = handle.drain().into_iter().find_map(|e| match e {
            Event::RowDone { samples, .. } => Some(Ok(samples)),
            Event::Failed { error, .. } => Some(Err(error)),
            _ => None,
        });
        if let Some(r) = done {
            break r.expect("the app's run");
        }
    };
    // `fewstep sample --precision mixed`: a device from Gpu::new with the same options.
    let cli = |precision| {
        let mut o = opts.clone();
        o.precision = Some(precision);
        let gpu = Gpu::new_blocking(o).unwrap();
        let (model, _) = load_model_bytes(&gpu, std::path::Path::new(b.file), b.bytes()).unwrap();
        let x = Sampler::new(&model, sample)
            .run(&model)
            .to_vec_blocking()
            .unwrap();
        (gpu.variant(), x)
    };
    let (family, mixed) = cli(fewstep::gpu::Precision::Mixed);
    assert_eq!(family, KernelVariant::Coop);
    assert!(
        app == mixed,
        "the app's samples differ from fewstep sample's"
    );
    let (_, f32s) = cli(fewstep::gpu::Precision::F32);
    assert!(
        app != f32s,
        "mixed precision computed nothing in f16: the check above proves nothing"
    );
}
