//! Issue 24: class conditioning, classifier-free guidance and guided distillation (Meng et al.
//! 2023) at tiny scale: the class embedding, the guided x_hat against f64 references, stage 1's
//! target and learning on a stand-in teacher, the guided halving's target, and the command line.

use crate::common::bin::{fewstep, stderr};
use crate::common::{assert_close, gpu, rng, uniform};
use fewstep::data::Dataset;
use fewstep::diffusion::distiller::{
    distill_target, guidance_student, guided_x_hat, substep_times, DistillBatch, Distiller, Teacher,
};
use fewstep::diffusion::sampler::ddim_coef;
use fewstep::diffusion::schedule::{alpha_sigma, Schedule};
use fewstep::diffusion::{Denoiser, DistillConfig, Parameterization};
use fewstep::gpu::Gpu;
use fewstep::nn::{GuidanceRange, NetCond, UNet, UNetConfig};
use fewstep::tensor::{AdamConfig, Tape, Tensor};

/// Float rounding of a few GPU elementwise ops on values of order 1.
const GPU_ATOL: f64 = 2e-5;
const GPU_RTOL: f64 = 2e-5;

fn tiny(classes: usize, param: Parameterization) -> UNetConfig {
    let mut a = UNetConfig::preset("tiny", 1, 8, 8, param.heads()).unwrap();
    a.classes = classes;
    a
}

