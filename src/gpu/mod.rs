//! The GPU layer: device creation, a buffer pool, a pipeline cache, and a batch recorder that
//! turns a whole sequence of kernel launches into one compute pass and one submit.
//!
//! Everything here is single-threaded (`Rc`, `RefCell`): wgpu's handles are not `Send` on the web,
//! and a training step is one thread's sequence of launches anyway.

mod adapter;
mod batch;
mod context;
mod coop_device;
mod fault;
mod kernel_choice;
mod options;
mod pipelines;
mod pool;
mod profile;
mod readback;
mod report;
mod selection_slot;

pub use batch::{Binding, Dispatch};
pub use context::Gpu;
pub use fault::{FaultWatch, GpuError};
pub use kernel_choice::{GemmTile, KernelVariant, Precision, SplitK};
pub use options::{asked_precision, set_precision_flag, GpuOptions};
pub use pipelines::{declared_bindings, BindingKind, KernelKey, KernelSource};
pub use pool::{GpuBuffer, PoolReuse, PoolStats};

/// Names `pipeline` in the launch histogram after its key (`name` and its constants, e.g.
/// `reduce MODE=1u`). Launchers call it through `tensor::pipeline`; pipelines never named show up
/// in [`launch_counts`] by their number of buffers.
pub fn label_pipeline(gpu: &Gpu, pipeline: &std::rc::Rc<wgpu::ComputePipeline>, key: &KernelKey) {
    gpu.0.batch.borrow_mut().label(pipeline, || key.label());
}

/// Kernel launches recorded on `gpu` since it was created, per kernel label, largest first.
pub fn launch_counts(gpu: &Gpu) -> Vec<(String, u64)> {
    gpu.0.batch.borrow().launch_counts()
}
