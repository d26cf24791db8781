//! The GEMM kernels' text: `GemmParams` (gemm_common.wgsl's struct), the operand loaders, and
//! the code generation of the subgroup and blocked cores (fully unrolled: `subgroupBroadcast`
//! takes a constant lane, and the accumulators are separate registers). `gemm_def` is what a
//! launch (tensor/gemm.rs) and the kernel registry (tensor/registry.rs) both build from.

use std::borrow::Cow;

use super::gemm_coop::{coop_core, coop_tile_rule, CoopTile};
use super::gemm_core::subgroup_rows;
use super::gemm_core::GemmCore;
use super::gemm_staging::{slice_loads, SliceLoads};
use super::kernel_def::{KernelDef, Needs};
use super::params::wgsl_params;
use crate::gpu::{GemmTile, KernelKey, KernelSource};

wgsl_params! {
    /// gemm_common.wgsl's `Params`, shared by every loader and core.
    pub struct GemmParams {
        m: u32,
        n: u32,
        k: u32,
        batch: u32,
        sa: u32,
        sb: u32,
        sc: u32,
        alpha: f32,
        cin: u32,
        h: u32,
        w: u32,
        cout: u32,
        oh: u32,
        ow: u32,
        stride: u32,
        pad: u32,
        ks: u32,
        /// C = ... + beta * C: no launcher sets it yet (it is where accumulating a gradient into an
        /// existing one would go); the epilogue reads C only when it is not 0.
        beta: f32,
        bias_scale: f32,
        bias_per_col: u32,
        k_total: u32,
        /// Folded grids (see `fold_grid`): row and column tiles per z slice, and how many slices
        /// the column tiles were folded into.
        row_groups: u32,
        col_groups: u32,
        col_folds: u32,
        /// What the epilogue adds from RES: 0 nothing, 1 a tensor in C's layout, 2 one value per
        /// image and row (conv forward; see [`Residual`]).
        residual: u32,
        _r0: u32,
        _r1: u32,
        _r2: u32,
    }
}
wgsl_params! {
    /// abs_max.wgsl.
    pub struct AbsMaxParams { len: u32, slot: u32, _a: u32, _b: u32 }
}
wgsl_params! {
    /// split_sum.wgsl.
    pub struct SplitSumParams { len: u32, parts: u32, _a: u32, _b: u32 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loader {
    Matmul { trans_a: bool, trans_b: bool },
    ConvForward,
    ConvInputGrad,
    ConvWeightGrad,
}

impl Loader {
    /// Every operand layout a GEMM launch can use.
    pub(crate) const ALL: [Loader; 7] = [
        Loader::Matmul {
            trans_a: false,
            trans_b: false,
        },
        Loader::Matmul {
            trans_a: true,
            trans_b: false,
        },
        Loader::Matmul {
            trans_a: false,
            trans_b: true,
        },
        Loader::Matmul {
            trans_a: true,
            trans_b: true,
        },
        Loader::ConvForward,
        Loader::ConvInputGrad,
        Loader::ConvWeightGrad,
    ];
    fn name(self) -> &'static str {
        match self {
            Loader::Matmul { .. } => "matmul",
            Loader::ConvForward => "conv_forward",
            Loader::ConvInputGrad => "conv_input_grad",
            Loader::ConvWeightGrad => "conv_weight_grad",
        }
    }
    /// Whether A is contiguous along K (the loader's A_K_FAST).
    pub(crate) fn a_k_fast(self) -> bool {
        match self {
            Loader::Matmul { trans_a, .. } => !trans_a,
            Loader::ConvForward | Loader::ConvWeightGrad => true,
            Loader::ConvInputGrad => false,
        }
    }
    /// Whether B is contiguous along N (the loader's B_N_FAST).
    pub(crate) fn b_n_fast(self) -> bool {
        match self {
            Loader::Matmul { trans_b, .. } => !trans_b,
            Loader::ConvForward | Loader::ConvInputGrad => true,
            Loader::ConvWeightGrad => false,
        }
    }
    fn text(self) -> &'static str {
        match self {
            Loader::Matmul { .. } => include_str!("../../shaders/gemm_load_matmul.wgsl"),
            Loader::ConvForward => include_str!("../../shaders/gemm_load_conv_forward.wgsl"),
            Loader::ConvInputGrad => include_str!("../../shaders/gemm_load_conv_input_grad.wgsl"),
            Loader::ConvWeightGrad => include_str!("../../shaders/gemm_load_conv_weight_grad.wgsl"),
        }
    }
}

