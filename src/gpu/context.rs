use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::batch::{Batch, Binding, Dispatch};
use super::pipelines::{KernelKey, KernelSource, PipelineCache};
use super::pool::{BufferPool, GpuBuffer, PoolReuse, PoolStats};
use super::readback;

/// Which family of GEMM kernels matmul and convolution use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVariant {
    /// Workgroup-memory tiles: portable; CPU adapters without fixed-size subgroups get it.
    Tiled,
    /// Rows of A shared across a subgroup with `subgroupBroadcast`; needs `Features::SUBGROUP` and
    /// a fixed subgroup size. On lavapipe ~5x faster than `Tiled` (ARCHITECTURE.md, Platforms).
    Subgroup,
    /// Register-blocked tiles for real GPUs (gemm_blocked.wgsl): each invocation keeps a TM x TN
    /// micro-tile in registers, the workgroup stages BK-deep slices of A (transposed) and B in
    /// workgroup memory and reads them as vec4s. Tile shape chosen per problem ([`GemmTile`]).
    /// f32 only, no subgroups: browsers can run it too.
    Blocked,
    /// Cooperative matrices (tensor cores, gemm_coop.wgsl): f16 operands, f32 accumulation, on
    /// adapters with wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX` (Vulkan's VK_KHR_cooperative_matrix;
    /// wgpu 30 also maps Metal's simdgroup matrices, never measured here) that pass fewstep's
    /// self-check (tensor/coop_check.rs); the blocked family runs where they fail it.
    Coop,
}

impl KernelVariant {
    /// The name FEWSTEP_KERNELS accepts.
    pub fn name(self) -> &'static str {
        match self {
            KernelVariant::Tiled => "tiled",
            KernelVariant::Subgroup => "subgroup",
            KernelVariant::Blocked => "blocked",
            KernelVariant::Coop => "coop",
        }
    }
}

impl std::str::FromStr for KernelVariant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiled" => Ok(KernelVariant::Tiled),
            "subgroup" => Ok(KernelVariant::Subgroup),
            "blocked" => Ok(KernelVariant::Blocked),
            "coop" => Ok(KernelVariant::Coop),
            _ => Err(format!(
                "FEWSTEP_KERNELS='{s}' is not a GEMM family: use tiled, subgroup, blocked or coop"
            )),
        }
    }
}

/// Tile shape of the blocked GEMM family: a workgroup computes BM x BN outputs, staging K in slices
/// of BK through workgroup memory; each of its (BM / TM) x (BN / TN) invocations computes TM x TN
/// outputs. Written and parsed (FEWSTEP_GEMM_TILE) as `BMxBNxBKxTMxTN`, e.g. `128x128x16x8x8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmTile {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

const GEMM_TILE_FORM: &str = "BMxBNxBKxTMxTN, five numbers joined by 'x' (e.g. 128x128x16x8x8 or \
    16x128x16x4x8): TM and TN 4 or 8, BM a multiple of TM, BN a multiple of TN, \
    T = (BM/TM)*(BN/TN) invocations a multiple of BK, BK*BM and BK*BN multiples of T, \
    and each of BM, BN a divisor or a multiple of T";

