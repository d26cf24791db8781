//! Losses and the mean that reduces them to a scalar. Each op's constructor (a `Tape` method) sits
//! next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Per-sample w\[s\] * mean((x - target)^2) -> \[N\]; target and w are constants.
    pub fn weighted_mse(&self, x: &Var, target: &Tensor, w: &Tensor) -> Var {
        let y = x.value.weighted_mse_per_sample(target, w);
        self.record(
            y,
            [x],
            MseBack {
                x: x.value.clone(),
                target: target.clone(),
                w: w.clone(),
            },
        )
    }

    /// Mean softmax cross-entropy of logits [N, K] against constant labels \[N\] -> \[1\].
    pub fn cross_entropy_mean(&self, logits: &Var, labels: &Tensor) -> Var {
        let (per_row, grad) = logits.value.cross_entropy(labels);
        self.record(
            per_row.mean_all(),
            [logits],
            CrossEntropyBack {
                grad,
                shape: logits.shape().to_vec(),
            },
        )
    }

    /// Mean of all elements -> \[1\].
    pub fn mean_all(&self, x: &Var) -> Var {
        self.record(
            x.value.mean_all(),
            [x],
            MeanBack {
                shape: x.shape().to_vec(),
            },
        )
    }
}

struct CrossEntropyBack {
    /// d(mean loss)/d(logits), saved by the forward kernel.
    grad: Tensor,
    shape: Vec<usize>,
}

impl Backward<1> for CrossEntropyBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // g is the [1] gradient of the mean; scale the saved gradient by it on the GPU.
        let n: usize = self.shape.iter().product();
        let scaled = self.grad.reshape(&[1, n]).per_sample_axpby(g, None);
        [Some(scaled.reshape(&self.shape))]
    }
}

struct MseBack {
    x: Tensor,
    target: Tensor,
    w: Tensor,
}

impl Backward<1> for MseBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // d/dx of w[s] * mean((x - t)^2) = 2 w[s] (x - t) / len, times g[s].
        let len = self.x.numel() / self.x.shape()[0];
        let coef = self.w.mul(g).scale(2.0 / len as f32);
        let neg = coef.scale(-1.0);
        [Some(
            self.x.per_sample_axpby(&coef, Some((&self.target, &neg))),
        )]
    }
}

struct MeanBack {
    shape: Vec<usize>,
}

impl Backward<1> for MeanBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // Broadcast the [1] gradient / numel over the input without a readback.
        let n: usize = self.shape.iter().product();
        let ones = Tensor::full(g.gpu(), &[n, 1], 1.0 / n as f32);
        [Some(ones.matmul(&g.reshape(&[1, 1])).reshape(&self.shape))]
    }
}
