//! Group norm when N x groups passes the 65535-workgroup limit of one grid dimension (issue 13,
//! item 10): the grid is folded over x and y and rounded up, and the extra workgroups of the
//! last row must write nothing (out-of-range writes land on the last elements on some drivers).

use crate::common;
use common::*;
use fewstep::tensor::Tensor;

#[test]
fn group_norm_with_a_folded_grid_matches_the_reference() {
    let gpu = gpu();
    // 2^17 samples of 1 channel x 2 pixels: 131072 workgroups fold to 3 x 43691 = 131073 (with
    // a 65535 limit), one past the end, and the buffers are exactly 1 MiB with no slack.
    let (n, c, hw, groups) = (1usize << 17, 1, 2, 1);
    let mut r = rng("group_norm_folded_grid");
    let x = uniform(&mut r, n * c * hw, 1.0);
    let gamma = vec![1.5f32];
    let beta = vec![0.25f32];
    let xt = Tensor::from_slice(&gpu, &[n, c, hw], &x);
    let g = Tensor::from_slice(&gpu, &[c], &gamma);
    let b = Tensor::from_slice(&gpu, &[c], &beta);
    let (y, saved) = xt.group_norm(&g, &b, groups, 1e-5);
    let want = fewstep::reference::group_norm_ref(&x, n, c, hw, groups, &gamma, &beta, 1e-5);
    assert_close(
        "group norm output",
        &y.to_vec_blocking().unwrap(),
        &want,
        1e-4,
        1e-4,
    );
    let stats = saved.stats.to_vec_blocking().unwrap();
    assert_eq!(stats.len(), 2 * n * groups);
    // The last sample's mean, recomputed.
    let last = &x[(n - 1) * hw..];
    let mean = last.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
    assert!((stats[2 * n - 2] as f64 - mean).abs() < 1e-5, "last mean");
    // Backward on the same grid: dx of a constant dy is ~0 everywhere, the last sample too.
    let dy = Tensor::from_slice(&gpu, &[n, c, hw], &vec![1.0; n * c * hw]);
    let (dx, _, _) = xt.group_norm_grad(&g, &dy, &saved);
    let dx = dx.to_vec_blocking().unwrap();
    let worst = dx.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        worst < 1e-3,
        "dx of a constant dy should vanish, worst {worst}"
    );
}
