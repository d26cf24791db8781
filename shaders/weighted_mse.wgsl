// Per-sample weighted squared error: OUT[s] = W[s] * mean over the sample's `len` elements of
// (A - B)^2. One workgroup per sample; the batch mean is a reduce afterwards.
struct Params { n: u32, len: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read> W: array<f32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let s = wg.x;
    var acc = 0.0;
    for (var i = li; i < P.len; i += 256u) {
        let d = A[s * P.len + i] - B[s * P.len + i];
        acc += d * d;
    }
    red[li] = acc;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { red[li] += red[li + w]; }
        workgroupBarrier();
    }
    if (li == 0u) { OUT[s] = W[s] * red[0] / f32(P.len); }
}
