//! The cooperative-matrix family settled on its self-check (`tensor::coop_check`): selected
//! where the device has cooperative matrices and they pass, else the blocked family with the
//! reason. The device layer reports the matrices (`gpu/coop_device.rs`); this decides.

use crate::gpu::{Gpu, KernelVariant};
use crate::tensor::coop_check::{self, Cached};

impl Gpu {
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
        let verdict = known.unwrap_or_else(|| self.check_coop(s, sg, Cached::Use));
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
    fn check_coop(&self, s: u32, sg: u32, cached: Cached) -> Result<(), String> {
        let clean = self.fault().is_ok();
        if self.0.coop_lose.get() {
            self.destroy_device();
        }
        let v = coop_check::verdict(self, s, sg, self.0.coop_fault.get(), cached);
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
        let passed = self.check_coop(s, sg, Cached::Ignore).is_ok();
        if self.variant() == KernelVariant::Coop {
            self.settle_coop();
        }
        passed
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
}
