//! What the device keeps for the kernel selection (tensor/tuner): whether it tunes, and a slot
//! for the selection's state. The device layer never reads that state: it only reports what
//! the adapter can do and holds what the layer above asked it to.

use std::any::Any;
use std::cell::RefCell;

use super::Gpu;

impl Gpu {
    /// Whether GEMM shapes this device meets for the first time are timed on it and the fastest
    /// kernel kept (tensor/tuner). Off where a family, tile or split was forced.
    pub fn tunes(&self) -> bool {
        self.0.tune.get()
    }

    /// Turns tuning on or off (`fewstep bench train --tuned` times the rule, then the plan).
    pub fn set_tuning(&self, on: bool) {
        self.0.tune.set(on);
    }

    /// The selection's state (tensor/tuner owns its type).
    pub(crate) fn selection_slot(&self) -> &RefCell<Option<Box<dyn Any>>> {
        &self.0.selection
    }

    /// Whether launches are being timed by timestamp queries ([`Gpu::set_profiling`]).
    pub fn profiling(&self) -> bool {
        self.0.batch.borrow().profiling()
    }
}