/// Expands the marked lines of gemm_subgroup.wgsl: `subgroupBroadcast` takes a constant lane.
fn subgroup_core(sg: u32) -> String {
    let tm = subgroup_rows(sg);
    let mut declare = String::new();
    let mut load_a = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for r in 0..tm {
        declare += &format!("    var acc{r} = vec4<f32>(0.0);\n");
        fma += &format!(
            "        acc{r} = fma(vec4<f32>(subgroupBroadcast(a{j}, {l}u)), bv, acc{r});\n",
            j = r / sg,
            l = r % sg
        );
        store += &format!(
            "    if (row0 + {r}u < P.m) {{ for (var j = 0u; j < 4u; j++) {{ if (col + j < P.n) {{ store_c(b, row0 + {r}u, col + j, acc{r}[j]); }} }} }}\n"
        );
    }
    for j in 0..tm / sg {
        load_a += &format!(
            "        var a{j} = 0.0;\n        let r{j} = row0 + {j}u * SG + lane;\n        if (r{j} < P.m) {{ a{j} = load_ak(b, ks, r{j}); }}\n"
        );
    }
    include_str!("../../shaders/gemm_subgroup.wgsl")
        .replace("//@DECLARE\n", &declare)
        .replace("//@LOAD_A\n", &load_a)
        .replace("//@FMA\n", &fma)
        .replace("//@STORE\n", &store)
}

/// Expands the marked lines of gemm_blocked.wgsl for one tile shape and loader layout.
fn blocked_core(tile: GemmTile, a_k_fast: bool, b_n_fast: bool) -> String {
    use std::fmt::Write;
    let GemmTile { bm, bn, bk, tm, tn } = tile;
    let t = tile.threads();
    let (wg_x, wg_y) = (bn / tn, bm / tm);
    let SliceLoads {
        setup: loads_setup,
        load,
        sa,
        sb,
    } = slice_loads((bm, bn, bk), t, a_k_fast, b_n_fast);
    let mut setup = String::new();
    let head = format!(
        "const WG_X: u32 = {wg_x}u;\nconst WG_Y: u32 = {wg_y}u;\nconst AS_LEN: u32 = {}u;\nconst BS_LEN: u32 = {}u;\n",
        bk * bm / 4,
        bk * bn / 4
    );
    for i in 0..tm {
        for j in 0..tn / 4 {
            let _ = writeln!(setup, "    var acc{i}_{j} = vec4<f32>(0.0);");
        }
    }
    setup += &loads_setup;

    let mut stage = String::new();
    for (e, &(ki, j)) in sa.elems.iter().enumerate() {
        let _ = writeln!(
            stage,
            "        As[(a_k{ki} * BM + a_l{j}) / 4u][a_l{j} % 4u] = a_v{e};"
        );
    }
    for (e, &(ki, j)) in sb.elems.iter().enumerate() {
        let _ = writeln!(
            stage,
            "        Bs[(b_k{ki} * BN + b_l{j}) / 4u][b_l{j} % 4u] = b_v{e};"
        );
    }

    let mut fma = String::new();
    for j in 0..tm / 4 {
        let _ = writeln!(
            fma,
            "            let av{j} = As[kk * {}u + ty + {}u];",
            bm / 4,
            j * wg_y
        );
    }
    for j in 0..tn / 4 {
        let _ = writeln!(
            fma,
            "            let bv{j} = Bs[kk * {}u + tx + {}u];",
            bn / 4,
            j * wg_x
        );
    }
    const LANE: [&str; 4] = ["x", "y", "z", "w"];
    for i in 0..tm {
        for j in 0..tn / 4 {
            let _ = writeln!(
                fma,
                "            acc{i}_{j} = fma(vec4<f32>(av{}.{}), bv{j}, acc{i}_{j});",
                i / 4,
                LANE[(i % 4) as usize]
            );
        }
    }

    let mut store = String::new();
    for j in 0..tn / 4 {
        let _ = writeln!(store, "    let gn{j} = col0 + 4u * (tx + {}u);", j * wg_x);
    }
    for i in 0..tm {
        let _ = writeln!(
            store,
            "    let gm{i} = row0 + 4u * (ty + {}u) + {}u;\n    if (gm{i} < P.m) {{",
            (i / 4) * wg_y,
            i % 4
        );
        for j in 0..tn / 4 {
            for (c, lane) in LANE.iter().enumerate() {
                let _ = writeln!(
                    store,
                    "        if (gn{j} + {c}u < P.n) {{ store_c(b, gm{i}, gn{j} + {c}u, acc{i}_{j}.{lane}); }}"
                );
            }
        }
        store += "    }\n";
    }
    head + &include_str!("../../shaders/gemm_blocked.wgsl")
        .replace("//@SETUP\n", &setup)
        .replace("//@LOAD\n", &load)
        .replace("//@STAGE\n", &stage)
        .replace("//@FMA\n", &fma)
        .replace("//@STORE\n", &store)
}

