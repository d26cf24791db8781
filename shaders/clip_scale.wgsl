// Global gradient-norm clipping, step 2 of 2: SUMSQ holds partial sums of squares of all the
// gradients, one per workgroup of sum_squares_multi.wgsl (P.count of them); OUT[0] = min(1, max_norm / (norm + 1e-6)), OUT[1] = norm.
// max_norm <= 0 disables clipping (scale 1) but still reports the norm.
struct Params { count: u32, max_norm: f32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> SUMSQ: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < P.count; i += 256u) { s += SUMSQ[i]; }
    red[li] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { red[li] += red[li + w]; }
        workgroupBarrier();
    }
    if (li == 0u) {
        let norm = sqrt(red[0]);
        var scale = 1.0;
        if (P.max_norm > 0.0) { scale = min(1.0, P.max_norm / (norm + 1e-6)); }
        OUT[0] = scale;
        OUT[1] = norm;
    }
}
