//! The raw cooperative-matrix product, and the coop GEMMs (matmul, convolutions) within their
//! f16 error bounds.

use super::*;

/// An asymmetric product (A B != B A, neither operand symmetric) of small integers in f16 is
/// exact in f32, so it must equal the f64 reference exactly; a transposed reading of either
/// operand would not.
#[test]
fn cooperative_matrix_products_are_row_major_and_exact() {
    let Some((adapter, s)) = adapter_or_skip("cooperative_matrix_products_are_row_major_and_exact")
    else {
        return;
    };
    let n = (s * s) as usize;
    let a: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(((i * 7 % 11) as f32) - 5.0))
        .collect();
    let b: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(((i * 5 % 13) as f32) - 6.0))
        .collect();
    let s = s as usize;
    let reference = |x: &[f16], y: &[f16]| -> Vec<f64> {
        (0..s * s)
            .map(|ij| {
                let (i, j) = (ij / s, ij % s);
                (0..s)
                    .map(|k| x[i * s + k].to_f64() * y[k * s + j].to_f64())
                    .sum()
            })
            .collect()
    };
    let want = reference(&a, &b);
    assert_ne!(want, reference(&b, &a), "the operands do not commute");
    let got = coop_product(&adapter, s as u32, &a, &b);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{}: {s}x{s}x{s} f16 -> f32 cooperative product, max |err| {worst} (exact expected)",
        adapter.get_info().name
    );
    assert_eq!(worst, 0.0, "row-major A B, exactly");
}

#[test]
fn coop_matmul_is_within_its_f16_bound() {
    let Some(g) = coop_gpu_or_skip("coop_matmul_is_within_its_f16_bound") else {
        return;
    };
    let mut r = rng("coop matmul");
    let (s, _) = g.coop_sizes().unwrap();
    let s = s as usize;
    // Odd sizes, edge tiles on every side, K shorter than a slice, one slice plus one, and
    // shapes that reach every tile of the rule (M up to S, 2S, 4S and more).
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (s - 1, 9 * s + 3, 2 * s + 1),
        (2 * s - 3, 33, 4 * s + 3),
        (65, 33, 17),
        (4 * s + 1, 4 * s + 5, 129),
        (100, 7, 130),
        (17, 129, 65),
        (9 * s + 5, 30 * s + 1, 3 * s - 1),
    ];
    let mut worst = (0.0f64, 0.0f64);
    let mut largest = vec![0.0f64];
    for &(m, n, k) in &shapes {
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
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
                assert_eq!(g.last_gemm().unwrap().0, KernelVariant::Coop);
                let want = matmul_ref(&a, &b, batch, m, n, k, ta, tb);
                let abs_ref = matmul_ref(&abs(&a), &abs(&b), batch, m, n, k, ta, tb);
                let ones_a = vec![1.0; a.len()];
                let ones_b = vec![1.0; b.len()];
                let l1: Vec<f64> = matmul_ref(&abs(&a), &ones_b, batch, m, n, k, ta, tb)
                    .iter()
                    .zip(matmul_ref(&ones_a, &abs(&b), batch, m, n, k, ta, tb))
                    .map(|(x, y)| x + y)
                    .collect();
                let what = format!("coop matmul {m}x{n}x{k} batch {batch} ta {ta} tb {tb}");
                let got = c.to_vec_blocking().unwrap();
                let e = assert_within(&what, &got, &want, &bounds(&abs_ref, &l1, k, &want));
                if e.0 > worst.0 {
                    worst = e;
                    largest = want.clone();
                }
            }
        }
    }
    report("coop matmul, all shapes", worst, &largest);

    // A 2-D operand shared across the batch of the other, alpha and a bias per column; and
    // values past f16's range saturate instead of turning into infinities.
    let (batch, m, n, k) = (2, 21, 19, 37);
    let a = uniform(&mut r, batch * m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let bias = uniform(&mut r, n, 1.0);
    let c = Tensor::from_slice(&g, &[batch, m, k], &a).matmul_with(
        &Tensor::from_slice(&g, &[k, n], &b),
        MatmulOpts {
            alpha: 0.25,
            ..Default::default()
        },
        Some(&Tensor::from_slice(&g, &[n], &bias)),
    );
    let b2: Vec<f32> = (0..batch).flat_map(|_| b.iter().copied()).collect();
    let mut want = matmul_ref(&a, &b2, batch, m, n, k, false, false);
    let mut bound = bounds(
        &matmul_ref(&abs(&a), &abs(&b2), batch, m, n, k, false, false),
        &vec![2.0 * k as f64; want.len()],
        k,
        &want,
    );
    for (i, (w, bd)) in want.iter_mut().zip(&mut bound).enumerate() {
        *w = 0.25 * *w + bias[i % n] as f64;
        *bd = 0.25 * *bd + 4.0 * U32 * (w.abs() + bias[i % n].abs() as f64);
    }
    let e = assert_within(
        "coop matmul shared B, alpha, bias",
        &c.to_vec_blocking().unwrap(),
        &want,
        &bound,
    );
    report("coop matmul shared B, alpha, bias", e, &want);
    let big = Tensor::from_slice(&g, &[1, 2], &[1e6, -1e6]).matmul(&Tensor::from_slice(
        &g,
        &[2, 1],
        &[1.0, 0.5],
    ));
    let v = big.to_vec_blocking().unwrap()[0];
    assert_eq!(
        v,
        65504.0 * 0.5,
        "out-of-range operands saturate to f16's largest value"
    );
}

