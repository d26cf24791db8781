//! The cooperative-matrix (tensor-core) GEMM core: its tile shape, the tiles the policy picks,
//! and the code generation of gemm_coop.wgsl's marked lines. One source for every matrix size:
//! the size S is the adapter's (`cooperative_matrix_properties`, 8 on lavapipe, 16 on NVIDIA),
//! so the kernel lavapipe tests is the kernel a GPU runs with another S.

use super::gemm_staging::{slice_loads, staging_fits, SliceLoads};

/// A workgroup of WM x WN subgroups, each computing FM x FN matrices of S x S, staging K in
/// slices of BK (a multiple of S). Written `SxS wWMxWN fFMxFN kBK` (e.g. `16x16 w2x2 f2x2 k32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopTile {
    pub s: u32,
    pub sg: u32,
    pub wm: u32,
    pub wn: u32,
    pub fm: u32,
    pub fn_: u32,
    pub bk: u32,
}

/// Row padding of the staged f16 tiles, in elements: 8 f16 = 16 bytes keeps every row start
/// 16-byte aligned (what cooperative loads want) while rows stop mapping to the same banks.
const ROW_PAD: u32 = 8;

impl CoopTile {
    pub fn bm(&self) -> u32 {
        self.wm * self.fm * self.s
    }
    pub fn bn(&self) -> u32 {
        self.wn * self.fn_ * self.s
    }
    pub fn threads(&self) -> u32 {
        self.wm * self.wn * self.sg
    }
    fn a_stride(&self) -> u32 {
        self.bk + ROW_PAD
    }
    fn b_stride(&self) -> u32 {
        self.bn() + ROW_PAD
    }
    /// Workgroup memory: the two f16 staging tiles, the f32 epilogue scratch, the K counter.
    pub fn workgroup_bytes(&self) -> u32 {
        self.bm() * self.a_stride() * 2
            + self.bk * self.b_stride() * 2
            + self.wm * self.wn * self.s * self.s * 4
            + 4
    }
    /// Whether the core can be generated for this shape and runs within `limits`.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<(), String> {
        let t = self.threads();
        let shaped = self.s >= 8
            && self.sg >= 1
            && (self.s * self.s).is_multiple_of(self.sg)
            && self.bk >= self.s
            && self.bk.is_multiple_of(self.s)
            && self.bk.is_multiple_of(ROW_PAD)
            && [self.wm, self.wn, self.fm, self.fn_]
                .iter()
                .all(|&v| v >= 1);
        // Either layout of either operand: a tile serves all four loaders.
        let stages = [true, false].iter().all(|&f| {
            staging_fits(self.bm(), self.bk, t, f) && staging_fits(self.bn(), self.bk, t, f)
        });
        if !shaped || !stages {
            return Err(format!(
                "cooperative-matrix tile {self} cannot be generated (BK a multiple of S and 8, \
                 S*S a multiple of the subgroup size, staging divisible among {t} invocations)"
            ));
        }
        if t > limits.max_compute_invocations_per_workgroup
            || t > limits.max_compute_workgroup_size_x
        {
            return Err(format!(
                "cooperative-matrix tile {self} needs {t} invocations per workgroup; this device allows {}",
                limits.max_compute_invocations_per_workgroup
            ));
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            return Err(format!(
                "cooperative-matrix tile {self} needs {} bytes of workgroup memory; this device allows {}",
                self.workgroup_bytes(),
                limits.max_compute_workgroup_storage_size
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for CoopTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{s}x{s} w{}x{} f{}x{} k{} (subgroup {})",
            self.wm,
            self.wn,
            self.fm,
            self.fn_,
            self.bk,
            self.sg,
            s = self.s
        )
    }
}

/// The tiles the policy chooses among for matrices of S x S on subgroups of SG lanes, by the
/// output's rows (see [`coop_tile`]): (WM, WN, FM, FN), BK = 2S.
const COOP_RULE: [(u32, (u32, u32, u32, u32)); 4] = [
    // up to S rows: one subgroup row, 8S columns
    (1, (1, 4, 1, 2)),
    // up to 2S rows
    (2, (2, 2, 1, 2)),
    // up to 4S rows
    (4, (2, 2, 2, 2)),
    // more: 8S x 4S
    (u32::MAX, (2, 2, 4, 2)),
];

fn rule_tile(s: u32, sg: u32, (wm, wn, fm, fn_): (u32, u32, u32, u32)) -> CoopTile {
    CoopTile {
        s,
        sg,
        wm,
        wn,
        fm,
        fn_,
        bk: 2 * s,
    }
}

/// Every tile [`coop_tile`] can pick for this matrix and subgroup size.
pub fn coop_tile_rule(s: u32, sg: u32) -> Vec<CoopTile> {
    COOP_RULE
        .iter()
        .map(|&(_, w)| rule_tile(s, sg, w))
        .collect()
}

/// The tile for an M x N output (times `batch`): the rule's entry for M (in units of S); the
/// largest tile drops to the 4S x 4S one when it would give fewer than 256 workgroups.
pub fn coop_tile(s: u32, sg: u32, m: u32, n: u32, batch: u32) -> CoopTile {
    let rows = m.div_ceil(s);
    let i = COOP_RULE.iter().position(|(r, _)| rows <= *r).unwrap_or(3);
    let t = rule_tile(s, sg, COOP_RULE[i].1);
    if i == 3 && m.div_ceil(t.bm()) * n.div_ceil(t.bn()) * batch.max(1) < 256 {
        return rule_tile(s, sg, COOP_RULE[2].1);
    }
    t
}

/// Expands the marked lines of gemm_coop.wgsl for one tile and loader layout. `fault_b_col_major`
/// reads the B matrices column-major (`coopLoad`): a wrong product on purpose, for the tests of
/// the self-check (tensor/coop_check.rs); never launched otherwise.
pub(crate) fn coop_core(
    tile: CoopTile,
    a_k_fast: bool,
    b_n_fast: bool,
    fault_b_col_major: bool,
) -> String {
    use std::fmt::Write;
    let CoopTile {
        s, sg, fm, fn_, bk, ..
    } = tile;
    let (bm, bn, t) = (tile.bm(), tile.bn(), tile.threads());
    let (ast, bst) = (tile.a_stride(), tile.b_stride());
    let head = format!(
        "enable f16;\nenable wgpu_cooperative_matrix;\n\
         const BM: u32 = {bm}u;\nconst BN: u32 = {bn}u;\nconst T: u32 = {t}u;\n\
         const AST: u32 = {ast}u;\nconst BST: u32 = {bst}u;\n\
         const AS_LEN: u32 = {}u;\nconst BS_LEN: u32 = {}u;\nconst CS_LEN: u32 = {}u;\n",
        bm * ast,
        bk * bst,
        tile.wm * tile.wn * s * s
    );
    let SliceLoads {
        setup: loads_setup,
        load,
        sa,
        sb,
    } = slice_loads((bm, bn, bk), t, a_k_fast, b_n_fast);
    let mat = |ty: &str, role: &str| format!("coop_mat{s}x{s}<{ty}, {role}>");
    let mut setup = String::new();
    for i in 0..fm {
        for j in 0..fn_ {
            let _ = writeln!(setup, "    var acc{i}_{j} = {}();", mat("f32", "C"));
        }
    }
    setup += &loads_setup;

    let mut stage = String::new();
    for (e, &(ki, j)) in sa.elems.iter().enumerate() {
        let _ = writeln!(
            stage,
            "        As[a_l{j} * AST + a_k{ki}] = to_f16(a_v{e} * a_scale);"
        );
    }
    for (e, &(ki, j)) in sb.elems.iter().enumerate() {
        let _ = writeln!(
            stage,
            "        Bs[b_k{ki} * BST + b_l{j}] = to_f16(b_v{e} * b_scale);"
        );
    }

    let mut mma = String::new();
    for kk in 0..bk / s {
        for i in 0..fm {
            let _ = writeln!(
                mma,
                "            let a{kk}_{i} = coopLoadT<{}>(&As[(sm + {}u) * AST + {}u], AST);",
                mat("f16", "A"),
                i * s,
                kk * s
            );
        }
        for j in 0..fn_ {
            let _ = writeln!(
                mma,
                "            let b{kk}_{j} = {}<{}>(&Bs[{}u * BST + sn + {}u], BST);",
                if fault_b_col_major {
                    "coopLoad"
                } else {
                    "coopLoadT"
                },
                mat("f16", "B"),
                kk * s,
                j * s
            );
        }
        for i in 0..fm {
            for j in 0..fn_ {
                let _ = writeln!(
                    mma,
                    "            acc{i}_{j} = coopMultiplyAdd(a{kk}_{i}, b{kk}_{j}, acc{i}_{j});"
                );
            }
        }
    }

    let per_lane = s * s / sg;
    let mut store = String::new();
    for i in 0..fm {
        for j in 0..fn_ {
            let _ = writeln!(
                store,
                "    coopStoreT(acc{i}_{j}, &Cs[scratch], S);\n    workgroupBarrier();\n    \
                 for (var e = 0u; e < {per_lane}u; e++) {{\n        \
                 let idx = lane + e * SG;\n        \
                 let gm = row0 + sm + {}u + idx / S;\n        \
                 let gn = col0 + sn + {}u + idx % S;\n        \
                 if (gm < P.m && gn < P.n) {{ store_c(b, gm, gn, Cs[scratch + idx] * unscale_a * unscale_b); }}\n    }}\n    \
                 workgroupBarrier();",
                i * s,
                j * s
            );
        }
    }
    head + &include_str!("../../shaders/gemm_coop.wgsl")
        .replace("//@SETUP\n", &setup)
        .replace("//@LOAD\n", &load)
        .replace("//@STAGE\n", &stage)
        .replace("//@MMA\n", &mma)
        .replace("//@STORE\n", &store)
}
