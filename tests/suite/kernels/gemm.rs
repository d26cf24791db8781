//! Matmul and the convolutions on every GEMM family and tile, against f64 references.

use super::*;

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
