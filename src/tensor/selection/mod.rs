//! The kernel selection: which GEMM family, tile and split a device runs, in what precision,
//! and why. One unit above the device layer (`gpu/` reports what the adapter can do and keeps
//! the values this unit sets, never deciding them): opening a device (`open.rs`: `Gpu::new`,
//! `Gpu::from_device`, each choosing the family), the cooperative-matrix family settled on its
//! self-check (`coop.rs`, running `coop_check`), the default family and what was forced
//! (here), the fixed rule per launch (`kernel_policy.rs`) and choosing by measuring
//! (`tuner/`).

mod coop;
mod open;

use crate::gpu::{GemmTile, Gpu, KernelVariant, Precision, SplitK};

impl Gpu {
    /// The GEMM family used when none is asked for, and why: CPU adapters (lavapipe) run the
    /// subgroup family where they have fixed-size subgroups (2-3x faster there than the others,
    /// ARCHITECTURE.md, Platforms), else tiled; GPUs and browsers run the register-blocked family.
    pub(crate) fn default_variant(
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

    /// Whether GEMM shapes this device meets for the first time are timed on it and the fastest
    /// kernel kept (tensor/tuner). Off where a family, tile or split was forced.
    pub fn tunes(&self) -> bool {
        self.0.tune.get()
    }

    /// Turns tuning on or off (`fewstep bench train --tuned` times the rule, then the plan).
    pub fn set_tuning(&self, on: bool) {
        self.0.tune.set(on);
    }
}
