// One Adam / AdamW update of one parameter tensor, in place, four elements per invocation.
// g = grad * CLIP[0] (the global clipping factor, computed on the GPU: no readback);
// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// w -= lr * (m / bc1) / (sqrt(v / bc2) + eps) + lr * wd * w   (decoupled decay: AdamW; wd = 0: Adam)
struct Params { n4: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, bc1: f32, bc2: f32, wd: f32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> W: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> M: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> V: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> CLIP: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= P.n4) { return; }
    let g = G[i] * CLIP[0];
    let m = P.beta1 * M[i] + (1.0 - P.beta1) * g;
    let v = P.beta2 * V[i] + (1.0 - P.beta2) * g * g;
    M[i] = m;
    V[i] = v;
    let w = W[i];
    W[i] = w - P.lr * (m / P.bc1) / (sqrt(v / P.bc2) + P.eps) - P.lr * P.wd * w;
}
