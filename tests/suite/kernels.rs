//! Every kernel against a plain CPU reference (f64 accumulation) on fresh random inputs, and every
//! backward pass also against central finite differences of the GPU forward pass.

use crate::common;

use common::*;
use fewstep::gpu::KernelVariant;
use fewstep::tensor::{Adam, AdamConfig, Conv2d, GradClip, MatmulOpts, Residual, Tensor};

/// f32 GEMM: error grows like sqrt(K) ulps of the operands' scale (inputs are in [-1, 1]).
const GEMM_ATOL_PER_SQRT_K: f64 = 2e-6;
const GEMM_RTOL: f64 = 1e-5;
/// Elementwise and normalisation kernels: a few ulps, plus transcendental functions.
const MAP_ATOL: f64 = 2e-6;
const MAP_RTOL: f64 = 2e-5;
/// Reductions over up to ~10^4 elements in f32.
const SUM_ATOL: f64 = 1e-4;
const SUM_RTOL: f64 = 1e-5;
/// Central differences of the GPU forward (f32) with step FD_EPS, losses summed in f64.
const FD_EPS: f32 = 1e-2;
const FD_ATOL: f64 = 2e-3;
const FD_RTOL: f64 = 2e-2;

fn gemm_tol(k: usize) -> f64 {
    GEMM_ATOL_PER_SQRT_K * (k as f64).sqrt() * 4.0
}

#[test]
fn matmul_matches_reference() {
    let g = gpu();
    let mut r = rng("matmul");
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (65, 33, 17),
        (64, 64, 64),
        (100, 7, 130),
        (17, 129, 65),
    ];
    for v in variants(&g) {
        g.set_variant(v);
        for &(m, n, k) in &shapes {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                for batch in [1usize, 3] {
                    let a = uniform(&mut r, batch * m * k, 1.0);
                    let b = uniform(&mut r, batch * k * n, 1.0);
                    let ash = if ta { [batch, k, m] } else { [batch, m, k] };
                    let bsh = if tb { [batch, n, k] } else { [batch, k, n] };
                    let at = Tensor::from_slice(&g, &ash, &a);
                    let bt = Tensor::from_slice(&g, &bsh, &b);
                    let c = at.matmul_with(
                        &bt,
                        MatmulOpts {
                            trans_a: ta,
                            trans_b: tb,
                            alpha: 1.0,
                            gradients: (false, false),
                        },
                        None,
                    );
                    assert_eq!(c.shape(), [batch, m, n]);
                    let want = matmul_ref(&a, &b, batch, m, n, k, ta, tb);
                    let what = format!("{v:?} matmul {m}x{n}x{k} batch {batch} ta {ta} tb {tb}");
                    assert_close(
                        &what,
                        &c.to_vec_blocking().unwrap(),
                        &want,
                        gemm_tol(k),
                        GEMM_RTOL,
                    );
                }
            }
        }
        // 2-D operands, alpha, and a bias per column.
        let (m, n, k) = (33, 20, 9);
        let a = uniform(&mut r, m * k, 1.0);
        let b = uniform(&mut r, k * n, 1.0);
        let bias = uniform(&mut r, n, 1.0);
        let c = Tensor::from_slice(&g, &[m, k], &a).matmul_with(
            &Tensor::from_slice(&g, &[k, n], &b),
            MatmulOpts {
                alpha: 0.5,
                ..Default::default()
            },
            Some(&Tensor::from_slice(&g, &[n], &bias)),
        );
        let mut want = matmul_ref(&a, &b, 1, m, n, k, false, false);
        for (i, w) in want.iter_mut().enumerate() {
            *w = 0.5 * *w + bias[i % n] as f64;
        }
        assert_close(
            &format!("{v:?} matmul alpha+bias"),
            &c.to_vec_blocking().unwrap(),
            &want,
            gemm_tol(k),
            GEMM_RTOL,
        );
    }
}

/// Shapes with awkward sizes, stride 2 and padding edges, 3x3 and 1x1.
fn conv_shapes() -> Vec<ConvShape> {
    let s = |n, cin, h, w, cout, ks, stride, pad| ConvShape {
        n,
        cin,
        h,
        w,
        cout,
        ks,
        stride,
        pad,
    };
    vec![
        s(1, 1, 1, 1, 1, 1, 1, 0),
        s(2, 3, 7, 5, 4, 3, 1, 1),
        s(1, 5, 8, 8, 3, 3, 2, 1),
        s(2, 3, 9, 9, 2, 3, 2, 1),
        s(3, 4, 6, 6, 17, 1, 1, 0),
        s(2, 16, 17, 17, 65, 3, 1, 1),
        s(1, 2, 5, 6, 3, 3, 1, 0),
        s(2, 6, 3, 3, 5, 3, 2, 1),
        // Long K (images x pixels > 1024): the weight gradient is split into K chunks, the last
        // one partial.
        s(5, 3, 23, 22, 6, 3, 1, 1),
        s(14, 2, 30, 30, 3, 3, 2, 1),
    ]
}

#[test]
fn conv2d_forward_matches_reference() {
    let g = gpu();
    let mut r = rng("conv2d_forward");
    for v in variants(&g) {
        g.set_variant(v);
        // Shapes take turns adding nothing, a full residual, or a value per image and output
        // channel in the epilogue (forward_add).
        for (i, cs) in conv_shapes().into_iter().enumerate() {
            let x = uniform(&mut r, cs.x_len(), 1.0);
            let w = uniform(&mut r, cs.w_len(), 1.0);
            let b = uniform(&mut r, cs.cout, 1.0);
            let conv = Conv2d {
                stride: cs.stride,
                pad: cs.pad,
                pad_end: 0,
            };
            let ys = [cs.n, cs.cout, cs.oh(), cs.ow()];
            let hw = cs.oh() * cs.ow();
            let (res, res_t) = match i % 3 {
                1 => {
                    let v = uniform(&mut r, cs.y_len(), 1.0);
                    let t = Tensor::from_slice(&g, &ys, &v);
                    (Some(v), Some(t))
                }
                2 => {
                    let v = uniform(&mut r, cs.n * cs.cout, 1.0);
                    let t = Tensor::from_slice(&g, &[cs.n, cs.cout], &v);
                    // Spread over pixels for the reference.
                    let full = (0..cs.y_len()).map(|j| v[j / hw]).collect();
                    (Some(full), Some(t))
                }
                _ => (None, None),
            };
            let y = conv.forward_add(
                &Tensor::from_slice(&g, &[cs.n, cs.cin, cs.h, cs.w], &x),
                &Tensor::from_slice(&g, &[cs.cout, cs.cin, cs.ks, cs.ks], &w),
                Some(&Tensor::from_slice(&g, &[cs.cout], &b)),
                res_t.as_ref().map(|t| match i % 3 {
                    1 => Residual::Full(t),
                    _ => Residual::PerImageChannel(t),
                }),
            );
            assert_eq!(y.shape(), ys);
            let mut want = cs.forward_ref(&x, &w, Some(&b));
            if let Some(res) = &res {
                want.iter_mut().zip(res).for_each(|(w, &r)| *w += r as f64);
            }
            let k = cs.cin * cs.ks * cs.ks;
            assert_close(
                &format!("{v:?} conv forward {cs:?} residual kind {}", i % 3),
                &y.to_vec_blocking().unwrap(),
                &want,
                gemm_tol(k),
                GEMM_RTOL,
            );
        }
    }
}

