use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::batch::{Batch, Binding, Dispatch};
use super::fault::{record_fault, Fault, FaultSlot};
use super::pipelines::{KernelKey, KernelSource, PipelineCache};
use super::pool::{BufferPool, GpuBuffer, PoolReuse, PoolStats};
use super::readback;
use super::{FaultWatch, GemmTile, GpuError, GpuOptions, KernelVariant, SplitK};

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// Workgroups allowed per grid dimension: the device's limit, lowered by tests
    /// ([`Gpu::limit_grid_dimension`]) to exercise folded grids with small problems.
    pub grid_limit: Cell<u32>,
    pub variant: Cell<KernelVariant>,
    /// Why `variant` was chosen (for `fewstep info` and `bench kernels`).
    pub variant_reason: RefCell<String>,
    /// The blocked family's forced tile shape, if any.
    pub gemm_tile: Cell<Option<GemmTile>>,
    /// The weight gradient's forced split along K, if any.
    pub split_k: Cell<Option<SplitK>>,
    /// Forced softmax layout (a row per invocation or per workgroup), if any.
    pub softmax_rows: Cell<Option<bool>>,
    /// The family and tile of the last GEMM launched (for `bench kernels`).
    pub last_gemm: Cell<Option<(KernelVariant, GemmTile)>>,
    /// Cooperative matrices on this device: (S, subgroup size) of its square f16 x f16 -> f32
    /// configuration; `None` where the device was made without them.
    pub coop: Cell<Option<(u32, u32)>>,
    /// Why the device has no cooperative matrices (`fewstep info`).
    pub coop_absent: RefCell<String>,
    /// The self-check's verdict, once it ran (tensor/coop_check.rs).
    pub coop_verdict: RefCell<Option<Result<(), String>>>,
    /// Whether the self-check runs its deliberately wrong kernel ([`GpuOptions::coop_fault`]).
    pub coop_fault: Cell<bool>,
    /// Whether the device is lost as the self-check starts ([`GpuOptions::coop_lose`]).
    pub coop_lose: Cell<bool>,
    pub pipelines: PipelineCache,
    /// The first fault of this device (see [`Fault`]).
    pub fault: FaultSlot,
    /// 16 bytes bound where a kernel's optional read-only input is absent. No kernel reads it
    /// (the layouts are explicit, gpu/pipelines.rs); tests fill it with NaN to prove that.
    pub stand_in: Rc<wgpu::Buffer>,
    /// CPU seconds spent encoding batches in [`Gpu::flush`] (bind groups, commands), summed.
    pub encode_seconds: Cell<f64>,
    /// Seconds spent inside `queue.submit` (on CPU adapters that includes running the kernels).
    pub submit_seconds: Cell<f64>,
    pub pool: Rc<BufferPool>,
    pub batch: RefCell<Batch>,
    /// Whether GEMMs this device has not met before are timed and the fastest kept (off where
    /// a family, tile or split is forced: see gpu/selection_slot.rs).
    pub tune: Cell<bool>,
    /// The kernel selection's own state (tensor/tuner): the device layer only keeps it.
    pub selection: RefCell<Option<Box<dyn std::any::Any>>>,
}

/// A cheap handle (one `Rc`) to the device, its queue, and the shared caches.
#[derive(Clone)]
pub struct Gpu(pub(crate) Rc<GpuInner>);

impl Gpu {
    /// Opens a device on the adapter `opts` pick, with the features fewstep asks of it, and
    /// wraps it; also the adapter's cooperative matrices, or why it has none usable. The GEMM
    /// family is not chosen here: `Gpu::new` (tensor/selection) does that next.
    pub(crate) async fn open_device(
        opts: &GpuOptions,
    ) -> Result<(Gpu, Result<(u32, u32), String>), GpuError> {
        if !opts.env_errors.is_empty() {
            return Err(GpuError::Config(opts.env_errors.join("\n")));
        }
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        #[cfg(target_arch = "wasm32")]
        {
            // WebGL2 has no compute shaders: ask for WebGPU only.
            desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            desc.backends = opts
                .backends
                .unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
        }
        let backends_text = format!(" (backends: {:?})", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let adapter =
            Self::pick_adapter(&instance, opts)
                .await
                .map_err(|why| GpuError::NoAdapter {
                    backends: format!("{backends_text}: {why}"),
                })?;
        let info = adapter.get_info();
        let (features, coop) = Self::device_features(&adapter, opts);
        // Take the adapter's own limits: large storage bindings matter for batch-32 activations.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("fewstep"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: if coop.is_ok() {
                    // SAFETY: wgpu's cooperative matrices are experimental (its API may
                    // change, its validation is incomplete); no GEMM runs on them before
                    // fewstep's self-check has compared their products with exact ones.
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|source| GpuError::DeviceRequest {
                adapter: info.name.clone(),
                source,
            })?;
        Ok((Self::wrap_device(device, queue, info, None), coop))
    }

