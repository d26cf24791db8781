//! Kernels with an optional input that is absent read a stand-in buffer (to keep their automatic
//! bind group layout) and multiply what they read by 0. The stand-in must hold zeros: a NaN left
//! in a recycled 16-byte buffer by earlier work (a NaN loss, say) would otherwise turn every later
//! matmul, sum and softmax of the process into NaN.

mod common;

use common::*;
use fewstep::tensor::Tensor;

#[test]
fn a_nan_left_in_small_pooled_buffers_poisons_no_later_kernel() {
    let g = gpu();
    // Fill the pool's 16-byte class with NaNs, then release them.
    let poison: Vec<Tensor> = (0..64)
        .map(|_| Tensor::from_slice(&g, &[4], &[f32::NAN; 4]))
        .collect();
    assert!(poison[0].to_vec_blocking().unwrap()[0].is_nan());
    drop(poison);
    // One more submit returns them to the pool.
    let _ = Tensor::from_slice(&g, &[4], &[1.0; 4])
        .to_vec_blocking()
        .unwrap();

    let mut r = rng("dummy_inputs");
    let (m, n, k) = (5, 7, 3);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let c = Tensor::from_slice(&g, &[m, k], &a)
        .matmul(&Tensor::from_slice(&g, &[k, n], &b))
        .to_vec_blocking()
        .unwrap();
    let want = fewstep::reference::matmul_ref(&a, &b, 1, m, n, k, false, false);
    assert_close("matmul without bias", &c, &want, 1e-5, 1e-5);

    let x = uniform(&mut r, 40, 1.0);
    let xt = Tensor::from_slice(&g, &[4, 10], &x);
    let sum = xt.sum_all(1.0).to_vec_blocking().unwrap();
    let want: f64 = x.iter().map(|&v| v as f64).sum();
    assert_close("sum without a second input", &sum[..1], &[want], 1e-5, 1e-5);

    let p = xt.softmax(1.0).to_vec_blocking().unwrap();
    for row in p.chunks(10) {
        let s: f64 = row.iter().map(|&v| v as f64).sum();
        assert!((s - 1.0).abs() < 1e-5, "softmax row sums to {s}: {row:?}");
    }
    let y = xt.silu().to_vec_blocking().unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "silu gave {y:?}");
}