#[test]
fn conv2d_backward_matches_reference_and_finite_differences() {
    let g = gpu();
    let mut r = rng("conv2d_backward");
    for v in variants(&g) {
        g.set_variant(v);
        for cs in conv_shapes() {
            let x = uniform(&mut r, cs.x_len(), 1.0);
            let w = uniform(&mut r, cs.w_len(), 1.0);
            let dy = uniform(&mut r, cs.y_len(), 1.0);
            let conv = Conv2d {
                stride: cs.stride,
                pad: cs.pad,
                pad_end: 0,
            };
            let xs = [cs.n, cs.cin, cs.h, cs.w];
            let ws = [cs.cout, cs.cin, cs.ks, cs.ks];
            let ys = [cs.n, cs.cout, cs.oh(), cs.ow()];
            let dyt = Tensor::from_slice(&g, &ys, &dy);
            let dx = conv
                .input_grad(&dyt, &Tensor::from_slice(&g, &ws, &w), &xs)
                .to_vec_blocking()
                .unwrap();
            let dw = conv
                .weight_grad(&dyt, &Tensor::from_slice(&g, &xs, &x), &ws)
                .to_vec_blocking()
                .unwrap();
            let kx = cs.cout * cs.ks * cs.ks;
            let kw = cs.n * cs.oh() * cs.ow();
            assert_close(
                &format!("{v:?} conv dx {cs:?}"),
                &dx,
                &cs.input_grad_ref(&dy, &w),
                gemm_tol(kx),
                GEMM_RTOL,
            );
            assert_close(
                &format!("{v:?} conv dw {cs:?}"),
                &dw,
                &cs.weight_grad_ref(&dy, &x),
                gemm_tol(kw),
                GEMM_RTOL,
            );

            // Finite differences of L = <conv(x, w), dy> through the GPU forward pass.
            let loss = |xv: &[f32], wv: &[f32]| {
                let y = conv.forward(
                    &Tensor::from_slice(&g, &xs, xv),
                    &Tensor::from_slice(&g, &ws, wv),
                    None,
                );
                dot64(&y.to_vec_blocking().unwrap(), &dy)
            };
            for _ in 0..3 {
                let i = rand::Rng::random_range(&mut r, 0..x.len());
                let fd = central_difference(&x, i, FD_EPS, |xv| loss(xv, &w));
                assert_close(
                    &format!("{v:?} conv dx[{i}] vs FD {cs:?}"),
                    &dx[i..i + 1],
                    &[fd],
                    FD_ATOL,
                    FD_RTOL,
                );
                let j = rand::Rng::random_range(&mut r, 0..w.len());
                let fd = central_difference(&w, j, FD_EPS, |wv| loss(&x, wv));
                assert_close(
                    &format!("{v:?} conv dw[{j}] vs FD {cs:?}"),
                    &dw[j..j + 1],
                    &[fd],
                    FD_ATOL,
                    FD_RTOL,
                );
            }
        }
    }
    g.set_variant(KernelVariant::Tiled);
}

#[test]
fn conv_bias_grad_is_channel_sum() {
    let g = gpu();
    let mut r = rng("conv_bias_grad");
    // 13 pixels: the scalar kernel; 784 and 8: the 16-byte one (with and without a tail).
    for &(n, c, hw) in &[(3, 5, 13), (4, 16, 784), (2, 3, 8)] {
        let dy = uniform(&mut r, n * c * hw, 1.0);
        let got = Tensor::from_slice(&g, &[n, c, hw, 1], &dy)
            .sum_per_channel()
            .to_vec_blocking()
            .unwrap();
        let mut want = vec![0.0; c];
        for (i, &v) in dy.iter().enumerate() {
            want[(i / hw) % c] += v as f64;
        }
        assert_close(
            &format!("sum per channel {n}x{c}x{hw}"),
            &got,
            &want,
            SUM_ATOL,
            SUM_RTOL,
        );
    }
}