impl GemmTile {
    pub const fn new(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> Self {
        GemmTile { bm, bn, bk, tm, tn }
    }
    /// Invocations per workgroup.
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }
    /// Workgroup memory the tile stages per slice of K.
    pub fn workgroup_bytes(&self) -> u32 {
        self.bk * (self.bm + self.bn) * 4
    }
    /// Whether the blocked core can be generated for this shape (the staging loop's mapping of
    /// invocations to elements needs the divisibilities in the accepted form).
    pub fn check_shape(&self) -> Result<(), String> {
        let GemmTile { bm, bn, bk, tm, tn } = *self;
        let ok_micro = matches!(tm, 4 | 8) && matches!(tn, 4 | 8);
        if !ok_micro
            || bm == 0
            || bn == 0
            || bm % tm != 0
            || bn % tn != 0
            || !(1..=64).contains(&bk)
        {
            return Err(format!("tile {self} does not fit {GEMM_TILE_FORM}"));
        }
        let t = self.threads();
        let fits =
            |x: u32| (bk * x).is_multiple_of(t) && (t.is_multiple_of(x) || x.is_multiple_of(t));
        if !t.is_multiple_of(bk) || !fits(bm) || !fits(bn) {
            return Err(format!(
                "tile {self} ({t} invocations) does not fit {GEMM_TILE_FORM}"
            ));
        }
        Ok(())
    }
    /// [`Self::check_shape`] plus the device's workgroup limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<(), String> {
        self.check_shape()?;
        let t = self.threads();
        if t > limits.max_compute_invocations_per_workgroup
            || self.bn / self.tn > limits.max_compute_workgroup_size_x
            || self.bm / self.tm > limits.max_compute_workgroup_size_y
        {
            return Err(format!(
                "tile {self} needs {t} invocations per workgroup ({} x {}); this device allows {} \
                 (x up to {}, y up to {})",
                self.bn / self.tn,
                self.bm / self.tm,
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y
            ));
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            return Err(format!(
                "tile {self} needs {} bytes of workgroup memory (BK * (BM + BN) * 4); this device allows {}",
                self.workgroup_bytes(),
                limits.max_compute_workgroup_storage_size
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for GemmTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}x{}x{}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

impl std::str::FromStr for GemmTile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(['x', 'X']).collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
        let t = match nums.as_deref() {
            Some(&[bm, bn, bk, tm, tn]) => GemmTile::new(bm, bn, bk, tm, tn),
            _ => {
                return Err(format!(
                    "FEWSTEP_GEMM_TILE='{s}' is not a tile shape: expected {GEMM_TILE_FORM}"
                ))
            }
        };
        t.check_shape()
            .map_err(|e| format!("FEWSTEP_GEMM_TILE='{s}': {e}"))?;
        Ok(t)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found{backends}.\n  On Linux without a GPU, install Mesa's software Vulkan driver: \
         `apt-get install mesa-vulkan-drivers` (Debian 12: from bookworm-backports for Mesa 25, 2-4x faster).\n  \
         In a browser, WebGPU is needed: Chrome/Edge 113+, or Firefox/Safari with WebGPU enabled.\n  \
         FEWSTEP_BACKEND (vulkan, metal, dx12, gl, webgpu) and FEWSTEP_ADAPTER (part of an adapter's name) choose one."
    )]
    NoAdapter { backends: String },
    #[error("the adapter '{adapter}' refused to create a device: {source}")]
    DeviceRequest {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),
    #[error("{0}")]
    Config(String),
    #[error(
        "the GPU device '{adapter}' was lost ({message}).\n  Work since the last checkpoint is gone; \
         files already written are intact, and a run resumes from its last checkpoint.\n  \
         Try: run again (a driver reset is often transient); a smaller --batch if memory ran out; \
         another adapter with FEWSTEP_BACKEND (vulkan, metal, dx12, gl) or FEWSTEP_ADAPTER (part of \
         its name; `fewstep info` lists them)."
    )]
    Lost { adapter: String, message: String },
    #[error(
        "kernel `{kernel}` could not be built on '{adapter}': {message}\n  This is a bug in \
         fewstep or the driver; please report it with `fewstep info`'s output. \
         FEWSTEP_KERNELS=tiled selects the portable GEMM family; FEWSTEP_BACKEND or \
         FEWSTEP_ADAPTER another adapter."
    )]
    Kernel {
        kernel: String,
        adapter: String,
        message: String,
    },
    #[error(
        "the GPU '{adapter}' reported an error: {message}\n  If it ran out of memory, try a \
         smaller --batch (or --count); otherwise FEWSTEP_BACKEND or FEWSTEP_ADAPTER chooses \
         another adapter. Files already written are intact."
    )]
    Device { adapter: String, message: String },
}

