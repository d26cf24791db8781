//! Progressive distillation of diffusers teachers (issue 32): on the teacher's own discrete
//! schedule, every student on diffusers' trailing timestep grid, an eps teacher re-parameterised
//! to v first, and the exported student sampled by the stock `DDIMScheduler` as fewstep samples
//! it (fixtures from the real diffusers: tests/fixtures/diffusers/make_fixtures.py
//! --check-export).

use std::path::{Path, PathBuf};

use crate::common::bin::{fewstep, stderr, write_images};
use crate::common::{assert_close, gpu, rng, uniform};
use fewstep::diffusers::import_folder;
use fewstep::diffusion::distiller::{distill_target, Teacher};
use fewstep::diffusion::schedule::Schedule;
use fewstep::diffusion::{load_model, Parameterization};
use fewstep::nn::tensor_file;
use fewstep::tensor::Tensor;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(path)
}

/// x_hat = 0.6 z + 0.1: a known function standing in for the teacher network.
struct StandIn;
impl Teacher for StandIn {
    fn x_hat(&self, z: &Tensor, _t: &[f64], _cond: &fewstep::nn::NetCond) -> Tensor {
        z.scale(0.6).add_scalar(0.1)
    }
}

/// The target of a 4-step student of the tutorial's eps teacher (linear betas, 1000 timesteps)
/// equals two DDIM steps computed here in f64 from diffusers' own `alphas_cumprod` (the fixture),
/// indexed by the trailing grids written out by hand: the student at 999, 749, 499, 249, the
/// teacher's half steps at 874, 624, 374, 124, the last landing on alpha = 1.
#[test]
fn the_target_on_a_discrete_schedule_uses_the_trailing_grids_timesteps() {
    let imported = import_folder(&fixture("tutorial-eps")).unwrap();
    let schedule = Schedule::of(&imported.arch);
    let d = imported.arch.noise_schedule.as_ref().unwrap();
    let student: Vec<usize> = (1..=4).map(|i| d.timestep(i as f64 / 4.0)).collect();
    assert_eq!(student, [249, 499, 749, 999]);
    let half: Vec<usize> = (1..=4)
        .map(|i| d.timestep(fewstep::diffusion::distiller::substep_times(i as f64 / 4.0, 4).0))
        .collect();
    assert_eq!(half, [124, 374, 624, 874]);

    let e = tensor_file::read(&fixture("tutorial-eps/expected.safetensors")).unwrap();
    let acp = &e.get("alphas_cumprod").unwrap().data;
    let ab = |k: Option<usize>| -> (f64, f64) {
        k.map_or((1.0, 0.0), |k| {
            let a = acp[k] as f64;
            (a.sqrt(), (1.0 - a).sqrt())
        })
    };
    let g = gpu();
    let len = 12;
    let z = uniform(&mut rng("discrete target"), 4 * len, 1.5);
    let zt = Tensor::from_slice(&g, &[4, 3, 2, 2], &z);
    let t: Vec<f64> = (1..=4).map(|i| i as f64 / 4.0).collect();
    let got = distill_target(&StandIn, &schedule, &zt, &t, &fewstep::nn::NetCond::NONE, 4)
        .to_vec_blocking()
        .unwrap();
    let mut want = Vec::new();
    for i in 1..=4usize {
        let (at, st) = ab(Some(250 * i - 1));
        let (a1, s1) = ab(Some(125 * (2 * i - 1) - 1));
        let (a2, s2) = ab((i > 1).then(|| 250 * (i - 1) - 1));
        for &zv in &z[(i - 1) * len..i * len] {
            let zv = zv as f64;
            let x0 = 0.6 * zv + 0.1;
            let z1 = a1 * x0 + s1 * (zv - at * x0) / st;
            let x1 = 0.6 * z1 + 0.1;
            let z2 = a2 * x1 + s2 * (z1 - a1 * x1) / s1;
            let r = s2 / st;
            want.push((z2 - r * zv) / (a2 - r * at));
        }
    }
    // f32 GPU arithmetic over two chained steps; the target divides by alpha'' - r alpha_t,
    // which is 0.09 at the largest t here: a relative bound.
    assert_close("discrete target", &got, &want, 1e-4, 1e-4);
}

