//! What a launcher asks the pipeline cache for: one kernel variant's key, source, parameter
//! layout and needs. A leaf, so that every launcher can name its kernels while the registry
//! (`registry.rs`) lists every launcher's.

use super::params::{ParamsLayout, WgslParams};
use crate::gpu::{KernelKey, KernelSource};

/// What a kernel needs of the adapter beyond WebGPU's baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    /// Subgroup operations (`Features::SUBGROUP`) with this fixed subgroup size.
    pub subgroup_size: Option<u32>,
    /// `enable f16;` (`Features::SHADER_F16`).
    pub f16: bool,
    /// `enable wgpu_cooperative_matrix;` (`Features::EXPERIMENTAL_COOPERATIVE_MATRIX`): Vulkan
    /// only today, so such a kernel is translated to SPIR-V alone.
    pub cooperative_matrix: bool,
}

/// One kernel variant, as its launcher asks the pipeline cache for it.
pub struct KernelDef {
    pub key: KernelKey,
    pub source: Box<dyn FnOnce() -> KernelSource>,
    pub params: fn() -> ParamsLayout,
    /// Bytes the launcher appends to the struct (a multi-tensor kernel's `tab`).
    pub params_tail: usize,
    pub needs: Needs,
}

impl KernelDef {
    /// A kernel with a fixed source text.
    pub fn fixed<P: WgslParams>(key: KernelKey, text: &'static str) -> Self {
        Self::new::<P>(key, move || KernelSource::one(text))
    }
    pub fn new<P: WgslParams>(
        key: KernelKey,
        source: impl FnOnce() -> KernelSource + 'static,
    ) -> Self {
        KernelDef {
            key,
            source: Box::new(source),
            params: ParamsLayout::of::<P>,
            params_tail: 0,
            needs: Needs::default(),
        }
    }
    pub fn needing(mut self, needs: Needs) -> Self {
        self.needs = needs;
        self
    }
    pub fn with_params_tail(mut self, bytes: usize) -> Self {
        self.params_tail = bytes;
        self
    }
}
