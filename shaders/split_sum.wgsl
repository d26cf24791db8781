// Second pass of a split-K GEMM: OUT[i] = sum over parts s of IN[s * len + i], in a fixed order
// (deterministic, unlike atomics).
struct Params { len: u32, parts: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> IN: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= P.len) { return; }
    var acc = 0.0;
    for (var s = 0u; s < P.parts; s++) {
        acc += IN[s * P.len + i];
    }
    OUT[i] = acc;
}
