//! Which GEMM family the device runs by default and what was forced (family, tile, split,
//! softmax layout): the state the fixed rule (`tensor::kernel_policy`) reads, kept per device.

use super::{GemmTile, Gpu, KernelVariant, Precision, SplitK};

impl Gpu {
    /// The GEMM family used when none is asked for, and why: CPU adapters (lavapipe) run the
    /// subgroup family where they have fixed-size subgroups (2-3x faster there than the others,
    /// ARCHITECTURE.md, Platforms), else tiled; GPUs and browsers run the register-blocked family.
    pub(super) fn default_variant(
        info: &wgpu::AdapterInfo,
        subgroups: bool,
    ) -> (KernelVariant, String) {
        let browser = cfg!(target_arch = "wasm32") || info.backend == wgpu::Backend::BrowserWebGpu;
        match info.device_type {
            wgpu::DeviceType::Cpu if !browser && subgroups => (
                KernelVariant::Subgroup,
                "CPU adapter with fixed-size subgroups: subgroupBroadcast beats workgroup memory there".into(),
            ),
            wgpu::DeviceType::Cpu if !browser => (
                KernelVariant::Tiled,
                "CPU adapter without fixed-size subgroups".into(),
            ),
            t => (
                KernelVariant::Blocked,
                format!(
                    "{} ({t:?}): register-blocked tiles for real GPUs",
                    if browser { "browser WebGPU" } else { "GPU adapter" }
                ),
            ),
        }
    }

    pub fn variant(&self) -> KernelVariant {
        self.0.variant.get()
    }
    /// The precision this device computes in: mixed while the cooperative-matrix family runs,
    /// else f32.
    pub fn precision(&self) -> Precision {
        if self.variant() == KernelVariant::Coop {
            Precision::Mixed
        } else {
            Precision::F32
        }
    }
    /// Switches the GEMM family; falls back to `Tiled` where subgroups are unavailable, and to
    /// `Blocked` where cooperative matrices are absent or fail their self-check.
    pub fn set_variant(&self, v: KernelVariant) -> KernelVariant {
        if v == KernelVariant::Coop {
            self.settle_coop();
            return self.variant();
        }
        let v = if v == KernelVariant::Subgroup && !self.has_subgroups() {
            KernelVariant::Tiled
        } else {
            v
        };
        if v != self.0.variant.get() {
            *self.0.variant_reason.borrow_mut() = format!("set to {} by the program", v.name());
        }
        self.0.variant.set(v);
        self.0.tune.set(false);
        v
    }
    /// Why the current GEMM family runs.
    pub fn variant_reason(&self) -> String {
        self.0.variant_reason.borrow().clone()
    }
    /// Forces one tile shape for every GEMM of the blocked family (`None`: chosen per problem).
    /// Refused (with the reason) when the shape is malformed or over this device's limits.
    pub fn set_gemm_tile(&self, tile: Option<GemmTile>) -> Result<(), String> {
        if let Some(t) = tile {
            t.check(&self.0.limits)?;
            self.0.tune.set(false);
        }
        self.0.gemm_tile.set(tile);
        Ok(())
    }
    /// The forced softmax layout, if any (`tensor::kernel_policy` decides otherwise).
    pub fn softmax_override(&self) -> Option<bool> {
        self.0.softmax_rows.get()
    }
    /// The forced split of the weight gradient along K, if any.
    pub fn split_k_override(&self) -> Option<SplitK> {
        self.0.split_k.get()
    }
    /// Forces the softmax layout (tests run both on one adapter); `None`: by adapter type.
    pub fn set_softmax_row_per_invocation(&self, v: Option<bool>) {
        self.0.softmax_rows.set(v);
    }
    /// Forces the weight gradient's split along K (`None`: the family's rule).
    pub fn set_split_k(&self, rule: Option<SplitK>) {
        if rule.is_some() {
            self.0.tune.set(false);
        }
        self.0.split_k.set(rule);
    }
    /// Records the family and tile of a GEMM being launched (read back by [`Self::last_gemm`]).
    pub(crate) fn note_gemm(
        &self,
        v: KernelVariant,
        (bm, bn, bk, tm, tn): (u32, u32, u32, u32, u32),
    ) {
        self.0
            .last_gemm
            .set(Some((v, GemmTile::new(bm, bn, bk, tm, tn))));
    }
    /// The forced tile shape of the blocked family, if any.
    pub fn gemm_tile(&self) -> Option<GemmTile> {
        self.0.gemm_tile.get()
    }
    /// The family and tile shape of the last GEMM recorded (tiled and subgroup kernels are shown
    /// in the same notation: BM x BN outputs per workgroup, per-invocation TM x TN).
    pub fn last_gemm(&self) -> Option<(KernelVariant, GemmTile)> {
        self.0.last_gemm.get()
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
            "subgroups: size {}..{}",
            i.subgroup_min_size, i.subgroup_max_size
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