#[test]
fn coop_convolutions_are_within_their_f16_bound() {
    let Some(g) = coop_gpu_or_skip("coop_convolutions_are_within_their_f16_bound") else {
        return;
    };
    let mut r = rng("coop conv");
    let cs = |n, cin, h, w, cout, ks, stride, pad| ConvShape {
        n,
        cin,
        h,
        w,
        cout,
        ks,
        stride,
        pad,
    };
    let shapes = [
        cs(1, 1, 1, 1, 1, 1, 1, 0),
        cs(2, 3, 7, 5, 4, 3, 1, 1),
        cs(1, 5, 8, 8, 3, 3, 2, 1),
        cs(3, 4, 6, 6, 17, 1, 1, 0),
        cs(2, 16, 17, 17, 65, 3, 1, 1),
        cs(2, 6, 3, 3, 5, 3, 2, 1),
        // `tiny`'s 16-channel convolutions, and weight gradients long enough along K to be
        // split into chunks (the last one partial).
        cs(2, 16, 9, 9, 16, 3, 1, 1),
        cs(8, 16, 16, 16, 16, 3, 1, 1),
        cs(5, 3, 23, 22, 6, 3, 1, 1),
        cs(14, 2, 30, 30, 3, 3, 2, 1),
        cs(2, 33, 7, 9, 130, 1, 1, 0),
    ];
    let mut worst = [(0.0f64, 0.0f64); 3];
    let mut scale = [0.0f64; 3];
    for (si, c) in shapes.iter().enumerate() {
        let x = uniform(&mut r, c.x_len(), 1.0);
        let w = uniform(&mut r, c.w_len(), 1.0);
        let bias = uniform(&mut r, c.cout, 1.0);
        let dy = uniform(&mut r, c.y_len(), 1.0);
        let per_channel = uniform(&mut r, c.n * c.cout, 1.0);
        let conv = Conv2d {
            stride: c.stride,
            pad: c.pad,
            pad_end: 0,
        };
        let xs = [c.n, c.cin, c.h, c.w];
        let ws = [c.cout, c.cin, c.ks, c.ks];
        let ys = [c.n, c.cout, c.oh(), c.ow()];
        let (xt, wt) = (
            Tensor::from_slice(&g, &xs, &x),
            Tensor::from_slice(&g, &ws, &w),
        );
        let dyt = Tensor::from_slice(&g, &ys, &dy);
        let pct = Tensor::from_slice(&g, &[c.n, c.cout], &per_channel);
        let hw = c.oh() * c.ow();
        // Shapes take turns adding nothing, a full residual and a value per image and channel.
        let (res, added): (Option<Residual>, Vec<f32>) = match si % 3 {
            0 => (None, vec![0.0; c.y_len()]),
            1 => (Some(Residual::Full(&dyt)), dy.clone()),
            _ => (
                Some(Residual::PerImageChannel(&pct)),
                (0..c.y_len()).map(|j| per_channel[j / hw]).collect(),
            ),
        };
        let y = conv.forward_add(
            &xt,
            &wt,
            Some(&Tensor::from_slice(&g, &[c.cout], &bias)),
            res,
        );
        assert_eq!(g.last_gemm().unwrap().0, KernelVariant::Coop);
        let dx = conv.input_grad(&dyt, &wt, &xs);
        let dw = conv.weight_grad(&dyt, &xt, &ws);
        let (ax, aw, ady) = (abs(&x), abs(&w), abs(&dy));
        let ones = |n| vec![1.0f32; n];
        let l1 = |p: Vec<f64>, q: Vec<f64>| p.iter().zip(q).map(|(a, b)| a + b).collect::<Vec<_>>();
        let kf = c.cin * c.ks * c.ks;
        let kx = c.cout * c.ks * c.ks;
        let kw = c.n * hw;
        // Forward: conv + bias + residual; the bound's epilogue term covers the two adds.
        let want_y: Vec<f64> = c
            .forward_ref(&x, &w, Some(&bias))
            .iter()
            .zip(&added)
            .map(|(f, &d)| f + d as f64)
            .collect();
        let by = bounds(
            &c.forward_ref(&ax, &aw, None),
            &l1(
                c.forward_ref(&ax, &ones(w.len()), None),
                c.forward_ref(&ones(x.len()), &aw, None),
            ),
            kf,
            &want_y,
        );
        let by: Vec<f64> = by
            .iter()
            .enumerate()
            .map(|(i, b)| b + 4.0 * U32 * (bias[i / hw % c.cout].abs() + added[i].abs()) as f64)
            .collect();
        let want_dx = c.input_grad_ref(&dy, &w);
        let bx = bounds(
            &c.input_grad_ref(&ady, &aw),
            &l1(
                c.input_grad_ref(&ady, &ones(w.len())),
                c.input_grad_ref(&ones(dy.len()), &aw),
            ),
            kx,
            &want_dx,
        );
        let want_dw = c.weight_grad_ref(&dy, &x);
        // Split-K adds the chunks' partial sums in f32 once more: counted as K terms again.
        let bw: Vec<f64> = bounds(
            &c.weight_grad_ref(&ady, &ax),
            &l1(
                c.weight_grad_ref(&ady, &ones(x.len())),
                c.weight_grad_ref(&ones(dy.len()), &ax),
            ),
            2 * kw,
            &want_dw,
        );
        let results = [
            ("forward", y, want_y, by),
            ("dx", dx, want_dx, bx),
            ("dw", dw, want_dw, bw),
        ];
        for (p, (name, got, want, bound)) in results.into_iter().enumerate() {
            let e = assert_within(
                &format!("coop conv {name} {c:?} (residual kind {})", si % 3),
                &got.to_vec_blocking().unwrap(),
                &want,
                &bound,
            );
            if e.0 > worst[p].0 {
                worst[p] = e;
                scale[p] = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
            }
        }
    }
    for (p, name) in ["forward", "dx", "dw"].iter().enumerate() {
        report(
            &format!("coop conv {name}, all shapes"),
            worst[p],
            &[scale[p]],
        );
    }
}