/// A model whose every parameter is random (the zero-initialised output layers too, so the
/// output depends on everything).
fn random_model(g: &Gpu, arch: UNetConfig, param: Parameterization, seed: &str) -> Denoiser {
    let mut r = rng(seed);
    let net = UNet::new(g, arch, 1).unwrap();
    let params = net
        .layout
        .specs
        .iter()
        .map(|s| Tensor::from_slice(g, &s.shape, &uniform(&mut r, s.numel(), 0.3)))
        .collect();
    Denoiser {
        net: UNet::from_params(net.config.clone(), params).unwrap(),
        param,
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec_blocking().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn class_embedding_changes_the_output_and_no_class_is_the_unconditional_path() {
    let g = gpu();
    let p = Parameterization::V;
    let cond_model = random_model(&g, tiny(3, p), p, "class embedding");
    let mut r = rng("class embedding z");
    let z = Tensor::from_slice(&g, &[1, 1, 8, 8], &uniform(&mut r, 64, 1.0));
    let t = [0.4];
    let per_class: Vec<Vec<f32>> = (0..3)
        .map(|c| host(&cond_model.predict_cond(&z, &t, &NetCond::uniform(1, Some(c), 0.0))))
        .collect();
    for a in 0..3 {
        for b in a + 1..3 {
            let d = max_diff(&per_class[a], &per_class[b]);
            assert!(
                d > 1e-3,
                "classes {a} and {b} give the same output (max diff {d})"
            );
        }
    }
    // A batch of mixed classes equals each image alone: the one-hot rows are per sample.
    let z3 = Tensor::from_slice(&g, &[3, 1, 8, 8], &host(&z).repeat(3));
    let cond = NetCond {
        labels: vec![Some(2), None, Some(0)],
        w: vec![],
    };
    let mixed = host(&cond_model.predict_cond(&z3, &[0.4; 3], &cond));
    let none = host(&cond_model.predict(&z, &t));
    assert!(max_diff(&mixed[0..64], &per_class[2]) < 1e-5);
    assert!(max_diff(&mixed[64..128], &none) < 1e-5);
    assert!(max_diff(&mixed[128..192], &per_class[0]) < 1e-5);
    // "No class" is the unconditional path: with the no-class row of the embedding (and its
    // bias) zero, the conditional model without a class equals an unconditional model with
    // the same other weights, to the bit.
    let uncond_arch = tiny(0, p);
    let uncond_layout = fewstep::nn::Layout::new(&uncond_arch).unwrap();
    let specs = &cond_model.net.layout.specs;
    let mut cond_params = Vec::new();
    for (s, t) in specs.iter().zip(&cond_model.net.params) {
        let mut v = host(t);
        if s.name == "class_emb.w" {
            // [4ch, classes + 1]: column `classes` is "no class".
            let k = s.shape[1];
            for row in v.chunks_mut(k) {
                row[k - 1] = 0.0;
            }
        } else if s.name == "class_emb.b" {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
        cond_params.push(Tensor::from_slice(&g, &s.shape, &v));
    }
    let uncond_params = uncond_layout
        .specs
        .iter()
        .map(|s| {
            let i = specs.iter().position(|c| c.name == s.name).unwrap();
            cond_params[i].clone()
        })
        .collect();
    let zeroed = Denoiser {
        net: UNet::from_params(cond_model.net.config.clone(), cond_params).unwrap(),
        param: p,
    };
    let uncond = Denoiser {
        net: UNet::from_params(uncond_arch, uncond_params).unwrap(),
        param: p,
    };
    let a = host(&zeroed.predict(&z, &t));
    let b = host(&uncond.predict(&z, &t));
    assert_eq!(a, b, "no class differs from the unconditional path");
    assert!(max_diff(&a, &per_class[0]) > 1e-3);
}

#[test]
fn guided_x_hat_matches_an_f64_reference_in_every_parameterization() {
    let g = gpu();
    for p in [
        Parameterization::V,
        Parameterization::Eps,
        Parameterization::X,
        Parameterization::Both,
    ] {
        let m = random_model(&g, tiny(4, p), p, &format!("guided {p}"));
        let n = 4;
        let mut r = rng(&format!("guided z {p}"));
        let z = Tensor::from_slice(&g, &[n, 1, 8, 8], &uniform(&mut r, n * 64, 1.0));
        let t = [0.9, 0.5, 0.3, 0.05];
        let labels = vec![Some(3), Some(0), None, Some(1)];
        let w = vec![0.0f32, 0.5, 2.0, 3.7];
        let cond = NetCond {
            labels: labels.clone(),
            w: w.clone(),
        };
        let got = host(&m.guided(&z, &t, &cond));
        let plain = NetCond { labels, w: vec![] };
        let x_c = host(&m.predict_cond(&z, &t, &plain));
        let x_u = host(&m.predict(&z, &t));
        let want: Vec<f64> = (0..n * 64)
            .map(|i| {
                let w = w[i / 64] as f64;
                (1.0 + w) * x_c[i] as f64 - w * x_u[i] as f64
            })
            .collect();
        assert_close(&format!("x_hat_w ({p})"), &got, &want, GPU_ATOL, GPU_RTOL);
        // w = 0 is the conditional model itself.
        assert_eq!(
            &got[..64],
            &x_c[..64],
            "w = 0 differs from the conditional model ({p})"
        );
        // Combining x_hat equals combining the raw outputs (v, eps, x, or both heads) and then
        // forming x_hat from them: checked from the network's own outputs, in f64.
        let raw = |c: &NetCond| {
            let tape = Tape::new();
            let vars = m.net.vars(&tape, false);
            let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
            host(&m.net.forward(&tape, &vars, &z, &tf, c, None).value)
        };
        let (o_c, o_u) = (raw(&plain), raw(&NetCond::NONE));
        let zs = host(&z);
        let heads = p.heads();
        let mut want_raw = vec![0f64; n * 64];
        for s in 0..n {
            let k = p.x_hat_coef(t[s]);
            let w = w[s] as f64;
            for j in 0..64 {
                let out = |h: usize| {
                    let i = s * 64 * heads + h * 64 + j;
                    (1.0 + w) * o_c[i] as f64 - w * o_u[i] as f64
                };
                let mut x = k.cz * zs[s * 64 + j] as f64 + k.c0 * out(0);
                if heads == 2 {
                    x += k.c1 * out(1);
                }
                want_raw[s * 64 + j] = x;
            }
        }
        assert_close(
            &format!("raw-space guidance ({p})"),
            &got,
            &want_raw,
            1e-4,
            1e-4,
        );
    }
}

/// A stand-in conditional teacher with a known x_hat: a_c z + b_c for class c, a_u z + b_u
/// without one (w is not an input: guidance takes its two evaluations).
struct ClassStandIn;
const A: [f64; 3] = [0.5, -0.3, 0.8];
const B: [f64; 3] = [0.2, -0.1, 0.4];
const A_U: f64 = 0.1;
const B_U: f64 = 0.05;
impl Teacher for ClassStandIn {
    fn x_hat(&self, z: &Tensor, _t: &[f64], cond: &NetCond) -> Tensor {
        let gpu = z.gpu();
        let n = z.shape()[0];
        let pick = |s: usize| cond.labels.get(s).copied().flatten().map(|c| c as usize);
        let a: Vec<f32> = (0..n)
            .map(|s| pick(s).map_or(A_U, |c| A[c]) as f32)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|s| pick(s).map_or(B_U, |c| B[c]) as f32)
            .collect();
        let len = z.numel() / n;
        let bias: Vec<f32> = (0..n).flat_map(|s| vec![b[s]; len]).collect();
        let bias = Tensor::from_slice(gpu, z.shape(), &bias);
        z.per_sample_axpby(
            &Tensor::from_slice(gpu, &[n], &a),
            Some((&bias, &Tensor::from_slice(gpu, &[n], &vec![1.0; n]))),
        )
    }
}
fn stand_in_guided(c: Option<usize>, w: f64, z: f64) -> f64 {
    let xu = A_U * z + B_U;
    match c {
        Some(c) => (1.0 + w) * (A[c] * z + B[c]) - w * xu,
        None => xu,
    }
}

fn stage1_config(updates: u64, lr: f32) -> DistillConfig {
    DistillConfig {
        teacher_steps: 8,
        updates,
        batch: 6,
        lr,
        grad_clip: 1.0,
        seed: 3,
        adam: AdamConfig::default(),
        ema_decay: None,
        guidance_stage: true,
    }
}

fn labelled_patterns() -> Dataset {
    // Six patterns in three classes (two each).
    let d = Dataset::synthetic_patterns(6, 1, 8, 8);
    let labels = (0..6u8).map(|i| i % 3).collect();
    Dataset::from_pixels("patterns", 1, 8, 8, d.pixels, Some(labels), false)
}

#[test]
fn stage_one_targets_the_guided_teacher_and_its_student_lands_on_it() {
    let g = gpu();
    let data = labelled_patterns();
    let range = GuidanceRange {
        w_min: 0.0,
        w_max: 4.0,
    };
    // The student: a w-conditioned tiny U-Net of the x parameterization (its x_hat is its
    // output), as stage 1 makes it from a teacher.
    let p = Parameterization::X;
    let base = Denoiser {
        net: UNet::new(&g, tiny(3, p), 5).unwrap(),
        param: p,
    };
    let student = guidance_student(&g, &base, range, 3);
    assert!(student.takes_guidance());
    let cfg = stage1_config(500, 3e-3);
    let mut d = Distiller::with_teacher(&g, Box::new(ClassStandIn), student, cfg, 0);
    // The targets of the first updates against the f64 reference: labels from the data, w in
    // [0, 4], t continuous, x_hat_w = (1 + w) x_hat(z, c) - w x_hat(z, none).
    let mut ws = Vec::new();
    for _ in 0..3 {
        let DistillBatch { z, t, cond, target } = d.batch(&data);
        assert!(t.iter().all(|&t| (0.0..1.0).contains(&t)));
        assert!(
            t.iter().any(|&t| (t * 8.0).fract() != 0.0),
            "t is continuous"
        );
        assert_eq!(cond.labels.len(), 6);
        assert!(cond.labels.iter().all(|l| l.is_some_and(|c| c < 3)));
        let zs = host(&z);
        let want: Vec<f64> = (0..zs.len())
            .map(|i| {
                let s = i / 64;
                let c = cond.labels[s].map(|c| c as usize);
                stand_in_guided(c, cond.w[s] as f64, zs[i] as f64)
            })
            .collect();
        assert_close("stage-1 target", &host(&target), &want, GPU_ATOL, GPU_RTOL);
        ws.extend(cond.w);
        d.update += 1;
    }
    assert!(ws.iter().all(|&w| (0.0..=4.0).contains(&w)));
    let spread =
        ws.iter().cloned().fold(f32::MIN, f32::max) - ws.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1.5, "w drawn from [0, 4]: spread {spread}");
    // Training: the student's error against the guided target on held-out (z, t, c, w) falls.
    d.update = 0;
    // A held-out batch: one stage 1 would draw at an update it never reaches.
    let probe = |d: &mut Distiller| -> f64 {
        let at = d.update;
        d.update = 1_000_000;
        let held = d.batch(&data);
        d.update = at;
        let got = host(&d.student.predict_cond(&held.z, &held.t, &held.cond));
        let want = host(&held.target);
        got.iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / got.len() as f64
    };
    let before = probe(&mut d);
    while !d.is_done() {
        d.step(&data);
    }
    let after = probe(&mut d);
    eprintln!("stage 1 on the stand-in: held-out MSE {before:.4} -> {after:.4}");
    assert!(
        after < 0.2 * before,
        "stage 1 did not learn: {before} -> {after}"
    );
}

/// A w-conditioned stand-in: x_hat = (a_c + 0.1 w) z + b_c, one evaluation.
struct WStandIn;
impl Teacher for WStandIn {
    fn x_hat(&self, z: &Tensor, _t: &[f64], cond: &NetCond) -> Tensor {
        let gpu = z.gpu();
        let n = z.shape()[0];
        let len = z.numel() / n;
        let a: Vec<f32> = (0..n)
            .map(|s| (A[cond.labels[s].unwrap() as usize] + 0.1 * cond.w[s] as f64) as f32)
            .collect();
        let b: Vec<f32> = (0..n)
            .flat_map(|s| vec![B[cond.labels[s].unwrap() as usize] as f32; len])
            .collect();
        z.per_sample_axpby(
            &Tensor::from_slice(gpu, &[n], &a),
            Some((
                &Tensor::from_slice(gpu, z.shape(), &b),
                &Tensor::from_slice(gpu, &[n], &vec![1.0; n]),
            )),
        )
    }
    fn takes_guidance(&self) -> bool {
        true
    }
}

#[test]
fn guided_halving_target_matches_the_reference() {
    let g = gpu();
    let (n, student_steps) = (4usize, 4usize);
    let t: Vec<f64> = (1..=n).map(|i| i as f64 / student_steps as f64).collect();
    let mut r = rng("guided halving");
    let z = uniform(&mut r, n * 16, 1.5);
    let zt = Tensor::from_slice(&g, &[n, 1, 4, 4], &z);
    let cond = NetCond {
        labels: vec![Some(0), Some(2), Some(1), Some(0)],
        w: vec![0.0, 1.5, 3.0, 4.0],
    };
    let target = distill_target(&WStandIn, &Schedule::Cosine, &zt, &t, &cond, student_steps);
    // One evaluation per teacher step (w is an input), not guidance's two.
    let x = guided_x_hat(&WStandIn, &zt, &t, &cond);
    let xs = host(&x);
    let mut want = vec![0f64; n * 16];
    for s in 0..n {
        let c = cond.labels[s].unwrap() as usize;
        let f = |z: f64| (A[c] + 0.1 * cond.w[s] as f64) * z + B[c];
        for j in 0..16 {
            assert!((xs[s * 16 + j] as f64 - f(z[s * 16 + j] as f64)).abs() < 1e-5);
        }
        let (t1, t2) = substep_times(t[s], student_steps);
        let (c1z, c1x) = ddim_coef(t[s], t1);
        let (c2z, c2x) = ddim_coef(t1, t2);
        let (at, st) = alpha_sigma(t[s]);
        let (a2, s2) = alpha_sigma(t2);
        for j in 0..16 {
            let z0 = z[s * 16 + j] as f64;
            let z1 = c1z * z0 + c1x * f(z0);
            let z2 = c2z * z1 + c2x * f(z1);
            want[s * 16 + j] = (z2 - (s2 / st) * z0) / (a2 - (s2 / st) * at);
        }
    }
    assert_close("guided x_tilde", &host(&target), &want, GPU_ATOL, GPU_RTOL);
}

/// Three classes of two small RGB images each, one folder per class (`images:DIR` labels).
pub fn write_class_images(dir: &std::path::Path) {
    for (k, class) in ["circle", "square", "stripe"].iter().enumerate() {
        let sub = dir.join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(16 + i * 4, 16, |x, y| {
                let v = match k {
                    0 => ((x as i32 - 8).pow(2) + (y as i32 - 8).pow(2) < 30) as u8 * 200,
                    1 => ((4..12).contains(&x) && (4..12).contains(&y)) as u8 * 220,
                    _ => ((x / 3) % 2) as u8 * 180,
                };
                image::Rgb([v, v / 2 + i as u8 * 20, 255 - v])
            });
            img.save(sub.join(format!("img{i}.png"))).unwrap();
        }
    }
}

