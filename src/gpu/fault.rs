//! How the device reports what went wrong: the errors of the calls that return a `Result`, and
//! the first fault outside them (an uncaptured error, a kernel that failed to build, the loss of
//! the device), kept for the next readback.

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found{backends}.\n  On Linux without a GPU, install Mesa's software Vulkan driver: \
         `apt-get install mesa-vulkan-drivers` (Debian 12: from bookworm-backports for Mesa 25, 2-4x faster).\n  \
         In a browser, WebGPU is needed: Chrome/Edge 113+, or Firefox/Safari with WebGPU enabled.\n  \
         FEWSTEP_BACKEND (vulkan, metal, dx12, gl, webgpu) and FEWSTEP_ADAPTER (part of an adapter's name) choose one."
    )]
    NoAdapter { backends: String },
    #[error("the adapter '{adapter}' refused to create a device: {source}")]
    DeviceRequest {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),
    #[error("{0}")]
    Config(String),
    #[error(
        "the GPU device '{adapter}' was lost ({message}).\n  Work since the last checkpoint is gone; \
         files already written are intact, and a run resumes from its last checkpoint.\n  \
         Try: run again (a driver reset is often transient); a smaller --batch if memory ran out; \
         another adapter with FEWSTEP_BACKEND (vulkan, metal, dx12, gl) or FEWSTEP_ADAPTER (part of \
         its name; `fewstep info` lists them)."
    )]
    Lost { adapter: String, message: String },
    #[error(
        "kernel `{kernel}` could not be built on '{adapter}': {message}\n  This is a bug in \
         fewstep or the driver; please report it with `fewstep info`'s output. \
         FEWSTEP_KERNELS=tiled selects the portable GEMM family; FEWSTEP_BACKEND or \
         FEWSTEP_ADAPTER another adapter."
    )]
    Kernel {
        kernel: String,
        adapter: String,
        message: String,
    },
    #[error(
        "the GPU '{adapter}' reported an error: {message}\n  If it ran out of memory, try a \
         smaller --batch (or --count); otherwise FEWSTEP_BACKEND or FEWSTEP_ADAPTER chooses \
         another adapter. Files already written are intact."
    )]
    Device { adapter: String, message: String },
}

/// What went wrong on the device outside the calls that return a `Result`: the first
/// uncaptured error, a kernel that failed to build, or the loss of the device. Set by wgpu's
/// callbacks (any thread) and by the pipeline cache; reported by the next readback or
/// [`Gpu::finish`], and by [`Gpu::fault`].
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    Lost(String),
    Kernel { kernel: String, message: String },
    Device(String),
}

/// Shared with wgpu's callbacks, hence `Arc<Mutex>` (they must be `Send + Sync`).
pub(crate) type FaultSlot = std::sync::Arc<std::sync::Mutex<Option<Fault>>>;

/// A handle on a device's first fault that can be kept apart from the `Gpu` (it is `Send`):
/// the app polls it every frame, and every `Gpu` made on one device shares one.
#[derive(Clone)]
pub struct FaultWatch {
    pub(super) slot: FaultSlot,
    pub(super) adapter: String,
}

impl FaultWatch {
    /// The device's first fault as an error, if any (see [`super::Gpu::fault`]).
    pub fn error(&self) -> Option<GpuError> {
        let f = self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let adapter = self.adapter.clone();
        Some(match f? {
            Fault::Lost(message) => GpuError::Lost { adapter, message },
            Fault::Kernel { kernel, message } => GpuError::Kernel {
                kernel,
                adapter,
                message,
            },
            Fault::Device(message) => GpuError::Device { adapter, message },
        })
    }
}

/// Records `f` unless an earlier fault is already recorded (the first one is the cause), except
/// that a lost device replaces the errors that its loss caused (they may be reported first:
/// wgpu calls the device-lost callback at the next poll).
pub(crate) fn record_fault(slot: &FaultSlot, f: Fault) {
    let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
    let lost_now = matches!(f, Fault::Lost(_)) && !matches!(*g, Some(Fault::Lost(_)));
    if g.is_none() || lost_now {
        log::error!("GPU fault: {f:?}");
        *g = Some(f);
    }
}
