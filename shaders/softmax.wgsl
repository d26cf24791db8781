// Row softmax over the last dimension, one workgroup per row; scale is applied to the logits
// first (1/sqrt(C) for attention). MODE 0: forward OUT = softmax(scale * X).
// MODE 1: backward with Y the forward output and X the incoming gradient:
//   OUT = scale * Y * (X - sum(X * Y)).
// With ROW_PER_INVOCATION (a prepended constant, chosen on CPU adapters such as lavapipe) each
// invocation does a whole row with no barrier: there a workgroup barrier costs more than the
// row's arithmetic (attention rows are 196 long, 6272 of them in `bench kernels`).
// Y is read in MODE 1 only; the forward binds a stand-in there (explicit layout).
struct Params { rows: u32, len: u32, scale: f32, _p: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    if (ROW_PER_INVOCATION) {
        row_alone((wg.x + wg.y * nwg.x) * 256u + li);
        return;
    }
    let r = wg.x + wg.y * nwg.x;
    if (r >= P.rows) { return; }
    let base = r * P.len;
    if (MODE == 0u) {
        var m = -3.0e38;
        for (var i = li; i < P.len; i += 256u) { m = max(m, X[base + i] * P.scale); }
        red[li] = m;
        workgroupBarrier();
        for (var w = 128u; w > 0u; w >>= 1u) {
            if (li < w) { red[li] = max(red[li], red[li + w]); }
            workgroupBarrier();
        }
        let mx = red[0];
        workgroupBarrier();
        var s = 0.0;
        for (var i = li; i < P.len; i += 256u) { s += exp(X[base + i] * P.scale - mx); }
        red[li] = s;
        workgroupBarrier();
        for (var w = 128u; w > 0u; w >>= 1u) {
            if (li < w) { red[li] += red[li + w]; }
            workgroupBarrier();
        }
        let inv = 1.0 / red[0];
        for (var i = li; i < P.len; i += 256u) { OUT[base + i] = exp(X[base + i] * P.scale - mx) * inv; }
    } else {
        var s = 0.0;
        for (var i = li; i < P.len; i += 256u) { s += X[base + i] * Y[base + i]; }
        red[li] = s;
        workgroupBarrier();
        for (var w = 128u; w > 0u; w >>= 1u) {
            if (li < w) { red[li] += red[li + w]; }
            workgroupBarrier();
        }
        let dot = red[0];
        for (var i = li; i < P.len; i += 256u) { OUT[base + i] = P.scale * Y[base + i] * (X[base + i] - dot); }
    }
}

// One row by one invocation (ROW_PER_INVOCATION).
fn row_alone(r: u32) {
    if (r >= P.rows) { return; }
    let base = r * P.len;
    if (MODE == 0u) {
        var m = -3.0e38;
        for (var i = 0u; i < P.len; i++) { m = max(m, X[base + i] * P.scale); }
        var s = 0.0;
        for (var i = 0u; i < P.len; i++) { s += exp(X[base + i] * P.scale - m); }
        let inv = 1.0 / s;
        for (var i = 0u; i < P.len; i++) { OUT[base + i] = exp(X[base + i] * P.scale - m) * inv; }
    } else {
        var dot = 0.0;
        for (var i = 0u; i < P.len; i++) { dot += X[base + i] * Y[base + i]; }
        for (var i = 0u; i < P.len; i++) { OUT[base + i] = P.scale * Y[base + i] * (X[base + i] - dot); }
    }
}