#[test]
fn group_norm_forward_backward() {
    let g = gpu();
    let mut r = rng("group_norm");
    for &(n, c, h, w, groups) in &[
        (2, 8, 5, 3, 4),
        (1, 4, 1, 1, 2),
        (3, 6, 7, 7, 3),
        (2, 32, 17, 17, 8),
        // Pixels a multiple of 4: the parameter gradient reads 16 bytes at a time.
        (2, 8, 4, 6, 4),
        (3, 16, 14, 14, 8),
    ] {
        let hw = h * w;
        let x: Vec<f32> = uniform(&mut r, n * c * hw, 2.0)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let gamma = uniform(&mut r, c, 1.0);
        let beta = uniform(&mut r, c, 1.0);
        let dy = uniform(&mut r, n * c * hw, 1.0);
        let eps = 1e-5;
        let xt = Tensor::from_slice(&g, &[n, c, h, w], &x);
        let gt = Tensor::from_slice(&g, &[c], &gamma);
        let bt = Tensor::from_slice(&g, &[c], &beta);
        let (y, saved) = xt.group_norm(&gt, &bt, groups, eps);
        let want = group_norm_ref(&x, n, c, hw, groups, &gamma, &beta, eps as f64);
        assert_close(
            &format!("group norm {n}x{c}x{h}x{w}/{groups}"),
            &y.to_vec_blocking().unwrap(),
            &want,
            MAP_ATOL * 10.0,
            MAP_RTOL * 10.0,
        );

        let (dx, dgamma, dbeta) =
            xt.group_norm_grad(&gt, &Tensor::from_slice(&g, &[n, c, h, w], &dy), &saved);
        let (dx, dgamma, dbeta) = (
            dx.to_vec_blocking().unwrap(),
            dgamma.to_vec_blocking().unwrap(),
            dbeta.to_vec_blocking().unwrap(),
        );
        // CPU reference of the backward: central differences of the f64 reference (h = 1e-6, exact to ~1e-9).
        let cpu_loss = |xv: &[f32], gv: &[f32], bv: &[f32]| {
            dot64_f64(
                &group_norm_ref(xv, n, c, hw, groups, gv, bv, eps as f64),
                &dy,
            )
        };
        let ref_grad = |v: &[f32], i: usize, which: u8| {
            let mut p = v.to_vec();
            let mut q = v.to_vec();
            let hstep = 1e-3f32 * (1.0 + v[i].abs());
            p[i] += hstep;
            q[i] -= hstep;
            let hd = (p[i] as f64 - q[i] as f64) / 2.0;
            let (lp, lq) = match which {
                0 => (cpu_loss(&p, &gamma, &beta), cpu_loss(&q, &gamma, &beta)),
                1 => (cpu_loss(&x, &p, &beta), cpu_loss(&x, &q, &beta)),
                _ => (cpu_loss(&x, &gamma, &p), cpu_loss(&x, &gamma, &q)),
            };
            (lp - lq) / (2.0 * hd)
        };
        let idx: Vec<usize> = (0..6)
            .map(|_| rand::Rng::random_range(&mut r, 0..x.len()))
            .collect();
        // Analytic f64 reference of dx for element i: rstd * (gy - mean(gy) - xh * mean(gy * xh))
        // over its (sample, group), gy = dy * gamma.
        let cpg = c / groups;
        let analytic_dx = |i: usize| -> (f64, f64) {
            let (s, ch) = (i / (c * hw), (i / hw) % c);
            let g0 = ch / cpg * cpg;
            let members: Vec<usize> = (g0..g0 + cpg)
                .flat_map(|cc| (0..hw).map(move |p| (s * c + cc) * hw + p))
                .collect();
            let len = members.len() as f64;
            let mean = members.iter().map(|&j| x[j] as f64).sum::<f64>() / len;
            let var = members
                .iter()
                .map(|&j| (x[j] as f64 - mean).powi(2))
                .sum::<f64>()
                / len;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let gy = |j: usize| dy[j] as f64 * gamma[(j / hw) % c] as f64;
            let xh = |j: usize| (x[j] as f64 - mean) * rstd;
            let m_gy = members.iter().map(|&j| gy(j)).sum::<f64>() / len;
            let m_gyxh = members.iter().map(|&j| gy(j) * xh(j)).sum::<f64>() / len;
            (rstd * (gy(i) - m_gy - xh(i) * m_gyxh), var.sqrt())
        };
        for &i in &idx {
            let (exact, spread) = analytic_dx(i);
            assert_close("group norm dx vs f64", &dx[i..i + 1], &[exact], 1e-3, 1e-2);
            // Central differences need a step well below the group's spread: with two nearly
            // equal values in a 2-element group the curvature is ~1/spread^2 and a 1e-3 step on
            // f32 inputs misjudges the slope, so those elements are checked against f64 only.
            if spread > 0.05 {
                assert_close(
                    "group norm dx vs finite differences",
                    &dx[i..i + 1],
                    &[ref_grad(&x, i, 0)],
                    1e-3,
                    1e-2,
                );
            }
        }
        for ch in 0..c.min(4) {
            assert_close(
                "group norm dgamma vs CPU",
                &dgamma[ch..ch + 1],
                &[ref_grad(&gamma, ch, 1)],
                1e-3,
                1e-2,
            );
            assert_close(
                "group norm dbeta vs CPU",
                &dbeta[ch..ch + 1],
                &[ref_grad(&beta, ch, 2)],
                1e-3,
                1e-2,
            );
        }
        // Finite differences through the GPU forward.
        let gpu_loss = |xv: &[f32]| {
            let (y, _) =
                Tensor::from_slice(&g, &[n, c, h, w], xv).group_norm(&gt, &bt, groups, eps);
            dot64(&y.to_vec_blocking().unwrap(), &dy)
        };
        for &i in idx.iter().take(3) {
            // As above: a step of FD_EPS needs a group spread well above it.
            if analytic_dx(i).1 < 20.0 * FD_EPS as f64 {
                continue;
            }
            let fd = central_difference(&x, i, FD_EPS, gpu_loss);
            assert_close(
                "group norm dx vs FD",
                &dx[i..i + 1],
                &[fd],
                FD_ATOL * 5.0,
                FD_RTOL * 2.0,
            );
        }
    }
}

/// Fused GroupNorm + SiLU: forward against f64 (a few ulps of exp on top of group norm's error).
const GN_SILU_ATOL: f64 = 2e-5;
const GN_SILU_RTOL: f64 = 2e-4;
/// Its gradients against central differences of the f64 reference and against the unfused GPU
/// chain (group_norm, silu, silu_grad, group_norm_grad: the same math, other rounding).
const GN_SILU_GRAD_ATOL: f64 = 1e-3;
const GN_SILU_GRAD_RTOL: f64 = 1e-2;
const GN_SILU_VS_UNFUSED_ATOL: f64 = 1e-5;
const GN_SILU_VS_UNFUSED_RTOL: f64 = 1e-4;