/// `fewstep distill --teacher DIFFUSERS_FOLDER`: the eps teacher is imported into the run,
/// re-parameterised to v (stage 1), and halved; every file keeps the teacher's schedule, and
/// the students export to a `DDIMScheduler` with v_prediction and trailing timesteps.
#[test]
fn a_diffusers_eps_teacher_distills_to_v_students() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let data = format!("images:{}", imgs.display());
    let teacher = fixture("tutorial-eps");
    let out = tmp.path().join("run");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "distill",
            "--teacher",
            teacher.to_str().unwrap(),
            "--from-steps",
            "8",
            "--to-steps",
            "2",
            "--updates",
            "3",
            "--batch",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        fewstep(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A diffusers folder names no data set.
    let o = run(&[]);
    assert!(
        stderr(&o).contains("pass the data it was trained on with --data"),
        "{}",
        stderr(&o)
    );
    // Students predict v or x; more timesteps than the teacher has are refused.
    let o = run(&["--data", &data, "--student-param", "eps"]);
    assert!(
        stderr(&o).contains("students predict v or x"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--data",
        &data,
        "--from-steps",
        "1024",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("more than the teacher's 1000 timesteps"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "a refused run wrote nothing");

    let o = run(&["--data", &data]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stage 1 (eps -> v)"), "{}", stderr(&o));
    let g = gpu();
    let (_, teacher_meta) = load_model(&g, &teacher).unwrap();
    for (file, steps) in [
        ("reparam-teacher.safetensors", None),
        ("steps-4.safetensors", Some(4)),
        ("steps-2.safetensors", Some(2)),
    ] {
        let (model, meta) = load_model(&g, &out.join(file)).unwrap();
        assert_eq!(model.param, Parameterization::V, "{file}");
        assert_eq!(meta.steps, steps, "{file}");
        assert_eq!(
            meta.arch.noise_schedule, teacher_meta.arch.noise_schedule,
            "{file}"
        );
        assert_eq!(meta.dataset, data, "{file}");
    }
    let (imported, _) = load_model(&g, &out.join("diffusers-teacher.safetensors")).unwrap();
    assert_eq!(imported.param, Parameterization::Eps);

    let folder = tmp.path().join("exported");
    let o = fewstep(&[
        "convert",
        "--model",
        out.join("steps-2.safetensors").to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("num_inference_steps=2"),
        "{}",
        stderr(&o)
    );
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(folder.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["prediction_type"], "v_prediction");
    assert_eq!(config["timestep_spacing"], "trailing");
    assert_eq!(config["set_alpha_to_one"], true);
}

/// A committed 2-step student of the tutorial's eps teacher (made by `fewstep distill`; see
/// make_fixtures.py) exports to the committed folder byte for byte, and what the stock
/// `DDIMPipeline` sampled from that folder at 1, 2 and 4 steps (diffusers_samples.safetensors,
/// made by --check-export) equals fewstep's samples from the same noise.
#[test]
fn an_exported_student_samples_in_diffusers_as_in_fewstep() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tensor_file::read(&fixture("tutorial-eps/expected.safetensors")).unwrap();
    crate::diffusers::export_matches_diffusers(
        &fixture("students/tutorial-eps-2step.safetensors"),
        "tutorial-eps-2step",
        &tmp.path().join("student"),
        e.get("noise").unwrap(),
        1e-5,
    );
}

/// A class-conditional diffusers teacher (the class-v fixture: v_prediction, 10 classes)
/// distills with its classes and `--guided` as fewstep's own: stage 1 makes w an input, the
/// halvings keep it, and every file keeps the teacher's discrete schedule.
#[test]
fn a_class_conditional_diffusers_teacher_distills_guided() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::distill_plan::GuidedPlan;
    use fewstep::diffusion::distill_run::{DistillPlan, DistillRun};
    let g = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let patterns = Dataset::synthetic_patterns(10, 1, 8, 8);
    let data = Dataset::from_pixels(
        "synthetic",
        1,
        8,
        8,
        patterns.pixels.clone(),
        Some((0..10u8).collect()),
        false,
    );
    let plan = DistillPlan {
        teacher: fixture("class-v"),
        from_steps: 8,
        to_steps: 2,
        updates: 2,
        final_updates: 2,
        batch: 4,
        lr: 1e-3,
        seed: 5,
        checkpoint_every: 0,
        log_every: 1,
        dataset: "synthetic".into(),
        command: "fewstep distill (test)".into(),
        ema: None,
        guided: Some(GuidedPlan {
            w_min: 0.0,
            w_max: 2.0,
            updates: 2,
        }),
        reparam: None,
    };
    let dir = tmp.path().join("run");
    let mut run = DistillRun::create(&g, &dir, plan, data).unwrap();
    while !run.is_done() {
        run.advance().unwrap();
    }
    let (_, teacher) = load_model(&g, &fixture("class-v")).unwrap();
    for (file, steps) in [
        ("guided-teacher.safetensors", None),
        ("steps-4.safetensors", Some(4)),
        ("steps-2.safetensors", Some(2)),
    ] {
        let (model, meta) = load_model(&g, &dir.join(file)).unwrap();
        assert_eq!(meta.steps, steps, "{file}");
        assert_eq!(meta.arch.classes, 10, "{file}");
        assert!(model.takes_guidance(), "{file}");
        assert_eq!(model.param, Parameterization::V, "{file}");
        assert_eq!(
            meta.arch.noise_schedule, teacher.arch.noise_schedule,
            "{file}"
        );
    }
}

/// The web page's in-memory distillation of a converted diffusers eps teacher re-parameterises
/// it first, as `fewstep distill` does: its first model is the v teacher of the halvings. Also
/// for the improved-DDPM blocks (scale_shift, resampling res blocks), which every student keeps.
#[test]
fn the_in_memory_distillation_re_parameterises_a_diffusers_eps_teacher() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::distill_memory::{Advanced, MemoryDistill};
    use fewstep::diffusion::distill_run::DistillPlan;
    use fewstep::diffusion::model_file::{import_diffusers, model_bytes};
    let g = gpu();
    for case in ["tutorial-eps", "resnet-scale-shift"] {
        let (meta, tensors) = import_diffusers(&fixture(case)).unwrap();
        let file =
            model_bytes("t.safetensors", &meta, &tensors, fewstep::nn::StoreAs::F32).unwrap();
        let plan = DistillPlan {
            teacher: "t.safetensors".into(),
            from_steps: 4,
            to_steps: 2,
            updates: 2,
            final_updates: 2,
            batch: 2,
            lr: 1e-3,
            seed: 1,
            checkpoint_every: 0,
            log_every: 1,
            dataset: "synthetic".into(),
            command: "test".into(),
            ema: None,
            guided: None,
            reparam: None,
        };
        let data = Dataset::synthetic_patterns(4, 3, 16, 16);
        let mut run = MemoryDistill::new(&g, plan, &file, data).unwrap();
        let mut names = Vec::new();
        loop {
            if let Advanced::Halving { student, done } = pollster::block_on(run.advance()).unwrap()
            {
                let (model, _) = fewstep::diffusion::load_model_bytes(
                    &g,
                    std::path::Path::new(&student.name),
                    &student.file,
                )
                .unwrap();
                assert_eq!(model.param, Parameterization::V, "{}", student.name);
                assert_eq!(
                    model.net.config,
                    {
                        let mut a = meta.arch.clone();
                        a.out_channels = model.net.config.out_channels;
                        a
                    },
                    "{case}: {} keeps the teacher's network",
                    student.name
                );
                names.push(student.name);
                if done {
                    break;
                }
            }
        }
        assert_eq!(
            names,
            ["reparam-teacher.safetensors", "steps-2.safetensors"],
            "{case}"
        );
    }
}
