//! Buffers given back while a batch is being recorded are reused by later launches of the same
//! batch (gpu/pool.rs), never by uploads of that batch: `queue.write_buffer` runs before the whole
//! submit and would overwrite what earlier launches still have to read.

use crate::common;

use common::*;
use fewstep::tensor::Tensor;

/// Elementwise results against f64 (one or two f32 roundings).
const MAP_ATOL: f64 = 2e-6;
const MAP_RTOL: f64 = 2e-5;

#[test]
fn a_buffer_dropped_mid_batch_is_reused_by_kernels_but_not_by_uploads() {
    let g = gpu();
    // Eager: the kernel output below takes the buffer given back in this batch even though an
    // older idle one of its size may exist (Late, the default, would take that first).
    g.set_pool_reuse(fewstep::gpu::PoolReuse::Eager);
    let mut r = rng("pool_reuse");
    let n = 4099; // its own size class: no other test data shares these buffers
    let x = uniform(&mut r, n, 1.0);
    let other = uniform(&mut r, n, 1.0);
    let a = Tensor::from_slice(&g, &[n], &x);
    g.flush();
    // One batch: b = 2a; c = b + a; b dropped; e uploaded (may not take b's buffer: c has yet to
    // read it); d = 3a (a kernel output: takes it); f = c + e. Nothing is submitted before the
    // readback.
    let b = a.scale(2.0);
    let c = b.add(&a);
    drop(b);
    let e = Tensor::from_slice(&g, &[n], &other);
    let created = g.pool_stats().created;
    let d = a.scale(3.0);
    assert_eq!(
        g.pool_stats().created,
        created,
        "the kernel output did not reuse the buffer given back in the same batch"
    );
    let f = c.add(&e);
    let (c, d, e, f) = (
        c.to_vec_blocking().unwrap(),
        d.to_vec_blocking().unwrap(),
        e.to_vec_blocking().unwrap(),
        f.to_vec_blocking().unwrap(),
    );
    let want = |k: f64| x.iter().map(|&v| k * v as f64).collect::<Vec<_>>();
    assert_close("c = 2a + a", &c, &want(3.0), MAP_ATOL, MAP_RTOL);
    assert_close("d = 3a", &d, &want(3.0), MAP_ATOL, MAP_RTOL);
    let e64: Vec<f64> = other.iter().map(|&v| v as f64).collect();
    assert_close("e uploaded", &e, &e64, 0.0, 0.0);
    let f64s: Vec<f64> = x
        .iter()
        .zip(&other)
        .map(|(&a, &o)| 3.0 * a as f64 + o as f64)
        .collect();
    assert_close("f = c + e", &f, &f64s, MAP_ATOL, MAP_RTOL);
}
