//! Bind groups are cached across batches (gpu/batch.rs): a loop that records the same launches on
//! the same pooled buffers creates its bind groups once, and the cache never changes a result.

use crate::common;

use common::*;
use fewstep::tensor::{Conv2d, Tensor};

/// Two convolutions and a reduction, as a training update would record them; returns the result.
fn one_update(g: &fewstep::gpu::Gpu, x: &[f32], w: &[f32]) -> Vec<f32> {
    let xt = Tensor::from_slice(g, &[2, 3, 9, 9], x);
    let wt = Tensor::from_slice(g, &[3, 3, 3, 3], w);
    let y = Conv2d::same(3).forward(&xt, &wt, None);
    let y = Conv2d::same(3).forward(&y, &wt, None);
    let dx = Conv2d::same(3).input_grad(&y, &wt, &[2, 3, 9, 9]);
    dx.to_vec_blocking().unwrap()
}

#[test]
fn a_repeated_update_reuses_its_bind_groups_and_gives_the_same_numbers() {
    let g = gpu();
    let mut r = rng("bind_groups");
    let x = uniform(&mut r, 2 * 3 * 9 * 9, 1.0);
    let w = uniform(&mut r, 3 * 3 * 3 * 3, 1.0);
    // The first two fill the pool and the cache; later ones find both as they left them.
    let first = one_update(&g, &x, &w);
    let _ = one_update(&g, &x, &w);
    let (created0, reused0) = g.bind_group_counts();
    let (launches0, _) = g.counters();
    for _ in 0..3 {
        assert_eq!(
            one_update(&g, &x, &w),
            first,
            "a cached bind group changed a result"
        );
    }
    let (created1, reused1) = g.bind_group_counts();
    let (launches1, _) = g.counters();
    let launches = launches1 - launches0;
    assert!(launches >= 9, "{launches} launches recorded");
    assert_eq!(
        created1 - created0,
        0,
        "repeated updates created bind groups ({launches} launches, {} reused)",
        reused1 - reused0
    );
    assert_eq!(reused1 - reused0, launches);

    // New inputs in new buffers still give the right numbers (no stale group is reused).
    let x2: Vec<f32> = x.iter().map(|v| v * -0.5).collect();
    let held = Tensor::from_slice(&g, &[1000], &vec![0.0; 1000]); // shifts the pool's buffers
    let second = one_update(&g, &x2, &w);
    drop(held);
    for (a, b) in second.iter().zip(&first) {
        assert!(
            (a + 0.5 * b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{a} vs -0.5 * {b}"
        );
    }

    // Trimming the pool forgets the groups that would keep its buffers alive.
    g.trim_pool();
    let _ = one_update(&g, &x, &w);
    let (created2, _) = g.bind_group_counts();
    assert!(created2 > created1, "trim_pool kept the cached bind groups");
}
