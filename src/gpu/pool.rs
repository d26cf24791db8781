//! A pool of storage buffers, bucketed by size class.
//!
//! A buffer dropped while launches that use it are still being recorded goes to `pending`, and only
//! returns to `free` when the batch is submitted. Reuse inside one batch would be safe for kernels
//! (stream order) but not for `queue.write_buffer`, which runs before the whole submit.
//!
//! Each size class hands out its idle buffers lowest creation number first, whatever order they
//! came back in: a loop that allocates the same sizes in the same order every update then gets the
//! same buffers every update, so its bind groups are found in the recorder's cache (batch.rs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub(crate) struct BufferPool {
    /// Idle buffers per size class as (creation number, buffer), highest number first (pop takes
    /// the lowest).
    free: RefCell<HashMap<u64, Vec<(u64, wgpu::Buffer)>>>,
    pending: RefCell<Vec<(u64, u64, wgpu::Buffer)>>,
    stats: RefCell<PoolStats>,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct PoolStats {
    pub created: u64,
    pub reused: u64,
    pub bytes_created: u64,
}

/// Rounds up to a size class: 1/8 steps between powers of two, so waste stays under 12.5%.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let p = bytes.next_power_of_two();
    let step = (p / 8).max(16);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn take(self: &Rc<Self>, device: &wgpu::Device, bytes: u64) -> GpuBuffer {
        let class = size_class(bytes);
        let reused = self.free.borrow_mut().get_mut(&class).and_then(|v| v.pop());
        let (serial, buffer) = match reused {
            Some(b) => {
                self.stats.borrow_mut().reused += 1;
                b
            }
            None => {
                let mut s = self.stats.borrow_mut();
                s.created += 1;
                s.bytes_created += class;
                let b = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fewstep.tensor"),
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                });
                (s.created, b)
            }
        };
        GpuBuffer {
            buffer: Some(buffer),
            serial,
            class,
            len_bytes: bytes,
            pool: Rc::downgrade(self),
        }
    }

    /// Called after a submit: everything released during the batch becomes reusable.
    pub fn recycle_pending(&self) {
        let mut free = self.free.borrow_mut();
        let mut touched = Vec::new();
        for (class, serial, b) in self.pending.borrow_mut().drain(..) {
            free.entry(class).or_default().push((serial, b));
            touched.push(class);
        }
        touched.sort_unstable();
        touched.dedup();
        for class in touched {
            if let Some(v) = free.get_mut(&class) {
                v.sort_unstable_by_key(|&(serial, _)| std::cmp::Reverse(serial));
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        *self.stats.borrow()
    }

    /// Drops every idle buffer (e.g. after a benchmark with shapes that won't come back).
    pub fn trim(&self) {
        self.free.borrow_mut().clear();
    }
}

/// A storage buffer on loan from the pool; it goes back when dropped.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    /// Creation number within the pool (idle buffers are handed out lowest first).
    serial: u64,
    class: u64,
    len_bytes: u64,
    pool: Weak<BufferPool>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    /// Bytes the tensor uses (the buffer itself may be larger).
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let (Some(b), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.pending.borrow_mut().push((self.class, self.serial, b));
        }
    }
}
