//! A pool of storage buffers, bucketed by size class.
//!
//! A buffer dropped while launches that use it are still being recorded (the recorder holds the
//! `wgpu::Buffer`, not the loan) goes to `released`. Kernel outputs may take it again at once:
//! launches run in the order recorded and wgpu puts a barrier between a launch that reads it and a
//! later one that writes it, so an update's backward pass reuses the memory its forward pass and
//! consumed gradients gave back. Uploads may not: `queue.write_buffer` runs before the whole next
//! submit, so it would overwrite data that earlier launches of the same batch still have to read;
//! they take only from `free`, where `released` moves after each submit.
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
    /// Buffers given back since the last submit, per size class as (creation number, buffer).
    released: RefCell<HashMap<u64, Vec<(u64, wgpu::Buffer)>>>,
    /// Set while launches or copies are recorded but not submitted: a buffer given back while
    /// nothing is recorded goes straight to `free` (no launch can still read it), so that loops
    /// that drop their tensors after a readback find the pool as they left it every time.
    recording: std::cell::Cell<bool>,
    reuse: std::cell::Cell<PoolReuse>,
    stats: RefCell<PoolStats>,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct PoolStats {
    pub created: u64,
    pub reused: u64,
    pub bytes_created: u64,
    /// The largest buffer (size class) handed out since `BufferPool::reset_largest`.
    pub largest_taken: u64,
}

/// Rounds up to a size class: 1/8 steps between powers of two, so waste stays under 12.5%.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let p = bytes.next_power_of_two();
    let step = (p / 8).max(16);
    bytes.div_ceil(step) * step
}

/// Whether kernel outputs take buffers given back earlier in the same batch
/// (FEWSTEP_POOL_REUSE). Each reuse orders the launch after the last one that used the buffer,
/// and wgpu's barrier for that waits for all launches before it, so reuse trades speed for
/// memory; `Late` takes idle buffers from earlier batches first and reuses only when none is left.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum PoolReuse {
    /// Never: what a batch gives back waits for the submit.
    Off,
    /// Only when no buffer of the size is idle since an earlier batch.
    #[default]
    Late,
    /// Whichever idle buffer was created first, given back in this batch or not.
    Eager,
}

impl std::str::FromStr for PoolReuse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(PoolReuse::Off),
            "late" => Ok(PoolReuse::Late),
            "eager" => Ok(PoolReuse::Eager),
            _ => Err(format!(
                "FEWSTEP_POOL_REUSE='{s}' is not one of off, late, eager"
            )),
        }
    }
}

/// Who will write a buffer first: decides whether one given back in the current batch will do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FirstWrite {
    /// A kernel or copy recorded in the batch (stream order).
    Recorded,
    /// `queue.write_buffer` (runs before the whole next submit).
    Queue,
}

impl BufferPool {
    pub fn take(
        self: &Rc<Self>,
        device: &wgpu::Device,
        bytes: u64,
        first: FirstWrite,
    ) -> GpuBuffer {
        let class = size_class(bytes);
        {
            let mut s = self.stats.borrow_mut();
            s.largest_taken = s.largest_taken.max(class);
        }
        let reused = match first {
            FirstWrite::Queue => self.free.borrow_mut().get_mut(&class).and_then(|v| v.pop()),
            FirstWrite::Recorded => match self.reuse.get() {
                PoolReuse::Off => self.free.borrow_mut().get_mut(&class).and_then(|v| v.pop()),
                PoolReuse::Late => {
                    let idle = self.free.borrow_mut().get_mut(&class).and_then(|v| v.pop());
                    idle.or_else(|| self.take_lowest(class))
                }
                PoolReuse::Eager => self.take_lowest(class),
            },
        };
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

    /// The idle buffer of `class` with the lowest creation number, from `free` or `released`
    /// (so that the same allocation sequence gets the same buffers every update).
    fn take_lowest(&self, class: u64) -> Option<(u64, wgpu::Buffer)> {
        let mut free = self.free.borrow_mut();
        let mut released = self.released.borrow_mut();
        let from_free = free.get(&class).and_then(|v| v.last()).map(|b| b.0);
        let from_released = released.get(&class).and_then(|v| {
            v.iter()
                .enumerate()
                .min_by_key(|(_, b)| b.0)
                .map(|(i, b)| (i, b.0))
        });
        match (from_free, from_released) {
            (Some(f), Some((i, r))) if r < f => Some(released.get_mut(&class)?.swap_remove(i)),
            (None, Some((i, _))) => Some(released.get_mut(&class)?.swap_remove(i)),
            (Some(_), _) => free.get_mut(&class)?.pop(),
            (None, None) => None,
        }
    }

    pub fn set_reuse(&self, reuse: PoolReuse) {
        self.reuse.set(reuse);
    }
    pub fn reuse(&self) -> PoolReuse {
        self.reuse.get()
    }

    /// Marks that launches or copies have been recorded (true) or submitted (false).
    pub fn set_recording(&self, on: bool) {
        self.recording.set(on);
    }

    /// Called after a submit: everything released during the batch becomes free for uploads too.
    pub fn recycle_released(&self) {
        let mut free = self.free.borrow_mut();
        for (class, mut list) in self.released.borrow_mut().drain() {
            if list.is_empty() {
                continue;
            }
            let v = free.entry(class).or_default();
            v.append(&mut list);
            v.sort_unstable_by_key(|&(serial, _)| std::cmp::Reverse(serial));
        }
    }

    pub fn stats(&self) -> PoolStats {
        *self.stats.borrow()
    }

    pub fn reset_largest(&self) {
        self.stats.borrow_mut().largest_taken = 0;
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
            if pool.recording.get() {
                pool.released
                    .borrow_mut()
                    .entry(self.class)
                    .or_default()
                    .push((self.serial, b));
            } else {
                let mut free = pool.free.borrow_mut();
                let v = free.entry(self.class).or_default();
                // Highest creation number first.
                let at = v.partition_point(|&(serial, _)| serial > self.serial);
                v.insert(at, (self.serial, b));
            }
        }
    }
}
