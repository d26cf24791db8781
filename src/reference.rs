//! Plain CPU references with f64 accumulation: what every kernel is checked against, in the test
//! suite and in the browser self-test (so both compare with one definition).

/// C\[b\] = op(A\[b\]) op(B\[b\]); A [batch, M, K] or [batch, K, M] when trans_a; B likewise.
#[allow(clippy::too_many_arguments)]
pub fn matmul_ref(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for bt in 0..batch {
        let (ao, bo) = (bt * m * k, bt * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    let av = if ta {
                        a[ao + kk * m + i]
                    } else {
                        a[ao + i * k + kk]
                    };
                    let bv = if tb {
                        b[bo + j * k + kk]
                    } else {
                        b[bo + kk * n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                c[bt * m * n + i * n + j] = s;
            }
        }
    }
    c
}

#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub ks: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.ks) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.ks) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.cout * self.cin * self.ks * self.ks
    }
    pub fn y_len(&self) -> usize {
        self.n * self.cout * self.oh() * self.ow()
    }
    /// Calls f(y_index, x_index, w_index) for every multiply of the convolution.
    pub fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = (self.oh(), self.ow());
        for n in 0..self.n {
            for co in 0..self.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * self.cout + co) * oh + oy) * ow + ox;
                        for ci in 0..self.cin {
                            for ky in 0..self.ks {
                                for kx in 0..self.ks {
                                    let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                                    let ix = (ox * self.stride + kx) as isize - self.pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= self.h as isize
                                        || ix >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * self.cin + ci) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((co * self.cin + ci) * self.ks + ky) * self.ks + kx;
                                    f(yi, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    pub fn forward_ref(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
        let mut y = vec![0.0; self.y_len()];
        self.for_each_tap(|yi, xi, wi| y[yi] += x[xi] as f64 * w[wi] as f64);
        if let Some(b) = bias {
            let hw = self.oh() * self.ow();
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[(i / hw) % self.cout] as f64;
            }
        }
        y
    }
    pub fn input_grad_ref(&self, dy: &[f32], w: &[f32]) -> Vec<f64> {
        let mut dx = vec![0.0; self.x_len()];
        self.for_each_tap(|yi, xi, wi| dx[xi] += dy[yi] as f64 * w[wi] as f64);
        dx
    }
    pub fn weight_grad_ref(&self, dy: &[f32], x: &[f32]) -> Vec<f64> {
        let mut dw = vec![0.0; self.w_len()];
        self.for_each_tap(|yi, xi, wi| dw[wi] += dy[yi] as f64 * x[xi] as f64);
        dw
    }
}

/// Group norm reference: returns the output.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_ref(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Vec<f64> {
    let cpg = c / groups;
    let len = cpg * hw;
    let mut out = vec![0.0; x.len()];
    for s in 0..n {
        for g in 0..groups {
            let base = (s * groups + g) * len;
            let mean = x[base..base + len].iter().map(|&v| v as f64).sum::<f64>() / len as f64;
            let var = x[base..base + len]
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for i in 0..len {
                let ch = g * cpg + i / hw;
                out[base + i] =
                    (x[base + i] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
            }
        }
    }
    out
}

pub fn softmax_ref(x: &[f32], len: usize, scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks(len).zip(out.chunks_mut(len)) {
        let m = row
            .iter()
            .map(|&v| v as f64 * scale)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&v| (v as f64 * scale - m).exp()).sum();
        for (oi, &v) in o.iter_mut().zip(row) {
            *oi = (v as f64 * scale - m).exp() / s;
        }
    }
    out
}

/// Max over elements of |got - want| - (atol + rtol |want|); <= 0 means within tolerance.
pub fn worst_excess(got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if g.is_finite() {
                (g as f64 - w).abs() - (atol + rtol * w.abs())
            } else {
                f64::INFINITY
            }
        })
        .fold(f64::NEG_INFINITY, f64::max)
}
