//! Elementwise maps, per-sample scalars and channel vectors, resampling and concatenation,
//! reductions, the sinusoidal embedding and the weighted MSE.

use super::*;

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