fn meta_of(path: &std::path::Path) -> fewstep::diffusion::ModelMeta {
    let bytes = std::fs::read(path).unwrap();
    fewstep::diffusion::parse_model(path, &bytes).unwrap().0
}

#[test]
fn train_sample_and_distill_a_class_conditional_model_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("classes");
    write_class_images(&imgs);
    let run = tmp.path().join("run");
    let data = format!("images:{}", imgs.display());
    let common = [
        "--data",
        &data,
        "--preset",
        "tiny",
        "--image-size",
        "8",
        "--batch",
        "4",
        "--sample-every",
        "20",
        "--sample-steps",
        "4",
        "--log-every",
        "5",
    ];
    let mut args = vec![
        "train",
        "--classes",
        "--uncond-prob",
        "0.2",
        "--steps",
        "20",
    ];
    args.extend(common);
    args.extend(["--out", run.to_str().unwrap()]);
    let o = fewstep(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = run.join("model.safetensors");
    // The training grid: a row of 4 per class.
    let grid = image::open(run.join("samples/step_00000020.png")).unwrap();
    let (gw, gh) = (grid.width() as f64, grid.height() as f64);
    assert!(
        (gw / gh - 4.0 / 3.0).abs() < 0.1,
        "{gw}x{gh} is not 4 columns by 3 rows"
    );
    let meta = meta_of(&model);
    assert_eq!(meta.arch.classes, 3);
    assert_eq!(meta.arch.class_names, ["circle", "square", "stripe"]);
    let m = model.to_str().unwrap();
    // A class by name and by number, and one row per class.
    let vals = tmp.path().join("v.json");
    for class in ["square", "1"] {
        let o = fewstep(&[
            "sample",
            "--model",
            m,
            "--class",
            class,
            "--guidance",
            "2",
            "--steps",
            "4",
            "--count",
            "4",
            "--out",
            tmp.path().join("s.png").to_str().unwrap(),
            "--values",
            vals.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("of square (guidance 2)"),
            "{}",
            stderr(&o)
        );
    }
    let o = fewstep(&[
        "sample",
        "--model",
        m,
        "--class",
        "all",
        "--steps",
        "2",
        "--count",
        "2",
        "--out",
        tmp.path().join("rows.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("6 images (2 per class"),
        "{}",
        stderr(&o)
    );
    // Refusals name the problem.
    let o = fewstep(&["sample", "--model", m, "--class", "dress", "--out", "x.png"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("its classes are 0 circle, 1 square, 2 stripe"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&["sample", "--model", m, "--class", "3", "--out", "x.png"]);
    assert!(
        stderr(&o).contains("--class 3 is out of range"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&[
        "sample",
        "--model",
        m,
        "--class",
        "0",
        "--guidance",
        "-1",
        "--out",
        "x.png",
    ]);
    assert!(
        stderr(&o).contains("--guidance -1 is not usable"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&["sample", "--class", "Dress", "--out", "x.png"]);
    assert!(
        stderr(&o).contains("this model is unconditional"),
        "{}",
        stderr(&o)
    );
    // Guided distillation: stage 1, then 8 -> 4 -> 2 with w as an input.
    let out = tmp.path().join("guided");
    let o = fewstep(&[
        "distill",
        "--teacher",
        m,
        "--guided",
        "--guidance-range",
        "0,3",
        "--guidance-updates",
        "4",
        "--from-steps",
        "8",
        "--to-steps",
        "2",
        "--updates",
        "3",
        "--batch",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = meta_of(&out.join("guided-teacher.safetensors"));
    assert_eq!(
        g.arch.guidance,
        Some(GuidanceRange {
            w_min: 0.0,
            w_max: 3.0
        })
    );
    assert_eq!(g.steps, None);
    let s2 = meta_of(&out.join("steps-2.safetensors"));
    assert_eq!(s2.steps, Some(2));
    assert_eq!(s2.arch.guidance, g.arch.guidance);
    assert_eq!(s2.arch.class_names, meta.arch.class_names);
    assert_eq!(s2.lineage.steps_path, [8, 4, 2]);
    let o = fewstep(&[
        "sample",
        "--model",
        out.join("steps-2.safetensors").to_str().unwrap(),
        "--class",
        "stripe",
        "--guidance",
        "5",
        "--count",
        "4",
        "--out",
        tmp.path().join("g.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("distilled for guidance 0 to 3"),
        "{}",
        stderr(&o)
    );
    // --guided refuses an unconditional teacher, and a guided student as a teacher.
    let bundled_teacher = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/fmnist-small-teacher.safetensors"
    );
    let o = fewstep(&[
        "distill",
        "--teacher",
        bundled_teacher,
        "--guided",
        "--out",
        tmp.path().join("no").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("needs a class-conditional teacher"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&[
        "distill",
        "--teacher",
        out.join("guided-teacher.safetensors").to_str().unwrap(),
        "--guided",
        "--from-steps",
        "8",
        "--out",
        tmp.path().join("no2").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("already takes the guidance weight"),
        "{}",
        stderr(&o)
    );
    // Compare one class: a row per step count, students and the teacher's DDIM.
    let o = fewstep(&[
        "compare",
        "--model",
        out.join("steps-2.safetensors").to_str().unwrap(),
        "--model",
        m,
        "--steps",
        "2,4",
        "--class",
        "square",
        "--guidance",
        "1",
        "--count",
        "2",
        "--out",
        tmp.path().join("c.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = stderr(&o)
        .lines()
        .filter(|l| l.contains(" ms for 2 images"))
        .count();
    assert_eq!(rows, 3, "2 distilled, 2 DDIM, 4 DDIM: {}", stderr(&o));
    let o = fewstep(&[
        "info",
        "--model",
        out.join("steps-2.safetensors").to_str().unwrap(),
    ]);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        said.contains("3 classes, guidance w 0..3 as an input"),
        "{said}"
    );
    // Eval: class accuracy per guidance weight, from a classifier of the same classes.
    let clf = tmp.path().join("clf.safetensors");
    let o = fewstep(&[
        "train-classifier",
        "--data",
        &data,
        "--image-size",
        "8",
        "--updates",
        "20",
        "--batch",
        "6",
        "--out",
        clf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fewstep(&[
        "eval",
        "--model",
        out.join("steps-2.safetensors").to_str().unwrap(),
        "--model",
        m,
        "--steps",
        "2",
        "--teacher-steps",
        "8",
        "--teacher-distance-steps",
        "2",
        "--guidance",
        "0,2",
        "--samples",
        "6",
        "--psnr-samples",
        "3",
        "--classifier",
        clf.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (r, w) in rows.iter().zip([0.0, 0.0, 2.0, 2.0]) {
        assert_eq!(r["guidance"].as_f64(), Some(w));
        let acc = r["class_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(r["per_class_accuracy"].as_array().unwrap().len(), 3);
    }
    let o = fewstep(&[
        "eval",
        "--model",
        bundled_teacher,
        "--steps",
        "2",
        "--guidance",
        "1",
        "--samples",
        "2",
    ]);
    assert!(
        stderr(&o).contains("but these models are unconditional"),
        "{}",
        stderr(&o)
    );
    // --classes on unlabelled data.
    let flat = tmp.path().join("flat");
    crate::common::bin::write_images(&flat);
    let o = fewstep(&[
        "train",
        "--classes",
        "--data",
        &format!("images:{}", flat.display()),
        "--image-size",
        "8",
        "--steps",
        "1",
        "--out",
        tmp.path().join("r2").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("--classes needs labelled data"),
        "{}",
        stderr(&o)
    );
}

/// A class-conditional family as the app lists it: the bundled models' descriptions with three
/// named classes (and a w input on the students).
fn conditional_state() -> fewstep::app::state::AppState {
    use fewstep::bundled;
    let mut s = fewstep::app::state::AppState::default();
    for b in bundled::BUNDLED {
        let (mut meta, tensors) =
            fewstep::diffusion::parse_model(std::path::Path::new(b.file), b.bytes()).unwrap();
        meta.arch.classes = 3;
        meta.arch.class_names = vec!["Dress".into(), "Bag".into(), "Ankle boot".into()];
        if meta.steps.is_some() {
            meta.arch.guidance = Some(GuidanceRange {
                w_min: 0.0,
                w_max: 4.0,
            });
        }
        s.add_model(fewstep::app::engine::ModelInfo {
            name: format!("cond-{}", b.name),
            meta,
            params: tensors.iter().map(|t| t.data.len()).sum(),
            file_bytes: 0,
        });
    }
    s
}

#[test]
fn the_app_asks_for_a_class_with_guidance_and_the_link_and_command_carry_them() {
    use fewstep::app::StartOptions;
    let mut s = conditional_state();
    let four = s
        .models
        .iter()
        .position(|m| m.meta.steps == Some(4))
        .unwrap();
    s.select(four);
    // A class-conditional model starts with guidance on, no class chosen.
    assert_eq!(s.settings.class, None);
    assert_eq!(s.settings.guidance, fewstep::app::state::DEFAULT_GUIDANCE);
    s.settings.class = Some(2);
    s.settings.guidance = 2.5;
    let (_, rows, _) = s.start_sample().unwrap();
    assert_eq!((rows[0].class, rows[0].guidance), (Some(2), 2.5));
    assert!(
        rows[0].label.contains("Ankle boot (guidance 2.5)"),
        "{}",
        rows[0].label
    );
    let r = s.sample_view.as_ref().unwrap().reproduce.clone().unwrap();
    assert_eq!(r.class.as_deref(), Some("Ankle boot"));
    let q = r.to_query();
    assert!(q.contains("class=Ankle%20boot&guidance=2.5"), "{q}");
    assert_eq!(StartOptions::from_query(&q).unwrap(), r);
    let cmd = r.sample_command();
    assert!(cmd.contains("--class 'Ankle boot' --guidance 2.5"), "{cmd}");
    assert!(StartOptions::from_query("class=Bag&guidance=-1").is_err());
    // Compare, one group per class: every ticked count's student and teacher, per class.
    s.compare.per_class = true;
    let rows = s.compare_rows().unwrap();
    let ticked = s.compare.counts.iter().filter(|c| c.1).count();
    let students = s.compare.counts.iter().filter(|c| c.1 && c.0 <= 4).count();
    assert_eq!(rows.len(), 3 * (ticked + students), "{rows:?}");
    assert_eq!(rows[0].class, Some(0));
    assert!(rows[0].label.starts_with("Dress: "), "{}", rows[0].label);
    assert_eq!(rows.last().unwrap().class, Some(2));
    // An unconditional model shows no class controls: selecting it clears them.
    s.add_model(fewstep::app::engine::ModelInfo {
        name: "plain".into(),
        ..s.models[0].clone()
    });
    let last = s.models.len() - 1;
    s.models[last].meta.arch.classes = 0;
    s.models[last].meta.arch.class_names.clear();
    s.models[last].meta.arch.guidance = None;
    s.select(last);
    assert_eq!(
        (s.settings.class, s.settings.guidance, s.compare.per_class),
        (None, 0.0, false)
    );
}

#[test]
fn old_unconditional_model_files_load_and_describe_themselves_as_before() {
    // The bundled files predate conditioning: no class fields, and writing their description
    // back gives the same JSON (nothing new is added to an unconditional model's file).
    for b in fewstep::bundled::BUNDLED {
        let (meta, _) =
            fewstep::diffusion::parse_model(std::path::Path::new(b.file), b.bytes()).unwrap();
        assert_eq!(meta.arch.classes, 0);
        assert!(meta.arch.class_names.is_empty() && meta.arch.guidance.is_none());
        let written = serde_json::to_value(&meta).unwrap();
        let file =
            fewstep::nn::tensor_file::parse(std::path::Path::new(b.file), b.bytes()).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&file.metadata["fewstep"]).unwrap();
        assert_eq!(written, stored, "{}", b.name);
    }
}

/// The synthetic patterns as class folders of 8x8 PNGs: 8 shapes (the classes), `per_class`
/// variants of each (shifted, resized, on lighter backgrounds).
pub fn write_pattern_classes(dir: &std::path::Path, per_class: usize) {
    const NAMES: [&str; 8] = [
        "disc", "hbar", "vbar", "ring", "cross", "square", "diagonal", "dots",
    ];
    let d = Dataset::synthetic_patterns(8 * per_class, 1, 8, 8);
    for i in 0..d.len() {
        let sub = dir.join(NAMES[i % 8]);
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::GrayImage::from_raw(8, 8, d.image(i).to_vec()).unwrap();
        img.save(sub.join(format!("{i:03}.png"))).unwrap();
    }
}

fn run_ok(args: &[&str]) -> String {
    let o = fewstep(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue 24's tiny-scale figures: a class-conditional teacher of the 8 synthetic pattern classes,
/// its guided distillation to 4, 2 and 1 steps, and `fewstep eval --guidance` (class accuracy and
/// distance against w, students against the teacher's DDIM). Minutes on a CPU: run by hand with
/// `--ignored`; FEWSTEP_TINY_GUIDED_DIR keeps the files.
#[test]
#[ignore]
fn tiny_guided_family_eval_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var("FEWSTEP_TINY_GUIDED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let imgs = root.join("patterns");
    write_pattern_classes(&imgs, 4);
    let data = format!("images:{}", imgs.display());
    let p = |s: &str| root.join(s).to_str().unwrap().to_string();
    run_ok(&[
        "train-classifier",
        "--data",
        &data,
        "--image-size",
        "8",
        "--updates",
        "300",
        "--batch",
        "32",
        "--out",
        &p("clf.safetensors"),
    ]);
    run_ok(&[
        "train",
        "--data",
        &data,
        "--image-size",
        "8",
        "--classes",
        "--uncond-prob",
        "0.15",
        "--preset",
        "tiny",
        "--steps",
        "1500",
        "--batch",
        "16",
        "--sample-every",
        "0",
        "--log-every",
        "100",
        "--out",
        &p("teacher"),
    ]);
    let teacher = p("teacher/model.safetensors");
    run_ok(&[
        "distill",
        "--teacher",
        &teacher,
        "--guided",
        "--guidance-updates",
        "600",
        "--from-steps",
        "16",
        "--to-steps",
        "1",
        "--updates",
        "300",
        "--batch",
        "16",
        "--log-every",
        "100",
        "--out",
        &p("guided"),
    ]);
    let table = run_ok(&[
        "eval",
        "--model",
        &p("guided/steps-4.safetensors"),
        "--model",
        &p("guided/steps-2.safetensors"),
        "--model",
        &p("guided/steps-1.safetensors"),
        "--model",
        &teacher,
        "--steps",
        "1,2,4",
        "--teacher-steps",
        "16",
        "--teacher-distance-steps",
        "16",
        "--guidance",
        "0,1,2,4",
        "--samples",
        "256",
        "--psnr-samples",
        "32",
        "--classifier",
        &p("clf.safetensors"),
        "--plot",
        &p("eval.png"),
    ]);
    println!("{table}");
    assert!(table.contains('%'));
}

/// `fewstep recipe --guided` end to end on three class folders (shortened): a class-conditional
/// teacher, guided distillation, eval at w = 0, 1, 2, 4, and a bundle of w-conditioned students.
#[test]
fn recipe_guided_makes_a_guided_family() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("classes");
    write_class_images(&imgs);
    let out = tmp.path().join("recipe");
    let data = format!("images:{}", imgs.display());
    run_ok(&[
        "recipe",
        "--guided",
        "--preset",
        "quick",
        "--data",
        &data,
        "--image-size",
        "8",
        "--name",
        "shapes",
        "--train-steps",
        "20",
        "--updates",
        "3",
        "--samples",
        "6",
        "--out",
        out.to_str().unwrap(),
    ]);
    let teacher = meta_of(&out.join("bundle/shapes-teacher.f16.safetensors"));
    assert_eq!(teacher.arch.classes, 3);
    assert_eq!(teacher.arch.guidance, None);
    for n in [4, 2, 1] {
        let s = meta_of(&out.join(format!("bundle/shapes-steps-{n}.f16.safetensors")));
        assert_eq!(s.steps, Some(n));
        assert_eq!(
            s.arch.guidance,
            Some(GuidanceRange {
                w_min: 0.0,
                w_max: 4.0
            })
        );
    }
    assert!(out.join("distill/guided-teacher.safetensors").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
    let ws: Vec<f64> = state["eval_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guidance"].as_f64().unwrap())
        .collect();
    for w in [0.0, 1.0, 2.0, 4.0] {
        assert!(ws.contains(&w), "no eval rows at w = {w}: {ws:?}");
    }
    // The stage-1 model is bundled too: it is the students' first parent.
    let g = meta_of(&out.join("bundle/shapes-guided-teacher.f16.safetensors"));
    assert!(g.arch.guidance.is_some() && g.steps.is_none());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle/manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "shapes-4step",
            "shapes-2step",
            "shapes-1step",
            "shapes-teacher",
            "shapes-guided-teacher"
        ]
    );
}
