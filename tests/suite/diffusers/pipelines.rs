//! Whole diffusers pipelines: DDIM step for step, `sample`/`info`/`convert` on a folder, the
//! app, exported pipelines loaded by diffusers, dropped files.

use super::*;

/// fewstep's DDIM on an imported model's discrete schedule equals diffusers'
/// `DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True)`, eta 0, step for step
/// (the 4-step trajectory) and at 1, 2, 4 and 8 steps: eps with clipping to ±1, v without
/// clipping, x with clipping to ±2 on a zero-terminal-SNR schedule. From the same noise.
/// Tolerance: 1e-5 of the largest value for v and x (measured at most 1.7e-6 on 2026-12-06); 1e-3
/// for eps, whose x̂ = (z - sigma eps) / alpha multiplies the networks' f32 differences (1.4e-6)
/// by 1 / alpha = 157 at T = 999 (measured at most 1.7e-4).
#[test]
fn ddim_on_an_imported_model_equals_diffusers_step_for_step() {
    use fewstep::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
    let g = gpu();
    for case in [
        "tutorial-eps",
        "class-v",
        "zero-snr-x",
        "ddpm-sample",
        "resnet-scale-shift",
        "no-mid-attention",
    ] {
        let eps = matches!(case, "tutorial-eps" | "resnet-scale-shift");
        let (model, _) = load_model(&g, &fixture(case)).unwrap();
        let e = expected(case);
        let noise = e.get("noise").unwrap();
        let cond = match e.get("class_labels") {
            Some(l) => NetCond {
                labels: l.data.iter().map(|&c| Some(c as u32)).collect(),
                w: vec![],
            },
            None => NetCond::NONE,
        };
        for steps in [1, 2, 4, 8] {
            let opts = SampleOptions {
                steps,
                count: noise.shape[0],
                seed: 0,
                kind: SamplerKind::Ddim,
                clip: true,
            };
            let z = Tensor::from_slice(&g, &noise.shape, &noise.data);
            let mut s = Sampler::from_start(opts, z).with_cond(cond.clone());
            let mut worst = 0f32;
            let mut scale = 0f32;
            let traj = e.get("ddim_4_traj").unwrap();
            let per_step = traj.data.len() / 4;
            while !s.is_done() {
                s.step(&model);
                if steps == 4 {
                    let got = s.z().to_vec_blocking().unwrap();
                    let k = s.steps_done() - 1;
                    let want = &traj.data[k * per_step..(k + 1) * per_step];
                    for (a, b) in got.iter().zip(want) {
                        worst = worst.max((a - b).abs());
                        scale = scale.max(b.abs());
                    }
                }
            }
            let got = s.z().to_vec_blocking().unwrap();
            let want = &e.get(&format!("ddim_{steps}")).unwrap().data;
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs());
                scale = scale.max(b.abs());
            }
            eprintln!(
                "{case}, {steps} steps: max |fewstep - diffusers| {worst:.3e} (largest {scale:.3})"
            );
            let tol = if eps { 1e-3 } else { 1e-5 };
            assert!(
                worst <= tol * scale.max(1.0),
                "{case} at {steps} steps differs from DDIMScheduler by {worst}"
            );
        }
    }
}