/// What went wrong on the device outside the calls that return a `Result`: the first
/// uncaptured error, a kernel that failed to build, or the loss of the device. Set by wgpu's
/// callbacks (any thread) and by the pipeline cache; reported by the next readback or
/// [`Gpu::finish`], and by [`Gpu::fault`].
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    Lost(String),
    Kernel { kernel: String, message: String },
    Device(String),
}

/// Shared with wgpu's callbacks, hence `Arc<Mutex>` (they must be `Send + Sync`).
pub(crate) type FaultSlot = std::sync::Arc<std::sync::Mutex<Option<Fault>>>;

/// A handle on a device's first fault that can be kept apart from the `Gpu` (it is `Send`):
/// the app polls it every frame, and every `Gpu` made on one device shares one.
#[derive(Clone)]
pub struct FaultWatch {
    slot: FaultSlot,
    adapter: String,
}

impl FaultWatch {
    /// The device's first fault as an error, if any (see [`Gpu::fault`]).
    pub fn error(&self) -> Option<GpuError> {
        let f = self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let adapter = self.adapter.clone();
        Some(match f? {
            Fault::Lost(message) => GpuError::Lost { adapter, message },
            Fault::Kernel { kernel, message } => GpuError::Kernel {
                kernel,
                adapter,
                message,
            },
            Fault::Device(message) => GpuError::Device { adapter, message },
        })
    }
}

/// Records `f` unless an earlier fault is already recorded (the first one is the cause), except
/// that a lost device replaces the errors that its loss caused (they may be reported first:
/// wgpu calls the device-lost callback at the next poll).
pub(crate) fn record_fault(slot: &FaultSlot, f: Fault) {
    let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
    let lost_now = matches!(f, Fault::Lost(_)) && !matches!(*g, Some(Fault::Lost(_)));
    if g.is_none() || lost_now {
        log::error!("GPU fault: {f:?}");
        *g = Some(f);
    }
}

/// How the convolution weight gradient (a small M x N output over a long K: every pixel of every
/// image) is split along K: into enough chunks for about `workgroups` workgroups, each chunk at
/// least `min_chunk` long. Written and parsed (FEWSTEP_SPLIT_K) as `WORKGROUPS/MIN_CHUNK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitK {
    pub workgroups: u32,
    pub min_chunk: u32,
}

impl std::fmt::Display for SplitK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.workgroups, self.min_chunk)
    }
}

impl std::str::FromStr for SplitK {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("FEWSTEP_SPLIT_K='{s}' is not WORKGROUPS/MIN_CHUNK (e.g. 2048/256), both whole numbers >= 1")
        };
        let (w, c) = s.split_once('/').ok_or_else(bad)?;
        let w: u32 = w.trim().parse().map_err(|_| bad())?;
        let c: u32 = c.trim().parse().map_err(|_| bad())?;
        if w == 0 || c == 0 {
            return Err(bad());
        }
        Ok(SplitK {
            workgroups: w,
            min_chunk: c,
        })
    }
}

/// What the GEMMs' operands may be rounded to (`--precision`, FEWSTEP_PRECISION).
///
/// The default is f32: the same numbers from the command line, the desktop app and the browser
/// on every adapter, and the cooperative-matrix family's speed has not been measured on any
/// GPU yet (only its correctness, on Mesa's lavapipe). Mixed is asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f16 operands with f32 accumulation where the adapter has cooperative matrices that pass
    /// fewstep's self-check; f32 elsewhere.
    Mixed,
    /// f32 everywhere: the cooperative-matrix family is never used.
    #[default]
    F32,
}

impl Precision {
    /// Whether this is the default (f32): what runs and model files leave unwritten.
    pub fn is_default(&self) -> bool {
        *self == Precision::F32
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::Mixed => "mixed",
            Precision::F32 => "f32",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "mixed" | "f16" => Ok(Precision::Mixed),
            _ => Err(format!(
                "'{s}' is not a precision: use f32 (f32 everywhere, the default) or mixed (f16 \
                 GEMM operands on cooperative matrices where the adapter has them)"
            )),
        }
    }
}

