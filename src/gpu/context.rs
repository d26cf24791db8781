use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::batch::Batch;
use super::pipelines::PipelineCache;
use super::pool::BufferPool;

/// Which family of GEMM kernels matmul and convolution use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVariant {
    /// Workgroup-memory tiles: portable, what the web and most GPUs get.
    Tiled,
    /// Rows of A shared across a subgroup with `subgroupBroadcast`; needs `Features::SUBGROUP` and
    /// a fixed subgroup size. On lavapipe this is ~5x faster than workgroup memory (PLATFORM.md).
    Subgroup,
}

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
    Device {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),
}

/// How to pick the adapter. `from_env` reads FEWSTEP_BACKEND, FEWSTEP_ADAPTER and FEWSTEP_KERNELS.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backends: Option<wgpu::Backends>,
    /// Substring (case-insensitive) of the adapter name to require.
    pub adapter_name: Option<String>,
    /// Force a GEMM family (for tests and benchmarks); `None` picks the fastest available.
    pub variant: Option<KernelVariant>,
}

impl GpuOptions {
    pub fn from_env() -> Self {
        let var = |k: &str| {
            #[cfg(not(target_arch = "wasm32"))]
            {
                std::env::var(k).ok().filter(|s| !s.is_empty())
            }
            #[cfg(target_arch = "wasm32")]
            {
                let _ = k;
                None::<String>
            }
        };
        GpuOptions {
            backends: var("FEWSTEP_BACKEND").map(|s| wgpu::Backends::from_comma_list(&s)),
            adapter_name: var("FEWSTEP_ADAPTER"),
            variant: var("FEWSTEP_KERNELS").and_then(|s| match s.to_ascii_lowercase().as_str() {
                "tiled" => Some(KernelVariant::Tiled),
                "subgroup" => Some(KernelVariant::Subgroup),
                _ => None,
            }),
        }
    }
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub variant: Cell<KernelVariant>,
    pub pipelines: PipelineCache,
    pub pool: Rc<BufferPool>,
    pub batch: RefCell<Batch>,
}

/// A cheap handle (one `Rc`) to the device, its queue, and the shared caches.
#[derive(Clone)]
pub struct Gpu(pub(crate) Rc<GpuInner>);

impl Gpu {
    /// Creates the device (async: the only way on the web; natively see [`Gpu::new_blocking`]).
    pub async fn new(opts: GpuOptions) -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        #[cfg(target_arch = "wasm32")]
        {
            // WebGL2 has no compute shaders: ask for WebGPU only.
            desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            desc.backends = opts
                .backends
                .unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
        }
        let backends_text = format!(" (backends: {:?})", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let adapter = Self::pick_adapter(&instance, &opts)
            .await
            .ok_or(GpuError::NoAdapter {
                backends: backends_text,
            })?;
        let info = adapter.get_info();
        let features = Self::wanted_features(&adapter);
        // Take the adapter's own limits: large storage bindings matter for batch-32 activations.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("fewstep"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|source| GpuError::Device {
                adapter: info.name.clone(),
                source,
            })?;
        Ok(Self::from_device(device, queue, info, opts.variant))
    }

    /// The features fewstep asks for on `adapter`: subgroups where the size is fixed (the fast
    /// GEMM family) and timestamp queries. The app passes these to eframe so that its device and
    /// the engine's are one.
    pub fn wanted_features(adapter: &wgpu::Adapter) -> wgpu::Features {
        let info = adapter.get_info();
        let mut features = wgpu::Features::empty();
        let fixed_subgroup =
            info.subgroup_min_size == info.subgroup_max_size && info.subgroup_min_size >= 4;
        if adapter.features().contains(wgpu::Features::SUBGROUP) && fixed_subgroup {
            features |= wgpu::Features::SUBGROUP;
        }
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        features
    }

    /// Wraps a device somebody else created (the app's, shared with eframe's renderer), so that
    /// samples can be written straight into textures egui draws.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        want: Option<KernelVariant>,
    ) -> Gpu {
        let features = device.features();
        let limits = device.limits();
        let variant = match want {
            Some(KernelVariant::Subgroup) if features.contains(wgpu::Features::SUBGROUP) => {
                KernelVariant::Subgroup
            }
            Some(_) => KernelVariant::Tiled,
            None if features.contains(wgpu::Features::SUBGROUP) => KernelVariant::Subgroup,
            None => KernelVariant::Tiled,
        };
        let align = limits.min_uniform_buffer_offset_alignment.max(16);
        Gpu(Rc::new(GpuInner {
            pipelines: PipelineCache::default(),
            pool: Rc::new(BufferPool::default()),
            batch: RefCell::new(Batch::new(align)),
            device,
            queue,
            info,
            features,
            limits,
            variant: Cell::new(variant),
        }))
    }

    async fn pick_adapter(instance: &wgpu::Instance, opts: &GpuOptions) -> Option<wgpu::Adapter> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(name) = &opts.adapter_name {
            let want = name.to_ascii_lowercase();
            let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
            return all
                .into_iter()
                .find(|a| a.get_info().name.to_ascii_lowercase().contains(&want));
        }
        let _ = opts;
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .ok()
    }

    /// Native only: creates the device, blocking the calling thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Gpu, GpuError> {
        pollster::block_on(Self::new(opts))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.0.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.0.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.0.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.0.features
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.0.limits
    }
    pub fn variant(&self) -> KernelVariant {
        self.0.variant.get()
    }
    /// Switches the GEMM family; falls back to `Tiled` where subgroups are unavailable.
    pub fn set_variant(&self, v: KernelVariant) -> KernelVariant {
        let v = if v == KernelVariant::Subgroup && !self.has_subgroups() {
            KernelVariant::Tiled
        } else {
            v
        };
        self.0.variant.set(v);
        v
    }
    pub fn has_subgroups(&self) -> bool {
        self.0.features.contains(wgpu::Features::SUBGROUP)
    }
    pub fn subgroup_size(&self) -> u32 {
        self.0.info.subgroup_min_size
    }

    /// A multi-line description for `fewstep info`.
    pub fn describe(&self) -> String {
        let i = &self.0.info;
        let l = &self.0.limits;
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(s, "adapter:   {} ({:?})", i.name, i.device_type);
        let _ = writeln!(s, "backend:   {:?}", i.backend);
        let _ = writeln!(s, "driver:    {} {}", i.driver, i.driver_info);
        let _ = writeln!(
            s,
            "vendor:    0x{:04x}  device: 0x{:04x}",
            i.vendor, i.device
        );
        let _ = writeln!(s, "features:  {:?}", self.0.features);
        let _ = writeln!(
            s,
            "subgroups: size {}..{} (GEMM kernels: {:?})",
            i.subgroup_min_size,
            i.subgroup_max_size,
            self.variant()
        );
        let _ = writeln!(
            s,
            "limits:    storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations/workgroup {}, \
             workgroups/dim {}, storage buffers/stage {}, uniform binding {} KiB",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
            l.max_uniform_buffer_binding_size >> 10,
        );
        s
    }
}
