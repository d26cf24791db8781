// Concatenation of two tensors along channels, and its gradient, in one launch each (layout
// [N, C, HW]). MODE 0: A [N, ca, HW] and B [N, cb, HW] into C [N, ca + cb, HW].
// MODE 1: the reverse: A [N, ca + cb, HW] split into B [N, ca, HW] and C [N, cb, HW].
// One invocation per element of the large tensor; the U-Net's skip connections and their
// gradients take one launch here instead of one per part (channel_copy.wgsl).
// Binding 2 (B) and `store_b` come from the part before this one: B read-only for MODE 0 (so
// that A and B may be the same tensor; WGSL rejects even a dead store to it), read_write for
// MODE 1 (shape_ops.rs, channel_pack2).
struct Params { n: u32, ca: u32, cb: u32, hw: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li; // index within the large tensor
    let per_a = P.ca * P.hw;
    let per_b = P.cb * P.hw;
    let per = per_a + per_b;
    if (i >= P.n * per) { return; }
    let s = i / per;
    let r = i - s * per;
    if (MODE == 0u) {
        if (r < per_a) { C[i] = A[s * per_a + r]; } else { C[i] = B[s * per_b + r - per_a]; }
    } else {
        if (r < per_a) { store_b(s * per_a + r, A[i]); } else { C[s * per_b + r - per_a] = A[i]; }
    }
}
