//! `bench train --profile`: timestamp queries around every launch (gpu/profile.rs). Profiling
//! must not change a result, must account for every launch under its kernel's label, and must
//! say why where the adapter has no timestamp queries.

use crate::common;

use common::*;
use fewstep::tensor::{Conv2d, Tensor};

/// A convolution, its input gradient and a channel sum; returns the two results.
fn work(g: &fewstep::gpu::Gpu, x: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let xt = Tensor::from_slice(g, &[2, 3, 9, 9], x);
    let wt = Tensor::from_slice(g, &[3, 3, 3, 3], w);
    let y = Conv2d::same(3).forward(&xt, &wt, None);
    let dx = Conv2d::same(3).input_grad(&y, &wt, &[2, 3, 9, 9]);
    (
        dx.to_vec_blocking().unwrap(),
        y.sum_per_channel().to_vec_blocking().unwrap(),
    )
}

#[test]
fn profiling_times_every_launch_and_changes_no_result() {
    let g = gpu();
    let mut r = rng("profile");
    let x = uniform(&mut r, 2 * 3 * 9 * 9, 1.0);
    let w = uniform(&mut r, 3 * 3 * 3 * 3, 1.0);
    let plain = work(&g, &x, &w);
    if let Err(why) = g.set_profiling(true) {
        assert!(why.contains("TIMESTAMP_QUERY"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let (launches0, _) = g.counters();
    let profiled = work(&g, &x, &w);
    let (launches1, _) = g.counters();
    assert_eq!(plain, profiled, "a pass per launch changed a result");
    let rows = g.profile();
    let timed: u64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(timed, launches1 - launches0, "profile rows: {rows:?}");
    assert!(
        rows.iter().all(|r| r.1 >= 0.0 && r.1.is_finite()),
        "{rows:?}"
    );
    assert!(rows.iter().map(|r| r.1).sum::<f64>() > 0.0, "{rows:?}");
    for kernel in ["conv_forward", "conv_input_grad", "reduce"] {
        assert!(
            rows.iter().any(|r| r.0.starts_with(kernel)),
            "no {kernel} row in {rows:?}"
        );
    }
    // Rows are sorted by time, most first.
    assert!(rows.windows(2).all(|p| p[0].1 >= p[1].1), "{rows:?}");
    g.set_profiling(false).unwrap();
    assert!(g.profile().is_empty());
    assert_eq!(work(&g, &x, &w), plain);
}
