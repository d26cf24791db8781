//! The device's cooperative matrices: which configuration the adapter offers and what became of
//! them (the selection in tensor/selection settles the coop family on its self-check).

use super::fault::Fault;
use super::Gpu;

impl Gpu {
    /// (S, subgroup size) of the adapter's smallest square f16 x f16 -> f32 cooperative-matrix
    /// configuration, or why it has none usable. `wanted` are the features already chosen
    /// (subgroups only where their size is fixed: the core's work split assumes it).
    pub(super) fn coop_config(
        adapter: &wgpu::Adapter,
        wanted: wgpu::Features,
    ) -> Result<(u32, u32), String> {
        let has = adapter.features();
        if !has.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            return Err(
                "the adapter offers no cooperative matrices (wgpu 30 offers them on \
                        Vulkan drivers with VK_KHR_cooperative_matrix and on Metal's simdgroup \
                        matrices, Apple7 GPUs and later; DX12 and WebGPU have none)"
                    .into(),
            );
        }
        if !has.contains(wgpu::Features::SHADER_F16) {
            return Err("the adapter has no f16 in shaders".into());
        }
        if !wanted.contains(wgpu::Features::SUBGROUP) {
            return Err("the adapter has no fixed subgroup size".into());
        }
        let info = adapter.get_info();
        adapter
            .cooperative_matrix_properties()
            .iter()
            .filter(|p| {
                p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
                    && p.m_size == p.n_size
                    && p.n_size == p.k_size
                    && p.m_size >= 8
            })
            .map(|p| p.m_size)
            .min()
            .map(|s| (s, info.subgroup_min_size))
            .ok_or_else(|| "the adapter lists no square f16 x f16 -> f32 cooperative matrix".into())
    }

    /// A cooperative-matrix kernel that a driver refuses to build records a kernel fault, which
    /// would fail every later readback: the self-check's failure is its verdict instead, so such
    /// a fault (and whatever the check left recorded) is dropped. Other faults stay.
    pub(crate) fn forget_coop_kernel_fault(&self) {
        let mut g = self.0.fault.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Fault::Kernel { kernel, .. }) = &*g {
            if kernel.contains(" S=") {
                *g = None;
            }
        }
        drop(g);
        self.discard_pending();
    }

    /// Why the device was lost, if it was.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        self.poll_callbacks();
        match &*self.0.fault.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Fault::Lost(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// (S, subgroup size) of the cooperative matrices this device has, if any.
    pub fn coop_sizes(&self) -> Option<(u32, u32)> {
        self.0.coop.get()
    }

    /// The self-check's verdict, if it ran.
    pub fn coop_verdict(&self) -> Option<Result<(), String>> {
        self.0.coop_verdict.borrow().clone()
    }

    /// Why this device has no cooperative matrices ("" where it has them).
    pub fn coop_absent(&self) -> String {
        self.0.coop_absent.borrow().clone()
    }
}
