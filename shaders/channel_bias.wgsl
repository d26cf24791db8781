// OUT[s, c, p] = X[s, c, p] + V[s * v_stride + c]: a per-channel vector broadcast over the
// pixels, per sample (v_stride = C, the time embedding) or shared (v_stride = 0, a bias).
struct Params { n: u32, c: u32, hw: u32, v_stride: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= P.n * P.c * P.hw) { return; }
    let sc = i / P.hw;
    let s = sc / P.c;
    let c = sc - s * P.c;
    OUT[i] = X[i] + V[s * P.v_stride + c];
}
