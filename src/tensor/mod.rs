//! GPU tensors (f32, contiguous, row-major / NCHW) and the kernels that act on them.
//!
//! A [`Tensor`] is a shape plus a shared pooled buffer; cloning is cheap, and the buffer returns to
//! the pool when the last clone goes. Kernel launches are only recorded; they reach the GPU at
//! the next [`Gpu::flush`] (or readback), so a whole training step is one submit.

pub mod autodiff;
pub mod coop_check;
mod elementwise;
mod gemm;
pub mod gemm_coop;
mod gemm_core;
mod gemm_kernels;
mod gemm_staging;
mod kernel_def;
pub mod kernel_policy;
mod meter;
mod norm;
mod optim;
pub(crate) mod params;
mod random;
pub mod registry;
mod selection;
mod shape_ops;
pub mod tuner;

use std::rc::Rc;

use crate::gpu::{Binding, Gpu, GpuBuffer, GpuError};

pub use autodiff::{attention, Tape, Var};
#[cfg(not(target_arch = "wasm32"))]
pub use coop_check::{cache_file as coop_check_cache_file, key_of as coop_check_key};
pub use gemm::{census as gemm_census, Conv2d, MatmulOpts, Residual};
pub use meter::LossMeter;
pub use norm::GroupNormStats;
pub use optim::{ema_update, Adam, AdamConfig, GradClip};
pub use random::philox_normal_cpu;

#[derive(Clone)]
pub struct Tensor {
    gpu: Gpu,
    buf: Rc<GpuBuffer>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

impl Tensor {
    /// An uninitialised tensor (its contents are whatever the pooled buffer held).
    pub fn empty(gpu: &Gpu, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor {
            gpu: gpu.clone(),
            buf: gpu.alloc((n.max(1) * 4) as u64),
            shape: shape.to_vec(),
        }
    }

    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "shape {shape:?} holds {n} values, got {}",
            data.len()
        );
        let bytes: &[u8] = if data.is_empty() {
            &[0u8; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        Tensor {
            gpu: gpu.clone(),
            buf: gpu.upload_bytes(bytes),
            shape: shape.to_vec(),
        }
    }

    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Tensor {
        let t = Tensor::empty(gpu, shape);
        elementwise::fill(&t, value);
        t
    }

    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Tensor {
        Self::full(gpu, shape, 0.0)
    }

    pub fn zeros_like(&self) -> Tensor {
        Self::zeros(&self.gpu, &self.shape)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }
    /// The storage buffer (pooled: it may be longer than `numel() * 4` bytes). For code that
    /// encodes its own passes, e.g. drawing samples into textures; flush the batch first.
    pub fn raw_buffer(&self) -> &wgpu::Buffer {
        self.buf.raw()
    }
    pub(crate) fn bind(&self) -> Binding {
        Binding::Buffer(self.buf.raw().clone())
    }
    /// True when both share one buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.buf, &other.buf)
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            self.numel(),
            "cannot reshape {:?} to {shape:?}",
            self.shape
        );
        Tensor {
            gpu: self.gpu.clone(),
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        }
    }

    /// A copy in a new buffer (recorded, like any launch).
    pub fn deep_clone(&self) -> Tensor {
        let out = Tensor::empty(&self.gpu, &self.shape);
        self.gpu.copy(
            self.bind(),
            0,
            out.bind(),
            0,
            (self.numel().max(1) * 4).next_multiple_of(4) as u64,
        );
        out
    }

    /// Copies `src` into this tensor's buffer, in order with the recorded launches.
    pub fn assign(&self, src: &Tensor) {
        assert_eq!(
            self.numel(),
            src.numel(),
            "assign {:?} <- {:?}",
            self.shape,
            src.shape
        );
        self.gpu.copy(
            src.bind(),
            0,
            self.bind(),
            0,
            (self.numel().max(1) * 4) as u64,
        );
    }

    pub async fn to_vec(&self) -> Result<Vec<f32>, GpuError> {
        let bytes = self
            .gpu
            .read_bytes(&self.buf, (self.numel() * 4) as u64)
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_blocking(&self) -> Result<Vec<f32>, GpuError> {
        pollster::block_on(self.to_vec())
    }
}

/// What is bound where a kernel's optional read-only input is absent: one 16-byte buffer that
/// the kernel declares (explicit layout, gpu/pipelines.rs) but does not read.
pub(crate) fn stand_in(gpu: &Gpu) -> Binding {
    gpu.stand_in()
}

/// The cached pipeline of `key` (built from `source` on a miss), named after the key in the
/// launch histogram (`gpu::launch_counts`, `fewstep bench train --launches`).
pub(crate) fn pipeline(
    gpu: &Gpu,
    key: &crate::gpu::KernelKey,
    source: impl FnOnce() -> crate::gpu::KernelSource,
) -> Rc<wgpu::ComputePipeline> {
    let p = gpu.pipeline(key, source);
    crate::gpu::label_pipeline(gpu, &p, key);
    p
}

/// The cached pipeline of a registry definition (`tensor/registry.rs`).
pub(crate) fn pipeline_of(gpu: &Gpu, def: kernel_def::KernelDef) -> Rc<wgpu::ComputePipeline> {
    pipeline(gpu, &def.key, def.source)
}

/// WGSL prepended to kernels that read whole rows either 16 bytes or 4 bytes at a time: `Elem`
/// (vec4<f32> or f32), `LANES` (4 or 1), `hsum` (the sum of an Elem's lanes) and `lane0` (its first). The launcher
/// picks vec4 where every row starts on a 16-byte boundary (row length a multiple of 4).
pub(crate) fn elem_prelude(vec4: bool) -> &'static str {
    if vec4 {
        "alias Elem = vec4<f32>;\nconst LANES = 4u;\nfn hsum(v: Elem) -> f32 { return v.x + v.y + v.z + v.w; }\nfn lane0(v: Elem) -> f32 { return v.x; }"
    } else {
        "alias Elem = f32;\nconst LANES = 1u;\nfn hsum(v: Elem) -> f32 { return v; }\nfn lane0(v: Elem) -> f32 { return v; }"
    }
}

/// Workgroups for `n` items at 256 per workgroup, spread over x and y.
pub(crate) fn groups_for(gpu: &Gpu, n: usize) -> [u32; 3] {
    gpu.grid_1d((n.div_ceil(256)).max(1) as u32)
}
