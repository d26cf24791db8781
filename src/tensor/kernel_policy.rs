//! Kernel policy: which tile, split and layout a launch uses on this adapter. The device layer
//! (gpu/) knows what the adapter can run, which GEMM family it defaults to (a property of the
//! adapter: `Gpu::from_device`) and what the user forced (`FEWSTEP_GEMM_TILE`, `FEWSTEP_SPLIT_K`,
//! tests' overrides); the choices per problem live here, next to the kernels they tune.

use super::gemm_core::GemmCore;
use crate::gpu::{GemmTile, Gpu, KernelVariant, SplitK};

/// The blocked family's candidate tiles by M (up to this many rows: these tiles, in order of
/// preference); see [`blocked_tile`].
const TILE_RULE: [(u32, &[GemmTile]); 4] = {
    const fn g(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> GemmTile {
        GemmTile::new(bm, bn, bk, tm, tn)
    }
    [
        (16, &[g(16, 128, 16, 4, 8), g(16, 64, 16, 4, 4)]),
        (32, &[g(32, 128, 16, 4, 8), g(32, 64, 16, 4, 4)]),
        (64, &[g(64, 128, 16, 4, 8), g(64, 64, 16, 4, 4)]),
        (
            u32::MAX,
            &[
                g(128, 128, 16, 8, 8),
                g(128, 64, 16, 8, 8),
                g(64, 64, 16, 4, 4),
            ],
        ),
    ]
};

/// Every tile [`blocked_tile`]'s rule can pick (the kernel registry covers them all).
pub fn blocked_tile_rule() -> Vec<GemmTile> {
    let mut out: Vec<GemmTile> = Vec::new();
    for t in TILE_RULE.iter().flat_map(|(_, l)| l.iter()) {
        if !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// The blocked tiles worth timing for M rows: the rule's tiles for M and for the next smaller
/// row class (a tile with fewer rows can win when more workgroups fill the device better).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn blocked_tile_candidates(m: u32) -> Vec<GemmTile> {
    let row = TILE_RULE
        .iter()
        .position(|(rows, _)| m <= *rows)
        .unwrap_or(TILE_RULE.len() - 1);
    let mut out: Vec<GemmTile> = Vec::new();
    for (_, list) in &TILE_RULE[row.saturating_sub(1)..=row] {
        for t in list.iter() {
            if !out.contains(t) {
                out.push(*t);
            }
        }
    }
    out
}

/// The blocked family's tile shape for an M x N output (times `batch` independent ones): the
/// forced one if set, else by M: <= 16 rows 16x128 (or 16x64), <= 32 rows 32x128 (32x64),
/// <= 64 rows 64x128 (64x64), more 128x128 (128x64, 64x64): the first of these that gives at
/// least 256 workgroups (enough to fill a large GPU), else the last, among those the device
/// allows. Small-M problems (the 16-channel convolutions of `tiny`) thus never idle half a tile.
pub fn blocked_tile(gpu: &Gpu, m: u32, n: u32, batch: u32) -> GemmTile {
    if let Some(t) = gpu.gemm_tile() {
        return t;
    }
    const TARGET_WORKGROUPS: u32 = 256;
    let list: &[GemmTile] = TILE_RULE
        .iter()
        .find(|(rows, _)| m <= *rows)
        .map_or(&[], |(_, l)| l);
    // Called per launch: iterate the candidates, no allocation.
    let limits = gpu.limits();
    let fits = || list.iter().copied().filter(|t| t.check(limits).is_ok());
    let count = |t: &GemmTile| m.div_ceil(t.bm) * n.div_ceil(t.bn) * batch.max(1);
    fits()
        .find(|t| count(t) >= TARGET_WORKGROUPS)
        .or_else(|| fits().next_back())
        .unwrap_or(GemmTile::new(16, 64, 16, 4, 4))
}

/// The GEMM core an M x N output (times `batch` independent ones) runs on: the device's family,
/// and for the blocked family its tile ([`blocked_tile`]).
pub(crate) fn gemm_core(gpu: &Gpu, m: u32, n: u32, batch: u32) -> GemmCore {
    match gpu.variant() {
        KernelVariant::Tiled => GemmCore::Tiled,
        KernelVariant::Subgroup => GemmCore::Subgroup {
            sg: gpu.subgroup_size(),
        },
        KernelVariant::Blocked => GemmCore::Blocked(blocked_tile(gpu, m, n, batch)),
        KernelVariant::Coop => {
            // Gpu::settle_coop selects the family only where the sizes are known.
            let (s, sg) = gpu
                .coop_sizes()
                .expect("the coop family runs with cooperative matrices");
            GemmCore::Coop(super::gemm_coop::coop_tile(s, sg, m, n, batch))
        }
    }
}

/// How the weight gradient splits K: the forced rule if set, else per family. The blocked
/// family (real GPUs) aims for 2048 workgroups of chunks >= 256: on an H100 a `tiny`
/// weight gradient had ~150 workgroups of 64 threads and spent 4 us per K step waiting on
/// memory (BENCHMARKS.md). The others keep 512 workgroups of chunks >= 1024 (on CPU
/// adapters more chunks only add partial sums to add up).
pub fn split_k(gpu: &Gpu) -> SplitK {
    gpu.split_k_override().unwrap_or(match gpu.variant() {
        KernelVariant::Blocked | KernelVariant::Coop => SplitK {
            workgroups: 2048,
            min_chunk: 256,
        },
        _ => SplitK {
            workgroups: 512,
            min_chunk: 1024,
        },
    })
}

/// How many K chunks the weight gradient (M x N, K long) is split into on `core`: about the
/// rule's workgroups (enough to fill a large GPU, [`split_k`]), chunks no shorter than its
/// minimum.
pub(crate) fn split_k_parts(gpu: &Gpu, core: GemmCore, m: u32, n: u32, k: u32) -> u32 {
    let (bm, bn, ..) = core.tile();
    let tiles = m.div_ceil(bm) * n.div_ceil(bn);
    let rule = split_k(gpu);
    k.div_ceil(rule.min_chunk)
        .min(rule.workgroups.div_ceil(tiles))
        .max(1)
}

/// Whether row softmax runs a row per invocation (no barriers: CPU adapters, where a
/// workgroup barrier costs more than a 196-long row) rather than per workgroup (GPUs).
pub fn softmax_row_per_invocation(gpu: &Gpu) -> bool {
    gpu.softmax_override()
        .unwrap_or(gpu.info().device_type == wgpu::DeviceType::Cpu)
}

/// One line: the GEMM family, why, and the tile rule (`fewstep info`, `bench kernels`).
pub fn describe_gemm(gpu: &Gpu) -> String {
    let v = gpu.variant();
    let tiles = match (v, gpu.gemm_tile()) {
        (KernelVariant::Blocked, Some(t)) => format!("tile {t} forced for every GEMM"),
        (KernelVariant::Blocked, None) => "tile BMxBNxBKxTMxTN chosen per problem".into(),
        (KernelVariant::Tiled, _) => "tile 64x64x16x4x4".into(),
        (KernelVariant::Subgroup, _) => {
            let sg = gpu.subgroup_size();
            format!("{} rows x {} columns per subgroup", sg.max(32), sg * 4)
        }
        (KernelVariant::Coop, _) => match gpu.coop_sizes() {
            Some((s, sg)) => format!(
                "{s}x{s}x{s} f16 x f16 -> f32 matrices, subgroups of {sg}; operands rounded to \
                 f16 while staged, f32 accumulation and epilogue; tile chosen per problem from {}",
                super::gemm_coop::coop_tile_rule(s, sg)
                    .iter()
                    .map(|t| format!("{}x{}", t.bm(), t.bn()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        },
    };
    let rule = split_k(gpu);
    format!(
        "{} ({}; {tiles}; weight gradient split along K for ~{} workgroups, chunks >= {})",
        v.name(),
        gpu.variant_reason(),
        rule.workgroups,
        rule.min_chunk
    )
}

/// One line: what the GEMMs' operands are rounded to, and where cooperative matrices stand
/// (`fewstep info`, `bench kernels`).
pub fn describe_precision(gpu: &Gpu) -> String {
    match (gpu.variant(), gpu.coop_sizes(), gpu.coop_verdict()) {
        (KernelVariant::Coop, Some((s, _)), _) => format!(
            "mixed: GEMM operands rounded to f16 (gradient operands first scaled by a power of 2), \
             f32 accumulation on {s}x{s} cooperative matrices; everything else f32 \
             (--precision f32, the default, keeps f32 everywhere)"
        ),
        (_, Some(_), Some(Err(why))) => {
            format!("f32 everywhere (cooperative matrices failed the self-check: {why})")
        }
        (_, Some((s, _)), _) => format!(
            "f32 everywhere ({s}x{s} cooperative matrices available, the family set aside by the \
             program)"
        ),
        (_, None, _) => format!(
            "f32 everywhere (no cooperative matrices: {})",
            gpu.coop_absent()
        ),
    }
}