/// The GEMM kernel of one core and operand layout: gemm_common.wgsl + the loader + the core
/// (generated for subgroup and blocked cores).
pub(crate) fn gemm_def(core: GemmCore, loader: Loader) -> KernelDef {
    gemm_def_faulty(core, loader, false)
}

/// [`gemm_def`], with the cooperative-matrix core's deliberate fault when `fault` (its
/// self-check's tests; see [`coop_core`]).
pub(crate) fn gemm_def_faulty(core: GemmCore, loader: Loader, fault: bool) -> KernelDef {
    let (ta, tb) = match loader {
        Loader::Matmul { trans_a, trans_b } => (trans_a, trans_b),
        _ => (false, false),
    };
    let mut key = KernelKey::new(loader.name())
        .flag("TRANS_A", ta)
        .flag("TRANS_B", tb);
    let mut needs = Needs::default();
    match core {
        GemmCore::Tiled => {}
        GemmCore::Subgroup { sg } => {
            key = key.u32("SG", sg).u32("TM", subgroup_rows(sg));
            needs.subgroup_size = Some(sg);
        }
        GemmCore::Blocked(tile) => {
            key = key
                .u32("BM", tile.bm)
                .u32("BN", tile.bn)
                .u32("BK", tile.bk)
                .u32("TM", tile.tm)
                .u32("TN", tile.tn);
        }
        GemmCore::Coop(tile) => {
            key = key
                .u32("S", tile.s)
                .u32("SG", tile.sg)
                .u32("WM", tile.wm)
                .u32("WN", tile.wn)
                .u32("FM", tile.fm)
                .u32("FN", tile.fn_)
                .u32("BK", tile.bk);
            if fault {
                key = key.flag("FAULT_B_COL_MAJOR", true);
            }
            needs = Needs {
                subgroup_size: Some(tile.sg),
                f16: true,
                cooperative_matrix: true,
            };
        }
    }
    KernelDef::new::<GemmParams>(key, move || {
        let core: Cow<'static, str> = match core {
            GemmCore::Tiled => include_str!("../../shaders/gemm_tiled.wgsl").into(),
            GemmCore::Subgroup { sg } => subgroup_core(sg).into(),
            GemmCore::Blocked(tile) => {
                blocked_core(tile, loader.a_k_fast(), loader.b_n_fast()).into()
            }
            GemmCore::Coop(tile) => {
                coop_core(tile, loader.a_k_fast(), loader.b_n_fast(), fault).into()
            }
        };
        KernelSource {
            parts: vec![
                include_str!("../../shaders/gemm_common.wgsl").into(),
                loader.text().into(),
                core,
            ],
        }
    })
    .needing(needs)
}

