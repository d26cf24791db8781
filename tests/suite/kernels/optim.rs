//! Adam (single and multi-tensor, with clipping and EMA) and the Gaussian generator.

use super::*;

#[test]
fn adam_with_clipping_matches_reference() {
    let g = gpu();
    let mut r = rng("adam");
    let sizes = [7usize, 64, 3];
    let params: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 1.0)).collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|_| sizes.iter().map(|&n| uniform(&mut r, n, 2.0)).collect())
        .collect();
    for (max_norm, wd) in [(0.0f32, 0.0f32), (1.0, 0.0), (0.5, 0.01)] {
        let cfg = AdamConfig {
            weight_decay: wd,
            ..Default::default()
        };
        let pt: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::from_slice(&g, &[p.len()], p))
            .collect();
        let mut opt = Adam::new(&g, &pt, cfg);
        let mut pr: Vec<Vec<f64>> = params.iter().map(|p| to_f64(p)).collect();
        let mut m: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        let mut v = m.clone();
        let lr = 0.01;
        for (step, gs) in grads.iter().enumerate() {
            let gt: Vec<Tensor> = gs
                .iter()
                .map(|x| Tensor::from_slice(&g, &[x.len()], x))
                .collect();
            opt.update(&pt, &gt, lr, GradClip { max_norm });
            let norm: f64 = gs
                .iter()
                .flatten()
                .map(|&x| (x as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let scale = if max_norm > 0.0 {
                (max_norm as f64 / (norm + 1e-6)).min(1.0)
            } else {
                1.0
            };
            let t = (step + 1) as i32;
            let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
            for i in 0..sizes.len() {
                for j in 0..sizes[i] {
                    let gr = gs[i][j] as f64 * scale;
                    m[i][j] = b1 * m[i][j] + (1.0 - b1) * gr;
                    v[i][j] = b2 * v[i][j] + (1.0 - b2) * gr * gr;
                    let mh = m[i][j] / (1.0 - b1.powi(t));
                    let vh = v[i][j] / (1.0 - b2.powi(t));
                    pr[i][j] -= lr as f64 * (mh / (vh.sqrt() + eps) + wd as f64 * pr[i][j]);
                }
            }
            let clip = opt.clip.to_vec_blocking().unwrap();
            assert_close("gradient norm", &clip[1..2], &[norm], 1e-4, 1e-5);
        }
        for i in 0..sizes.len() {
            assert_close(
                &format!("adam max_norm {max_norm} wd {wd} tensor {i}"),
                &pt[i].to_vec_blocking().unwrap(),
                &pr[i],
                1e-5,
                1e-4,
            );
        }
    }
}

/// Multi-tensor Adam: relative error of the updated weights and averages against f64 after a few
/// steps (each step's own f32 rounding: ~1e-7 per operation, sqrt and divisions included).
const ADAM_MULTI_ATOL: f64 = 1e-5;
const ADAM_MULTI_RTOL: f64 = 1e-4;
/// The gradient norm: a sum of up to ~10^5 squares in f32 partial sums.
const ADAM_NORM_RTOL: f64 = 1e-5;

#[test]
fn multi_tensor_adam_with_ema_matches_reference_across_launches() {
    let g = gpu();
    let mut r = rng("adam_multi");
    // 23 tensors: lengths not multiples of 4, one empty, several above one sum-of-squares
    // chunk (4096) and above one Adam workgroup (1024), so launches, chunks and tails all split.
    let sizes: Vec<usize> = vec![
        7, 64, 3, 1, 0, 4097, 1024, 1025, 9000, 5, 6, 8191, 33, 2, 4096, 12, 300, 1, 17, 10_001, 4,
        255, 70,
    ];
    let steps = 3;
    let params: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 1.0)).collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..steps)
        .map(|_| sizes.iter().map(|&n| uniform(&mut r, n, 0.05)).collect())
        .collect();
    // (max_norm, weight decay, tensors per launch, EMA decay)
    for (max_norm, wd, per_launch, ema_decay) in [
        (0.0f32, 0.0f32, 16usize, Some(0.9f32)),
        (1.0, 0.01, 5, Some(0.99)),
        (0.5, 0.0, 1, None),
        (1e9, 0.0, 3, Some(0.5)),
    ] {
        let what = format!("max_norm {max_norm} wd {wd} per launch {per_launch}");
        let cfg = AdamConfig {
            weight_decay: wd,
            ..Default::default()
        };
        let pt: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::from_slice(&g, &[p.len()], p))
            .collect();
        let et: Vec<Tensor> = pt.iter().map(|p| p.deep_clone()).collect();
        let mut opt = Adam::new(&g, &pt, cfg);
        opt.set_tensors_per_launch(per_launch);
        let mut pr: Vec<Vec<f64>> = params.iter().map(|p| to_f64(p)).collect();
        let mut er = pr.clone();
        let mut m: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        let mut v = m.clone();
        let lr = 0.01;
        for (step, gs) in grads.iter().enumerate() {
            let gt: Vec<Tensor> = gs
                .iter()
                .map(|x| Tensor::from_slice(&g, &[x.len()], x))
                .collect();
            opt.update_with_ema(
                &pt,
                &gt,
                lr,
                GradClip { max_norm },
                ema_decay.map(|d| (et.as_slice(), d)),
            );
            let norm: f64 = gs
                .iter()
                .flatten()
                .map(|&x| (x as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let scale = if max_norm > 0.0 {
                (max_norm as f64 / (norm + 1e-6)).min(1.0)
            } else {
                1.0
            };
            let t = (step + 1) as i32;
            let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
            for i in 0..sizes.len() {
                for j in 0..sizes[i] {
                    let gr = gs[i][j] as f64 * scale;
                    m[i][j] = b1 * m[i][j] + (1.0 - b1) * gr;
                    v[i][j] = b2 * v[i][j] + (1.0 - b2) * gr * gr;
                    let mh = m[i][j] / (1.0 - b1.powi(t));
                    let vh = v[i][j] / (1.0 - b2.powi(t));
                    pr[i][j] -= lr as f64 * (mh / (vh.sqrt() + eps) + wd as f64 * pr[i][j]);
                    if let Some(d) = ema_decay {
                        let d = d as f64;
                        er[i][j] = d * er[i][j] + (1.0 - d) * pr[i][j];
                    }
                }
            }
            let clip = opt.clip.to_vec_blocking().unwrap();
            assert_close(
                &format!("{what}: gradient norm"),
                &clip[1..2],
                &[norm],
                0.0,
                ADAM_NORM_RTOL,
            );
        }
        for i in 0..sizes.len() {
            let got = pt[i].to_vec_blocking().unwrap();
            assert_close(
                &format!("{what}: weights {i}"),
                &got,
                &pr[i],
                ADAM_MULTI_ATOL,
                ADAM_MULTI_RTOL,
            );
            let e = et[i].to_vec_blocking().unwrap();
            match ema_decay {
                Some(_) => assert_close(
                    &format!("{what}: average {i}"),
                    &e,
                    &er[i],
                    ADAM_MULTI_ATOL,
                    ADAM_MULTI_RTOL,
                ),
                None => assert_eq!(e, params[i], "{what}: average {i} untouched"),
            }
        }
    }
}

