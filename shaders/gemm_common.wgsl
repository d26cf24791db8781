// Parameters shared by every GEMM-shaped kernel (matmul and the three convolution passes).
// C[b, m, n] = alpha * sum_k A(b, m, k) * B(b, k, n) + beta * C[b, m, n] + bias_scale * bias(m or n)
//              (+ R[b, m, n] with `residual` 1: the residual add of a U-Net block, one launch fewer;
//               + R[image, m] with `residual` 2, convolution forward only: the time embedding)
struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    // matmul: elements between consecutive batch matrices of A, B and C (0 broadcasts one matrix)
    sa: u32, sb: u32, sc: u32, alpha: f32,
    // convolution geometry: input channels, input height/width, output channels
    cin: u32, h: u32, w: u32, cout: u32,
    // output height/width, stride, zero padding
    oh: u32, ow: u32, stride: u32, pad: u32,
    // kernel size (3 or 1); beta accumulates into C; bias_scale is 0 without a bias
    ks: u32, beta: f32, bias_scale: f32, bias_per_col: u32,
    // split-K (conv weight gradient): the full K; the workgroup's z index picks a chunk of P.k
    // folded grids (gemm.rs fold_grid): row and column tiles per z slice, column folds
    k_total: u32, row_groups: u32, col_groups: u32, col_folds: u32,
    // 1: add RES (same layout as C) in the epilogue; 2: add RES[image * cout + m] (conv forward)
    residual: u32, _r0: u32, _r1: u32, _r2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// The grid is [column tiles, row tiles, batch x folds]: tiles beyond one grid dimension's limit
// are folded into z = batch + P.batch * (column fold + P.col_folds * row fold). A workgroup's
// batch index, row tile and column tile:
fn grid_batch(wg: vec3<u32>) -> u32 { return wg.z % P.batch; }
fn grid_row_tile(wg: vec3<u32>) -> u32 {
    return wg.y + (wg.z / P.batch) / P.col_folds * P.row_groups;
}
fn grid_col_tile(wg: vec3<u32>) -> u32 {
    return wg.x + (wg.z / P.batch) % P.col_folds * P.col_groups;
}
// MAT_ prefixes: WGSL cooperative-matrix roles are spelled A, B and C (gemm_coop.wgsl).
@group(0) @binding(1) var<storage, read> MAT_A: array<f32>;
@group(0) @binding(2) var<storage, read> MAT_B: array<f32>;
@group(0) @binding(3) var<storage, read_write> MAT_C: array<f32>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;
@group(0) @binding(5) var<storage, read> RES: array<f32>;

// Writes one output element; `ci` is its index in C. BIAS and RES are read only when present
// (bias_scale 1, residual 1): otherwise they are bound to a stand-in that is never read.
fn epilogue(ci: u32, bias_index: u32, acc: f32) {
    epilogue_res(ci, bias_index, ci, acc);
}

// The same with the index of RES given (residual 2 reads one value per image and row).
fn epilogue_res(ci: u32, bias_index: u32, res_index: u32, acc: f32) {
    var v = P.alpha * acc;
    if (P.bias_scale != 0.0) {
        v = v + BIAS[bias_index] * P.bias_scale;
    }
    if (P.residual != 0u) {
        v = v + RES[res_index];
    }
    if (P.beta != 0.0) {
        v = v + P.beta * MAT_C[ci];
    }
    MAT_C[ci] = v;
}

// Loaders split each operand index into a part that depends only on k (k_state: the same for all
// lanes at one step of K), a part that depends only on the output column (col_state: fixed for the
// whole K loop), and a cheap combination, so the integer divisions of the convolution index maps
// leave the inner loop. The tiled core uses the per-element forms below.
fn load_a(b: u32, m: u32, k: u32) -> f32 {
    return load_ak(b, k_state(b, k), m);
}

fn load_b(b: u32, k: u32, n: u32) -> f32 {
    return load_bk(k_state(b, k), col_state(b, n));
}

// B element of an input patch (both convolution loaders that read X): the image offset, row and
// column come split between k_state and col_state; zero outside the image (padding).
fn patch_load(ks: vec4<i32>, cs: vec4<i32>) -> f32 {
    let iy = ks.y + cs.y;
    let ix = ks.z + cs.z;
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) { return 0.0; }
    return MAT_B[u32(ks.x + cs.x + iy * i32(P.w) + ix)];
}
