//! The GPU layer: device creation, a buffer pool, a pipeline cache, and a batch recorder that
//! turns a whole sequence of kernel launches into one compute pass and one submit.
//!
//! Everything here is single-threaded (`Rc`, `RefCell`): wgpu's handles are not `Send` on the web,
//! and a training step is one thread's sequence of launches anyway.

mod batch;
mod context;
mod pipelines;
mod pool;
mod readback;

pub use batch::{Binding, Dispatch};
pub use context::{Gpu, GpuError, GpuOptions, KernelVariant};
pub use pipelines::{KernelKey, KernelSource};
pub use pool::{GpuBuffer, PoolStats};