#[test]
fn multi_tensor_adam_is_deterministic_and_matches_single_tensor_launches() {
    let g = gpu();
    let mut r = rng("adam_multi_det");
    let sizes = [4097usize, 3, 10_000, 1, 64, 5000];
    let params: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 1.0)).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 0.1)).collect();
    let run = |per_launch: usize| {
        let pt: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::from_slice(&g, &[p.len()], p))
            .collect();
        let et: Vec<Tensor> = pt.iter().map(|p| p.deep_clone()).collect();
        let gt: Vec<Tensor> = grads
            .iter()
            .map(|x| Tensor::from_slice(&g, &[x.len()], x))
            .collect();
        let mut opt = Adam::new(&g, &pt, AdamConfig::default());
        opt.set_tensors_per_launch(per_launch);
        for _ in 0..2 {
            opt.update_with_ema(&pt, &gt, 0.01, GradClip { max_norm: 0.3 }, Some((&et, 0.9)));
        }
        let mut out: Vec<Vec<f32>> = pt.iter().map(|t| t.to_vec_blocking().unwrap()).collect();
        out.extend(et.iter().map(|t| t.to_vec_blocking().unwrap()));
        out.push(opt.clip.to_vec_blocking().unwrap());
        out
    };
    let a = run(16);
    assert_eq!(a, run(16), "same inputs, same bytes");
    // The chunks and their order do not depend on how tensors are grouped into launches.
    assert_eq!(a, run(1), "one tensor per launch gives the same bytes");
}

#[test]
fn gaussian_generator_matches_cpu_and_is_deterministic() {
    let g = gpu();
    for &(seed, stream, n) in &[
        (0u64, 0u64, 1usize),
        (1, 0, 7),
        (12345, 3, 1000),
        (u64::MAX - 5, 1 << 40, 4099),
    ] {
        let a = Tensor::randn(&g, &[n], seed, stream)
            .to_vec_blocking()
            .unwrap();
        let b = Tensor::randn(&g, &[n], seed, stream)
            .to_vec_blocking()
            .unwrap();
        assert_eq!(a, b, "same seed, same numbers");
        let want = fewstep::tensor::philox_normal_cpu(seed, stream, n);
        // Only log/sin/cos rounding differs from the f64 reference.
        assert_close(
            &format!("philox seed {seed}"),
            &a,
            &to_f64(&want),
            1e-5,
            1e-5,
        );
        // A draw split in two at a multiple of 4 is the same draw (sampling in passes).
        let cut = (n / 2) / 4 * 4;
        let tail = Tensor::randn_from(&g, &[n - cut], seed, stream, cut)
            .to_vec_blocking()
            .unwrap();
        assert_eq!(&a[cut..], &tail[..], "randn_from({cut}) continues the draw");
        let other = Tensor::randn(&g, &[n], seed ^ 1, stream)
            .to_vec_blocking()
            .unwrap();
        assert!(n < 4 || a != other, "different seeds must differ");
    }
    let big = Tensor::randn(&g, &[200_000], 7, 0)
        .to_vec_blocking()
        .unwrap();
    let mean = big.iter().map(|&v| v as f64).sum::<f64>() / big.len() as f64;
    let var = big.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / big.len() as f64;
    assert!(
        mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
        "N(0,1) moments: mean {mean}, var {var}"
    );
}
