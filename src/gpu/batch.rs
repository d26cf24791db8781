//! Records kernel launches and buffer copies, then encodes them all into one command buffer
//! (consecutive launches share one compute pass). Per-launch parameters go into one uniform arena
//! per batch, written with a single `write_buffer`.
//!
//! The recorder is a plain value: it depends on no device handle of its own, is handed the device
//! and queue when it encodes, and leaves the submit to its owner (the device context, context.rs,
//! which holds one behind a `RefCell` and forwards its `dispatch`, `copy` and `flush` to it).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use super::pool::GpuBuffer;
use super::profile::{PendingProfile, Profiler};

/// A buffer a launch reads or writes; bindings are numbered from 1 in order (0 is the params).
#[derive(Clone)]
pub enum Binding {
    /// Keeps the loan until the batch is submitted (the buffer cannot go back to the pool before).
    Pooled(Rc<GpuBuffer>),
    Raw(Rc<wgpu::Buffer>),
    /// A tensor's buffer without its loan: when the tensor is dropped while the batch is being
    /// recorded, the buffer goes back to the pool and later launches of the batch may write it
    /// (gpu/pool.rs); the handle keeps it alive until the submit.
    Buffer(wgpu::Buffer),
}

impl Binding {
    fn raw(&self) -> &wgpu::Buffer {
        match self {
            Binding::Pooled(b) => b.raw(),
            Binding::Raw(b) => b,
            Binding::Buffer(b) => b,
        }
    }
}

/// One kernel launch.
pub struct Dispatch {
    pub pipeline: Rc<wgpu::ComputePipeline>,
    pub params: Vec<u8>,
    pub buffers: Vec<Binding>,
    pub workgroups: [u32; 3],
}

enum Op {
    Dispatch {
        d: Dispatch,
        uniform_offset: u64,
    },
    Copy {
        src: Binding,
        src_offset: u64,
        dst: Binding,
        dst_offset: u64,
        size: u64,
    },
}

/// What [`Batch::encode`] produced: the command buffer to submit, and what must stay alive until
/// it has been submitted.
pub(crate) struct Encoded {
    pub commands: wgpu::CommandBuffer,
    pub retired: Retired,
    /// While profiling: the launches' timestamps, to read back after the submit.
    pub profile: Option<PendingProfile>,
}

/// The bind groups and recorded launches of a submitted batch. Dropped after the submit: the bind
/// groups first, then the launches (whose pooled buffers then return to the pool's released list).
pub(crate) struct Retired {
    _groups: Vec<Option<wgpu::BindGroup>>,
    _ops: Vec<Op>,
}

/// A bind group kept across batches, with what it binds (compared on lookup: the map's key is
/// only a hash) and the last batch that used it.
struct CachedGroup {
    pipeline: wgpu::ComputePipeline,
    uniform: (wgpu::Buffer, u64, u64),
    buffers: Vec<wgpu::Buffer>,
    group: wgpu::BindGroup,
    used: u64,
}

impl CachedGroup {
    fn binds(&self, d: &Dispatch, uniform: &wgpu::Buffer, offset: u64, size: u64) -> bool {
        *d.pipeline == self.pipeline
            && self.uniform.0 == *uniform
            && (self.uniform.1, self.uniform.2) == (offset, size)
            && self.buffers.len() == d.buffers.len()
            && self
                .buffers
                .iter()
                .zip(&d.buffers)
                .all(|(a, b)| a == b.raw())
    }
}

/// Batches a cached bind group may go unused before it is dropped. A training or sampling loop
/// records the same launches on the same pooled buffers every update, so its groups are reused
/// every batch; the limit keeps groups of finished work from holding their buffers for long.
const BIND_GROUP_MAX_IDLE: u64 = 4;

pub(crate) struct Batch {
    ops: Vec<Op>,
    arena: Vec<u8>,
    align: u64,
    uniform: Option<(u64, wgpu::Buffer)>,
    launches_total: u64,
    submits_total: u64,
    /// Bind groups by a hash of (pipeline, parameter slice, buffers): creating one per launch
    /// costs the CPU about as much as everything else of a launch.
    bind_groups: HashMap<u64, CachedGroup>,
    /// (created, reused) bind groups since creation.
    bind_group_counts: (u64, u64),
    /// Launches per pipeline (keyed by the pipeline's address; cached pipelines live as long as
    /// the device), with the label its launcher gave it and the buffers of its first launch.
    per_pipeline: HashMap<usize, PipelineCount>,
    /// Set while profiling (profile.rs): every launch then gets its own timed pass.
    profiler: Option<Profiler>,
}

/// One row of the launch histogram kept by [`Batch`].
struct PipelineCount {
    label: Option<String>,
    buffers: usize,
    launches: u64,
}

fn pipeline_id(p: &Rc<wgpu::ComputePipeline>) -> usize {
    Rc::as_ptr(p) as usize
}