fn silu64(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

#[test]
fn group_norm_silu_fused_forward_backward() {
    let g = gpu();
    let mut r = rng("group_norm_silu");
    for &(n, c, h, w, groups) in &[
        (2, 8, 5, 3, 4),
        (1, 4, 1, 1, 2),
        (3, 6, 7, 7, 3),
        (2, 32, 9, 9, 8),
        (2, 8, 4, 6, 4),
    ] {
        let hw = h * w;
        let what = format!("group norm + silu {n}x{c}x{h}x{w}/{groups}");
        let x: Vec<f32> = uniform(&mut r, n * c * hw, 2.0)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let gamma = uniform(&mut r, c, 1.5);
        let beta = uniform(&mut r, c, 1.0);
        let dy = uniform(&mut r, n * c * hw, 1.0);
        let eps = 1e-5;
        let xt = Tensor::from_slice(&g, &[n, c, h, w], &x);
        let gt = Tensor::from_slice(&g, &[c], &gamma);
        let bt = Tensor::from_slice(&g, &[c], &beta);
        let dyt = Tensor::from_slice(&g, &[n, c, h, w], &dy);
        let reference = |xv: &[f32], gv: &[f32], bv: &[f32]| -> Vec<f64> {
            group_norm_ref(xv, n, c, hw, groups, gv, bv, eps as f64)
                .into_iter()
                .map(silu64)
                .collect()
        };
        let (y, saved) = xt.group_norm_silu(&gt, &bt, groups, eps);
        let y = y.to_vec_blocking().unwrap();
        assert_close(
            &what,
            &y,
            &reference(&x, &gamma, &beta),
            GN_SILU_ATOL,
            GN_SILU_RTOL,
        );

        let (dx, dgamma, dbeta) = xt.group_norm_silu_grad(&gt, &bt, &dyt, &saved);
        let (dx, dgamma, dbeta) = (
            dx.to_vec_blocking().unwrap(),
            dgamma.to_vec_blocking().unwrap(),
            dbeta.to_vec_blocking().unwrap(),
        );
        // The unfused chain on the GPU.
        let (yn, saved_n) = xt.group_norm(&gt, &bt, groups, eps);
        let (ux, ug, ub) = xt.group_norm_grad(&gt, &yn.silu_grad(&dyt), &saved_n);
        for (name, got, want) in [
            ("dx", &dx, ux),
            ("dgamma", &dgamma, ug),
            ("dbeta", &dbeta, ub),
        ] {
            let want = to_f64(&want.to_vec_blocking().unwrap());
            assert_close(
                &format!("{what}: {name} vs unfused"),
                got,
                &want,
                GN_SILU_VS_UNFUSED_ATOL,
                GN_SILU_VS_UNFUSED_RTOL,
            );
        }
        // CPU: central differences of the f64 reference loss sum(silu(gn(x)) * dy).
        let cpu_loss = |xv: &[f32], gv: &[f32], bv: &[f32]| dot64_f64(&reference(xv, gv, bv), &dy);
        let ref_grad = |v: &[f32], i: usize, which: u8| {
            let (mut p, mut q) = (v.to_vec(), v.to_vec());
            let hstep = 1e-3f32 * (1.0 + v[i].abs());
            p[i] += hstep;
            q[i] -= hstep;
            let hd = (p[i] as f64 - q[i] as f64) / 2.0;
            let (lp, lq) = match which {
                0 => (cpu_loss(&p, &gamma, &beta), cpu_loss(&q, &gamma, &beta)),
                1 => (cpu_loss(&x, &p, &beta), cpu_loss(&x, &q, &beta)),
                _ => (cpu_loss(&x, &gamma, &p), cpu_loss(&x, &gamma, &q)),
            };
            (lp - lq) / (2.0 * hd)
        };
        // Group spread: central differences need a step well below it (see group_norm_forward_backward).
        let cpg = c / groups;
        let xr = &x;
        let spread = |i: usize| {
            let (s, ch) = (i / (c * hw), (i / hw) % c);
            let g0 = ch / cpg * cpg;
            let v: Vec<f64> = (g0..g0 + cpg)
                .flat_map(|cc| (0..hw).map(move |p| xr[(s * c + cc) * hw + p] as f64))
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let idx: Vec<usize> = (0..6)
            .map(|_| rand::Rng::random_range(&mut r, 0..x.len()))
            .collect();
        for &i in &idx {
            if spread(i) > 0.05 {
                assert_close(
                    &format!("{what}: dx vs CPU"),
                    &dx[i..i + 1],
                    &[ref_grad(&x, i, 0)],
                    GN_SILU_GRAD_ATOL,
                    GN_SILU_GRAD_RTOL,
                );
            }
        }
        for ch in 0..c.min(4) {
            assert_close(
                &format!("{what}: dgamma vs CPU"),
                &dgamma[ch..ch + 1],
                &[ref_grad(&gamma, ch, 1)],
                GN_SILU_GRAD_ATOL,
                GN_SILU_GRAD_RTOL,
            );
            assert_close(
                &format!("{what}: dbeta vs CPU"),
                &dbeta[ch..ch + 1],
                &[ref_grad(&beta, ch, 2)],
                GN_SILU_GRAD_ATOL,
                GN_SILU_GRAD_RTOL,
            );
        }
        // Finite differences through the fused GPU forward.
        let gpu_loss = |xv: &[f32]| {
            let (y, _) =
                Tensor::from_slice(&g, &[n, c, h, w], xv).group_norm_silu(&gt, &bt, groups, eps);
            dot64(&y.to_vec_blocking().unwrap(), &dy)
        };
        for &i in idx.iter().take(3) {
            if spread(i) < 20.0 * FD_EPS as f64 {
                continue;
            }
            let fd = central_difference(&x, i, FD_EPS, gpu_loss);
            assert_close(
                &format!("{what}: dx vs FD"),
                &dx[i..i + 1],
                &[fd],
                FD_ATOL * 5.0,
                FD_RTOL * 2.0,
            );
        }
        let gpu_loss_g = |gv: &[f32]| {
            let (y, _) = xt.group_norm_silu(&Tensor::from_slice(&g, &[c], gv), &bt, groups, eps);
            dot64(&y.to_vec_blocking().unwrap(), &dy)
        };
        let fd = central_difference(&gamma, 0, FD_EPS, gpu_loss_g);
        assert_close(
            &format!("{what}: dgamma vs FD"),
            &dgamma[0..1],
            &[fd],
            FD_ATOL * 5.0,
            FD_RTOL * 2.0,
        );
    }
}

fn dot64_f64(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x * y as f64).sum()
}

#[test]
fn softmax_forward_backward() {
    let g = gpu();
    let mut r = rng("softmax");
    // Both layouts: a row per workgroup (GPUs) and a row per invocation (CPU adapters).
    for alone in [false, true] {
        g.set_softmax_row_per_invocation(Some(alone));
        for &(rows, len) in &[(1, 1), (3, 17), (49, 49), (5, 300), (300, 5)] {
            let x = uniform(&mut r, rows * len, 3.0);
            let dy = uniform(&mut r, rows * len, 1.0);
            let scale = 0.7;
            let xt = Tensor::from_slice(&g, &[rows, len], &x);
            let y = xt.softmax(scale);
            let yv = y.to_vec_blocking().unwrap();
            let want = softmax_ref(&x, len, scale as f64);
            assert_close(
                &format!("{} {rows}x{len}, row per invocation: {alone}", "softmax"),
                &yv,
                &want,
                MAP_ATOL,
                MAP_RTOL,
            );
            let dx = y
                .softmax_grad(&Tensor::from_slice(&g, &[rows, len], &dy), scale)
                .to_vec_blocking()
                .unwrap();
            // CPU reference: dx = scale * y * (dy - sum(dy * y)) per row, in f64.
            let mut want_dx = vec![0.0; x.len()];
            for rr in 0..rows {
                let s: f64 = (0..len)
                    .map(|j| dy[rr * len + j] as f64 * want[rr * len + j])
                    .sum();
                for j in 0..len {
                    want_dx[rr * len + j] =
                        scale as f64 * want[rr * len + j] * (dy[rr * len + j] as f64 - s);
                }
            }
            assert_close(
                &format!(
                    "{} {rows}x{len}, row per invocation: {alone}",
                    "softmax backward"
                ),
                &dx,
                &want_dx,
                MAP_ATOL * 5.0,
                MAP_RTOL * 5.0,
            );
            for _ in 0..3 {
                let i = rand::Rng::random_range(&mut r, 0..x.len());
                let fd = central_difference(&x, i, FD_EPS, |xv| {
                    dot64(
                        &Tensor::from_slice(&g, &[rows, len], xv)
                            .softmax(scale)
                            .to_vec_blocking()
                            .unwrap(),
                        &dy,
                    )
                });
                assert_close(
                    &format!(
                        "{} {rows}x{len}, row per invocation: {alone}",
                        "softmax backward vs FD"
                    ),
                    &dx[i..i + 1],
                    &[fd],
                    FD_ATOL,
                    FD_RTOL,
                );
            }
        }
    }
    g.set_softmax_row_per_invocation(None);
}

#[test]
fn silu_and_elementwise() {
    let g = gpu();
    let mut r = rng("elementwise");
    for n in [1usize, 3, 17, 1000, 4097] {
        let x = uniform(&mut r, n, 4.0);
        let y = uniform(&mut r, n, 4.0);
        let xt = Tensor::from_slice(&g, &[n], &x);
        let yt = Tensor::from_slice(&g, &[n], &y);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let f = |op: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
            x.iter()
                .zip(&y)
                .map(|(&a, &b)| op(a as f64, b as f64))
                .collect()
        };
        assert_close(
            "silu",
            &xt.silu().to_vec_blocking().unwrap(),
            &f(&|a, _| a * sig(a)),
            MAP_ATOL,
            MAP_RTOL,
        );
        let want = f(&|a, b| b * (sig(a) * (1.0 + a * (1.0 - sig(a)))));
        let dsilu = xt.silu_grad(&yt).to_vec_blocking().unwrap();
        assert_close("silu grad", &dsilu, &want, MAP_ATOL * 4.0, MAP_RTOL);
        let i = rand::Rng::random_range(&mut r, 0..n);
        let fd = central_difference(&x, i, FD_EPS, |xv| {
            dot64(
                &Tensor::from_slice(&g, &[n], xv)
                    .silu()
                    .to_vec_blocking()
                    .unwrap(),
                &y,
            )
        });
        assert_close("silu grad vs FD", &dsilu[i..i + 1], &[fd], FD_ATOL, FD_RTOL);
        assert_close(
            "axpby",
            &xt.axpby(0.3, &yt, -2.0).to_vec_blocking().unwrap(),
            &f(&|a, b| 0.3 * a - 2.0 * b),
            MAP_ATOL * 4.0,
            MAP_RTOL,
        );
        assert_close(
            "mul",
            &xt.mul(&yt).to_vec_blocking().unwrap(),
            &f(&|a, b| a * b),
            MAP_ATOL * 4.0,
            MAP_RTOL,
        );
        assert_close(
            "scale",
            &xt.scale(-1.5).to_vec_blocking().unwrap(),
            &f(&|a, _| -1.5 * a),
            MAP_ATOL,
            MAP_RTOL,
        );
        assert_close(
            "square",
            &xt.square().to_vec_blocking().unwrap(),
            &f(&|a, _| a * a),
            MAP_ATOL * 4.0,
            MAP_RTOL,
        );
        let e = xt.deep_clone();
        e.axpby_inplace(0.9, &yt, 0.1);
        assert_close(
            "axpby in place",
            &e.to_vec_blocking().unwrap(),
            &f(&|a, b| 0.9 * a + 0.1 * b),
            MAP_ATOL * 4.0,
            MAP_RTOL,
        );
        assert_close(
            "fill",
            &Tensor::full(&g, &[n], 2.5).to_vec_blocking().unwrap(),
            &vec![2.5; n],
            0.0,
            0.0,
        );
    }
}