/// Subgroup sizes the subgroup core is generated for: every fixed size an adapter can report
/// (`Gpu::wanted_features` asks for subgroups only when min = max >= 4).
const SUBGROUP_SIZES: [u32; 6] = [4, 8, 16, 32, 64, 128];

/// The blocked tiles the registry covers: every tile `kernel_policy::blocked_tile`'s rule can pick, and
/// every shape FEWSTEP_GEMM_TILE accepts with BM, BN in 16..=256 and BK in 4..=32 (powers of
/// two) that fits WebGPU's default limits (256 invocations, 16 KiB of workgroup memory).
/// A forced tile outside that sweep is validated by the device at its first launch.
pub(crate) fn registry_tiles() -> Vec<GemmTile> {
    let limits = wgpu::Limits::default();
    let mut out: Vec<GemmTile> = super::kernel_policy::blocked_tile_rule();
    let p2 = [16, 32, 64, 128, 256];
    for bm in p2 {
        for bn in p2 {
            for bk in [4, 8, 16, 32] {
                for tm in [4, 8] {
                    for tn in [4, 8] {
                        let t = GemmTile::new(bm, bn, bk, tm, tn);
                        if t.check(&limits).is_ok() && !out.contains(&t) {
                            out.push(t);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The cooperative-matrix tiles the registry covers: the policy's rule for every matrix size an
/// adapter offers today (8: lavapipe, Intel; 16: NVIDIA, AMD) on every fixed subgroup size that
/// divides S x S, where the tile fits the device limits of a cooperative-matrix adapter (at
/// least 256 invocations and 32 KiB of workgroup memory: lavapipe's and the GPUs' are larger).
pub(crate) fn registry_coop_tiles() -> Vec<CoopTile> {
    let limits = wgpu::Limits {
        max_compute_workgroup_storage_size: 32768,
        ..wgpu::Limits::default()
    };
    let mut out = Vec::new();
    for s in [8, 16] {
        for sg in SUBGROUP_SIZES {
            for t in coop_tile_rule(s, sg) {
                if t.check(&limits).is_ok() && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut cores = vec![GemmCore::Tiled];
    cores.extend(SUBGROUP_SIZES.map(|sg| GemmCore::Subgroup { sg }));
    cores.extend(registry_tiles().into_iter().map(GemmCore::Blocked));
    cores.extend(registry_coop_tiles().into_iter().map(GemmCore::Coop));
    let mut v = Vec::new();
    for core in cores {
        v.extend(Loader::ALL.map(|l| gemm_def(core, l)));
    }
    v.extend([false, true].map(split_sum_def));
    v.push(abs_max_def());
    v
}

/// The largest |value| of a tensor, for the cooperative-matrix core's operand scaling.
pub(crate) fn abs_max_def() -> KernelDef {
    KernelDef::fixed::<AbsMaxParams>(
        KernelKey::new("abs_max"),
        include_str!("../../shaders/abs_max.wgsl"),
    )
}

pub(crate) fn split_sum_def(vec4: bool) -> KernelDef {
    KernelDef::new::<SplitSumParams>(KernelKey::new("split_sum").flag("VEC4", vec4), move || {
        KernelSource {
            parts: vec![
                super::elem_prelude(vec4).into(),
                include_str!("../../shaders/split_sum.wgsl").into(),
            ],
        }
    })
}
