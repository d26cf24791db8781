//! The tape: each differentiable op's gradient through `Tape::backward` against central finite
//! differences of the forward pass, attention against a CPU reference, and a composed conv net
//! trained by Adam (one submit per step) that must lower its loss at least 10x, reproducibly.

use crate::common;

use common::*;
use fewstep::gpu::Gpu;
use fewstep::tensor::{Adam, AdamConfig, Conv2d, GradClip, MatmulOpts, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FD_EPS: f32 = 1e-2;
/// Gradients through several ops: f32 forward noise divided by 2 * FD_EPS, plus curvature.
const FD_ATOL: f64 = 3e-3;
const FD_RTOL: f64 = 3e-2;
const ATTN_ATOL: f64 = 1e-5;
const ATTN_RTOL: f64 = 1e-4;

/// Checks d(loss)/d(input i) from the tape against central differences at a few coordinates.
fn check_grads(
    g: &Gpu,
    r: &mut StdRng,
    what: &str,
    inputs: &[(Vec<usize>, Vec<f32>)],
    f: impl Fn(&Tape, &[Var]) -> Var,
) {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(s, d)| tape.leaf(&Tensor::from_slice(g, s, d)))
        .collect();
    let loss = f(&tape, &vars);
    assert_eq!(loss.value.numel(), 1, "{what}: loss must be a scalar");
    let (_, leaves) = tape.backward(&loss, None);
    let forward = |vals: &[Vec<f32>]| -> f64 {
        let t = Tape::new();
        let vs: Vec<Var> = inputs
            .iter()
            .zip(vals)
            .map(|((s, _), d)| Var::constant(Tensor::from_slice(g, s, d)))
            .collect();
        f(&t, &vs).value.to_vec_blocking().unwrap()[0] as f64
    };
    for (i, (_, data)) in inputs.iter().enumerate() {
        let grad = leaves
            .of(&vars[i])
            .unwrap_or_else(|| panic!("{what}: no gradient for input {i}"))
            .to_vec_blocking()
            .unwrap();
        for _ in 0..3 {
            let j = r.random_range(0..data.len());
            let fd = central_difference(data, j, FD_EPS, |d| {
                let mut vals: Vec<Vec<f32>> = inputs.iter().map(|(_, d)| d.clone()).collect();
                vals[i] = d.to_vec();
                forward(&vals)
            });
            assert_close(
                &format!("{what}: d/d input {i} [{j}] vs FD"),
                &grad[j..j + 1],
                &[fd],
                FD_ATOL,
                FD_RTOL,
            );
        }
    }
}

#[test]
fn attention_matches_reference() {
    let g = gpu();
    let mut r = rng("attention");
    let (n, c, hw) = (2, 5, 9);
    let q = uniform(&mut r, n * c * hw, 1.0);
    let k = uniform(&mut r, n * c * hw, 1.0);
    let v = uniform(&mut r, n * c * hw, 1.0);
    let t = |d: &[f32]| Tensor::from_slice(&g, &[n, c, hw], d);
    let out = fewstep::tensor::attention(&t(&q), &t(&k), &t(&v))
        .to_vec_blocking()
        .unwrap();
    let mut want = vec![0.0; n * c * hw];
    let scale = 1.0 / (c as f64).sqrt();
    for s in 0..n {
        let at = |m: &[f32], ch: usize, p: usize| m[(s * c + ch) * hw + p] as f64;
        for i in 0..hw {
            let logits: Vec<f64> = (0..hw)
                .map(|j| (0..c).map(|ch| at(&q, ch, i) * at(&k, ch, j)).sum::<f64>() * scale)
                .collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
            for ch in 0..c {
                want[(s * c + ch) * hw + i] = (0..hw)
                    .map(|j| (logits[j] - mx).exp() / z * at(&v, ch, j))
                    .sum();
            }
        }
    }
    assert_close("attention", &out, &want, ATTN_ATOL, ATTN_RTOL);
}

