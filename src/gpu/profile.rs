//! GPU time per launch from timestamp queries (`fewstep bench train --profile`).
//!
//! While profiling, the recorder (batch.rs) gives every launch its own compute pass whose start and
//! end write timestamps (pass-level timestamp writes: what `Features::TIMESTAMP_QUERY` offers on
//! every backend, WebGPU included, unlike writes inside a pass), resolves them into a buffer and
//! copies that into a mappable one in the same command buffer. After the submit the device context
//! reads them back (a blocking wait: profiling is for benchmarks, never for the hot loop) and the
//! time of each launch is added to its pipeline's row.
//!
//! What it measures: the time between a pass's start and end on the GPU, so a launch that waits
//! on a barrier for the previous one is charged only for itself; launches in separate passes can
//! no longer overlap, so the sum of the rows is an upper bound on the un-profiled update's GPU time.

// Profiling is switched on only natively (`Gpu::set_profiling`); in the browser the recorder
// carries the (never set) option and nothing else of this file runs.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

use std::collections::HashMap;

/// Queries per query set (wgpu's limit per set is 4096): two per launch.
const QUERIES_PER_SET: u32 = 4096;
/// Bytes per resolved timestamp.
const TIMESTAMP_BYTES: u64 = 8;

/// The query sets and buffers of profiling, reused batch after batch (each batch is read back
/// before the next one is encoded), and the time gathered per pipeline.
pub(crate) struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    resolve: Option<(u64, wgpu::Buffer, wgpu::Buffer)>,
    /// Nanoseconds and launches per pipeline id (batch.rs's key of the launch histogram).
    totals: HashMap<usize, (f64, u64)>,
}

/// The timestamps of one encoded batch, to read after its submit.
pub(crate) struct PendingProfile {
    staging: wgpu::Buffer,
    /// The pipeline id of each launch, in the order of their timestamp pairs.
    pipelines: Vec<usize>,
}

impl Profiler {
    pub fn new() -> Self {
        Profiler {
            sets: Vec::new(),
            resolve: None,
            totals: HashMap::new(),
        }
    }

    /// The query set and first query index of the `launch`-th launch of a batch, creating sets
    /// as needed.
    pub fn queries_for(&mut self, device: &wgpu::Device, launch: usize) -> (&wgpu::QuerySet, u32) {
        let per_set = (QUERIES_PER_SET / 2) as usize;
        let set = launch / per_set;
        while self.sets.len() <= set {
            self.sets
                .push(device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("fewstep.profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERIES_PER_SET,
                }));
        }
        (&self.sets[set], 2 * (launch % per_set) as u32)
    }

    /// Records the resolve of `launches` launches' timestamps and their copy into a mappable
    /// buffer at the end of `enc`.
    pub fn finish(
        &mut self,
        device: &wgpu::Device,
        enc: &mut wgpu::CommandEncoder,
        pipelines: Vec<usize>,
    ) -> Option<PendingProfile> {
        let launches = pipelines.len();
        if launches == 0 {
            return None;
        }
        let per_set = (QUERIES_PER_SET / 2) as usize;
        let set_bytes = QUERIES_PER_SET as u64 * TIMESTAMP_BYTES;
        let bytes = launches.div_ceil(per_set) as u64 * set_bytes;
        if !matches!(&self.resolve, Some((cap, _, _)) if *cap >= bytes) {
            let make = |usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fewstep.profile.resolve"),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let resolve = make(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
            let staging = make(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            self.resolve = Some((bytes, resolve, staging));
        }
        let (_, resolve, staging) = self.resolve.as_ref().unwrap();
        for (i, set) in self.sets.iter().enumerate() {
            let first = i * per_set;
            if first >= launches {
                break;
            }
            let n = (launches - first).min(per_set) as u32;
            // Each set's block starts at a multiple of 32 KiB: QUERY_RESOLVE_BUFFER_ALIGNMENT (256) holds.
            enc.resolve_query_set(set, 0..2 * n, resolve, i as u64 * set_bytes);
        }
        enc.copy_buffer_to_buffer(resolve, 0, staging, 0, bytes);
        Some(PendingProfile {
            staging: staging.clone(),
            pipelines,
        })
    }

    /// Adds the launch times of a batch whose timestamps were read back (`raw`: the staging
    /// buffer's bytes), given the queue's timestamp period in ns per tick.
    pub fn add(&mut self, pending: &PendingProfile, raw: &[u8], period_ns: f32) {
        let per_set = (QUERIES_PER_SET / 2) as usize;
        let ticks: &[u64] = bytemuck::cast_slice(raw);
        for (launch, id) in pending.pipelines.iter().enumerate() {
            let base = (launch / per_set) * QUERIES_PER_SET as usize + 2 * (launch % per_set);
            let (start, end) = (ticks[base], ticks[base + 1]);
            let ns = end.saturating_sub(start) as f64 * period_ns as f64;
            let row = self.totals.entry(*id).or_insert((0.0, 0));
            row.0 += ns;
            row.1 += 1;
        }
    }

    /// (nanoseconds, launches) per pipeline id since profiling started.
    pub fn totals(&self) -> &HashMap<usize, (f64, u64)> {
        &self.totals
    }
}

impl PendingProfile {
    pub fn staging(&self) -> &wgpu::Buffer {
        &self.staging
    }
    /// Bytes to read from the staging buffer.
    pub fn bytes(&self) -> u64 {
        let per_set = (QUERIES_PER_SET / 2) as usize;
        let sets = self.pipelines.len().div_ceil(per_set) as u64;
        (sets - 1) * QUERIES_PER_SET as u64 * TIMESTAMP_BYTES
            + 2 * (self.pipelines.len() - (sets as usize - 1) * per_set) as u64 * TIMESTAMP_BYTES
    }
}
