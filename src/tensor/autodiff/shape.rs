//! Data movement: upsampling, channel concatenation and slices, reshapes. Each op's constructor (a
//! `Tape` method) sits next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    pub fn upsample2x(&self, x: &Var) -> Var {
        self.record(x.value.upsample2x(), [x], UpsampleBack)
    }

    /// 2x2 average pooling with stride 2 of [N, C, H, W] (even sides): the mean of each block,
    /// (sum of four) * 0.25 as torch's `avg_pool2d` computes it. The sum of each block is
    /// upsampling's backward, and this op's backward is a quarter of upsampling.
    pub fn avg_pool2x(&self, x: &Var) -> Var {
        self.record(x.value.upsample2x_grad().scale(0.25), [x], AvgPoolBack)
    }

    pub fn concat_channels(&self, a: &Var, b: &Var) -> Var {
        let y = Tensor::concat_channels(&[&a.value, &b.value]);
        self.record(
            y,
            [a, b],
            ConcatBack {
                ca: a.shape()[1],
                cb: b.shape()[1],
            },
        )
    }

    /// Channels `offset .. offset + count` of [N, C, ...].
    pub fn slice_channels(&self, x: &Var, offset: usize, count: usize) -> Var {
        let y = x.value.slice_channels(offset, count);
        self.record(
            y,
            [x],
            SliceBack {
                offset,
                count,
                channels: x.shape()[1],
            },
        )
    }

    pub fn reshape(&self, x: &Var, shape: &[usize]) -> Var {
        self.record(
            x.value.reshape(shape),
            [x],
            ReshapeBack {
                shape: x.shape().to_vec(),
            },
        )
    }
}

struct UpsampleBack;

impl Backward<1> for UpsampleBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.upsample2x_grad())]
    }
}

struct AvgPoolBack;

impl Backward<1> for AvgPoolBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.upsample2x().scale(0.25))]
    }
}

struct ConcatBack {
    ca: usize,
    cb: usize,
}

impl Backward<2> for ConcatBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        if need_a && need_b {
            let (ga, gb) = g.split_channels(self.ca);
            return [Some(ga), Some(gb)];
        }
        [
            need_a.then(|| g.slice_channels(0, self.ca)),
            need_b.then(|| g.slice_channels(self.ca, self.cb)),
        ]
    }
}

struct SliceBack {
    offset: usize,
    count: usize,
    channels: usize,
}

impl Backward<1> for SliceBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(if self.count == self.channels {
            g.clone()
        } else {
            g.place_channels(self.offset, self.channels)
        })]
    }
}

struct ReshapeBack {
    shape: Vec<usize>,
}

impl Backward<1> for ReshapeBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.reshape(&self.shape))]
    }
}