/// 2x2 average pooling against a plain CPU mean of each block (f64), on odd channel counts and
/// non-square sides. Tolerance: 1e-6 (four f32 values summed and quartered).
#[test]
fn average_pooling_matches_reference() {
    let g = gpu();
    let mut r = rng("avg_pool");
    let (n, c, h, w) = (3, 5, 6, 10);
    let x = uniform(&mut r, n * c * h * w, 2.0);
    let tape = Tape::new();
    let y = tape.avg_pool2x(&Var::constant(Tensor::from_slice(&g, &[n, c, h, w], &x)));
    assert_eq!(y.shape(), &[n, c, h / 2, w / 2]);
    let mut want = Vec::new();
    for p in 0..n * c {
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                let at = |di: usize, dj: usize| x[p * h * w + (2 * i + di) * w + 2 * j + dj] as f64;
                want.push((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0);
            }
        }
    }
    assert_close(
        "avg pool",
        &y.value.to_vec_blocking().unwrap(),
        &want,
        1e-6,
        1e-6,
    );
}

#[test]
fn op_gradients_match_finite_differences() {
    let g = gpu();
    let mut r = rng("op_gradients");
    let mut ur = StdRng::seed_from_u64(r.random());
    let mut u = |n: usize| uniform(&mut ur, n, 1.0);
    let probe = u(2 * 3 * 4 * 4);
    let probe_t = Tensor::from_slice(&g, &[2, 3, 4, 4], &probe);
    // Each check reduces its output to a scalar with a fixed random probe so every element counts.
    let dotp = |t: &Tape, y: &Var, p: &Tensor| t.mean_all(&t.mul(y, &Var::constant(p.clone())));

    check_grads(
        &g,
        &mut r,
        "attention",
        &[
            (vec![2, 3, 16], u(96)),
            (vec![2, 3, 16], u(96)),
            (vec![2, 3, 16], u(96)),
        ],
        |t, v| {
            let y = t.attention(&v[0], &v[1], &v[2]);
            dotp(t, &t.reshape(&y, &[2, 3, 4, 4]), &probe_t)
        },
    );
    check_grads(
        &g,
        &mut r,
        "slice channels",
        &[(vec![2, 5, 3], u(30))],
        |t, v| {
            let y = t.slice_channels(&v[0], 1, 3);
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "linear",
        &[(vec![4, 6], u(24)), (vec![5, 6], u(30)), (vec![5], u(5))],
        |t, v| {
            let y = t.linear(&v[0], &v[1], &v[2]);
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "batched matmul, shared B, transposes",
        &[(vec![3, 4, 5], u(60)), (vec![6, 4], u(24))],
        |t, v| {
            let y = t.matmul(
                &v[0],
                &v[1],
                MatmulOpts {
                    trans_a: true,
                    trans_b: true,
                    alpha: 0.7,
                    gradients: (false, false),
                },
            );
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "conv + bias, stride 2",
        &[
            (vec![2, 3, 7, 7], u(294)),
            (vec![3, 3, 3, 3], u(81)),
            (vec![3], u(3)),
        ],
        |t, v| {
            let y = t.conv2d(
                &v[0],
                &v[1],
                Some(&v[2]),
                Conv2d {
                    stride: 2,
                    pad: 1,
                    pad_end: 0,
                },
            );
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "conv + bias + residual in the epilogue",
        &[
            (vec![2, 3, 5, 5], u(150)),
            (vec![4, 3, 3, 3], u(108)),
            (vec![4], u(4)),
            (vec![2, 4, 5, 5], u(200)),
        ],
        |t, v| {
            let y = t.conv2d_add(&v[0], &v[1], Some(&v[2]), Conv2d::same(3), &v[3]);
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "conv + bias + per-image channel vector in the epilogue",
        &[
            (vec![2, 3, 5, 5], u(150)),
            (vec![4, 3, 3, 3], u(108)),
            (vec![4], u(4)),
            (vec![2, 4], u(8)),
        ],
        |t, v| {
            let y = t.conv2d_add_channels(&v[0], &v[1], Some(&v[2]), Conv2d::same(3), &v[3]);
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "conv + residual (no bias), residual used twice",
        &[(vec![2, 3, 4, 4], u(96)), (vec![3, 3, 1, 1], u(9))],
        |t, v| {
            let y = t.conv2d_add(&v[0], &v[1], None, Conv2d::same(1), &v[0]);
            t.mean_all(&t.mul(&y, &y))
        },
    );
    check_grads(
        &g,
        &mut r,
        "group norm + silu",
        &[(vec![2, 3, 4, 4], u(96)), (vec![3], u(3)), (vec![3], u(3))],
        |t, v| {
            let y = t.silu(&t.group_norm(&v[0], &v[1], &v[2], 3, 1e-5));
            dotp(t, &y, &probe_t)
        },
    );
    check_grads(
        &g,
        &mut r,
        "channel vector (per sample), upsample, concat",
        &[(vec![2, 3, 2, 2], u(24)), (vec![2, 3], u(6))],
        |t, v| {
            let a = t.add_channel_vector(&v[0], &v[1]);
            let up = t.upsample2x(&a);
            let cat = t.concat_channels(&up, &up);
            let y = t.mul(&cat, &cat);
            t.mean_all(&t.sub(&y, &t.scale(&cat, 0.5)))
        },
    );
    check_grads(
        &g,
        &mut r,
        "average pooling",
        &[(vec![2, 3, 8, 8], u(384))],
        |t, v| {
            let y = t.avg_pool2x(&v[0]);
            dotp(t, &t.mul(&y, &y), &probe_t)
        },
    );
    check_grads(
        &g,
        &mut r,
        "scale and shift per image and channel (diffusers' scale_shift, composed)",
        &[
            (vec![2, 3, 4, 4], u(96)),
            (vec![2, 3], u(6)),
            (vec![2, 3], u(6)),
        ],
        |t, v| {
            let ones = Var::constant(Tensor::full(&g, &[2, 3, 4, 4], 1.0));
            let factor = t.add_channel_vector(&ones, &v[1]);
            let y = t.add_channel_vector(&t.mul(&v[0], &factor), &v[2]);
            dotp(t, &t.mul(&y, &y), &probe_t)
        },
    );
    let target = u(2 * 3 * 16);
    let w = [0.5f32, 2.0];
    check_grads(
        &g,
        &mut r,
        "weighted mse + per-sample scale",
        &[(vec![2, 3, 16], u(96))],
        |t, v| {
            let sa = Tensor::from_slice(&g, &[2], &[1.5, -0.5]);
            let y = t.per_sample_scale(&v[0], &sa);
            let per = t.weighted_mse(
                &y,
                &Tensor::from_slice(&g, &[2, 3, 16], &target),
                &Tensor::from_slice(&g, &[2], &w),
            );
            t.mean_all(&per)
        },
    );
}

/// A small conv net with every op kind: conv, group norm, SiLU, stride-2 conv, attention,
/// upsampling, skip concatenation, a time-embedding-like per-sample channel vector.
struct TinyNet {
    params: Vec<Tensor>,
}

impl TinyNet {
    fn new(g: &Gpu, seed: u64) -> TinyNet {
        let mut r = StdRng::seed_from_u64(seed);
        let mut p = |shape: &[usize], fan_in: usize| {
            let n: usize = shape.iter().product();
            let s = (1.0 / fan_in as f32).sqrt();
            Tensor::from_slice(g, shape, &uniform(&mut r, n, s * 1.7))
        };
        let params = vec![
            p(&[8, 1, 3, 3], 9),        // 0 conv_in
            p(&[8], 9),                 // 1
            Tensor::full(g, &[8], 1.0), // 2 gn gamma
            Tensor::zeros(g, &[8]),     // 3 gn beta
            p(&[8, 8, 3, 3], 72),       // 4 down (stride 2)
            p(&[8], 72),                // 5
            p(&[24, 8, 1, 1], 8),       // 6 qkv
            p(&[8, 16, 3, 3], 144),     // 7 up conv over concat
            p(&[8], 144),               // 8
            p(&[1, 8, 3, 3], 72),       // 9 out
            p(&[1], 72),                // 10
            p(&[8, 4], 4),              // 11 embedding linear
            p(&[8], 4),                 // 12
        ];
        TinyNet { params }
    }

    fn loss(&self, tape: &Tape, x: &Tensor, emb: &Tensor, target: &Tensor) -> Var {
        let p: Vec<Var> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, t)| tape.param(i, t))
            .collect();
        let x = Var::constant(x.clone());
        let n = x.shape()[0];
        let h0 = tape.conv2d(&x, &p[0], Some(&p[1]), Conv2d::same(3));
        let e = tape.linear(&Var::constant(emb.clone()), &p[11], &p[12]);
        let h = tape.add_channel_vector(&h0, &e);
        let h = tape.silu(&tape.group_norm(&h, &p[2], &p[3], 4, 1e-5));
        let d = tape.silu(&tape.conv2d(
            &h,
            &p[4],
            Some(&p[5]),
            Conv2d {
                stride: 2,
                pad: 1,
                pad_end: 0,
            },
        ));
        let qkv = tape.conv2d(&d, &p[6], None, Conv2d::same(1));
        let hw = d.shape()[2] * d.shape()[3];
        let qkv = tape.reshape(&qkv, &[n, 24, hw]);
        // q, k, v by channel slices, and one more path through a batched matmul with a shared
        // selection matrix (exercises the batch-broadcast gradient).
        let mut sel = vec![0.0f32; 8 * 24];
        for c in 0..8 {
            sel[c * 24 + 16 + c] = 1.0;
        }
        let sel = Var::constant(Tensor::from_slice(x.value.gpu(), &[8, 24], &sel));
        let v = tape.matmul(&sel, &qkv, MatmulOpts::default());
        let q4 = tape.reshape(&qkv, &[n, 24, hw, 1]);
        let sl = |from: usize| tape.reshape(&tape.slice_channels(&q4, from, 8), &[n, 8, hw]);
        let a = tape.attention(&sl(0), &sl(8), &v);
        let a = tape.add(&tape.reshape(&a, d.shape()), &d);
        let u = tape.upsample2x(&a);
        let cat = tape.concat_channels(&u, &h);
        let h2 = tape.silu(&tape.conv2d(&cat, &p[7], Some(&p[8]), Conv2d::same(3)));
        let out = tape.conv2d(&h2, &p[9], Some(&p[10]), Conv2d::same(3));
        let w = Tensor::full(x.value.gpu(), &[n], 1.0);
        tape.mean_all(&tape.weighted_mse(&out, target, &w))
    }
}

/// Trains TinyNet with Adam for `steps`, one submit per step; returns the loss every 25 steps.
fn train_tiny(g: &Gpu, seed: u64, steps: usize) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(1234);
    let (n, hw) = (8, 8);
    // Targets: smooth fixed patterns the net must produce from noisy inputs.
    let mut target = vec![0.0f32; n * hw * hw];
    for s in 0..n {
        for y in 0..hw {
            for x in 0..hw {
                target[(s * hw + y) * hw + x] = ((s as f32 * 0.7 + x as f32 * 0.5).sin()
                    * (y as f32 * 0.4 + s as f32).cos())
                    * 0.8;
            }
        }
    }
    let noisy: Vec<f32> = target
        .iter()
        .map(|&t| t + r.random_range(-0.3..0.3))
        .collect();
    let x = Tensor::from_slice(g, &[n, 1, hw, hw], &noisy);
    let t = Tensor::from_slice(g, &[n, 1, hw, hw], &target);
    let emb = Tensor::from_slice(g, &[n, 4], &uniform(&mut r, n * 4, 1.0));
    let net = TinyNet::new(g, seed);
    let mut opt = Adam::new(g, &net.params, AdamConfig::default());
    let mut losses = Vec::new();
    let (l0, s0) = g.counters();
    for step in 0..steps {
        let tape = Tape::new();
        let loss = net.loss(&tape, &x, &emb, &t);
        let (grads, _) = tape.backward(&loss, None);
        opt.update(
            &net.params,
            &grads.dense(&net.params),
            3e-3,
            GradClip { max_norm: 1.0 },
        );
        if step % 25 == 0 || step + 1 == steps {
            losses.push(loss.value.to_vec_blocking().unwrap()[0]);
        } else {
            g.flush();
        }
    }
    let (l1, s1) = g.counters();
    eprintln!("{steps} steps: {} launches, {} submits", l1 - l0, s1 - s0);
    // One submit per step, plus one readback submit per logged loss.
    assert!(
        s1 - s0 <= (steps + losses.len()) as u64,
        "more than one submit per training step"
    );
    losses
}

#[test]
fn small_conv_net_trains_and_is_reproducible() {
    let g = gpu();
    let losses = train_tiny(&g, 7, 400);
    eprintln!("losses: {losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last.is_finite() && last * 10.0 <= first,
        "loss fell only from {first} to {last} (need 10x)"
    );
    let again = train_tiny(&g, 7, 60);
    let first_run: Vec<f32> = losses.iter().take(again.len() - 1).cloned().collect();
    assert_eq!(
        &again[..again.len() - 1],
        &first_run[..],
        "same seed, same losses"
    );
}

#[test]
fn cross_entropy_matches_reference_and_finite_differences() {
    let g = gpu();
    let mut r = rng("cross_entropy");
    let (n, k) = (7usize, 10usize);
    let logits = uniform(&mut r, n * k, 4.0);
    let labels: Vec<f32> = (0..n).map(|_| r.random_range(0..k) as f32).collect();
    let lab = Tensor::from_slice(&g, &[n], &labels);
    let (per_row, _) = Tensor::from_slice(&g, &[n, k], &logits).cross_entropy(&lab);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let row = &logits[i * k..(i + 1) * k];
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            lse - row[labels[i] as usize] as f64
        })
        .collect();
    assert_close(
        "cross-entropy per row",
        &per_row.to_vec_blocking().unwrap(),
        &want,
        1e-5,
        1e-5,
    );
    check_grads(
        &g,
        &mut r,
        "cross-entropy mean",
        &[(vec![n, k], logits.clone())],
        |t, v| t.cross_entropy_mean(&v[0], &lab),
    );
}

/// A `Var` made before `backward` would name another var of the next recording (ids restart):
/// it is refused instead of misrouting its gradient.
#[test]
#[should_panic(expected = "another recording")]
fn a_var_used_after_backward_is_refused() {
    let g = gpu();
    let tape = fewstep::tensor::Tape::new();
    let w = tape.param(0, &Tensor::from_slice(&g, &[4], &[1.0, 2.0, 3.0, 4.0]));
    let loss = tape.mean_all(&tape.mul(&w, &w));
    let _ = tape.backward(&loss, None);
    // The next forward pass on the same tape, with the stale `w`.
    let x = tape.leaf(&Tensor::from_slice(&g, &[4], &[1.0; 4]));
    let _ = tape.mul(&w, &x);
}

#[test]
#[should_panic(expected = "another recording")]
fn a_var_of_another_tape_is_refused() {
    let g = gpu();
    let (a, b) = (fewstep::tensor::Tape::new(), fewstep::tensor::Tape::new());
    let x = a.leaf(&Tensor::from_slice(&g, &[4], &[1.0; 4]));
    let y = b.leaf(&Tensor::from_slice(&g, &[4], &[2.0; 4]));
    let _ = b.mul(&x, &y);
}

/// GroupNorm's backward is two launches, dx and (dgamma, dbeta): with frozen parameters only
/// the first runs, with a constant input only the second (the units honour `needs`).
#[test]
fn group_norm_backward_launches_only_what_is_needed() {
    let g = gpu();
    let mut r = rng("group_norm_needs");
    let x = Tensor::from_slice(&g, &[2, 8, 4, 4], &uniform(&mut r, 256, 1.0));
    let gamma = Tensor::from_slice(&g, &[8], &uniform(&mut r, 8, 1.0));
    let beta = Tensor::from_slice(&g, &[8], &uniform(&mut r, 8, 1.0));
    for silu in [false, true] {
        // (x wants a gradient, the parameters want one) -> backward launches of the norm
        let mut launches = vec![];
        for (want_x, want_p) in [(true, true), (true, false), (false, true)] {
            let tape = Tape::new();
            let leaf = |want: bool, t: &Tensor| {
                if want {
                    tape.leaf(t)
                } else {
                    Var::constant(t.clone())
                }
            };
            let (xv, gv, bv) = (leaf(want_x, &x), leaf(want_p, &gamma), leaf(want_p, &beta));
            let y = if silu {
                tape.group_norm_silu(&xv, &gv, &bv, 4, 1e-5)
            } else {
                tape.group_norm(&xv, &gv, &bv, 4, 1e-5)
            };
            let loss = tape.mean_all(&y);
            g.flush();
            let before = g.counters().0;
            let (_, leaves) = tape.backward(&loss, None);
            launches.push(g.counters().0 - before);
            assert_eq!(
                leaves.of(&xv).is_some(),
                want_x,
                "dx given exactly when needed"
            );
            assert_eq!(
                leaves.of(&gv).is_some(),
                want_p,
                "dgamma given exactly when needed"
            );
            g.flush();
        }
        eprintln!("silu {silu}: backward launches (all, frozen params, constant x) {launches:?}");
        assert_eq!(
            launches[0],
            launches[1] + 1,
            "frozen parameters save the parameter launch"
        );
        assert_eq!(
            launches[0],
            launches[2] + 1,
            "a constant input saves the dx launch"
        );
    }
}
