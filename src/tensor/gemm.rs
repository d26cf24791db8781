//! Matrix products and convolutions, all on one GEMM core (gemm_blocked.wgsl on real GPUs,
//! gemm_subgroup.wgsl on CPU adapters with subgroups, gemm_tiled.wgsl as the portable fallback)
//! with a small loader file per operand layout: plain matmul, and the three passes of a
//! convolution as implicit GEMMs (no im2col buffer is ever materialised).

use std::borrow::Cow;

use super::params::{wgsl_params, WgslParams};
use super::registry::{KernelDef, Needs};
use super::{stand_in, Tensor};
use crate::gpu::{Dispatch, GemmTile, Gpu, KernelKey, KernelSource, KernelVariant};

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
    const ALL: [Loader; 7] = [
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
    fn a_k_fast(self) -> bool {
        match self {
            Loader::Matmul { trans_a, .. } => !trans_a,
            Loader::ConvForward | Loader::ConvWeightGrad => true,
            Loader::ConvInputGrad => false,
        }
    }
    /// Whether B is contiguous along N (the loader's B_N_FAST).
    fn b_n_fast(self) -> bool {
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

/// Rows per subgroup workgroup: a multiple of the subgroup size, at least 32.
fn subgroup_rows(sg: u32) -> u32 {
    sg.max(32)
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

/// Tile shape of the blocked core (see `GemmTile` in gpu/context.rs, which picks and checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    bm: u32,
    bn: u32,
    bk: u32,
    tm: u32,
    tn: u32,
}

impl From<GemmTile> for Tile {
    fn from(t: GemmTile) -> Tile {
        Tile {
            bm: t.bm,
            bn: t.bn,
            bk: t.bk,
            tm: t.tm,
            tn: t.tn,
        }
    }
}

impl Tile {
    /// The blocked family's tile for an M x N output; the convolution weight gradient picks it
    /// for one K chunk (its batch is the split-K count, chosen from the tile afterwards).
    fn blocked(gpu: &Gpu, m: u32, n: u32, batch: u32) -> Tile {
        Tile::from(gpu.blocked_tile(m, n, batch))
    }
    fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }
}

/// What one invocation stages of one operand per K slice: the distinct local k values and
/// row (A) / column (B) offsets it touches, as WGSL expressions of the invocation index `t`, and
/// its elements as (index into ks, index into mns). `x` is BM (A) or BN (B).
struct Staging {
    ks: Vec<String>,
    mns: Vec<String>,
    elems: Vec<(usize, usize)>,
}

fn staging(x: u32, bk: u32, t: u32, k_fast: bool) -> Staging {
    if k_fast {
        // Neighbouring invocations take neighbouring k: one k, x / (t / bk) rows or columns.
        let p = t / bk;
        let rows = x / p;
        Staging {
            ks: vec![format!("t % {bk}u")],
            mns: (0..rows)
                .map(|r| format!("t / {bk}u + {}u", r * p))
                .collect(),
            elems: (0..rows as usize).map(|r| (0, r)).collect(),
        }
    } else if t >= x {
        // Neighbouring invocations take neighbouring rows / columns: one of them, bk / q k's.
        let q = t / x;
        let kn = bk / q;
        Staging {
            ks: (0..kn).map(|r| format!("t / {x}u + {}u", r * q)).collect(),
            mns: vec![format!("t % {x}u")],
            elems: (0..kn as usize).map(|r| (r, 0)).collect(),
        }
    } else {
        // Fewer invocations than rows / columns: x / t of them, every k of the slice.
        let nc = x / t;
        Staging {
            ks: (0..bk).map(|k| format!("{k}u")).collect(),
            mns: (0..nc).map(|c| format!("t + {}u", c * t)).collect(),
            elems: (0..bk as usize)
                .flat_map(|k| (0..nc as usize).map(move |c| (k, c)))
                .collect(),
        }
    }
}

/// Expands the marked lines of gemm_blocked.wgsl for one tile shape and loader layout.
fn blocked_core(tile: Tile, a_k_fast: bool, b_n_fast: bool) -> String {
    use std::fmt::Write;
    let Tile { bm, bn, bk, tm, tn } = tile;
    let t = tile.threads();
    let (wg_x, wg_y) = (bn / tn, bm / tm);
    let sa = staging(bm, bk, t, a_k_fast);
    let sb = staging(bn, bk, t, !b_n_fast);
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
    for (i, k) in sa.ks.iter().enumerate() {
        let _ = writeln!(setup, "    let a_k{i} = {k};");
    }
    for (j, mn) in sa.mns.iter().enumerate() {
        let _ = writeln!(
            setup,
            "    let a_l{j} = {mn};\n    let a_m{j} = row0 + a_l{j};"
        );
    }
    for (i, k) in sb.ks.iter().enumerate() {
        let _ = writeln!(setup, "    let b_k{i} = {k};");
    }
    for (j, mn) in sb.mns.iter().enumerate() {
        let _ = writeln!(
            setup,
            "    let b_l{j} = {mn};\n    let b_n{j} = col0 + b_l{j};\n    let b_c{j} = col_state(b, min(b_n{j}, P.n - 1u));"
        );
    }
    for e in 0..sa.elems.len() {
        let _ = writeln!(setup, "    var a_v{e} = 0.0;");
    }
    for e in 0..sb.elems.len() {
        let _ = writeln!(setup, "    var b_v{e} = 0.0;");
    }

    // Loads of the slice starting at `kb` into registers (zero outside the matrices).
    let mut load = String::from("        {\n");
    for i in 0..sa.ks.len() {
        let _ = writeln!(
            load,
            "        let kg{i} = kb + a_k{i};\n        let ks{i} = k_state(b, kg{i});"
        );
    }
    for (e, &(ki, j)) in sa.elems.iter().enumerate() {
        let _ = writeln!(
            load,
            "        a_v{e} = 0.0;\n        if (kg{ki} < P.k && a_m{j} < P.m) {{ a_v{e} = load_ak(b, ks{ki}, a_m{j}); }}"
        );
    }
    load += "        }\n        {\n";
    for i in 0..sb.ks.len() {
        let _ = writeln!(
            load,
            "        let kg{i} = kb + b_k{i};\n        let ks{i} = k_state(b, kg{i});"
        );
    }
    for (e, &(ki, j)) in sb.elems.iter().enumerate() {
        let _ = writeln!(
            load,
            "        b_v{e} = 0.0;\n        if (kg{ki} < P.k && b_n{j} < P.n) {{ b_v{e} = load_bk(ks{ki}, b_c{j}); }}"
        );
    }
    load += "        }\n";

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

/// One GEMM core with its specialisation: what a launch's family and tile choice come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmCore {
    /// gemm_tiled.wgsl: 64x64 outputs per workgroup.
    Tiled,
    /// gemm_subgroup.wgsl for subgroups of `sg` lanes.
    Subgroup { sg: u32 },
    /// gemm_blocked.wgsl for one tile shape.
    Blocked(Tile),
}

impl GemmCore {
    /// (BM, BN, BK, TM, TN): outputs per workgroup and per invocation, in the blocked
    /// family's notation (the tiled and subgroup cores shown the same way).
    fn tile(self) -> (u32, u32, u32, u32, u32) {
        match self {
            GemmCore::Tiled => (64, 64, 16, 4, 4),
            GemmCore::Subgroup { sg } => (subgroup_rows(sg), sg * 4, 1, subgroup_rows(sg), 4),
            GemmCore::Blocked(t) => (t.bm, t.bn, t.bk, t.tm, t.tn),
        }
    }
}

/// The GEMM kernel of one core and operand layout: gemm_common.wgsl + the loader + the core
/// (generated for subgroup and blocked cores).
pub(crate) fn gemm_def(core: GemmCore, loader: Loader) -> KernelDef {
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
    }
    KernelDef::new::<GemmParams>(key, move || {
        let core: Cow<'static, str> = match core {
            GemmCore::Tiled => include_str!("../../shaders/gemm_tiled.wgsl").into(),
            GemmCore::Subgroup { sg } => subgroup_core(sg).into(),
            GemmCore::Blocked(tile) => {
                blocked_core(tile, loader.a_k_fast(), loader.b_n_fast()).into()
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

/// The blocked tiles the registry covers: every tile `Gpu::blocked_tile`'s rule can pick, and
/// every shape FEWSTEP_GEMM_TILE accepts with BM, BN in 16..=256 and BK in 4..=32 (powers of
/// two) that fits WebGPU's default limits (256 invocations, 16 KiB of workgroup memory).
/// A forced tile outside that sweep is validated by the device at its first launch.
pub(crate) fn registry_tiles() -> Vec<GemmTile> {
    let limits = wgpu::Limits::default();
    let mut out: Vec<GemmTile> = crate::gpu::blocked_tile_rule();
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

/// Every variant of this file's kernels (tensor/registry.rs).
pub(crate) fn registry_defs() -> Vec<KernelDef> {
    let mut cores = vec![GemmCore::Tiled];
    cores.extend(SUBGROUP_SIZES.map(|sg| GemmCore::Subgroup { sg }));
    cores.extend(
        registry_tiles()
            .into_iter()
            .map(|t| GemmCore::Blocked(Tile::from(t))),
    );
    let mut v = Vec::new();
    for core in cores {
        v.extend(Loader::ALL.map(|l| gemm_def(core, l)));
    }
    v.extend([false, true].map(split_sum_def));
    v
}

/// What the epilogue adds to alpha * A B besides beta * C: a bias (per row, or per column for
/// matmul) and a residual.
#[derive(Clone, Copy, Default)]
struct Adds<'a> {
    bias: Option<&'a Tensor>,
    residual: Option<Residual<'a>>,
}

/// What a convolution adds to its output in the same launch, besides its bias.
#[derive(Clone, Copy, Debug)]
pub enum Residual<'a> {
    /// A tensor of the output's shape (a U-Net block's skip connection).
    Full(&'a Tensor),
    /// One value per image and output channel, [N, Cout] (the time embedding).
    PerImageChannel(&'a Tensor),
}

fn launch(
    gpu: &Gpu,
    loader: Loader,
    mut p: GemmParams,
    (a, b, c): (&Tensor, &Tensor, &Tensor),
    Adds { bias, residual }: Adds,
) {
    let variant = gpu.variant();
    let sg = gpu.subgroup_size();
    // The weight gradient's batch is its split-K count, chosen from the tile (split_k_parts).
    let tile_batch = if loader == Loader::ConvWeightGrad {
        1
    } else {
        p.batch
    };
    let core = match variant {
        KernelVariant::Tiled => GemmCore::Tiled,
        KernelVariant::Subgroup => GemmCore::Subgroup { sg },
        KernelVariant::Blocked => GemmCore::Blocked(Tile::blocked(gpu, p.m, p.n, tile_batch)),
    };
    let (bm, bn, bk, tm, tn) = core.tile();
    gpu.note_gemm(variant, bm, bn, bk, tm, tn);
    let workgroups = [p.n.div_ceil(bn), p.m.div_ceil(bm), p.batch];
    let pipeline = super::pipeline_of(gpu, gemm_def(core, loader));
    let bias_bind = match bias {
        Some(t) => {
            p.bias_scale = 1.0;
            t.bind()
        }
        None => stand_in(gpu),
    };
    // Shapes are checked by the caller (Conv2d::forward_add, the only one with a residual).
    let res_bind = match residual {
        Some(Residual::Full(t)) => {
            p.residual = 1;
            t.bind()
        }
        Some(Residual::PerImageChannel(t)) => {
            assert_eq!(
                loader,
                Loader::ConvForward,
                "per-channel residuals: conv forward only"
            );
            p.residual = 2;
            t.bind()
        }
        None => stand_in(gpu),
    };
    let workgroups = fold_grid(gpu, &mut p, workgroups);
    gpu.dispatch(Dispatch {
        pipeline,
        params: p.bytes(),
        buffers: vec![a.bind(), b.bind(), c.bind(), bias_bind, res_bind],
        workgroups,
    });
}

/// Options of [`Tensor::matmul_with`].
#[derive(Clone, Copy, Debug)]
pub struct MatmulOpts {
    /// Use A^T (A stored as [K, M]).
    pub trans_a: bool,
    /// Use B^T (B stored as [N, K]).
    pub trans_b: bool,
    pub alpha: f32,
}

impl Default for MatmulOpts {
    fn default() -> Self {
        MatmulOpts {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
        }
    }
}

/// Fits the grid [column tiles, row tiles, batch] into the per-dimension limit. Tiles beyond it
/// are folded into z: z = batch index + batch x (column fold + column folds x row fold), and the
/// kernels (gemm_common.wgsl `grid_*`) recover the tile and skip tiles past M or N. A `tiny`
/// convolution over 4.2M pixels (N / 64 > 65535 column tiles) is the case this exists for.
fn fold_grid(gpu: &Gpu, p: &mut GemmParams, [x, y, z]: [u32; 3]) -> [u32; 3] {
    let max = gpu.grid_limit();
    let (fx, fy) = (x.div_ceil(max), y.div_ceil(max));
    let (cols, rows) = (x.div_ceil(fx), y.div_ceil(fy));
    let slices = z as u64 * fx as u64 * fy as u64;
    assert!(
        slices <= max as u64,
        "GEMM {}x{}x{} (batch {}) needs [{x}, {y}, {z}] workgroups: over the device limit {max} \
         even folded",
        p.m,
        p.n,
        p.k,
        p.batch
    );
    p.row_groups = rows;
    p.col_groups = cols;
    p.col_folds = fx;
    [cols, rows, slices as u32]
}

fn split_batch(t: &Tensor) -> (usize, usize, usize) {
    let s = t.shape();
    match s.len() {
        2 => (1, s[0], s[1]),
        3 => (s[0], s[1], s[2]),
        _ => panic!("matmul operands are [rows, cols] or [batch, rows, cols], got {s:?}"),
    }
}

impl Tensor {
    pub fn matmul(&self, b: &Tensor) -> Tensor {
        self.matmul_with(b, MatmulOpts::default(), None)
    }

    /// Batched C = alpha * op(A) op(B) (+ bias per column of C). A 2-D operand is shared across
    /// the batch of the other.
    pub fn matmul_with(&self, b: &Tensor, o: MatmulOpts, bias_per_col: Option<&Tensor>) -> Tensor {
        let (ba, ra, ca) = split_batch(self);
        let (bb, rb, cb) = split_batch(b);
        let (m, k) = if o.trans_a { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if o.trans_b { (cb, rb) } else { (rb, cb) };
        assert_eq!(
            k,
            k2,
            "matmul inner dimensions differ: {:?} x {:?} ({o:?})",
            self.shape(),
            b.shape()
        );
        assert!(
            ba == bb || ba == 1 || bb == 1,
            "matmul batch sizes differ: {ba} vs {bb}"
        );
        let batch = ba.max(bb);
        let out_shape: Vec<usize> = if self.shape().len() == 3 || b.shape().len() == 3 {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        let c = Tensor::empty(self.gpu(), &out_shape);
        if let Some(bias) = bias_per_col {
            assert_eq!(
                bias.numel(),
                n,
                "bias must have one value per output column"
            );
        }
        let p = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: batch as u32,
            sa: if ba == 1 { 0 } else { (m * k) as u32 },
            sb: if bb == 1 { 0 } else { (k * n) as u32 },
            sc: (m * n) as u32,
            alpha: o.alpha,
            bias_per_col: 1,
            ..Default::default()
        };
        launch(
            self.gpu(),
            Loader::Matmul {
                trans_a: o.trans_a,
                trans_b: o.trans_b,
            },
            p,
            (self, b, &c),
            Adds {
                bias: bias_per_col,
                residual: None,
            },
        );
        c
    }
}

/// Geometry of a 2-D convolution with square kernels, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    pub fn same(ks: usize) -> Conv2d {
        Conv2d {
            stride: 1,
            pad: ks / 2,
        }
    }
    pub fn out_size(&self, input: usize, ks: usize) -> usize {
        (input + 2 * self.pad - ks) / self.stride + 1
    }

    fn params(&self, x_shape: &[usize], w_shape: &[usize]) -> GemmParams {
        let (cout, cin, ks) = (w_shape[0], w_shape[1], w_shape[2]);
        assert_eq!(w_shape[2], w_shape[3], "square kernels only");
        assert_eq!(
            x_shape[1], cin,
            "conv input has {} channels, weights expect {cin}",
            x_shape[1]
        );
        assert!(
            x_shape[2] + 2 * self.pad >= ks && x_shape[3] + 2 * self.pad >= ks,
            "input smaller than kernel"
        );
        GemmParams {
            batch: 1,
            alpha: 1.0,
            cin: cin as u32,
            h: x_shape[2] as u32,
            w: x_shape[3] as u32,
            cout: cout as u32,
            oh: self.out_size(x_shape[2], ks) as u32,
            ow: self.out_size(x_shape[3], ks) as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            ks: ks as u32,
            ..Default::default()
        }
    }

    /// y = conv(x, w) + bias; x [N, Cin, H, W], w [Cout, Cin, ks, ks], bias [Cout].
    pub fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.forward_add(x, w, bias, None)
    }

    /// y = conv(x, w) + bias + residual in one launch (the add in the GEMM epilogue).
    pub fn forward_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<Residual>,
    ) -> Tensor {
        let mut p = self.params(x.shape(), w.shape());
        let n_img = x.shape()[0];
        p.m = p.cout;
        p.n = n_img as u32 * p.oh * p.ow;
        p.k = p.cin * p.ks * p.ks;
        let y = Tensor::empty(
            x.gpu(),
            &[n_img, p.cout as usize, p.oh as usize, p.ow as usize],
        );
        match residual {
            Some(Residual::Full(r)) => {
                assert_eq!(r.shape(), y.shape(), "the residual has the output's shape")
            }
            Some(Residual::PerImageChannel(r)) => assert_eq!(
                r.numel(),
                n_img * p.cout as usize,
                "a per-channel residual has one value per image and output channel"
            ),
            None => {}
        }
        launch(
            x.gpu(),
            Loader::ConvForward,
            p,
            (w, x, &y),
            Adds { bias, residual },
        );
        y
    }

    /// dL/dx given dL/dy.
    pub fn input_grad(&self, dy: &Tensor, w: &Tensor, x_shape: &[usize]) -> Tensor {
        let mut p = self.params(x_shape, w.shape());
        assert_eq!(
            dy.shape(),
            [x_shape[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cin;
        p.n = (x_shape[0] * x_shape[2] * x_shape[3]) as u32;
        p.k = p.cout * p.ks * p.ks;
        let dx = Tensor::empty(dy.gpu(), x_shape);
        launch(
            dy.gpu(),
            Loader::ConvInputGrad,
            p,
            (w, dy, &dx),
            Adds::default(),
        );
        dx
    }

    /// dL/dw given dL/dy and the forward input x.
    pub fn weight_grad(&self, dy: &Tensor, x: &Tensor, w_shape: &[usize]) -> Tensor {
        let mut p = self.params(x.shape(), w_shape);
        assert_eq!(
            dy.shape(),
            [x.shape()[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cout;
        p.n = p.cin * p.ks * p.ks;
        p.k_total = x.shape()[0] as u32 * p.oh * p.ow;
        let gpu = dy.gpu();
        let parts = split_k_parts(gpu, p.m, p.n, p.k_total);
        p.k = p.k_total.div_ceil(parts);
        p.batch = parts;
        p.sc = p.m * p.n;
        if parts == 1 {
            let dw = Tensor::empty(gpu, w_shape);
            launch(
                gpu,
                Loader::ConvWeightGrad,
                p,
                (dy, x, &dw),
                Adds::default(),
            );
            return dw;
        }
        let partial = Tensor::empty(gpu, &[parts as usize, p.sc as usize]);
        launch(
            gpu,
            Loader::ConvWeightGrad,
            p,
            (dy, x, &partial),
            Adds::default(),
        );
        split_sum(&partial, w_shape)
    }
}

/// How many K chunks a GEMM with a small M x N and a long K is split into: about the rule's
/// workgroups (enough to fill a large GPU, `Gpu::split_k`), chunks no shorter than its minimum.
fn split_k_parts(gpu: &Gpu, m: u32, n: u32, k: u32) -> u32 {
    let (tm, tn) = match gpu.variant() {
        KernelVariant::Tiled => (64, 64),
        KernelVariant::Subgroup => {
            let sg = gpu.subgroup_size();
            (subgroup_rows(sg), sg * 4)
        }
        KernelVariant::Blocked => {
            let t = Tile::blocked(gpu, m, n, 1);
            (t.bm, t.bn)
        }
    };
    let tiles = m.div_ceil(tm) * n.div_ceil(tn);
    let rule = gpu.split_k();
    k.div_ceil(rule.min_chunk)
        .min(rule.workgroups.div_ceil(tiles))
        .max(1)
}

fn split_sum_def(vec4: bool) -> KernelDef {
    KernelDef::new::<SplitSumParams>(KernelKey::new("split_sum").flag("VEC4", vec4), move || {
        KernelSource {
            parts: vec![
                super::elem_prelude(vec4).into(),
                include_str!("../../shaders/split_sum.wgsl").into(),
            ],
        }
    })
}

/// Sums the slices of `partial` [parts, len] into one tensor of `shape` (len values).
fn split_sum(partial: &Tensor, shape: &[usize]) -> Tensor {
    let gpu = partial.gpu();
    let (parts, len) = (partial.shape()[0], partial.shape()[1]);
    let out = Tensor::empty(gpu, shape);
    assert_eq!(out.numel(), len);
    let vec4 = len % 4 == 0;
    let pipeline = super::pipeline_of(gpu, split_sum_def(vec4));
    // 16 columns (of 4 values with vec4) per workgroup.
    let columns = if vec4 { len / 4 } else { len };
    gpu.dispatch(Dispatch {
        pipeline,
        params: SplitSumParams {
            len: len as u32,
            parts: parts as u32,
            ..Default::default()
        }
        .bytes(),
        buffers: vec![partial.bind(), out.bind()],
        workgroups: gpu.grid_1d(columns.div_ceil(16) as u32),
    });
    out
}