    /// Wraps a device: `watch` (another `Gpu`'s [`Gpu::fault_watch`] on the same device) is
    /// shared instead of installing new handlers, which would replace the first `Gpu`'s (a device
    /// has one uncaptured-error handler and one lost callback). The GEMM family is a placeholder
    /// until the selection (tensor/selection) chooses it: `Gpu::new` and `Gpu::from_device` do.
    pub(crate) fn wrap_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        watch: Option<FaultWatch>,
    ) -> Gpu {
        let features = device.features();
        let limits = device.limits();
        let align = limits.min_uniform_buffer_offset_alignment.max(16);
        // wgpu zero-fills new buffers.
        let stand_in = Rc::new(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("fewstep.stand_in"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
        let fault = match watch {
            Some(w) => w.slot,
            None => {
                let slot = FaultSlot::default();
                Self::install_fault_handlers(&device, &slot);
                slot
            }
        };
        Gpu(Rc::new(GpuInner {
            stand_in,
            fault,
            pipelines: PipelineCache::default(),
            encode_seconds: Cell::new(0.0),
            submit_seconds: Cell::new(0.0),
            pool: Rc::new(BufferPool::default()),
            batch: RefCell::new(Batch::new(align)),
            device,
            queue,
            info,
            features,
            grid_limit: Cell::new(limits.max_compute_workgroups_per_dimension.max(1)),
            limits,
            variant: Cell::new(KernelVariant::Tiled),
            variant_reason: RefCell::new(String::new()),
            gemm_tile: Cell::new(None),
            split_k: Cell::new(None),
            softmax_rows: Cell::new(None),
            last_gemm: Cell::new(None),
            coop: Cell::new(None),
            coop_absent: RefCell::new(
                "the device was made without cooperative matrices (the app's device and \
                 browsers have none)"
                    .into(),
            ),
            coop_verdict: RefCell::new(None),
            coop_fault: Cell::new(false),
            coop_lose: Cell::new(false),
            tune: Cell::new(false),
            selection: RefCell::new(None),
        }))
    }

    /// Without an uncaptured-error handler wgpu panics on the first error (exit 101 natively, a
    /// run going on with stale data on the web); with it the error waits for the next readback.
    fn install_fault_handlers(device: &wgpu::Device, fault: &FaultSlot) {
        let slot = fault.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            let f = match &e {
                wgpu::Error::OutOfMemory { .. } => Fault::Device(format!("out of memory: {e}")),
                _ => Fault::Device(e.to_string()),
            };
            record_fault(&slot, f);
        }));
        let slot = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = match reason {
                wgpu::DeviceLostReason::Destroyed => "destroyed",
                _ => "lost by the driver",
            };
            let text = if message.is_empty() {
                why.to_string()
            } else {
                format!("{why}: {message}")
            };
            record_fault(&slot, Fault::Lost(text));
        });
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.0.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.0.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.0.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.0.features
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.0.limits
    }
    /// Workgroups allowed per grid dimension (see [`Self::limit_grid_dimension`]).
    pub fn grid_limit(&self) -> u32 {
        self.0.grid_limit.get()
    }
    /// Lowers the workgroups allowed per grid dimension below the device's limit, so that
    /// tests reach the folded grids of large problems (over 65535 workgroups) with small ones.
    pub fn limit_grid_dimension(&self, max: u32) {
        let device = self.0.limits.max_compute_workgroups_per_dimension.max(1);
        self.0.grid_limit.set(max.clamp(1, device));
    }
    // ---------------- recording and submitting (the recorder is gpu/batch.rs) ----------------

    /// Records a launch; nothing reaches the GPU until [`Gpu::flush`].
    pub fn dispatch(&self, d: Dispatch) {
        self.0.pool.set_recording(true);
        self.0.batch.borrow_mut().dispatch(d);
    }

    /// Records a buffer-to-buffer copy, in order with the launches around it.
    pub fn copy(&self, src: Binding, src_offset: u64, dst: Binding, dst_offset: u64, size: u64) {
        self.0.pool.set_recording(true);
        self.0
            .batch
            .borrow_mut()
            .copy(src, src_offset, dst, dst_offset, size);
    }

    /// Number of launches recorded but not yet submitted.
    pub fn pending(&self) -> usize {
        self.0.batch.borrow().pending()
    }

    /// (launches, submits) since the device was created.
    pub fn counters(&self) -> (u64, u64) {
        self.0.batch.borrow().counters()
    }

    /// Encodes everything recorded into one encoder and submits it. A no-op when nothing is pending.
    pub fn flush(&self) {
        let started = web_time::Instant::now();
        let encoded = self
            .0
            .batch
            .borrow_mut()
            .encode(&self.0.device, &self.0.queue);
        let Some(encoded) = encoded else {
            return;
        };
        // Submitting is left out: on CPU adapters (lavapipe) it runs the kernels.
        let spent = started.elapsed().as_secs_f64();
        self.0
            .encode_seconds
            .set(self.0.encode_seconds.get() + spent);
        let submitting = web_time::Instant::now();
        self.0.queue.submit([encoded.commands]);
        let spent = submitting.elapsed().as_secs_f64();
        self.0
            .submit_seconds
            .set(self.0.submit_seconds.get() + spent);
        // Bind groups, then the launches' buffers (into the pool's released list), then recycle.
        drop(encoded.retired);
        self.0.pool.recycle_released();
        self.0.pool.set_recording(false);
        if let Some(pending) = encoded.profile {
            self.read_profile(&pending);
        }
    }

    /// Waits for a profiled batch and adds its launch times (native only: profiling is never
    /// switched on in the browser, where nothing may block).
    fn read_profile(&self, pending: &super::profile::PendingProfile) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let raw = pollster::block_on(readback::read_staging(
                &self.0.device,
                pending.staging(),
                pending.bytes(),
            ));
            match raw {
                Ok(raw) => {
                    let period = self.0.queue.get_timestamp_period();
                    self.0.batch.borrow_mut().add_profile(pending, &raw, period);
                }
                Err(e) => log::warn!("profile readback failed: {e}"),
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = pending;
    }

    /// Starts timing every launch with timestamp queries (fresh totals), or stops. Slows the
    /// work down (a pass per launch, a wait after each submit); for `bench train --profile`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_profiling(&self, on: bool) -> Result<(), String> {
        if on && !self.0.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(format!(
                "'{}' offers no timestamp queries (wgpu::Features::TIMESTAMP_QUERY), so GPU time per kernel cannot be measured on it",
                self.0.info.name
            ));
        }
        self.flush();
        self.0.batch.borrow_mut().set_profiling(on);
        Ok(())
    }

    /// GPU seconds and launches per kernel label since profiling started, most time first.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        self.0.batch.borrow().profile()
    }

    /// CPU seconds spent encoding batches since the device was created (what
    /// `bench train` reports per update next to the time spent recording launches).
    pub fn encode_seconds(&self) -> f64 {
        self.0.encode_seconds.get()
    }
    /// Seconds spent inside `queue.submit` since the device was created.
    pub fn submit_seconds(&self) -> f64 {
        self.0.submit_seconds.get()
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

    // ---------------- buffers and pipelines (gpu/pool.rs, gpu/pipelines.rs) ----------------

    /// The buffer bound for a kernel's absent optional input (read-only bindings only); the
    /// kernel does not read it.
    pub fn stand_in(&self) -> Binding {
        Binding::Raw(self.0.stand_in.clone())
    }

    /// Fills the stand-in with `value` (tests: with NaN, a kernel that read it would say so).
    #[doc(hidden)]
    pub fn fill_stand_in(&self, value: f32) {
        self.flush();
        self.0
            .queue
            .write_buffer(&self.0.stand_in, 0, bytemuck::cast_slice(&[value; 4]));
    }

    /// Takes a buffer of at least `bytes` from the pool, to be written first by a recorded launch
    /// or copy (it may be one given back earlier in the same batch; see gpu/pool.rs).
    pub fn alloc(&self, bytes: u64) -> Rc<GpuBuffer> {
        Rc::new(
            self.0
                .pool
                .take(&self.0.device, bytes, super::pool::FirstWrite::Recorded),
        )
    }

    /// Whether launches reuse buffers given back in the same batch (memory against speed).
    pub fn set_pool_reuse(&self, reuse: PoolReuse) {
        self.0.pool.set_reuse(reuse);
    }
    pub fn pool_reuse(&self) -> PoolReuse {
        self.0.pool.reuse()
    }
    /// Forgets the largest buffer taken so far ([`PoolStats::largest_taken`] restarts at 0).
    pub fn reset_largest_taken(&self) {
        self.0.pool.reset_largest();
    }
    /// The largest storage buffer one tensor may have on this device: the smaller of the
    /// buffer-size and storage-binding limits.
    pub fn max_tensor_bytes(&self) -> u64 {
        self.0
            .limits
            .max_buffer_size
            .min(self.0.limits.max_storage_buffer_binding_size)
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.0.pool.stats()
    }
    /// Drops every idle pooled buffer (those released since the last submit too), and the
    /// cached bind groups that would keep them alive.
    pub fn trim_pool(&self) {
        // After the flush nothing recorded refers to a released buffer.
        self.flush();
        self.0.pool.recycle_released();
        self.0.batch.borrow_mut().clear_bind_groups();
        self.0.pool.trim()
    }
    /// (bind groups created, bind groups reused from earlier batches) since the device was
    /// created: a loop that records the same launches every update reuses all of its own.
    pub fn bind_group_counts(&self) -> (u64, u64) {
        self.0.batch.borrow().bind_group_counts()
    }
    /// The keys of every pipeline compiled so far (tests compare them with the registry).
    pub fn pipeline_keys(&self) -> Vec<KernelKey> {
        self.0.pipelines.keys()
    }
    pub fn pipelines_cached(&self) -> usize {
        self.0.pipelines.len()
    }

    pub fn pipeline(
        &self,
        key: &KernelKey,
        source: impl FnOnce() -> KernelSource,
    ) -> Rc<wgpu::ComputePipeline> {
        self.0
            .pipelines
            .get(&self.0.device, &self.0.fault, key, source)
    }

    /// The device's first fault as an error (a lost device, a kernel that failed to build, an
    /// uncaptured error such as running out of memory), if any. Readbacks and [`Gpu::finish`]
    /// check it; a long loop that never reads back can ask.
    pub fn fault(&self) -> Result<(), GpuError> {
        self.fault_watch().error().map_or(Ok(()), Err)
    }

    /// A `Send` handle on this device's first fault (see [`FaultWatch`]).
    pub fn fault_watch(&self) -> FaultWatch {
        FaultWatch {
            slot: self.0.fault.clone(),
            adapter: self.0.info.name.clone(),
        }
    }

    /// Drops every launch recorded since the last submit: a job that failed or panicked half-way
    /// leaves nothing for the next job's submit. Returns how many ops were dropped.
    pub fn discard_pending(&self) -> usize {
        let n = self.0.batch.borrow_mut().discard();
        self.0.pool.set_recording(false);
        self.0.pool.recycle_released();
        n
    }

    /// Lets wgpu run its pending callbacks (natively the device-lost one runs only at a poll).
    pub(super) fn poll_callbacks(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.0.device.poll(wgpu::PollType::Poll);
    }

    /// Destroys the device (tests: a stand-in for a device the driver lost).
    pub fn destroy_device(&self) {
        self.0.device.destroy();
    }

    // ---------------- readback and upload (helpers in gpu/readback.rs) ----------------

    /// Records a copy of `src`'s first `bytes` into a fresh staging buffer and submits.
    fn stage_copy(&self, src: &Rc<GpuBuffer>, bytes: u64) -> Rc<wgpu::Buffer> {
        let staging = readback::staging_buffer(&self.0.device, bytes);
        self.copy(
            Binding::Pooled(src.clone()),
            0,
            Binding::Raw(staging.clone()),
            0,
            bytes.next_multiple_of(4),
        );
        self.flush();
        staging
    }

    /// Reads `bytes` from the start of `src` (async; works on every target).
    pub async fn read_bytes(&self, src: &Rc<GpuBuffer>, bytes: u64) -> Result<Vec<u8>, GpuError> {
        self.fault()?;
        let staging = self.stage_copy(src, bytes);
        let read = readback::read_staging(&self.0.device, &staging, bytes).await;
        // A fault explains a failed readback better than the map error, and makes a readback
        // that "worked" on a broken device (stale or zeroed data) an error.
        self.poll_callbacks();
        self.fault()?;
        read.map_err(GpuError::Readback)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_bytes_blocking(
        &self,
        src: &Rc<GpuBuffer>,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        pollster::block_on(self.read_bytes(src, bytes))
    }

    /// Uploads into a fresh pooled buffer. Safe without a flush: a buffer from the free list is
    /// referenced by no recorded launch (see the pool's comment).
    pub fn upload_bytes(&self, data: &[u8]) -> Rc<GpuBuffer> {
        let buf = Rc::new(self.0.pool.take(
            &self.0.device,
            data.len() as u64,
            super::pool::FirstWrite::Queue,
        ));
        readback::write_padded(&self.0.queue, buf.raw(), data);
        buf
    }

    /// Waits (natively) until all submitted work is done; used by benchmarks for timing.
    pub async fn finish(&self) -> Result<(), GpuError> {
        self.fault()?;
        self.flush();
        let done = readback::work_done(&self.0.device, &self.0.queue).await;
        self.poll_callbacks();
        self.fault()?;
        done.map_err(GpuError::Readback)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish_blocking(&self) -> Result<(), GpuError> {
        pollster::block_on(self.finish())
    }
}