#[test]
fn per_sample_scalars_and_channel_vectors() {
    let g = gpu();
    let mut r = rng("per_sample");
    let (n, c, hw) = (3, 5, 7);
    let len = c * hw;
    let x = uniform(&mut r, n * len, 1.0);
    let y = uniform(&mut r, n * len, 1.0);
    let sa = uniform(&mut r, n, 1.0);
    let sb = uniform(&mut r, n, 1.0);
    let xt = Tensor::from_slice(&g, &[n, c, hw], &x);
    let out = xt.per_sample_axpby(
        &Tensor::from_slice(&g, &[n], &sa),
        Some((
            &Tensor::from_slice(&g, &[n, c, hw], &y),
            &Tensor::from_slice(&g, &[n], &sb),
        )),
    );
    let want: Vec<f64> = (0..n * len)
        .map(|i| x[i] as f64 * sa[i / len] as f64 + y[i] as f64 * sb[i / len] as f64)
        .collect();
    assert_close(
        "per-sample axpby",
        &out.to_vec_blocking().unwrap(),
        &want,
        MAP_ATOL * 4.0,
        MAP_RTOL,
    );
    let only = xt.per_sample_axpby(&Tensor::from_slice(&g, &[n], &sa), None);
    let want: Vec<f64> = (0..n * len)
        .map(|i| x[i] as f64 * sa[i / len] as f64)
        .collect();
    assert_close(
        "per-sample scale",
        &only.to_vec_blocking().unwrap(),
        &want,
        MAP_ATOL,
        MAP_RTOL,
    );

    let v = uniform(&mut r, n * c, 1.0);
    let out = xt
        .add_channel_vector(&Tensor::from_slice(&g, &[n, c], &v))
        .to_vec_blocking()
        .unwrap();
    let want: Vec<f64> = (0..n * len)
        .map(|i| x[i] as f64 + v[i / hw] as f64)
        .collect();
    assert_close("channel vector per sample", &out, &want, MAP_ATOL, MAP_RTOL);
    let out = xt
        .add_channel_vector(&Tensor::from_slice(&g, &[c], &v[..c]))
        .to_vec_blocking()
        .unwrap();
    let want: Vec<f64> = (0..n * len)
        .map(|i| x[i] as f64 + v[(i / hw) % c] as f64)
        .collect();
    assert_close("channel vector shared", &out, &want, MAP_ATOL, MAP_RTOL);
    let sums = xt.sum_per_sample_channel().to_vec_blocking().unwrap();
    let want: Vec<f64> = (0..n * c)
        .map(|j| x[j * hw..(j + 1) * hw].iter().map(|&v| v as f64).sum())
        .collect();
    assert_close(
        "sum per sample and channel",
        &sums,
        &want,
        SUM_ATOL,
        SUM_RTOL,
    );
}

