// Register-blocked GEMM core for real GPUs (f32, no subgroups: browsers can run it too).
// Prepended constants: BM, BN (outputs per workgroup), BK (depth of one K slice in workgroup
// memory), TM, TN (outputs per invocation, 4 or 8). The workgroup is (BN / TN) x (BM / TM)
// invocations; invocation (tx, ty) keeps TM x TN accumulators in registers: rows
// 4 * (ty + j * BM / TM) + 0..3 for j < TM / 4, columns 4 * (tx + j * BN / TN) + 0..3 for j < TN / 4,
// so that one step of K reads TM / 4 + TN / 4 vec4s from workgroup memory for TM * TN FMAs.
// A is staged transposed ([BK][BM], M contiguous) and B as [BK][BN], both as vec4 arrays.
//
// Staging: every invocation loads the same elements of each K slice (BK * BM / T of A and
// BK * BN / T of B, T invocations): along K where the operand is contiguous along K (the loader's
// A_K_FAST / B_N_FAST), else along M / N, so that neighbouring invocations read neighbouring
// addresses. The loaders' column parts (col_state) are computed once before the K loop, the k
// parts (k_state) once per distinct k per slice. The next slice is loaded into registers while
// the current one is multiplied (one buffer in workgroup memory, two barriers per slice); each
// of the load, stage and multiply code appears once (compile time: lavapipe's LLVM is slow on
// large unrolled shaders).
// The Rust side (gemm.rs, blocked_core) unrolls the marked lines for the tile shape.
var<workgroup> As: array<vec4<f32>, AS_LEN>;
var<workgroup> Bs: array<vec4<f32>, BS_LEN>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let b = grid_batch(wg);
    let row0 = grid_row_tile(wg) * BM;
    let col0 = grid_col_tile(wg) * BN;
    // The last fold of a folded grid may reach past M or N (uniform: the whole workgroup leaves).
    if (row0 >= P.m || col0 >= P.n) { return; }
    let tx = lid.x;
    let ty = lid.y;
//@SETUP
    // Iteration i loads slice i into registers, multiplies slice i - 1 (in workgroup memory), then
    // stages slice i: the global loads of one slice overlap the FMAs of the previous one.
    for (var k0 = 0u; k0 < P.k + BK; k0 += BK) {
        let kb = k0;
        if (kb < P.k) {
//@LOAD
        }
        if (k0 > 0u) {
            for (var kk = 0u; kk < BK; kk++) {
//@FMA
            }
        }
        workgroupBarrier();
        if (kb < P.k) {
//@STAGE
        }
        workgroupBarrier();
    }
//@STORE
}
