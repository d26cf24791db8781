//! The app's device: eframe creates it with what the engine's kernels want, the command line's
//! features, so that the command shown under a run makes the same picture.

use std::sync::Arc;

use eframe::egui_wgpu;

/// eframe's wgpu set-up for fewstep: the device asks for what the engine's kernels want
/// ([`device_descriptor`]); on the web, WebGPU only (WebGL has no compute).
pub fn wgpu_options() -> egui_wgpu::WgpuConfiguration {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    #[cfg(target_arch = "wasm32")]
    {
        setup.instance_descriptor.backends = wgpu::Backends::BROWSER_WEBGPU;
    }
    setup.device_descriptor = Arc::new(device_descriptor);
    egui_wgpu::WgpuConfiguration {
        wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup),
        ..Default::default()
    }
}

/// The app's device: the features `fewstep sample` asks for on `adapter` (subgroups, timestamps,
/// and cooperative matrices with `--precision mixed`: `Gpu::device_features`), so that the
/// command shown under a run makes the same picture; the adapter's full limits.
pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    device_descriptor_for(adapter, &crate::gpu::GpuOptions::for_runs())
}

/// [`device_descriptor`] with these options (tests).
pub fn device_descriptor_for(
    adapter: &wgpu::Adapter,
    opts: &crate::gpu::GpuOptions,
) -> wgpu::DeviceDescriptor<'static> {
    let mut limits = adapter.limits();
    limits.max_texture_dimension_2d = limits.max_texture_dimension_2d.max(2048);
    let (features, coop) = crate::gpu::Gpu::device_features(adapter, opts);
    wgpu::DeviceDescriptor {
        label: Some("fewstep app"),
        required_features: features,
        required_limits: limits,
        experimental_features: if coop.is_ok() {
            // SAFETY: as in `Gpu::new`: no GEMM runs on cooperative matrices before fewstep's
            // self-check has compared their products with exact ones.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        },
        ..Default::default()
    }
}

/// The cooperative matrices of a device made with [`device_descriptor`] on `adapter`: what to
/// send the engine (`engine::Job::Coop`).
pub fn device_coop(adapter: &wgpu::Adapter) -> Result<(u32, u32), String> {
    device_coop_for(adapter, &crate::gpu::GpuOptions::for_runs())
}

/// [`device_coop`] with these options (tests).
pub fn device_coop_for(
    adapter: &wgpu::Adapter,
    opts: &crate::gpu::GpuOptions,
) -> Result<(u32, u32), String> {
    crate::gpu::Gpu::device_features(adapter, opts).1
}
