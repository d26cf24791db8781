//! The device's cooperative matrices: which configuration the adapter offers, and settling the
//! coop family on the self-check's verdict (tensor/coop_check.rs runs the check; this is the one
//! place the device layer calls up into `tensor`, see ARCHITECTURE.md, Known breaks).

use super::fault::Fault;
use super::{Gpu, KernelVariant};

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

    /// Selects the cooperative-matrix family if this device has it and its self-check passes
    /// (the verdict is computed once per device, and cached on disk per driver); else the
    /// blocked family, with the reason. Returns whether the family runs.
    pub fn settle_coop(&self) -> bool {
        let Some((s, sg)) = self.0.coop.get() else {
            self.0.variant.set(KernelVariant::Blocked);
            *self.0.variant_reason.borrow_mut() = format!(
                "cooperative matrices asked for, but {}: blocked",
                self.0.coop_absent.borrow()
            );
            return false;
        };
        let known = self.0.coop_verdict.borrow().clone();
        let verdict =
            known.unwrap_or_else(|| self.check_coop(s, sg, crate::tensor::coop_check::Cached::Use));
        match verdict {
            Ok(()) => {
                self.0.variant.set(KernelVariant::Coop);
                *self.0.variant_reason.borrow_mut() = format!(
                    "{s}x{s} f16 cooperative matrices passed the self-check on this driver"
                );
                true
            }
            Err(why) => {
                self.0.variant.set(KernelVariant::Blocked);
                *self.0.variant_reason.borrow_mut() = format!(
                    "cooperative matrices failed fewstep's self-check on this driver ({why}): blocked"
                );
                false
            }
        }
    }

    /// Runs the cooperative-matrix self-check (or takes its cached verdict) and keeps the
    /// verdict for this device.
    fn check_coop(
        &self,
        s: u32,
        sg: u32,
        cached: crate::tensor::coop_check::Cached,
    ) -> Result<(), String> {
        let clean = self.fault().is_ok();
        if self.0.coop_lose.get() {
            self.destroy_device();
        }
        let v = crate::tensor::coop_check::verdict(self, s, sg, self.0.coop_fault.get(), cached);
        if v.is_err() && clean {
            self.forget_coop_kernel_fault();
        }
        *self.0.coop_verdict.borrow_mut() = Some(v.clone());
        v
    }

    /// Checks the cooperative-matrix family afresh, whatever the cache says (`fewstep
    /// selftest`), caches what it found, and settles the family on it as [`Gpu::settle_coop`]
    /// does. Returns whether the family passed; false where the device has no cooperative
    /// matrices.
    pub fn recheck_coop(&self) -> bool {
        let Some((s, sg)) = self.0.coop.get() else {
            return false;
        };
        let passed = self
            .check_coop(s, sg, crate::tensor::coop_check::Cached::Ignore)
            .is_ok();
        if self.variant() == KernelVariant::Coop {
            self.settle_coop();
        }
        passed
    }

    /// A cooperative-matrix kernel that a driver refuses to build records a kernel fault, which
    /// would fail every later readback: the self-check's failure is its verdict instead, so such
    /// a fault (and whatever the check left recorded) is dropped. Other faults stay.
    fn forget_coop_kernel_fault(&self) {
        let mut g = self.0.fault.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Fault::Kernel { kernel, .. }) = &*g {
            if kernel.contains(" S=") {
                *g = None;
            }
        }
        drop(g);
        self.discard_pending();
    }

    /// Takes the cooperative matrices of a device somebody else made with
    /// [`Gpu::device_features`]' features (the app's): the sizes, or why there are none; with
    /// sizes, the family is settled on its self-check as on a device [`Gpu::new`] made.
    pub fn adopt_coop(&self, coop: Result<(u32, u32), String>) -> bool {
        match coop {
            Ok(sizes) => {
                self.0.coop.set(Some(sizes));
                self.settle_coop()
            }
            Err(why) => {
                *self.0.coop_absent.borrow_mut() = why;
                false
            }
        }
    }

    /// Why the device was lost, if it was.
    pub(super) fn lost_reason(&self) -> Option<String> {
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
