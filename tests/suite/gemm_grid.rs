//! GEMMs whose grid passes the per-dimension workgroup limit (issue 13, item 10): the launcher
//! folds column and row tiles into z instead of asserting (a `tiny` convolution over 4.2M pixels
//! needs 65,600 column tiles of 64). The limit is lowered with `Gpu::limit_grid_dimension` so
//! that small problems take the folded path, in every GEMM family, against the f64 reference.

use crate::common;
use common::*;
use fewstep::gpu::{Gpu, KernelVariant};
use fewstep::tensor::{Conv2d, Tensor};

/// f32 GEMM tolerance as in tests/suite/kernels/mod.rs: sqrt(K) ulps of the operands' scale.
fn gemm_tol(k: usize) -> f64 {
    2e-6 * (k as f64).sqrt() * 4.0
}
const GEMM_RTOL: f64 = 1e-5;

/// Every family this adapter runs, the blocked one included.
fn families(g: &Gpu) -> Vec<KernelVariant> {
    let mut v = variants(g);
    v.push(KernelVariant::Blocked);
    v
}

/// Runs `op` once with the device's limit to learn its tile, then again with the limit lowered
/// so the grid folds (column and/or row tiles at least twice over); both must equal `want`.
/// Returns whether a fold happened.
fn check_folded(g: &Gpu, what: &str, want: &[f64], k: usize, op: &dyn Fn() -> Tensor) -> bool {
    g.limit_grid_dimension(u32::MAX);
    let plain = op().to_vec_blocking().unwrap();
    assert_close(
        &format!("{what} (unfolded)"),
        &plain,
        want,
        gemm_tol(k),
        GEMM_RTOL,
    );
    let (_, tile) = g.last_gemm().unwrap();
    let (m, n, batch) = op_dims(what);
    let (x, y) = (n.div_ceil(tile.bn as usize), m.div_ceil(tile.bm as usize));
    // At most 2 folds per dimension, so z = batch x folds stays within the lowered limit.
    let limit = x.max(y).div_ceil(2).max(4 * batch);
    if x.max(y) <= limit {
        return false;
    }
    g.limit_grid_dimension(limit as u32);
    let folded = op().to_vec_blocking().unwrap();
    g.limit_grid_dimension(u32::MAX);
    assert_close(
        &format!(
            "{what} folded ({x} x {y} tiles of {}x{}, limit {limit})",
            tile.bm, tile.bn
        ),
        &folded,
        want,
        gemm_tol(k),
        GEMM_RTOL,
    );
    true
}

/// The GEMM dimensions (M, N, batch) encoded in a case's name: "name MxNxB".
fn op_dims(what: &str) -> (usize, usize, usize) {
    let dims: Vec<usize> = what
        .rsplit(' ')
        .next()
        .unwrap()
        .split('x')
        .map(|d| d.parse().unwrap())
        .collect();
    (dims[0], dims[1], dims[2])
}

#[test]
fn gemms_over_the_grid_limit_fold_and_match_the_reference() {
    let g = gpu();
    let mut r = rng("gemm_grid_fold");
    for v in families(&g) {
        g.set_variant(v);
        let mut folds = 0;
        // Matmuls: tall (row tiles fold), wide (column tiles fold), square (both), batched.
        for (batch, m, n, k) in [(2, 2000, 8, 5), (1, 6, 3000, 7), (1, 600, 600, 9)] {
            let a = uniform(&mut r, batch * m * k, 1.0);
            let b = uniform(&mut r, batch * k * n, 1.0);
            let want = matmul_ref(&a, &b, batch, m, n, k, false, false);
            let (at, bt) = (
                Tensor::from_slice(&g, &[batch, m, k], &a),
                Tensor::from_slice(&g, &[batch, k, n], &b),
            );
            let what = format!("{} matmul {m}x{n}x{batch}", v.name());
            folds += check_folded(&g, &what, &want, k, &|| at.matmul(&bt)) as usize;
        }
        // Convolutions: the pixels are the GEMM's N (forward, input gradient).
        let cs = ConvShape {
            n: 4,
            cin: 3,
            h: 16,
            w: 16,
            cout: 70,
            ks: 3,
            stride: 1,
            pad: 1,
        };
        let conv = Conv2d {
            stride: 1,
            pad: 1,
            pad_end: 0,
        };
        let x = uniform(&mut r, cs.x_len(), 1.0);
        let w = uniform(&mut r, cs.w_len(), 1.0);
        let dy = uniform(&mut r, cs.y_len(), 1.0);
        let xs = [cs.n, cs.cin, cs.h, cs.w];
        let xt = Tensor::from_slice(&g, &xs, &x);
        let wt = Tensor::from_slice(&g, &[cs.cout, cs.cin, 3, 3], &w);
        let dyt = Tensor::from_slice(&g, &[cs.n, cs.cout, cs.h, cs.w], &dy);
        let pixels = cs.n * cs.h * cs.w;
        let what = format!("{} conv forward {}x{pixels}x1", v.name(), cs.cout);
        folds += check_folded(
            &g,
            &what,
            &cs.forward_ref(&x, &w, None),
            cs.cin * 9,
            &|| conv.forward(&xt, &wt, None),
        ) as usize;
        let what = format!("{} conv input grad {}x{pixels}x1", v.name(), cs.cin);
        folds += check_folded(&g, &what, &cs.input_grad_ref(&dy, &w), cs.cout * 9, &|| {
            conv.input_grad(&dyt, &wt, &xs)
        }) as usize;
        assert!(folds >= 4, "{}: only {folds} of 5 cases folded", v.name());
    }
}
