//! Matrix products: matmul, linear layers and attention (with its forward without a tape). Each
//! op's constructor (a `Tape` method) sits next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::{MatmulOpts, Tensor};

impl Tape {
    pub fn matmul(&self, a: &Var, b: &Var, o: MatmulOpts) -> Var {
        let y = a.value.matmul_with(&b.value, o, None);
        self.record(
            y,
            [a, b],
            MatmulBack {
                a: a.value.clone(),
                b: b.value.clone(),
                o,
            },
        )
    }

    /// x [N, in] W^T + b with W [out, in], b \[out\].
    pub fn linear(&self, x: &Var, w: &Var, b: &Var) -> Var {
        let o = MatmulOpts {
            trans_b: true,
            ..Default::default()
        };
        let y = x.value.matmul_with(&w.value, o, Some(&b.value));
        self.record(
            y,
            [x, w, b],
            LinearBack {
                x: x.value.clone(),
                w: w.value.clone(),
            },
        )
    }

    /// Single-head attention over pixels: q, k, v [N, C, HW] -> softmax(Q^T K / sqrt(C)) applied to V.
    pub fn attention(&self, q: &Var, k: &Var, v: &Var) -> Var {
        let (out, p) = attention_forward(&q.value, &k.value, &v.value);
        let scale = 1.0 / (q.shape()[1] as f32).sqrt();
        self.record(
            out,
            [q, k, v],
            AttentionBack {
                q: q.value.clone(),
                k: k.value.clone(),
                v: v.value.clone(),
                p,
                scale,
            },
        )
    }
}

/// Attention forward without a tape: (output, softmax probabilities).
pub fn attention_forward(q: &Tensor, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
    let c = q.shape()[1];
    let scale = 1.0 / (c as f32).sqrt();
    let s = q.matmul_with(
        k,
        MatmulOpts {
            trans_a: true,
            ..Default::default()
        },
        None,
    ); // [N, HW, HW]
    let p = s.softmax(scale);
    let out = v.matmul_with(
        &p,
        MatmulOpts {
            trans_b: true,
            ..Default::default()
        },
        None,
    ); // [N, C, HW]
    (out, p)
}

/// softmax(Q^T K / sqrt(C)) V^T over pixels, q/k/v [N, C, HW] -> [N, C, HW].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    attention_forward(q, k, v).0
}

struct MatmulBack {
    a: Tensor,
    b: Tensor,
    o: MatmulOpts,
}

impl Backward<2> for MatmulBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        let MatmulOpts {
            trans_a,
            trans_b,
            alpha,
            ..
        } = self.o;
        // `gradients` marks G's side (scaled before f16 rounding on the coop family).
        let mm = |x: &Tensor, y: &Tensor, ta, tb, gradients| {
            x.matmul_with(
                y,
                MatmulOpts {
                    trans_a: ta,
                    trans_b: tb,
                    alpha,
                    gradients,
                },
                None,
            )
        };
        // C = op(A) op(B): d op(A) = G op(B)^T, d op(B) = op(A)^T G; transpose back where stored transposed.
        let da = need_a.then(|| {
            let d = if trans_a {
                mm(&self.b, g, trans_b, true, (false, true))
            } else {
                mm(g, &self.b, false, !trans_b, (true, false))
            };
            reduce_broadcast(d, self.a.shape())
        });
        let db = need_b.then(|| {
            let d = if trans_b {
                mm(g, &self.a, true, trans_a, (true, false))
            } else {
                mm(&self.a, g, !trans_a, false, (false, true))
            };
            reduce_broadcast(d, self.b.shape())
        });
        [da, db]
    }
}

/// A 2-D operand broadcast over a batch gets the batch-summed gradient.
fn reduce_broadcast(d: Tensor, shape: &[usize]) -> Tensor {
    if d.shape().len() == 3 && shape.len() == 2 {
        let (b, r, c) = (d.shape()[0], d.shape()[1], d.shape()[2]);
        let ones = Tensor::full(d.gpu(), &[1, b], 1.0);
        ones.matmul(&d.reshape(&[b, r * c])).reshape(shape)
    } else {
        d.reshape(shape)
    }
}

struct LinearBack {
    x: Tensor,
    w: Tensor,
}

impl Backward<3> for LinearBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_b]: [bool; 3]) -> [Option<Tensor>; 3] {
        let dx = need_x.then(|| g.matmul(&self.w));
        let dw = need_w.then(|| {
            g.matmul_with(
                &self.x,
                MatmulOpts {
                    trans_a: true,
                    ..Default::default()
                },
                None,
            )
        });
        let n = g.shape()[0];
        let db = need_b.then(|| g.reshape(&[n, g.numel() / n, 1]).sum_per_channel());
        [dx, dw, db]
    }
}

struct AttentionBack {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
    scale: f32,
}

impl Backward<3> for AttentionBack {
    fn backward(&self, g: &Tensor, [need_q, need_k, need_v]: [bool; 3]) -> [Option<Tensor>; 3] {
        // `gradients` marks the gradient operand (scaled before f16 rounding on the coop family).
        let o = |ta, tb, gradients| MatmulOpts {
            trans_a: ta,
            trans_b: tb,
            alpha: 1.0,
            gradients,
        };
        // out = V P^T: dV = G P, dP = G^T V; S = Q^T K: dQ = K dS^T, dK = Q dS.
        let dv = need_v.then(|| g.matmul_with(&self.p, o(false, false, (true, false)), None));
        let dp = g.matmul_with(&self.v, o(true, false, (true, false)), None);
        let ds = self.p.softmax_grad(&dp, self.scale);
        let dq = need_q.then(|| self.k.matmul_with(&ds, o(false, true, (false, true)), None));
        let dk = need_k.then(|| {
            self.q
                .matmul_with(&ds, o(false, false, (false, true)), None)
        });
        [dq, dk, dv]
    }
}
