// Sinusoidal embedding of a per-sample scalar (the diffusion time, scaled by `scale`, e.g. 1000):
// OUT[s, i] = sin(scale * T[s] * f_i) for i < half, cos(scale * T[s] * f_(i - half)) after,
// with f_j = exp(-ln(10000) * j / (half - 1)) as in DDPM.
struct Params { n: u32, dim: u32, scale: f32, _p: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> T: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= P.n * P.dim) { return; }
    let s = i / P.dim;
    let j = i - s * P.dim;
    let half = P.dim / 2u;
    let jj = select(j - half, j, j < half);
    let denom = f32(max(half, 2u) - 1u);
    let f = exp(-log(10000.0) * f32(jj) / denom);
    let a = P.scale * T[s] * f;
    OUT[i] = select(cos(a), sin(a), j < half);
}
