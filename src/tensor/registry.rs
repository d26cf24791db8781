//! Every kernel variant fewstep can launch, enumerable without a device.
//!
//! Each kernel family's launcher builds its pipeline from a [`KernelDef`] made by one function
//! next to it (`elementwise::map_def`, `gemm_kernels::gemm_def`, ...): the key, the source (constants
//! prepended, parts concatenated, GEMM cores generated) and the Rust twin of its parameter
//! struct. [`variants`] calls the same functions with every value the launchers can pass on any
//! adapter kind (CPU, GPU, browser), so what the GPU-free test validates
//! (tests/suite/kernel_registry.rs: naga's WGSL front end and validator, its SPIR-V, MSL and HLSL
//! back ends, the parameter layouts) is exactly what a launch compiles. A test on lavapipe
//! (`registry_covers_what_runs`) checks that every pipeline a training, distillation and
//! sampling run compiles is one of these.

use crate::gpu::KernelKey;

pub use super::kernel_def::{KernelDef, Needs};
pub use super::params::{ParamsLayout, WgslParams};

/// A variant rendered for checking: what `gpu::pipelines::PipelineCache` would compile.
pub struct Variant {
    pub key: KernelKey,
    /// The full WGSL text (constants prepended).
    pub wgsl: String,
    pub params: ParamsLayout,
    pub needs: Needs,
    /// Built by the pipeline cache, whose layouts come from `gpu::declared_bindings` (all but
    /// the app's `to_image`, which binds a storage texture).
    pub cached: bool,
}

impl Variant {
    fn from_def(d: KernelDef) -> Variant {
        let wgsl = (d.source)().render(&d.key);
        Variant {
            key: d.key,
            wgsl,
            params: (d.params)().with_tail(d.params_tail),
            needs: d.needs,
            cached: true,
        }
    }
    /// `name CONST=value ...`, as errors and the launch histogram name it.
    pub fn label(&self) -> String {
        self.key.label()
    }
}

/// Every variant of every kernel family that a launcher can ask for on some adapter.
pub fn variants() -> Vec<Variant> {
    let mut defs: Vec<KernelDef> = Vec::new();
    defs.extend(super::elementwise::registry_defs());
    defs.extend(super::shape_ops::registry_defs());
    defs.extend(super::norm::registry_defs());
    defs.extend(super::optim::registry_defs());
    defs.extend(super::random::registry_defs());
    defs.extend(super::gemm_kernels::registry_defs());
    defs.push(probe_fma_peak_def());
    let mut out: Vec<Variant> = defs.into_iter().map(Variant::from_def).collect();
    out.push(to_image_variant());
    out
}

super::params::wgsl_params! {
    /// `fma_peak.wgsl` (`fewstep bench kernels`' FMA probe).
    pub struct FmaPeakParams { iters: u32, seed: f32, _p0: u32, _p1: u32 }
}

/// The FMA throughput probe of `fewstep bench kernels`.
pub fn probe_fma_peak_def() -> KernelDef {
    KernelDef::fixed::<FmaPeakParams>(
        KernelKey::new("fma_peak"),
        include_str!("../../shaders/fma_peak.wgsl"),
    )
}

/// The app's step-to-texture kernel (`app/texture.rs` builds its own pipeline: it writes a
/// storage texture, which the pipeline cache's buffer-only layouts do not describe).
pub const TO_IMAGE_WGSL: &str = include_str!("../../shaders/to_image.wgsl");

super::params::wgsl_params! {
    /// `to_image.wgsl`.
    pub struct ToImageParams { n: u32, c: u32, h: u32, w: u32, cols: u32, pad: u32, tex_w: u32, tex_h: u32 }
}

fn to_image_variant() -> Variant {
    Variant {
        key: KernelKey::new("to_image"),
        wgsl: TO_IMAGE_WGSL.to_string(),
        params: ParamsLayout::of::<ToImageParams>(),
        needs: Needs::default(),
        cached: false,
    }
}