/// How to pick the adapter. `from_env` reads FEWSTEP_BACKEND, FEWSTEP_ADAPTER, FEWSTEP_KERNELS
/// (tiled, subgroup or blocked) and FEWSTEP_GEMM_TILE (BMxBNxBKxTMxTN: one tile shape for every
/// GEMM of the blocked family, which it then selects unless FEWSTEP_KERNELS names another).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backends: Option<wgpu::Backends>,
    /// Substring (case-insensitive) of the adapter name to require.
    pub adapter_name: Option<String>,
    /// Force a GEMM family (for tests and benchmarks); `None` picks the fastest available.
    pub variant: Option<KernelVariant>,
    /// Force one tile shape for every GEMM of the blocked family (benchmarks); `None` picks one
    /// per problem.
    pub gemm_tile: Option<GemmTile>,
    /// Force the weight gradient's split along K (benchmarks); `None` uses the family's rule.
    pub split_k: Option<SplitK>,
    /// Whether launches reuse buffers given back in the same batch (gpu/pool.rs).
    pub pool_reuse: Option<PoolReuse>,
    /// `--precision` or FEWSTEP_PRECISION (`None`: f32, the default; FEWSTEP_KERNELS=coop
    /// asks for mixed).
    pub precision: Option<Precision>,
    /// FEWSTEP_TEST_COOP_FAULT=1: the cooperative-matrix self-check runs a kernel that reads B
    /// column-major (tests prove that the check then fails and the blocked family runs).
    pub coop_fault: bool,
    /// FEWSTEP_TUNE=on|off: whether GEMMs are timed on this adapter and the fastest kept
    /// (`None`: [`Self::tune_by_default`] on GPUs).
    pub tune: Option<bool>,
    /// Whether GPUs tune without FEWSTEP_TUNE: the command line and the app ([`Self::for_runs`]);
    /// not the library.
    pub tune_by_default: bool,
    /// Environment values that could not be parsed: [`Gpu::new`] refuses to start with them.
    env_errors: Vec<String>,
}

/// `--precision` as the command line gave it: every device this process opens from the
/// environment ([`GpuOptions::from_env`]) takes it over FEWSTEP_PRECISION.
static PRECISION_FLAG: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();

/// Records the command line's `--precision` for the devices this process opens (once).
pub fn set_precision_flag(p: Precision) {
    let _ = PRECISION_FLAG.set(p);
}

/// The precision the user asked for: `--precision`, else FEWSTEP_PRECISION (None: neither).
pub fn asked_precision() -> Option<Precision> {
    GpuOptions::from_env().precision
}

impl GpuOptions {
    /// The precision these options ask for: `precision`, else mixed where FEWSTEP_KERNELS=coop,
    /// else f32.
    pub fn effective_precision(&self) -> Precision {
        match (self.precision, self.variant) {
            (Some(p), _) => p,
            (None, Some(KernelVariant::Coop)) => Precision::Mixed,
            (None, _) => Precision::F32,
        }
    }

    /// [`Self::from_env`] for the command line and the app: GEMMs are tuned on GPUs unless
    /// FEWSTEP_TUNE=off (or a family, tile or split is forced). CPU adapters keep the rule
    /// measured on lavapipe unless FEWSTEP_TUNE=on: compiling every candidate kernel costs
    /// minutes there the first time (BENCHMARKS.md).
    pub fn for_runs() -> Self {
        let mut o = Self::from_env();
        o.tune_by_default = !cfg!(target_arch = "wasm32");
        o
    }

    /// Whether a device on an adapter like `info` opened with these options tunes its GEMMs:
    /// asked for (or by default on a GPU), and no family, tile or split forced.
    pub fn tunes(&self, info: &wgpu::AdapterInfo) -> bool {
        let default = self.tune_by_default && info.device_type != wgpu::DeviceType::Cpu;
        self.tune.unwrap_or(default)
            && self.variant.is_none()
            && self.gemm_tile.is_none()
            && self.split_k.is_none()
    }

