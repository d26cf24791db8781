//! The GEMM cores a launch can use, each with its specialisation: what the rule, the tuner and
//! the kernels' text all speak of (a leaf beside the tile types, so none of them import each
//! other for it).

use super::gemm_coop::CoopTile;
use crate::gpu::GemmTile;

/// Rows per subgroup workgroup: a multiple of the subgroup size, at least 32.
pub(crate) fn subgroup_rows(sg: u32) -> u32 {
    sg.max(32)
}

/// One GEMM core with its specialisation: what a launch's family and tile choice come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmCore {
    /// gemm_tiled.wgsl: 64x64 outputs per workgroup.
    Tiled,
    /// gemm_subgroup.wgsl for subgroups of `sg` lanes.
    Subgroup { sg: u32 },
    /// gemm_blocked.wgsl for one tile shape.
    Blocked(GemmTile),
    /// gemm_coop.wgsl (cooperative matrices, f16 operands) for one tile.
    Coop(CoopTile),
}

impl GemmCore {
    /// (BM, BN, BK, TM, TN): outputs per workgroup and per invocation, in the blocked
    /// family's notation (the tiled and subgroup cores shown the same way).
    pub(crate) fn tile(self) -> (u32, u32, u32, u32, u32) {
        match self {
            GemmCore::Tiled => (64, 64, 16, 4, 4),
            GemmCore::Subgroup { sg } => (subgroup_rows(sg), sg * 4, 1, subgroup_rows(sg), 4),
            GemmCore::Blocked(t) => (t.bm, t.bn, t.bk, t.tm, t.tn),
            GemmCore::Coop(t) => (t.bm(), t.bn(), t.bk, t.fm * t.s, t.fn_ * t.s),
        }
    }
}
