//! Records kernel launches and buffer copies, then encodes them all into one command encoder
//! (consecutive launches share one compute pass) and submits once. Per-launch parameters go into
//! one uniform arena per batch, written with a single `write_buffer`.

use std::rc::Rc;

use super::context::Gpu;
use super::pool::GpuBuffer;

/// A buffer a launch reads or writes; bindings are numbered from 1 in order (0 is the params).
#[derive(Clone)]
pub enum Binding {
    Pooled(Rc<GpuBuffer>),
    Raw(Rc<wgpu::Buffer>),
}

impl Binding {
    fn raw(&self) -> &wgpu::Buffer {
        match self {
            Binding::Pooled(b) => b.raw(),
            Binding::Raw(b) => b,
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

pub(crate) struct Batch {
    ops: Vec<Op>,
    arena: Vec<u8>,
    align: u64,
    uniform: Option<(u64, wgpu::Buffer)>,
    pub launches_total: u64,
    pub submits_total: u64,
}

impl Batch {
    pub fn new(align: u32) -> Self {
        Batch {
            ops: Vec::new(),
            arena: Vec::new(),
            align: align as u64,
            uniform: None,
            launches_total: 0,
            submits_total: 0,
        }
    }
}

impl Gpu {
    /// Records a launch; nothing reaches the GPU until [`Gpu::flush`].
    pub fn dispatch(&self, d: Dispatch) {
        let mut b = self.0.batch.borrow_mut();
        let off = (b.arena.len() as u64).next_multiple_of(b.align);
        b.arena.resize(off as usize, 0);
        let mut params = d.params.clone();
        if params.is_empty() {
            params.resize(16, 0);
        }
        params.resize(params.len().next_multiple_of(16), 0);
        b.arena.extend_from_slice(&params);
        b.launches_total += 1;
        b.ops.push(Op::Dispatch {
            d,
            uniform_offset: off,
        });
    }

    /// Records a buffer-to-buffer copy, in order with the launches around it.
    pub fn copy(&self, src: Binding, src_offset: u64, dst: Binding, dst_offset: u64, size: u64) {
        self.0.batch.borrow_mut().ops.push(Op::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            size,
        });
    }

    /// Number of launches recorded but not yet submitted.
    pub fn pending(&self) -> usize {
        self.0.batch.borrow().ops.len()
    }

    /// (launches, submits) since the device was created.
    pub fn counters(&self) -> (u64, u64) {
        let b = self.0.batch.borrow();
        (b.launches_total, b.submits_total)
    }

    /// Encodes everything recorded into one encoder and submits it. A no-op when nothing is pending.
    pub fn flush(&self) {
        let device = &self.0.device;
        let mut b = self.0.batch.borrow_mut();
        if b.ops.is_empty() {
            return;
        }
        let arena_len = (b.arena.len() as u64).max(16).next_multiple_of(16);
        let need_new = !matches!(&b.uniform, Some((cap, _)) if *cap >= arena_len);
        if need_new {
            let cap = arena_len.next_power_of_two().max(4096);
            let buf = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fewstep.params"),
                size: cap,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            b.uniform = Some((cap, buf));
        }
        let ops = std::mem::take(&mut b.ops);
        let mut arena = std::mem::take(&mut b.arena);
        arena.resize(arena_len as usize, 0);
        let uniform = b.uniform.as_ref().unwrap().1.clone();
        self.0.queue.write_buffer(&uniform, 0, &arena);

        // Bind groups must outlive the pass that uses them.
        let mut groups = Vec::with_capacity(ops.len());
        for op in &ops {
            if let Op::Dispatch { d, uniform_offset } = op {
                let layout = d.pipeline.get_bind_group_layout(0);
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniform,
                        offset: *uniform_offset,
                        size: wgpu::BufferSize::new(
                            d.params.len().max(16).next_multiple_of(16) as u64
                        ),
                    }),
                }];
                for (i, buf) in d.buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: buf.raw().as_entire_binding(),
                    });
                }
                groups.push(Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &layout,
                    entries: &entries,
                })));
            } else {
                groups.push(None);
            }
        }

        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("fewstep.batch"),
        });
        let mut i = 0;
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
                Op::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    while i < ops.len() {
                        let Op::Dispatch { d, .. } = &ops[i] else {
                            break;
                        };
                        pass.set_pipeline(&d.pipeline);
                        pass.set_bind_group(0, groups[i].as_ref(), &[]);
                        let [x, y, z] = d.workgroups;
                        if x > 0 && y > 0 && z > 0 {
                            pass.dispatch_workgroups(x, y, z);
                        }
                        i += 1;
                    }
                }
            }
        }
        b.submits_total += 1;
        drop(b);
        self.0.queue.submit([enc.finish()]);
        drop(groups);
        drop(ops);
        self.0.pool.recycle_pending();
    }

    /// Splits a 1-D workgroup count over x and y so no dimension exceeds the device limit.
    /// Kernels recover the linear id as `wg.x + wg.y * num_wg.x`.
    pub fn grid_1d(&self, workgroups: u32) -> [u32; 3] {
        let max = self.grid_limit();
        if workgroups <= max {
            [workgroups, 1, 1]
        } else {
            let y = workgroups.div_ceil(max);
            [workgroups.div_ceil(y), y, 1]
        }
    }

    /// Takes a buffer of at least `bytes` from the pool.
    pub fn alloc(&self, bytes: u64) -> Rc<GpuBuffer> {
        Rc::new(self.0.pool.take(&self.0.device, bytes))
    }

    pub fn pool_stats(&self) -> super::PoolStats {
        self.0.pool.stats()
    }
    pub fn trim_pool(&self) {
        self.0.pool.trim()
    }
    pub fn pipelines_cached(&self) -> usize {
        self.0.pipelines.len()
    }

    pub fn pipeline(
        &self,
        key: &super::KernelKey,
        source: impl FnOnce() -> super::KernelSource,
    ) -> Rc<wgpu::ComputePipeline> {
        self.0.pipelines.get(&self.0.device, key, source)
    }
}
