//! Opening a device with its GEMM family chosen: `Gpu::new` (fewstep's own device: the
//! adapter, features and limits from `gpu/`, then the family, the coop self-check, what the
//! options force, tuning) and `Gpu::from_device` (a device somebody else made: the app's).

use crate::gpu::{FaultWatch, Gpu, GpuError, GpuOptions, KernelVariant};

impl Gpu {
    /// Creates the device (async: the only way on the web; natively see [`Gpu::new_blocking`]).
    pub async fn new(opts: GpuOptions) -> Result<Gpu, GpuError> {
        let (gpu, coop) = Self::open_device(&opts).await?;
        // A forced tile shape only means something to the blocked family: it selects it.
        let want = opts
            .variant
            .or(opts.gemm_tile.map(|_| KernelVariant::Blocked));
        gpu.choose_family(want);
        gpu.0.coop_fault.set(opts.coop_fault);
        gpu.0.coop_lose.set(opts.coop_lose);
        match coop {
            Ok(sizes) => gpu.0.coop.set(Some(sizes)),
            Err(why) => *gpu.0.coop_absent.borrow_mut() = why,
        }
        // The family from_device chose knew nothing of cooperative matrices: mixed precision
        // takes them where the adapter has them (after the self-check).
        if want == Some(KernelVariant::Coop) || (want.is_none() && gpu.0.coop.get().is_some()) {
            gpu.settle_coop();
            // A driver that loses the device during the check leaves nothing to compute on:
            // a fresh device without cooperative matrices, the reason kept for `fewstep info`.
            if let Some(lost) = gpu.lost_reason() {
                let mut again = opts;
                again.coop_lost = Some(format!(
                    "the driver lost the device during their self-check ({lost}); fewstep \
                     opened a fresh device without them"
                ));
                again.coop_lose = false;
                return Box::pin(Self::new(again)).await;
            }
        }
        if let Some(v) = opts.variant.filter(|&v| v == gpu.variant()) {
            let why = if v == KernelVariant::Coop {
                format!("FEWSTEP_KERNELS=coop: {}", gpu.variant_reason())
            } else {
                format!("FEWSTEP_KERNELS={}", v.name())
            };
            *gpu.0.variant_reason.borrow_mut() = why;
        } else if opts.gemm_tile.is_some() {
            *gpu.0.variant_reason.borrow_mut() = "FEWSTEP_GEMM_TILE is set".into();
        }
        if let Some(t) = opts.gemm_tile {
            gpu.set_gemm_tile(Some(t)).map_err(|e| {
                GpuError::Config(format!(
                    "FEWSTEP_GEMM_TILE={t} cannot run on '{}': {e}",
                    gpu.info().name
                ))
            })?;
        }
        gpu.0.split_k.set(opts.split_k);
        if let Some(r) = opts.pool_reuse {
            gpu.0.pool.set_reuse(r);
        }
        gpu.0.tune.set(opts.tunes(gpu.info()));
        Ok(gpu)
    }

    /// Native only: creates the device, blocking the calling thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Gpu, GpuError> {
        pollster::block_on(Self::new(opts))
    }

    /// Wraps a device somebody else created (the app's, shared with eframe's renderer), so that
    /// samples can be written straight into textures egui draws.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        want: Option<KernelVariant>,
    ) -> Gpu {
        Self::from_device_watched(device, queue, info, want, None)
    }

    /// [`Gpu::from_device`] for a device another `Gpu` already wraps: `watch` (that one's
    /// [`Gpu::fault_watch`]) is shared instead of installing new handlers, which would replace
    /// the first `Gpu`'s (a device has one uncaptured-error handler and one lost callback).
    pub fn from_device_watched(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        want: Option<KernelVariant>,
        watch: Option<FaultWatch>,
    ) -> Gpu {
        let gpu = Self::wrap_device(device, queue, info, watch);
        gpu.choose_family(want);
        gpu
    }

    /// The family a new device starts with: the one asked for where the device can run it,
    /// else the default for its adapter. Cooperative matrices wait for their self-check
    /// (`Gpu::new` settles them after this).
    fn choose_family(&self, want: Option<KernelVariant>) {
        let subgroups = self.has_subgroups();
        let (variant, reason) = match want {
            Some(KernelVariant::Subgroup) if !subgroups => (
                KernelVariant::Tiled,
                "subgroup kernels asked for, but the device has no fixed-size subgroups: tiled"
                    .into(),
            ),
            // Gpu::new settles it next (the self-check runs GEMMs).
            Some(KernelVariant::Coop) => (
                KernelVariant::Blocked,
                "cooperative matrices asked for, but this device was made without them: blocked"
                    .into(),
            ),
            Some(v) => (v, format!("asked for {}", v.name())),
            None => Self::default_variant(self.info(), subgroups),
        };
        self.0.variant.set(variant);
        *self.0.variant_reason.borrow_mut() = reason;
    }
}
