//! What the device keeps for the kernel selection (tensor/selection, tensor/tuner): a slot for
//! the tuner's state. The device layer never reads it: it only reports what the adapter can do
//! and holds what the layer above asked it to.

use std::any::Any;
use std::cell::RefCell;

use super::Gpu;

impl Gpu {
    /// The selection's state (tensor/tuner owns its type).
    pub(crate) fn selection_slot(&self) -> &RefCell<Option<Box<dyn Any>>> {
        &self.0.selection
    }

    /// Whether launches are being timed by timestamp queries ([`Gpu::set_profiling`]).
    pub fn profiling(&self) -> bool {
        self.0.batch.borrow().profiling()
    }
}
