//! How to open a device: `GpuOptions` from the environment and the command line.

use super::{GemmTile, KernelVariant, PoolReuse, Precision, SplitK};

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
    /// FEWSTEP_TEST_COOP_FAULT=lose: the device is lost as the self-check starts (tests prove
    /// that a fresh device without cooperative matrices is opened, with the reason).
    pub coop_lose: bool,
    /// Why cooperative matrices are not asked for although mixed precision is: the device
    /// opened first lost them during their self-check (set by [`super::Gpu::new`]).
    pub(crate) coop_lost: Option<String>,
    /// FEWSTEP_TUNE=on|off: whether GEMMs are timed on this adapter and the fastest kept
    /// (`None`: [`Self::tune_by_default`] on GPUs).
    pub tune: Option<bool>,
    /// Whether GPUs tune without FEWSTEP_TUNE: the command line and the app ([`Self::for_runs`]);
    /// not the library.
    pub tune_by_default: bool,
    /// Environment values that could not be parsed: [`Gpu::new`] refuses to start with them.
    pub(super) env_errors: Vec<String>,
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

    /// [`Self::from_env`] for the command line, the app and the page: GEMMs are tuned on GPUs
    /// unless FEWSTEP_TUNE=off (`tune=off` in the page's address), or a family, tile or split is
    /// forced. CPU adapters (lavapipe, a browser's software fallback) keep the rule measured on
    /// lavapipe unless asked: compiling every candidate kernel costs minutes there the first
    /// time (BENCHMARKS.md).
    pub fn for_runs() -> Self {
        let mut o = Self::from_env();
        o.tune_by_default = true;
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
            coop_lose: var("FEWSTEP_TEST_COOP_FAULT").is_some_and(|v| v == "lose"),
            coop_lost: None,
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
