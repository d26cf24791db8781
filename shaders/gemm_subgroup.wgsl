// Subgroup GEMM core: one subgroup of SG lanes per workgroup; the workgroup computes TM rows x
// (SG * 4) columns. Each lane loads 4 values of B per step of K and TM / SG values of A; the A
// values are shared across lanes with subgroupBroadcast instead of workgroup memory, which on
// CPU-backed Vulkan (lavapipe) avoids the per-lane memory loop entirely. `subgroupBroadcast`
// needs a constant lane id, so the Rust side unrolls the marked lines (see gemm.rs).
@compute @workgroup_size(SG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let b = grid_batch(wg);
    let row0 = grid_row_tile(wg) * TM;
    let col = (grid_col_tile(wg) * SG + lane) * 4u;
    // The last fold of a folded grid may reach past M or N (uniform: the whole workgroup leaves).
    if (row0 >= P.m || grid_col_tile(wg) * SG * 4u >= P.n) { return; }
//@DECLARE
    // Column parts of B's index, fixed for the whole K loop (clamped: guarded again below).
    let last = P.n - 1u;
    let cs0 = col_state(b, min(col, last));
    let cs1 = col_state(b, min(col + 1u, last));
    let cs2 = col_state(b, min(col + 2u, last));
    let cs3 = col_state(b, min(col + 3u, last));
    for (var kk = 0u; kk < P.k; kk++) {
        let ks = k_state(b, kk);
        var bv = vec4<f32>(0.0);
        if (col < P.n) { bv.x = load_bk(ks, cs0); }
        if (col + 1u < P.n) { bv.y = load_bk(ks, cs1); }
        if (col + 2u < P.n) { bv.z = load_bk(ks, cs2); }
        if (col + 3u < P.n) { bv.w = load_bk(ks, cs3); }
//@LOAD_A
//@FMA
    }
//@STORE
}