#[test]
fn upsample_and_concat() {
    let g = gpu();
    let mut r = rng("upsample");
    let (n, c, h, w) = (2, 3, 5, 3);
    let x = uniform(&mut r, n * c * h * w, 1.0);
    let xt = Tensor::from_slice(&g, &[n, c, h, w], &x);
    let up = xt.upsample2x();
    assert_eq!(up.shape(), [n, c, 2 * h, 2 * w]);
    let upv = up.to_vec_blocking().unwrap();
    let mut want = vec![0.0; upv.len()];
    for p in 0..n * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                want[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2] as f64;
            }
        }
    }
    assert_close("upsample", &upv, &want, 0.0, 0.0);
    let dy = uniform(&mut r, upv.len(), 1.0);
    let dx = Tensor::from_slice(&g, &[n, c, 2 * h, 2 * w], &dy)
        .upsample2x_grad()
        .to_vec_blocking()
        .unwrap();
    // The adjoint: <up(x), dy> == <x, up_grad(dy)>, and the explicit 2x2 sums.
    let mut want_dx = vec![0.0; x.len()];
    for p in 0..n * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                want_dx[(p * h + y / 2) * w + xx / 2] += dy[(p * 2 * h + y) * 2 * w + xx] as f64;
            }
        }
    }
    assert_close("upsample grad", &dx, &want_dx, MAP_ATOL * 4.0, MAP_RTOL);
    let i = rand::Rng::random_range(&mut r, 0..x.len());
    let fd = central_difference(&x, i, FD_EPS, |xv| {
        dot64(
            &Tensor::from_slice(&g, &[n, c, h, w], xv)
                .upsample2x()
                .to_vec_blocking()
                .unwrap(),
            &dy,
        )
    });
    assert_close(
        "upsample grad vs FD",
        &dx[i..i + 1],
        &[fd],
        FD_ATOL,
        FD_RTOL,
    );

    let y = uniform(&mut r, n * 4 * h * w, 1.0);
    let yt = Tensor::from_slice(&g, &[n, 4, h, w], &y);
    let cat = Tensor::concat_channels(&[&xt, &yt]);
    assert_eq!(cat.shape(), [n, c + 4, h, w]);
    let catv = cat.to_vec_blocking().unwrap();
    let hw = h * w;
    let mut want = Vec::new();
    for s in 0..n {
        want.extend(x[s * c * hw..(s + 1) * c * hw].iter().map(|&v| v as f64));
        want.extend(y[s * 4 * hw..(s + 1) * 4 * hw].iter().map(|&v| v as f64));
    }
    assert_close("concat", &catv, &want, 0.0, 0.0);
    assert_close(
        "slice back (concat grad)",
        &cat.slice_channels(c, 4).to_vec_blocking().unwrap(),
        &to_f64(&y),
        0.0,
        0.0,
    );
    assert_close(
        "slice front",
        &cat.slice_channels(0, c).to_vec_blocking().unwrap(),
        &to_f64(&x),
        0.0,
        0.0,
    );
    // The concatenation's gradient in one launch: both parts at once.
    let (front, back) = cat.split_channels(c);
    assert_close(
        "split front",
        &front.to_vec_blocking().unwrap(),
        &to_f64(&x),
        0.0,
        0.0,
    );
    assert_close(
        "split back",
        &back.to_vec_blocking().unwrap(),
        &to_f64(&y),
        0.0,
        0.0,
    );
    // Three parts go one launch a part (channel_copy), two in one (channel_pack2): same layout.
    let cat3 = Tensor::concat_channels(&[&yt, &xt, &yt])
        .to_vec_blocking()
        .unwrap();
    let mut want3 = Vec::new();
    for s in 0..n {
        want3.extend(y[s * 4 * hw..(s + 1) * 4 * hw].iter().map(|&v| v as f64));
        want3.extend(x[s * c * hw..(s + 1) * c * hw].iter().map(|&v| v as f64));
        want3.extend(y[s * 4 * hw..(s + 1) * 4 * hw].iter().map(|&v| v as f64));
    }
    assert_close("concat of three", &cat3, &want3, 0.0, 0.0);
    // A slice's gradient: placed among zero channels, written over whatever the pool held.
    let total = c + 6;
    for offset in [0, 2, 6] {
        let placed = xt.place_channels(offset, total).to_vec_blocking().unwrap();
        let mut want = vec![0.0; n * total * hw];
        for s in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    want[(s * total + offset + ch) * hw + p] = x[(s * c + ch) * hw + p] as f64;
                }
            }
        }
        assert_close(&format!("place at {offset}"), &placed, &want, 0.0, 0.0);
    }
}

#[test]
fn reductions() {
    let g = gpu();
    let mut r = rng("reductions");
    for &(n, len) in &[(1, 1), (3, 17), (4, 1000), (2, 70000)] {
        let x = uniform(&mut r, n * len, 1.0);
        let y = uniform(&mut r, n * len, 1.0);
        let xt = Tensor::from_slice(&g, &[n, len], &x);
        let per: Vec<f64> = x
            .chunks(len)
            .map(|c| c.iter().map(|&v| v as f64).sum())
            .collect();
        assert_close(
            "sum per sample",
            &xt.sum_per_sample(1.0).to_vec_blocking().unwrap(),
            &per,
            SUM_ATOL,
            SUM_RTOL,
        );
        let means: Vec<f64> = per.iter().map(|s| s / len as f64).collect();
        assert_close(
            "mean per sample",
            &xt.mean_per_sample().to_vec_blocking().unwrap(),
            &means,
            SUM_ATOL,
            SUM_RTOL,
        );
        let total: f64 = per.iter().sum();
        assert_close(
            "sum all",
            &xt.sum_all(1.0).to_vec_blocking().unwrap(),
            &[total],
            SUM_ATOL * 10.0,
            SUM_RTOL,
        );
        assert_close(
            "mean all",
            &xt.mean_all().to_vec_blocking().unwrap(),
            &[total / (n * len) as f64],
            SUM_ATOL,
            SUM_RTOL,
        );
        let d = dot64(&x, &y);
        assert_close(
            "dot",
            &xt.dot(&Tensor::from_slice(&g, &[n, len], &y))
                .to_vec_blocking()
                .unwrap(),
            &[d],
            SUM_ATOL * 10.0,
            SUM_RTOL,
        );
    }
}

#[test]
fn sinusoidal_embedding_matches_reference() {
    let g = gpu();
    let mut r = rng("sinusoidal");
    let t: Vec<f32> = uniform(&mut r, 5, 0.5).iter().map(|v| v + 0.5).collect();
    for dim in [2usize, 16, 33] {
        let e = Tensor::from_slice(&g, &[5], &t)
            .sinusoidal_embedding(dim, 1000.0)
            .to_vec_blocking()
            .unwrap();
        let half = dim / 2;
        let mut want = Vec::new();
        for &tv in &t {
            for j in 0..dim {
                let jj = if j < half { j } else { j - half };
                let f = (-(10000f64.ln()) * jj as f64 / (half.max(2) - 1) as f64).exp();
                let a = 1000.0 * tv as f64 * f;
                want.push(if j < half { a.sin() } else { a.cos() });
            }
        }
        // sin/cos of arguments up to 1000 in f32: the argument itself carries ~6e-5 of rounding.
        assert_close(&format!("sinusoidal dim {dim}"), &e, &want, 2e-3, 0.0);
    }
}

