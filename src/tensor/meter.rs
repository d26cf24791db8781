//! A running mean of a scalar loss kept on the GPU: adding is one recorded launch, and only
//! reading the mean (at log time) waits for the GPU.

use super::Tensor;
use crate::gpu::{Gpu, GpuError};

pub struct LossMeter {
    sum: Tensor,
    terms: u64,
}

impl LossMeter {
    pub fn new(gpu: &Gpu) -> LossMeter {
        LossMeter {
            sum: Tensor::zeros(gpu, &[1]),
            terms: 0,
        }
    }

    /// Adds a \[1\] loss tensor (recorded, not read).
    pub fn add(&mut self, loss: &Tensor) {
        self.sum.axpby_inplace(1.0, loss, 1.0);
        self.terms += 1;
    }

    /// The mean since the last call (waits for the GPU), or None when nothing was added.
    pub async fn take_mean(&mut self) -> Result<Option<f32>, GpuError> {
        if self.terms == 0 {
            return Ok(None);
        }
        let mean = self.sum.to_vec().await?[0] / self.terms as f32;
        self.sum = Tensor::zeros(self.sum.gpu(), &[1]);
        self.terms = 0;
        Ok(Some(mean))
    }
}