/// Records one launch into a compute pass (an empty grid records nothing but its state).
fn record(pass: &mut wgpu::ComputePass<'_>, d: &Dispatch, group: Option<&wgpu::BindGroup>) {
    pass.set_pipeline(&d.pipeline);
    pass.set_bind_group(0, group, &[]);
    let [x, y, z] = d.workgroups;
    if x > 0 && y > 0 && z > 0 {
        pass.dispatch_workgroups(x, y, z);
    }
}

impl Batch {
    /// `align`: the device's uniform-buffer offset alignment (at least 16).
    pub fn new(align: u32) -> Self {
        Batch {
            ops: Vec::new(),
            arena: Vec::new(),
            align: align as u64,
            uniform: None,
            launches_total: 0,
            submits_total: 0,
            bind_groups: HashMap::new(),
            bind_group_counts: (0, 0),
            per_pipeline: HashMap::new(),
            profiler: None,
        }
    }

    /// Whether launches are being timed.
    pub fn profiling(&self) -> bool {
        self.profiler.is_some()
    }

    /// Starts (with fresh totals) or stops timing each launch with timestamp queries; the
    /// device must have `Features::TIMESTAMP_QUERY`.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub fn set_profiling(&mut self, on: bool) {
        self.profiler = on.then(Profiler::new);
    }

    /// Adds the read-back timestamps of a submitted batch to the profile.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub fn add_profile(&mut self, pending: &PendingProfile, raw: &[u8], period_ns: f32) {
        if let Some(p) = &mut self.profiler {
            p.add(pending, raw, period_ns);
        }
    }

    /// GPU time (seconds) and launches per pipeline label since profiling started, most time
    /// first; empty when not profiling.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.profiler else {
            return Vec::new();
        };
        let mut by_name: HashMap<String, (f64, u64)> = HashMap::new();
        for (id, (ns, n)) in p.totals() {
            let name = self.name_of(*id);
            let row = by_name.entry(name).or_default();
            row.0 += ns * 1e-9;
            row.1 += n;
        }
        let mut v: Vec<_> = by_name.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// A pipeline's label in the histogram, or its number of buffers when nobody named it.
    fn name_of(&self, id: usize) -> String {
        match self.per_pipeline.get(&id) {
            Some(PipelineCount { label: Some(l), .. }) => l.clone(),
            Some(c) => format!("(unlabelled, {} buffers)", c.buffers),
            None => "(unknown)".into(),
        }
    }

    /// (bind groups created, bind groups reused from earlier batches) since creation.
    pub fn bind_group_counts(&self) -> (u64, u64) {
        self.bind_group_counts
    }

    /// Forgets the cached bind groups (which keep their buffers alive), e.g. when the buffer
    /// pool is trimmed.
    pub fn clear_bind_groups(&mut self) {
        self.bind_groups.clear();
    }

    /// The bind group of one launch: from the cache when an earlier batch bound the same
    /// pipeline, parameter slice and buffers, else created (and cached).
    fn bind_group(
        &mut self,
        device: &wgpu::Device,
        d: &Dispatch,
        uniform: &wgpu::Buffer,
        offset: u64,
    ) -> wgpu::BindGroup {
        let size = d.params.len().max(16).next_multiple_of(16) as u64;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (*d.pipeline).hash(&mut h);
        uniform.hash(&mut h);
        (offset, size).hash(&mut h);
        for b in &d.buffers {
            b.raw().hash(&mut h);
        }
        let key = h.finish();
        let batch = self.submits_total;
        if let Some(c) = self.bind_groups.get_mut(&key) {
            if c.binds(d, uniform, offset, size) {
                c.used = batch;
                self.bind_group_counts.1 += 1;
                return c.group.clone();
            }
        }
        let layout = d.pipeline.get_bind_group_layout(0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform,
                offset,
                size: wgpu::BufferSize::new(size),
            }),
        }];
        for (i, buf) in d.buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buf.raw().as_entire_binding(),
            });
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        self.bind_group_counts.0 += 1;
        // A hash collision with a live entry replaces it (both stay correct: the comparison above
        // guards every reuse).
        self.bind_groups.insert(
            key,
            CachedGroup {
                pipeline: (*d.pipeline).clone(),
                uniform: (uniform.clone(), offset, size),
                buffers: d.buffers.iter().map(|b| b.raw().clone()).collect(),
                group: group.clone(),
                used: batch,
            },
        );
        group
    }

    /// Records a launch: its parameters go into the arena at an aligned offset.
    pub fn dispatch(&mut self, d: Dispatch) {
        let off = (self.arena.len() as u64).next_multiple_of(self.align);
        self.arena.resize(off as usize, 0);
        let mut params = d.params.clone();
        if params.is_empty() {
            params.resize(16, 0);
        }
        params.resize(params.len().next_multiple_of(16), 0);
        self.arena.extend_from_slice(&params);
        self.launches_total += 1;
        let buffers = d.buffers.len();
        self.per_pipeline
            .entry(pipeline_id(&d.pipeline))
            .or_insert(PipelineCount {
                label: None,
                buffers,
                launches: 0,
            })
            .launches += 1;
        self.ops.push(Op::Dispatch {
            d,
            uniform_offset: off,
        });
    }

    /// Records a buffer-to-buffer copy, in order with the launches around it.
    pub fn copy(
        &mut self,
        src: Binding,
        src_offset: u64,
        dst: Binding,
        dst_offset: u64,
        size: u64,
    ) {
        self.ops.push(Op::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            size,
        });
    }

    /// Drops everything recorded since the last submit (a job that failed half-way: its
    /// launches must not reach the next job's submit). Returns how many ops were dropped.
    pub fn discard(&mut self) -> usize {
        let n = self.ops.len();
        self.ops.clear();
        self.arena.clear();
        n
    }

    /// Number of launches and copies recorded but not yet encoded.
    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    /// (launches recorded, batches encoded for submission) since creation.
    pub fn counters(&self) -> (u64, u64) {
        (self.launches_total, self.submits_total)
    }

    /// Names a pipeline in the launch histogram (e.g. `reduce MODE=1`); `label` runs only the
    /// first time a pipeline is named.
    pub fn label(&mut self, pipeline: &Rc<wgpu::ComputePipeline>, label: impl FnOnce() -> String) {
        let e = self
            .per_pipeline
            .entry(pipeline_id(pipeline))
            .or_insert(PipelineCount {
                label: None,
                buffers: 0,
                launches: 0,
            });
        if e.label.is_none() {
            e.label = Some(label());
        }
    }

    /// Launches recorded since creation per pipeline label, largest first (ties by name).
    /// Pipelines nobody labelled are named by the number of buffers of their launches.
    pub fn launch_counts(&self) -> Vec<(String, u64)> {
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (id, c) in &self.per_pipeline {
            *by_name.entry(self.name_of(*id)).or_default() += c.launches;
        }
        let mut v: Vec<(String, u64)> = by_name.into_iter().filter(|(_, n)| *n > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Writes the parameter arena (through `queue.write_buffer`, so it lands before the next
    /// submit) and encodes everything recorded into one command buffer, leaving the recorder
    /// empty. `None` when nothing is pending. The caller submits `commands`, then drops `retired`.
    pub fn encode(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) -> Option<Encoded> {
        if self.ops.is_empty() {
            return None;
        }
        let arena_len = (self.arena.len() as u64).max(16).next_multiple_of(16);
        let need_new = !matches!(&self.uniform, Some((cap, _)) if *cap >= arena_len);
        if need_new {
            let cap = arena_len.next_power_of_two().max(4096);
            let buf = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fewstep.params"),
                size: cap,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.uniform = Some((cap, buf));
        }
        let ops = std::mem::take(&mut self.ops);
        let mut arena = std::mem::take(&mut self.arena);
        arena.resize(arena_len as usize, 0);
        let uniform = self.uniform.as_ref().unwrap().1.clone();
        queue.write_buffer(&uniform, 0, &arena);

        // Bind groups must outlive the pass that uses them.
        let mut groups = Vec::with_capacity(ops.len());
        for op in &ops {
            if let Op::Dispatch { d, uniform_offset } = op {
                groups.push(Some(self.bind_group(device, d, &uniform, *uniform_offset)));
            } else {
                groups.push(None);
            }
        }
        let batch = self.submits_total;
        self.bind_groups
            .retain(|_, c| batch - c.used <= BIND_GROUP_MAX_IDLE);

        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("fewstep.batch"),
        });
        let mut i = 0;
        let mut timed = Vec::new();
        while i < ops.len() {
            match &ops[i] {
                Op::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    enc.copy_buffer_to_buffer(
                        src.raw(),
                        *src_offset,
                        dst.raw(),
                        *dst_offset,
                        *size,
                    );
                    i += 1;
                }
                Op::Dispatch { d, .. } if self.profiler.is_some() => {
                    // Profiling: a pass per launch, timed at its start and end.
                    let profiler = self.profiler.as_mut().unwrap();
                    let (set, first) = profiler.queries_for(device, timed.len());
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(first),
                            end_of_pass_write_index: Some(first + 1),
                        }),
                    });
                    record(&mut pass, d, groups[i].as_ref());
                    drop(pass);
                    timed.push(pipeline_id(&d.pipeline));
                    i += 1;
                }
                Op::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    while i < ops.len() {
                        let Op::Dispatch { d, .. } = &ops[i] else {
                            break;
                        };
                        record(&mut pass, d, groups[i].as_ref());
                        i += 1;
                    }
                }
            }
        }
        let profile = match &mut self.profiler {
            Some(p) => p.finish(device, &mut enc, timed),
            None => None,
        };
        self.submits_total += 1;
        Some(Encoded {
            commands: enc.finish(),
            retired: Retired {
                _groups: groups,
                _ops: ops,
            },
            profile,
        })
    }
}
