// In-place X = a * X + b * Y (EMA of weights, gradient accumulation).
struct Params { n4: u32, a: f32, b: f32, _pad: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> Y: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= P.n4) { return; }
    X[i] = P.a * X[i] + P.b * Y[i];
}