#[test]
fn weighted_mse_and_its_gradient() {
    let g = gpu();
    let mut r = rng("weighted_mse");
    let (n, len) = (4, 37);
    let a = uniform(&mut r, n * len, 1.0);
    let b = uniform(&mut r, n * len, 1.0);
    let w: Vec<f32> = uniform(&mut r, n, 1.0)
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    let out = Tensor::from_slice(&g, &[n, len], &a)
        .weighted_mse_per_sample(
            &Tensor::from_slice(&g, &[n, len], &b),
            &Tensor::from_slice(&g, &[n], &w),
        )
        .to_vec_blocking()
        .unwrap();
    let want: Vec<f64> = (0..n)
        .map(|s| {
            w[s] as f64
                * (0..len)
                    .map(|j| (a[s * len + j] as f64 - b[s * len + j] as f64).powi(2))
                    .sum::<f64>()
                / len as f64
        })
        .collect();
    assert_close("weighted mse", &out, &want, SUM_ATOL, SUM_RTOL);
}

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

/// Tile shapes the blocked-family tests force besides the per-problem choice (`None`, which on
/// the test shapes runs 16x64x16x4x4, 32x64x16x4x4 and 64x64x16x4x4): fewer invocations than
/// columns with a shallow K slice and TN = 8 (16x128x8x4x8), and a deep K slice with TM = 8 and
/// one invocation per row (32x32x32x8x4). Every staging path of gemm_blocked.wgsl (along K, along
/// M / N with one or several rows / columns per invocation) is taken by one of them.
/// lavapipe compiles a TM or TN = 8 kernel in 10-25 s (LLVM), so the forced shapes run on the
/// layouts that cover every staging mode rather than on every transpose.
const BLOCKED_TILES: [Option<&str>; 3] = [None, Some("16x128x8x4x8"), Some("32x32x32x8x4")];

fn set_blocked(g: &fewstep::gpu::Gpu, tile: Option<&str>) -> String {
    assert_eq!(
        g.set_variant(KernelVariant::Blocked),
        KernelVariant::Blocked
    );
    g.set_gemm_tile(tile.map(|t| t.parse().unwrap()))
        .unwrap_or_else(|e| panic!("tile {tile:?}: {e}"));
    tile.unwrap_or("per-problem").to_string()
}

#[test]
fn blocked_gemm_matmul_matches_reference() {
    let g = gpu();
    let mut r = rng("blocked_gemm_matmul");
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (16, 130, 24),
        (65, 33, 17),
        (100, 7, 130),
        (17, 129, 65),
        (130, 200, 33),
    ];
    for tile in BLOCKED_TILES {
        let name = set_blocked(&g, tile);
        // (false, false) and (true, true) stage A and B along K and along M / N both.
        let layouts: &[(bool, bool)] = if tile.is_none() {
            &[(false, false), (true, false), (false, true), (true, true)]
        } else {
            &[(false, false), (true, true)]
        };
        for &(m, n, k) in &shapes {
            for &(ta, tb) in layouts {
                for batch in [1usize, 3] {
                    let a = uniform(&mut r, batch * m * k, 1.0);
                    let b = uniform(&mut r, batch * k * n, 1.0);
                    let ash = if ta { [batch, k, m] } else { [batch, m, k] };
                    let bsh = if tb { [batch, n, k] } else { [batch, k, n] };
                    let c = Tensor::from_slice(&g, &ash, &a).matmul_with(
                        &Tensor::from_slice(&g, &bsh, &b),
                        MatmulOpts {
                            trans_a: ta,
                            trans_b: tb,
                            alpha: 1.0,
                            gradients: (false, false),
                        },
                        None,
                    );
                    let used = g.last_gemm().expect("a GEMM was recorded");
                    assert_eq!(used.0, KernelVariant::Blocked);
                    if let Some(t) = tile {
                        assert_eq!(used.1.to_string(), t);
                    }
                    let want = matmul_ref(&a, &b, batch, m, n, k, ta, tb);
                    assert_close(
                        &format!("blocked {name} (ran {}) matmul {m}x{n}x{k} batch {batch} ta {ta} tb {tb}", used.1),
                        &c.to_vec_blocking().unwrap(),
                        &want,
                        gemm_tol(k),
                        GEMM_RTOL,
                    );
                }
            }
        }
        // A 2-D A shared across a batch of B, alpha, a bias per column; then beta accumulation
        // through the conv weight gradient below.
        let (batch, m, n, k) = (2, 33, 20, 9);
        let a = uniform(&mut r, m * k, 1.0);
        let b = uniform(&mut r, batch * k * n, 1.0);
        let bias = uniform(&mut r, n, 1.0);
        let c = Tensor::from_slice(&g, &[m, k], &a).matmul_with(
            &Tensor::from_slice(&g, &[batch, k, n], &b),
            MatmulOpts {
                alpha: 0.5,
                ..Default::default()
            },
            Some(&Tensor::from_slice(&g, &[n], &bias)),
        );
        let a_rep: Vec<f32> = (0..batch).flat_map(|_| a.iter().copied()).collect();
        let mut want = matmul_ref(&a_rep, &b, batch, m, n, k, false, false);
        for (i, w) in want.iter_mut().enumerate() {
            *w = 0.5 * *w + bias[i % n] as f64;
        }
        assert_close(
            &format!("blocked {name} matmul broadcast A, alpha+bias"),
            &c.to_vec_blocking().unwrap(),
            &want,
            gemm_tol(k),
            GEMM_RTOL,
        );
    }
}

