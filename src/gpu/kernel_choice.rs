//! What the options can force about the GEMMs (the family, the blocked tile, the weight
//! gradient's split of K) and the precision they may compute in: plain values, written and
//! parsed as the environment gives them.

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
