// Softmax cross-entropy per row of LOGITS [N, K] with integer labels stored as f32:
// LOSS[r] = logsumexp(row) - row[label]; GRAD[r, k] = (softmax(row)_k - [k == label]) * P.scale
// (scale = 1/N gives the gradient of the batch mean). One invocation per row: K is small.
struct Params { n: u32, k: u32, scale: f32, _p: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read> LABELS: array<f32>;
@group(0) @binding(3) var<storage, read_write> LOSS: array<f32>;
@group(0) @binding(4) var<storage, read_write> GRAD: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= P.n) { return; }
    let base = r * P.k;
    var m = LOGITS[base];
    for (var j = 1u; j < P.k; j++) { m = max(m, LOGITS[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < P.k; j++) { s += exp(LOGITS[base + j] - m); }
    let label = u32(LABELS[r]);
    LOSS[r] = log(s) + m - LOGITS[base + label];
    for (var j = 0u; j < P.k; j++) {
        let p = exp(LOGITS[base + j] - m) / s;
        GRAD[base + j] = (p - select(0.0, 1.0, j == label)) * P.scale;
    }
}
