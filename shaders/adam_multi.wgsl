// Adam / AdamW over up to K parameter tensors in one launch, in place, four elements per
// invocation; with EMA also the exponential moving average of the updated weights.
// Per tensor j: W{j} (weights), G{j} (gradient), M{j}, V{j} (moments), and with EMA E{j}; the
// bindings and the switch over j are generated (tensor/optim.rs, `adam_multi_source`), because
// WGSL cannot index bindings. TAB[j] = (first workgroup of tensor j, its length in vec4s);
// entries past the last tensor have first = 0xffffffff. Per element:
//   g = grad * CLIP[0] (the global clipping factor, computed on the GPU: no readback);
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   w -= lr * (m / bc1) / (sqrt(v / bc2) + eps) + lr * wd * w   (decoupled decay: AdamW; wd = 0: Adam)
//   e = ema_a * e + ema_b * w   (ema_a = decay, ema_b = 1 - decay, of the new w)
struct Params {
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    bc1: f32, bc2: f32, wd: f32, ema_a: f32,
    ema_b: f32, _p0: u32, _p1: u32, _p2: u32,
    tab: array<vec4<u32>, K>,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> CLIP: array<f32>;
//@BINDINGS

struct Step { w: vec4<f32>, m: vec4<f32>, v: vec4<f32> }

fn adam(w: vec4<f32>, g0: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>, clip: f32) -> Step {
    let g = g0 * clip;
    let m = P.beta1 * m0 + (1.0 - P.beta1) * g;
    let v = P.beta2 * v0 + (1.0 - P.beta2) * g * g;
    return Step(w - P.lr * (m / P.bc1) / (sqrt(v / P.bc2) + P.eps) - P.lr * P.wd * w, m, v);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let b = wg.x + wg.y * nwg.x;
    var t = 0u;
    for (var j = 1u; j < K; j++) {
        if (b >= P.tab[j].x) { t = j; }
    }
    if (b < P.tab[t].x) { return; }
    let i = (b - P.tab[t].x) * 256u + li;
    if (i >= P.tab[t].y) { return; }
    let clip = CLIP[0];
    switch t {
//@CASES
        default: {}
    }
}