#[test]
fn blocked_gemm_conv_passes_match_reference() {
    let g = gpu();
    let mut r = rng("blocked_gemm_conv");
    let s = |n, cin, h, w, cout, ks, stride, pad| ConvShape {
        n,
        cin,
        h,
        w,
        cout,
        ks,
        stride,
        pad,
    };
    let mut shapes = conv_shapes();
    // The 16-channel convolutions of `tiny` (M = 16): 3x3, stride 2, 1x1, and a weight gradient
    // long enough along K (8 x 16 x 16 pixels) to be split into K chunks.
    shapes.extend([
        s(2, 16, 9, 9, 16, 3, 1, 1),
        s(3, 16, 10, 11, 16, 3, 2, 1),
        s(2, 16, 12, 12, 16, 1, 1, 0),
        s(8, 16, 16, 16, 16, 3, 1, 1),
        s(2, 33, 7, 9, 130, 1, 1, 0),
    ]);
    for tile in BLOCKED_TILES {
        let name = set_blocked(&g, tile);
        for (si, cs) in shapes.iter().enumerate() {
            let x = uniform(&mut r, cs.x_len(), 1.0);
            let w = uniform(&mut r, cs.w_len(), 1.0);
            let bias = uniform(&mut r, cs.cout, 1.0);
            let dy = uniform(&mut r, cs.y_len(), 1.0);
            let per_channel = uniform(&mut r, cs.n * cs.cout, 1.0);
            let conv = Conv2d {
                stride: cs.stride,
                pad: cs.pad,
                pad_end: 0,
            };
            let xs = [cs.n, cs.cin, cs.h, cs.w];
            let ws = [cs.cout, cs.cin, cs.ks, cs.ks];
            let ys = [cs.n, cs.cout, cs.oh(), cs.ow()];
            let (xt, wt) = (
                Tensor::from_slice(&g, &xs, &x),
                Tensor::from_slice(&g, &ws, &w),
            );
            let dyt = Tensor::from_slice(&g, &ys, &dy);
            // The forward adds, in its epilogue, dy as a residual (even shapes) or a value per
            // image and channel (odd shapes).
            let pct = Tensor::from_slice(&g, &[cs.n, cs.cout], &per_channel);
            let hw = cs.oh() * cs.ow();
            let (res, added): (_, Vec<f32>) = if si % 2 == 0 {
                (Residual::Full(&dyt), dy.clone())
            } else {
                let spread = (0..cs.y_len()).map(|j| per_channel[j / hw]).collect();
                (Residual::PerImageChannel(&pct), spread)
            };
            let y = conv.forward_add(
                &xt,
                &wt,
                Some(&Tensor::from_slice(&g, &[cs.cout], &bias)),
                Some(res),
            );
            let ran_forward = g.last_gemm().unwrap().1;
            let dx = conv.input_grad(&dyt, &wt, &xs);
            let dw = conv.weight_grad(&dyt, &xt, &ws);
            let kf = cs.cin * cs.ks * cs.ks;
            let kx = cs.cout * cs.ks * cs.ks;
            let kw = cs.n * cs.oh() * cs.ow();
            assert_close(
                &format!("blocked {name} (ran {ran_forward}) conv forward {cs:?}"),
                &y.to_vec_blocking().unwrap(),
                &(cs.forward_ref(&x, &w, Some(&bias)).iter())
                    .zip(&added)
                    .map(|(f, &d)| f + d as f64)
                    .collect::<Vec<_>>(),
                gemm_tol(kf),
                GEMM_RTOL,
            );
            assert_close(
                &format!("blocked {name} conv dx {cs:?}"),
                &dx.to_vec_blocking().unwrap(),
                &cs.input_grad_ref(&dy, &w),
                gemm_tol(kx),
                GEMM_RTOL,
            );
            assert_close(
                &format!("blocked {name} conv dw {cs:?}"),
                &dw.to_vec_blocking().unwrap(),
                &cs.weight_grad_ref(&dy, &x),
                gemm_tol(kw),
                GEMM_RTOL,
            );
        }
    }
}

#[test]
fn blocked_gemm_tile_setting() {
    let g = gpu();
    // Malformed shapes are refused naming the accepted form.
    for bad in [
        "128x128",
        "128x128x16x8",
        "axbxcxdxe",
        "128x128x16x3x8",
        "64x64x7x4x4",
    ] {
        let err = bad
            .parse()
            .map(|t| g.set_gemm_tile(Some(t)))
            .expect_err(bad);
        assert!(err.contains("BMxBNxBKxTMxTN"), "{bad}: {err}");
    }
    // A well-formed shape over the device's limits (1024 invocations, 128 KiB) is refused.
    let too_big = "256x256x64x8x8".parse().unwrap();
    let err = g.set_gemm_tile(Some(too_big)).expect_err("over the limits");
    assert!(err.contains("256x256x64x8x8"), "{err}");
    // Per-problem choice: small M gets a small tile, large M x N the 128x128 one.
    g.set_gemm_tile(None).unwrap();
    assert_eq!(
        fewstep::tensor::kernel_policy::blocked_tile(&g, 16, 50176, 1).bm,
        16
    );
    assert_eq!(
        fewstep::tensor::kernel_policy::blocked_tile(&g, 32, 50176, 1).bm,
        32
    );
    let big = fewstep::tensor::kernel_policy::blocked_tile(&g, 4096, 4096, 1);
    assert_eq!((big.bm, big.bn), (128, 128));
    assert!(fewstep::tensor::kernel_policy::describe_gemm(&g).starts_with(g.variant().name()));
    // CPU adapters (lavapipe) keep the subgroup family by default.
    let forced = ["FEWSTEP_KERNELS", "FEWSTEP_GEMM_TILE"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
    if !forced && g.info().device_type == wgpu::DeviceType::Cpu && g.has_subgroups() {
        assert_eq!(g.variant(), KernelVariant::Subgroup, "{}", g.describe());
    }
}

/// The weight gradient under several splits along K (`Gpu::set_split_k`, FEWSTEP_SPLIT_K): one
/// chunk, the CPU rule, the GPU rule, many short chunks (K = 2048 in chunks of 16: 128 parts,
/// more than the second pass's 16 lanes), and odd numbers; on every family, against the f64
/// reference. Lengths M x N both a multiple of 4 (16-byte second pass) and not (5 x 27).
#[test]
fn weight_gradient_split_rules_match_reference() {
    let g = gpu();
    let mut r = rng("split_k_rules");
    let s = |n, cin, h, w, cout| ConvShape {
        n,
        cin,
        h,
        w,
        cout,
        ks: 3,
        stride: 1,
        pad: 1,
    };
    let shapes = [s(8, 16, 16, 16, 16), s(3, 3, 11, 13, 5)];
    let rules = ["1/1", "512/1024", "2048/256", "100000/16", "7/100"];
    let mut families = variants(&g);
    families.push(KernelVariant::Blocked);
    g.set_gemm_tile(None).unwrap();
    for v in families {
        g.set_variant(v);
        for rule in rules {
            g.set_split_k(Some(rule.parse().unwrap()));
            for cs in &shapes {
                let x = uniform(&mut r, cs.x_len(), 1.0);
                let dy = uniform(&mut r, cs.y_len(), 1.0);
                let conv = Conv2d {
                    stride: 1,
                    pad: 1,
                    pad_end: 0,
                };
                let xs = [cs.n, cs.cin, cs.h, cs.w];
                let ws = [cs.cout, cs.cin, 3, 3];
                let ys = [cs.n, cs.cout, cs.oh(), cs.ow()];
                let dw = conv.weight_grad(
                    &Tensor::from_slice(&g, &ys, &dy),
                    &Tensor::from_slice(&g, &xs, &x),
                    &ws,
                );
                assert_close(
                    &format!("{v:?} split {rule} conv dw {cs:?}"),
                    &dw.to_vec_blocking().unwrap(),
                    &cs.weight_grad_ref(&dy, &x),
                    gemm_tol(cs.n * cs.oh() * cs.ow()),
                    GEMM_RTOL,
                );
            }
        }
    }
    g.set_split_k(None);
    g.set_variant(KernelVariant::Tiled);
    // Malformed rules are refused naming the accepted form.
    for bad in ["2048", "0/256", "2048/0", "a/b", "2048/256/1"] {
        let err = bad.parse::<fewstep::gpu::SplitK>().expect_err(bad);
        assert!(err.contains("WORKGROUPS/MIN_CHUNK"), "{bad}: {err}");
    }
}