    pub fn from_env() -> Self {
        let var = |k: &str| {
            #[cfg(not(target_arch = "wasm32"))]
            {
                std::env::var(k).ok().filter(|s| !s.is_empty())
            }
            #[cfg(target_arch = "wasm32")]
            {
                let _ = k;
                None::<String>
            }
        };
        fn parse<T: std::str::FromStr<Err = String>>(
            value: Option<String>,
            errors: &mut Vec<String>,
        ) -> Option<T> {
            value.and_then(|s| s.parse().map_err(|e| errors.push(e)).ok())
        }
        let mut env_errors = Vec::new();
        let variant = parse(var("FEWSTEP_KERNELS"), &mut env_errors);
        let gemm_tile = parse(var("FEWSTEP_GEMM_TILE"), &mut env_errors);
        let split_k = parse(var("FEWSTEP_SPLIT_K"), &mut env_errors);
        let pool_reuse = parse(var("FEWSTEP_POOL_REUSE"), &mut env_errors);
        let tune = var("FEWSTEP_TUNE").and_then(|v| match v.as_str() {
            "on" | "1" => Some(true),
            "off" | "0" => Some(false),
            _ => {
                env_errors.push(format!(
                    "FEWSTEP_TUNE='{v}': give on (time the GEMM kernels on this adapter and keep \
                     the fastest) or off (the fixed rule), or unset it"
                ));
                None
            }
        });
        let precision = PRECISION_FLAG
            .get()
            .copied()
            .or_else(|| parse(var("FEWSTEP_PRECISION"), &mut env_errors));
        let backends = var("FEWSTEP_BACKEND")
            .and_then(|s| parse_backends(&s).map_err(|e| env_errors.push(e)).ok());
        if precision == Some(Precision::F32) && variant == Some(KernelVariant::Coop) {
            env_errors.push(
                "FEWSTEP_KERNELS=coop runs f16 operands, precision f32 (--precision or \
                 FEWSTEP_PRECISION) forbids them: drop one"
                    .into(),
            );
        }
        GpuOptions {
            backends,
            adapter_name: var("FEWSTEP_ADAPTER"),
            variant,
            gemm_tile,
            split_k,
            pool_reuse,
            precision,
            coop_fault: var("FEWSTEP_TEST_COOP_FAULT").is_some_and(|v| v == "1"),
            tune,
            tune_by_default: false,
            env_errors,
        }
    }
}

