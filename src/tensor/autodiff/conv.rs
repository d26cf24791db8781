//! Convolutions, with their bias and residual epilogues. Each op's constructor (a `Tape` method)
//! sits next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::{Conv2d, Residual, Tensor};

impl Tape {
    pub fn conv2d(&self, x: &Var, w: &Var, b: Option<&Var>, conv: Conv2d) -> Var {
        let y = conv.forward(&x.value, &w.value, b.map(|b| &b.value));
        let back = ConvBack {
            x: x.value.clone(),
            w: w.value.clone(),
            conv,
        };
        match b {
            Some(b) => self.record(y, [x, w, b], back),
            None => self.record(y, [x, w], back),
        }
    }

    /// conv2d(x, w, b) + r with the add in the convolution's epilogue: one launch, the same
    /// gradients as `add(r, conv2d(x, w, b))` (r gets the incoming gradient unchanged).
    pub fn conv2d_add(&self, x: &Var, w: &Var, b: Option<&Var>, conv: Conv2d, r: &Var) -> Var {
        self.conv2d_with(x, w, b, conv, r, false)
    }

    /// conv2d(x, w, b) + v[image, channel] broadcast over pixels (v [N, Cout]: the time
    /// embedding), one launch; the same gradients as `add_channel_vector(conv2d(x, w, b), v)`.
    pub fn conv2d_add_channels(
        &self,
        x: &Var,
        w: &Var,
        b: Option<&Var>,
        conv: Conv2d,
        v: &Var,
    ) -> Var {
        self.conv2d_with(x, w, b, conv, v, true)
    }

    fn conv2d_with(
        &self,
        x: &Var,
        w: &Var,
        b: Option<&Var>,
        conv: Conv2d,
        r: &Var,
        per_channel: bool,
    ) -> Var {
        let res = if per_channel {
            Residual::PerImageChannel(&r.value)
        } else {
            Residual::Full(&r.value)
        };
        let y = conv.forward_add(&x.value, &w.value, b.map(|b| &b.value), Some(res));
        let back = ConvAddBack {
            conv: ConvBack {
                x: x.value.clone(),
                w: w.value.clone(),
                conv,
            },
            per_channel: per_channel.then(|| r.shape().to_vec()),
        };
        match b {
            Some(b) => self.record(y, [x, w, b, r], back),
            None => self.record(y, [x, w, r], back),
        }
    }
}

/// Convolution without bias (inputs x, w) and with bias (x, w, b): one unit, both arities.
struct ConvBack {
    x: Tensor,
    w: Tensor,
    conv: Conv2d,
}

impl Backward<2> for ConvBack {
    fn backward(&self, g: &Tensor, [need_x, need_w]: [bool; 2]) -> [Option<Tensor>; 2] {
        let (dx, dw) = self.conv.backward(g, &self.x, &self.w, (need_x, need_w));
        [dx, dw]
    }
}

impl Backward<3> for ConvBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_b]: [bool; 3]) -> [Option<Tensor>; 3] {
        let [dx, dw] = Backward::<2>::backward(self, g, [need_x, need_w]);
        [dx, dw, need_b.then(|| g.sum_per_channel())]
    }
}

/// A convolution whose output has a residual added (inputs x, w, (b,) r): r of the output's
/// shape, or with `per_channel` (r's shape) one value per image and channel.
struct ConvAddBack {
    conv: ConvBack,
    per_channel: Option<Vec<usize>>,
}

impl ConvAddBack {
    /// (d residual, d bias). Per channel, the bias gradient is the residual's summed over
    /// images: a sum over N x C values instead of another pass over the whole gradient.
    fn adds(&self, g: &Tensor, need_b: bool, need_r: bool) -> (Option<Tensor>, Option<Tensor>) {
        match &self.per_channel {
            None => (
                need_r.then(|| g.clone()),
                need_b.then(|| g.sum_per_channel()),
            ),
            Some(shape) => {
                if !(need_b || need_r) {
                    return (None, None);
                }
                let dv = g.sum_per_sample_channel();
                let (n, c) = (dv.shape()[0], dv.shape()[1]);
                let db = need_b.then(|| dv.reshape(&[n, c, 1]).sum_per_channel());
                (need_r.then(|| dv.reshape(shape)), db)
            }
        }
    }
}

impl Backward<3> for ConvAddBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_r]: [bool; 3]) -> [Option<Tensor>; 3] {
        let [dx, dw] = Backward::<2>::backward(&self.conv, g, [need_x, need_w]);
        [dx, dw, self.adds(g, false, need_r).0]
    }
}

impl Backward<4> for ConvAddBack {
    fn backward(&self, g: &Tensor, [nx, nw, nb, nr]: [bool; 4]) -> [Option<Tensor>; 4] {
        let [dx, dw] = Backward::<2>::backward(&self.conv, g, [nx, nw]);
        let (dr, db) = self.adds(g, nb, nr);
        [dx, dw, db, dr]
    }
}
