// Subgroup GEMM core: one subgroup of SG lanes per workgroup; the workgroup computes TM rows x
// (SG * 4) columns. Each lane loads 4 values of B per step of K and TM / SG values of A; the A
// values are shared across lanes with subgroupBroadcast instead of workgroup memory, which on
// CPU-backed Vulkan (lavapipe) avoids the per-lane memory loop entirely. `subgroupBroadcast`
// needs a constant lane id, so the Rust side unrolls the marked lines (see gemm.rs).
@compute @workgroup_size(SG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let b = wg.z;
    let row0 = wg.y * TM;
    let col = (wg.x * SG + lane) * 4u;
//@DECLARE
    for (var kk = 0u; kk < P.k; kk++) {
        var bv = vec4<f32>(0.0);
        if (col < P.n) { bv.x = load_b(b, kk, col); }
        if (col + 1u < P.n) { bv.y = load_b(b, kk, col + 1u); }
        if (col + 2u < P.n) { bv.z = load_b(b, kk, col + 2u); }
        if (col + 3u < P.n) { bv.w = load_b(b, kk, col + 3u); }
//@LOAD_A
//@FMA
    }
//@STORE
}