/// FEWSTEP_BACKEND: comma-separated backend names, each one wgpu knows (an unknown name would
/// otherwise choose no backend at all and end in "no GPU adapter found").
fn parse_backends(text: &str) -> Result<wgpu::Backends, String> {
    const NAMES: &str = "vulkan, metal, dx12, gl, webgpu (comma separated)";
    let mut all = wgpu::Backends::empty();
    for word in text.split(',').map(str::trim) {
        let b = wgpu::Backends::from_comma_list(word);
        if word.is_empty() || b.is_empty() {
            return Err(format!(
                "FEWSTEP_BACKEND='{text}': '{word}' is no backend; give {NAMES}, or unset it"
            ));
        }
        all |= b;
    }
    Ok(all)
}

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
    /// Creates the device (async: the only way on the web; natively see [`Gpu::new_blocking`]).
    pub async fn new(opts: GpuOptions) -> Result<Gpu, GpuError> {
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
            Self::pick_adapter(&instance, &opts)
                .await
                .map_err(|why| GpuError::NoAdapter {
                    backends: format!("{backends_text}: {why}"),
                })?;
        let info = adapter.get_info();
        let mut features = Self::wanted_features(&adapter);
        let mixed = opts.effective_precision() == Precision::Mixed;
        let coop = if !mixed {
            Err(match opts.precision {
                Some(Precision::F32) => "precision f32 was asked for".to_string(),
                _ => "precision f32 is the default; --precision mixed asks for them".to_string(),
            })
        } else {
            Self::coop_config(&adapter, features)
        };
        if coop.is_ok() {
            features |= Self::COOP_FEATURES;
        }
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
        // A forced tile shape only means something to the blocked family: it selects it.
        let want = opts
            .variant
            .or(opts.gemm_tile.map(|_| KernelVariant::Blocked));
        let gpu = Self::from_device(device, queue, info, want);
        gpu.0.coop_fault.set(opts.coop_fault);
        match coop {
            Ok(sizes) => gpu.0.coop.set(Some(sizes)),
            Err(why) => *gpu.0.coop_absent.borrow_mut() = why,
        }
        // The family from_device chose knew nothing of cooperative matrices: mixed precision
        // takes them where the adapter has them (after the self-check).
        if want == Some(KernelVariant::Coop) || (want.is_none() && gpu.0.coop.get().is_some()) {
            gpu.settle_coop();
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

    /// The features fewstep asks for on `adapter`: subgroups where the size is fixed (the fast
    /// GEMM family) and timestamp queries. The app passes these to eframe so that its device and
    /// the engine's are one.
    pub fn wanted_features(adapter: &wgpu::Adapter) -> wgpu::Features {
        let info = adapter.get_info();
        let mut features = wgpu::Features::empty();
        let fixed_subgroup =
            info.subgroup_min_size == info.subgroup_max_size && info.subgroup_min_size >= 4;
        if adapter.features().contains(wgpu::Features::SUBGROUP) && fixed_subgroup {
            features |= wgpu::Features::SUBGROUP;
        }
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        features
    }

    /// What the cooperative-matrix family needs of a device.
    const COOP_FEATURES: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        .union(wgpu::Features::SHADER_F16)
        .union(wgpu::Features::SUBGROUP);

    /// (S, subgroup size) of the adapter's smallest square f16 x f16 -> f32 cooperative-matrix
    /// configuration, or why it has none usable. `wanted` are the features already chosen
    /// (subgroups only where their size is fixed: the core's work split assumes it).
    fn coop_config(adapter: &wgpu::Adapter, wanted: wgpu::Features) -> Result<(u32, u32), String> {
        let has = adapter.features();
        if !has.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            return Err(
                "the adapter offers no cooperative matrices (wgpu 30 offers them on \
                        Vulkan drivers with VK_KHR_cooperative_matrix and on Metal's simdgroup \
                        matrices, Apple7 GPUs and later; DX12 and WebGPU have none)"
                    .into(),
            );
        }
        if !has.contains(wgpu::Features::SHADER_F16) {
            return Err("the adapter has no f16 in shaders".into());
        }
        if !wanted.contains(wgpu::Features::SUBGROUP) {
            return Err("the adapter has no fixed subgroup size".into());
        }
        let info = adapter.get_info();
        adapter
            .cooperative_matrix_properties()
            .iter()
            .filter(|p| {
                p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
                    && p.m_size == p.n_size
                    && p.n_size == p.k_size
                    && p.m_size >= 8
            })
            .map(|p| p.m_size)
            .min()
            .map(|s| (s, info.subgroup_min_size))
            .ok_or_else(|| "the adapter lists no square f16 x f16 -> f32 cooperative matrix".into())
    }

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
        let verdict =
            known.unwrap_or_else(|| self.check_coop(s, sg, crate::tensor::coop_check::Cached::Use));
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
    fn check_coop(
        &self,
        s: u32,
        sg: u32,
        cached: crate::tensor::coop_check::Cached,
    ) -> Result<(), String> {
        let clean = self.fault().is_ok();
        let v = crate::tensor::coop_check::verdict(self, s, sg, self.0.coop_fault.get(), cached);
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
        let passed = self
            .check_coop(s, sg, crate::tensor::coop_check::Cached::Ignore)
            .is_ok();
        if self.variant() == KernelVariant::Coop {
            self.settle_coop();
        }
        passed
    }

    /// A cooperative-matrix kernel that a driver refuses to build records a kernel fault, which
    /// would fail every later readback: the self-check's failure is its verdict instead, so such
    /// a fault (and whatever the check left recorded) is dropped. Other faults stay.
    fn forget_coop_kernel_fault(&self) {
        let mut g = self.0.fault.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Fault::Kernel { kernel, .. }) = &*g {
            if kernel.contains(" S=") {
                *g = None;
            }
        }
        drop(g);
        self.discard_pending();
    }

    /// (S, subgroup size) of the cooperative matrices this device has, if any.
    pub fn coop_sizes(&self) -> Option<(u32, u32)> {
        self.0.coop.get()
    }

    /// The self-check's verdict, if it ran.
    pub fn coop_verdict(&self) -> Option<Result<(), String>> {
        self.0.coop_verdict.borrow().clone()
    }

    /// Why this device has no cooperative matrices ("" where it has them).
    pub fn coop_absent(&self) -> String {
        self.0.coop_absent.borrow().clone()
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
        let features = device.features();
        let limits = device.limits();
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        let (variant, reason) = match want {
            Some(KernelVariant::Subgroup) if !subgroups => (
                KernelVariant::Tiled,
                "subgroup kernels asked for, but the device has no fixed-size subgroups: tiled"
                    .into(),
            ),
            // Gpu::new settles it after wrapping the device (the self-check runs GEMMs).
            Some(KernelVariant::Coop) => (
                KernelVariant::Blocked,
                "cooperative matrices asked for, but this device was made without them: blocked"
                    .into(),
            ),
            Some(v) => (v, format!("asked for {}", v.name())),
            None => Self::default_variant(&info, subgroups),
        };
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
            variant: Cell::new(variant),
            variant_reason: RefCell::new(reason),
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

    /// The GEMM family used when none is asked for, and why: CPU adapters (lavapipe) run the
    /// subgroup family where they have fixed-size subgroups (2-3x faster there than the others,
    /// ARCHITECTURE.md, Platforms), else tiled; GPUs and browsers run the register-blocked family.
    fn default_variant(info: &wgpu::AdapterInfo, subgroups: bool) -> (KernelVariant, String) {
        let browser = cfg!(target_arch = "wasm32") || info.backend == wgpu::Backend::BrowserWebGpu;
        match info.device_type {
            wgpu::DeviceType::Cpu if !browser && subgroups => (
                KernelVariant::Subgroup,
                "CPU adapter with fixed-size subgroups: subgroupBroadcast beats workgroup memory there".into(),
            ),
            wgpu::DeviceType::Cpu if !browser => (
                KernelVariant::Tiled,
                "CPU adapter without fixed-size subgroups".into(),
            ),
            t => (
                KernelVariant::Blocked,
                format!(
                    "{} ({t:?}): register-blocked tiles for real GPUs",
                    if browser { "browser WebGPU" } else { "GPU adapter" }
                ),
            ),
        }
    }

    /// The adapter to use; when none fits, what was asked for and what there is, in words.
    async fn pick_adapter(
        instance: &wgpu::Instance,
        opts: &GpuOptions,
    ) -> Result<wgpu::Adapter, String> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(name) = &opts.adapter_name {
            let want = name.to_lowercase();
            let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
            let seen: Vec<String> = all
                .iter()
                .map(|a| {
                    let i = a.get_info();
                    format!("'{}' ({:?})", i.name, i.backend)
                })
                .collect();
            return all
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .ok_or_else(|| {
                    format!(
                        "FEWSTEP_ADAPTER='{name}' is part of no adapter's name here (the \
                         adapters: {}); give part of one of those names, or unset it",
                        if seen.is_empty() {
                            "none".to_string()
                        } else {
                            seen.join(", ")
                        }
                    )
                });
        }
        let _ = opts;
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Native only: creates the device, blocking the calling thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Gpu, GpuError> {
        pollster::block_on(Self::new(opts))
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
    pub fn variant(&self) -> KernelVariant {
        self.0.variant.get()
    }
    /// The precision this device computes in: mixed while the cooperative-matrix family runs,
    /// else f32.
    pub fn precision(&self) -> Precision {
        if self.variant() == KernelVariant::Coop {
            Precision::Mixed
        } else {
            Precision::F32
        }
    }
    /// Switches the GEMM family; falls back to `Tiled` where subgroups are unavailable, and to
    /// `Blocked` where cooperative matrices are absent or fail their self-check.
    pub fn set_variant(&self, v: KernelVariant) -> KernelVariant {
        if v == KernelVariant::Coop {
            self.settle_coop();
            return self.variant();
        }
        let v = if v == KernelVariant::Subgroup && !self.has_subgroups() {
            KernelVariant::Tiled
        } else {
            v
        };
        if v != self.0.variant.get() {
            *self.0.variant_reason.borrow_mut() = format!("set to {} by the program", v.name());
        }
        self.0.variant.set(v);
        self.0.tune.set(false);
        v
    }
    /// Why the current GEMM family runs.
    pub fn variant_reason(&self) -> String {
        self.0.variant_reason.borrow().clone()
    }
    /// Forces one tile shape for every GEMM of the blocked family (`None`: chosen per problem).
    /// Refused (with the reason) when the shape is malformed or over this device's limits.
    pub fn set_gemm_tile(&self, tile: Option<GemmTile>) -> Result<(), String> {
        if let Some(t) = tile {
            t.check(&self.0.limits)?;
            self.0.tune.set(false);
        }
        self.0.gemm_tile.set(tile);
        Ok(())
    }
    /// The forced softmax layout, if any (`tensor::kernel_policy` decides otherwise).
    pub fn softmax_override(&self) -> Option<bool> {
        self.0.softmax_rows.get()
    }
    /// The forced split of the weight gradient along K, if any.
    pub fn split_k_override(&self) -> Option<SplitK> {
        self.0.split_k.get()
    }
    /// Forces the softmax layout (tests run both on one adapter); `None`: by adapter type.
    pub fn set_softmax_row_per_invocation(&self, v: Option<bool>) {
        self.0.softmax_rows.set(v);
    }
    /// Forces the weight gradient's split along K (`None`: the family's rule).
    pub fn set_split_k(&self, rule: Option<SplitK>) {
        if rule.is_some() {
            self.0.tune.set(false);
        }
        self.0.split_k.set(rule);
    }
    /// Records the family and tile of a GEMM being launched (read back by [`Self::last_gemm`]).
    pub(crate) fn note_gemm(
        &self,
        v: KernelVariant,
        (bm, bn, bk, tm, tn): (u32, u32, u32, u32, u32),
    ) {
        self.0
            .last_gemm
            .set(Some((v, GemmTile::new(bm, bn, bk, tm, tn))));
    }
    /// The forced tile shape of the blocked family, if any.
    pub fn gemm_tile(&self) -> Option<GemmTile> {
        self.0.gemm_tile.get()
    }
    /// The family and tile shape of the last GEMM recorded (tiled and subgroup kernels are shown
    /// in the same notation: BM x BN outputs per workgroup, per-invocation TM x TN).
    pub fn last_gemm(&self) -> Option<(KernelVariant, GemmTile)> {
        self.0.last_gemm.get()
    }
    pub fn has_subgroups(&self) -> bool {
        self.0.features.contains(wgpu::Features::SUBGROUP)
    }
    pub fn subgroup_size(&self) -> u32 {
        self.0.info.subgroup_min_size
    }

    /// A multi-line description for `fewstep info`.
    pub fn describe(&self) -> String {
        let i = &self.0.info;
        let l = &self.0.limits;
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(s, "adapter:   {} ({:?})", i.name, i.device_type);
        let _ = writeln!(s, "backend:   {:?}", i.backend);
        let _ = writeln!(s, "driver:    {} {}", i.driver, i.driver_info);
        let _ = writeln!(
            s,
            "vendor:    0x{:04x}  device: 0x{:04x}",
            i.vendor, i.device
        );
        let _ = writeln!(s, "features:  {:?}", self.0.features);
        let _ = writeln!(
            s,
            "subgroups: size {}..{}",
            i.subgroup_min_size, i.subgroup_max_size
        );
        let _ = writeln!(
            s,
            "limits:    storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations/workgroup {}, \
             workgroups/dim {}, storage buffers/stage {}, uniform binding {} KiB",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
            l.max_uniform_buffer_binding_size >> 10,
        );
        s
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
    fn poll_callbacks(&self) {
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
