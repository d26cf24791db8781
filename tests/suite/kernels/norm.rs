//! Group norm (alone and fused with SiLU) and softmax, forward and backward.

use super::*;

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