/// The same from the command line: `fewstep sample --model DIR --start noise.npy` draws what
/// diffusers' DDIM draws from that noise; `fewstep info --model DIR` describes the folder.
#[test]
fn sample_and_info_take_a_diffusers_folder() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("tutorial-eps");
    let values = tmp.path().join("v.json");
    let o = fewstep(&[
        "sample",
        "--model",
        dir.to_str().unwrap(),
        "--start",
        dir.join("noise.npy").to_str().unwrap(),
        "--steps",
        "4",
        "--out",
        tmp.path().join("g.png").to_str().unwrap(),
        "--values",
        values.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
    let got: Vec<f32> = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let e = expected("tutorial-eps");
    let want = &e.get("ddim_4").unwrap().data;
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(got.len(), want.len());
    assert!(
        worst <= 1e-3,
        "fewstep sample differs from diffusers by {worst}"
    );
    let o = fewstep(&["info", "--model", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1000 timesteps of linear betas") && out.contains("eps parameterization"),
        "{out}"
    );
    // A noise file of the wrong shape is refused, naming both shapes.
    let bad = tmp.path().join("bad.npy");
    std::fs::write(&bad, fewstep::npy::encode(&[1, 1, 16, 16], &[0.0; 256])).unwrap();
    let o = fewstep(&[
        "sample",
        "--model",
        dir.to_str().unwrap(),
        "--start",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("g.png").to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("--start holds images of 1x16x16; the model makes 3x16x16"));
}

/// `fewstep convert --model DIFFUSERS_DIR --out M.safetensors [--f16]` makes one fewstep file
/// (format 2: a fewstep that predates imported networks refuses it instead of running another
/// network) that samples what the folder samples: the f32 file exactly as the folder, the f16 file
/// within f16 rounding.
#[test]
fn a_diffusers_folder_converts_to_one_fewstep_file() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("class-v");
    let sample = |model: &Path, name: &str| -> Vec<f32> {
        let values = tmp.path().join(format!("{name}.json"));
        let o = fewstep(&[
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--start",
            dir.join("noise.npy").to_str().unwrap(),
            "--class",
            "3",
            "--steps",
            "2",
            "--out",
            tmp.path().join(format!("{name}.png")).to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let from_folder = sample(&dir, "folder");
    for (name, extra) in [("f32", None), ("f16", Some("--f16"))] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        let mut args = vec![
            "convert",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = fewstep(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let file = tensor_file::read(&out).unwrap();
        let meta: serde_json::Value = serde_json::from_str(&file.metadata["fewstep"]).unwrap();
        assert_eq!(meta["format_version"], 2, "{meta}");
        assert_eq!(meta["schedule"], "discrete");
        let got = sample(&out, name);
        let worst = got
            .iter()
            .zip(&from_folder)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name} file vs folder: max |diff| {worst:.3e}");
        let tol = if name == "f32" { 0.0 } else { 0.01 };
        assert!(
            worst <= tol,
            "{name}: the file samples {worst} away from the folder"
        );
    }
}

/// The desktop app opens a diffusers folder like a model file (`fewstep app --model DIR`, the
/// open field, a dropped folder): the folder becomes the bytes of a fewstep model file in memory,
/// which the app's engine loads as it loads any model.
#[test]
fn the_app_opens_a_diffusers_folder_as_a_model() {
    let dir = fixture("class-v");
    let bytes = fewstep::app::model_bytes_at(&dir).unwrap();
    let (meta, tensors) = fewstep::diffusion::parse_model(&dir, &bytes).unwrap();
    let imported = import_folder(&dir).unwrap();
    assert_eq!(meta.arch, imported.arch);
    assert_eq!(meta.arch.classes, 10, "its classes are listed");
    // Unnamed classes are shown as `class N` and taken back by that name (the page's link).
    use fewstep::diffusion::guidance::{class_name, parse_class};
    assert_eq!(class_name(&meta.arch, 3), "class 3");
    assert_eq!(parse_class(&meta.arch, "class 3"), Ok(3));
    assert_eq!(parse_class(&meta.arch, "Class 7"), Ok(7));
    assert!(parse_class(&meta.arch, "class 10").is_err());
    assert_eq!(tensors, imported.tensors);
    let e = fewstep::app::model_bytes_at(&dir.join("nonexistent")).unwrap_err();
    assert!(e.contains("nonexistent"), "{e}");
}

/// `fewstep convert --format diffusers` writes a pipeline folder the real diffusers loads
/// (`DDIMPipeline.from_pretrained`) and samples as fewstep does: the committed folders in
/// exported/ are what today's fewstep writes, byte for byte; `diffusers_samples.safetensors`
/// beside each is what diffusers' DDIMScheduler sampled from it (make_fixtures.py
/// --check-export; on 2026-12-06 it equalled the original pipeline's samples exactly), and
/// fewstep's samples of the folder equal it. A class model survives the round trip; fewstep's
/// own continuous-time models are refused with the reason.
#[test]
fn exported_pipelines_load_and_sample_in_diffusers_as_in_fewstep() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    for case in [
        "tutorial-eps",
        "ddpm-sample",
        "resnet-scale-shift",
        "no-mid-attention",
    ] {
        let e = expected(case);
        let tol = if case.ends_with("eps") || case == "resnet-scale-shift" {
            1e-3
        } else {
            1e-5
        };
        export_matches_diffusers(
            &fixture(case),
            case,
            &tmp.path().join(case),
            e.get("noise").unwrap(),
            tol,
        );
    }
    // A class model: exported and imported again, the same network.
    let out = tmp.path().join("class-v");
    let o = fewstep(&[
        "convert",
        "--model",
        fixture("class-v").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (
        import_folder(&fixture("class-v")).unwrap(),
        import_folder(&out).unwrap(),
    );
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.arch.classes, b.arch.classes);
    assert_eq!(a.scheduler.schedule, b.scheduler.schedule);
    // fewstep's own models have no diffusers equivalent; an existing folder is not written into.
    let o = fewstep(&[
        "convert",
        "--model",
        "fmnist-4step",
        "--out",
        tmp.path().join("own").to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(
        stderr(&o).contains("continuous cosine schedule"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&[
        "convert",
        "--model",
        fixture("class-v").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(stderr(&o).contains("already holds files"), "{}", stderr(&o));
}

/// The web page builds a model from a pipeline's files (dropped one by one, or fetched from a
/// folder hosted beside it) exactly as `--model DIR` builds it from the folder; natively one of
/// the pipeline's files opens the pipeline it belongs to.
#[test]
fn a_pipelines_files_make_the_model_its_folder_makes() {
    use fewstep::diffusers::PipelineFiles;
    use fewstep::diffusion::model_file::{import_diffusers, parse_model, pipeline_model_bytes};
    let dir = fixture("resnet-scale-shift");
    let mut files = PipelineFiles::default();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
    ] {
        assert!(files.take_complete().is_none(), "complete before {f}");
        files.add(f, std::fs::read(dir.join(f)).unwrap()).unwrap();
    }
    let parts = files.take_complete().expect("all parts");
    let bytes = pipeline_model_bytes(&parts, "dropped").unwrap();
    let (meta, tensors) = parse_model(Path::new("dropped"), &bytes).unwrap();
    let (want_meta, want) = import_diffusers(&dir).unwrap();
    assert_eq!(meta.arch, want_meta.arch);
    assert_eq!(meta.parameterization, want_meta.parameterization);
    assert_eq!(tensors, want);
    // Natively: a pipeline's file stands for its pipeline.
    for f in [
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ] {
        let bytes = fewstep::app::model_bytes_at(&dir.join(f)).unwrap();
        let (m, t) = parse_model(Path::new(f), &bytes).unwrap();
        assert_eq!((m.arch, t), (want_meta.arch.clone(), want.clone()), "{f}");
    }
}
