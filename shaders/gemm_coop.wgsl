// Cooperative-matrix GEMM core (tensor cores): f16 operands, f32 accumulation.
// Prepended constants: S (the adapter's square f16 x f16 -> f32 matrix size: 8 on lavapipe, 16 on
// NVIDIA), SG (its fixed subgroup size), WM x WN subgroups per workgroup, each holding FM x FN
// accumulator matrices of S x S, and BK (depth of one K slice in workgroup memory, a multiple of
// S); generated ones: BM = WM * FM * S, BN = WN * FN * S, T = WM * WN * SG invocations, the
// staging arrays' row strides AST, BST and lengths.
//
// The operands reach workgroup memory through the same loaders as every other core (so matmul
// with either transpose, the three convolution passes, batches, split-K and the epilogues are
// the loaders' and gemm_common.wgsl's, unchanged): each invocation loads its share of a K slice
// in f32, converts it to f16 (clamped to f16's finite range) and stages it row-major, A as
// [BM][AST] (K contiguous) and B as [BK][BST] (N contiguous), which is what coopLoadT reads
// (coopLoad without T reads column-major). The next slice is loaded into registers while the
// current one is multiplied, as in gemm_blocked.wgsl.
//
// naga accepts cooperative-matrix operations only in control flow it can prove uniform across
// the workgroup: no early return, and a K loop whose counter is not a function-local variable.
// The counter lives in workgroup memory and is read with workgroupUniformLoad (a barrier, the
// read, a barrier), which also orders one slice's staging before the next slice's products.
// A workgroup past M or N (the last fold of a folded grid) runs the loop on zeros and stores
// nothing.
//
// Gradient operands are scaled by powers of 2 before rounding (their values sit mostly below
// f16's normal range, 2^-14): SCALE_BITS holds the largest |A| and |B| as f32 bits (0: not
// scaled; abs_max.wgsl computes them), and each operand is multiplied by the power of 2 that
// brings its largest value into [2^14, 2^15), the products divided by both afterwards (exact).
//
// The epilogue: a subgroup stores one accumulator at a time into its own S x S scratch, then
// each of its lanes hands S * S / SG of those values to the loader's store_c (bias, residual,
// alpha/beta and the output layout all there).
var<workgroup> As: array<f16, AS_LEN>;
var<workgroup> Bs: array<f16, BS_LEN>;
var<workgroup> Cs: array<f32, CS_LEN>;
var<workgroup> k_next: u32;
@group(0) @binding(6) var<storage, read> SCALE_BITS: array<u32>;

// 2^(14 - e) for a largest value of exponent e; 1 for 0 (unscaled); clamped to f32's range.
fn pow2_scale(bits: u32) -> f32 {
    if (bits == 0u) { return 1.0; }
    let e = i32((bits >> 23u) & 0xffu) - 127;
    return exp2(f32(clamp(14 - e, -126, 126)));
}

// f16 of an f32 operand value: out-of-range values saturate to f16's largest finite value (a
// plain conversion of them is not defined by WGSL).
fn to_f16(v: f32) -> f16 {
    return f16(clamp(v, -65504.0, 65504.0));
}

@compute @workgroup_size(T, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32,
        @builtin(subgroup_id) sgid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let b = grid_batch(wg);
    let row0 = grid_row_tile(wg) * BM;
    let col0 = grid_col_tile(wg) * BN;
    // This subgroup's block of the tile: rows sm.., columns sn.. (FM x FN matrices of S x S).
    let sm = (sgid / WN) * FM * S;
    let sn = (sgid % WN) * FN * S;
    let a_scale = pow2_scale(SCALE_BITS[0]);
    let b_scale = pow2_scale(SCALE_BITS[1]);
    // Applied one after the other: each is a power of 2 that f32 holds, their product may not be.
    let unscale_a = 1.0 / a_scale;
    let unscale_b = 1.0 / b_scale;
//@SETUP
    if (t == 0u) { k_next = 0u; }
    loop {
        let k0 = workgroupUniformLoad(&k_next);
        if (k0 >= P.k + BK) { break; }
        let kb = k0;
        if (kb < P.k) {
//@LOAD
        }
        if (k0 > 0u) {
//@MMA
        }
        workgroupBarrier();
        if (kb < P.k) {
//@STAGE
        }
        if (t == 0u) { k_next = k0 + BK; }
    }
    let scratch = sgid * S * S;
//@STORE
}
