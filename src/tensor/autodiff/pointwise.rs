//! Elementwise ops: activations, dropout, sums, products and broadcasts. Each op's constructor (a
//! `Tape` method) sits next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    pub fn silu(&self, x: &Var) -> Var {
        self.record(x.value.silu(), [x], SiluBack { x: x.value.clone() })
    }

    /// Dropout with a given Gaussian `noise` tensor: keeps x * scale where noise > threshold.
    pub fn dropout(&self, x: &Var, noise: &Tensor, threshold: f32, scale: f32) -> Var {
        self.record(
            x.value.mask_where_above(noise, threshold, scale),
            [x],
            DropoutBack {
                noise: noise.clone(),
                threshold,
                scale,
            },
        )
    }

    pub fn add(&self, a: &Var, b: &Var) -> Var {
        self.record(a.value.add(&b.value), [a, b], Linear2 { ca: 1.0, cb: 1.0 })
    }
    pub fn sub(&self, a: &Var, b: &Var) -> Var {
        self.record(a.value.sub(&b.value), [a, b], Linear2 { ca: 1.0, cb: -1.0 })
    }
    pub fn scale(&self, a: &Var, s: f32) -> Var {
        self.record(a.value.scale(s), [a], ScaleBack { s })
    }
    pub fn mul(&self, a: &Var, b: &Var) -> Var {
        self.record(
            a.value.mul(&b.value),
            [a, b],
            MulBack {
                a: a.value.clone(),
                b: b.value.clone(),
            },
        )
    }

    /// x[s, c, ..] + v[s, c] (per sample) or + v\[c\].
    pub fn add_channel_vector(&self, x: &Var, v: &Var) -> Var {
        let per_sample = v.value.numel() != x.value.shape()[1];
        self.record(
            x.value.add_channel_vector(&v.value),
            [x, v],
            ChannelVecBack {
                per_sample,
                v_shape: v.shape().to_vec(),
            },
        )
    }

    /// x[s, ..] * sa\[s\] with constant per-sample scalars.
    pub fn per_sample_scale(&self, x: &Var, sa: &Tensor) -> Var {
        self.record(
            x.value.per_sample_axpby(sa, None),
            [x],
            PerSampleBack { sa: sa.clone() },
        )
    }
}

struct SiluBack {
    x: Tensor,
}

impl Backward<1> for SiluBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(self.x.silu_grad(g))]
    }
}

struct DropoutBack {
    noise: Tensor,
    threshold: f32,
    scale: f32,
}

impl Backward<1> for DropoutBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.mask_where_above(
            &self.noise,
            self.threshold,
            self.scale,
        ))]
    }
}

/// Multiplies by `c`, or passes the gradient on unchanged when `c` is 1.
fn scaled(g: &Tensor, c: f32) -> Tensor {
    if c == 1.0 {
        g.clone()
    } else {
        g.scale(c)
    }
}

/// y = ca * a + cb * b
struct Linear2 {
    ca: f32,
    cb: f32,
}

impl Backward<2> for Linear2 {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        [
            need_a.then(|| scaled(g, self.ca)),
            need_b.then(|| scaled(g, self.cb)),
        ]
    }
}

/// y = s * a
struct ScaleBack {
    s: f32,
}

impl Backward<1> for ScaleBack {
    fn backward(&self, g: &Tensor, [need_a]: [bool; 1]) -> [Option<Tensor>; 1] {
        [need_a.then(|| scaled(g, self.s))]
    }
}

struct MulBack {
    a: Tensor,
    b: Tensor,
}

impl Backward<2> for MulBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        [
            need_a.then(|| g.mul(&self.b)),
            need_b.then(|| g.mul(&self.a)),
        ]
    }
}

struct ChannelVecBack {
    per_sample: bool,
    v_shape: Vec<usize>,
}

impl Backward<2> for ChannelVecBack {
    fn backward(&self, g: &Tensor, [need_x, need_v]: [bool; 2]) -> [Option<Tensor>; 2] {
        let dv = need_v.then(|| {
            let s = if self.per_sample {
                g.sum_per_sample_channel()
            } else {
                g.sum_per_channel()
            };
            s.reshape(&self.v_shape)
        });
        [need_x.then(|| g.clone()), dv]
    }
}

struct PerSampleBack {
    sa: Tensor,
}

impl Backward<1> for PerSampleBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.per_sample_axpby(&self.sa, None))]
    }
}
