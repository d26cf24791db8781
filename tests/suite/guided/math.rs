//! Guidance on the GPU against references: the class embedding, guided x_hat in every
//! parameterization, stage 1 on a stand-in teacher, the guided halving's target.

use super::*;

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
