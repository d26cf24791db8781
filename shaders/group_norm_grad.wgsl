// Group normalisation backward with respect to the input. With xh = (x - mean) * rstd and
// gy = dy * gamma[c], over each (sample, group) of L elements:
//   dx = rstd * (gy - mean(gy) - xh * mean(gy * xh))
// The gamma and beta gradients are channel sums done by group_norm_param_grad.wgsl.
// With SILU (a prepended constant) the forward was SiLU(y), y = xh * gamma[c] + beta[c]: dy is
// first multiplied by silu'(y), with y recomputed from x and the saved statistics.
// total: N * groups, the workgroups that have work (a grid folded over x and y rounds up).
// Elem (prepended) is vec4<f32> when hw is a multiple of 4, as in group_norm.wgsl.
struct Params { c: u32, hw: u32, groups: u32, eps: f32, total: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<Elem>;
@group(0) @binding(2) var<storage, read> GAMMA: array<f32>;
@group(0) @binding(3) var<storage, read> DY: array<Elem>;
@group(0) @binding(4) var<storage, read> STATS: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<Elem>;
@group(0) @binding(6) var<storage, read> BETA: array<f32>; // read only with SILU

// dy times silu'(y) where the forward applied SiLU, else dy.
fn dy_pre(i: u32, c: u32, xh: Elem) -> Elem {
    if (!SILU) { return DY[i]; }
    let y = xh * GAMMA[c] + BETA[c];
    let s = 1.0 / (1.0 + exp(-y));
    return DY[i] * s * (1.0 + y * (1.0 - s));
}

// block_sum comes from block_sum.wgsl.

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let ng = wg.x + wg.y * nwg.x;
    // The rounded-up last row of a folded grid: nothing to do (uniform per workgroup, so the
    // barriers in block_sum stay in uniform control flow).
    if (ng >= P.total) { return; }
    let cpg = P.c / P.groups;
    let len = cpg * P.hw;
    let hw = P.hw / LANES;
    let n = len / LANES; // Elems in the group
    let base = ng * n;
    let g = ng % P.groups;
    let mean = STATS[ng * 2u];
    let rstd = STATS[ng * 2u + 1u];
    var s1 = Elem(0.0);
    var s2 = Elem(0.0);
    for (var i = li; i < n; i += 256u) {
        let c = g * cpg + i / hw;
        let xh = (X[base + i] - mean) * rstd;
        let gy = dy_pre(base + i, c, xh) * GAMMA[c];
        s1 += gy;
        s2 += gy * xh;
    }
    let m1 = block_sum(li, hsum(s1)) / f32(len);
    let m2 = block_sum(li, hsum(s2)) / f32(len);
    for (var i = li; i < n; i += 256u) {
        let c = g * cpg + i / hw;
        let xh = (X[base + i] - mean) * rstd;
        let gy = dy_pre(base + i, c, xh) * GAMMA[c];
        DX[base + i] = rstd * (gy - m1 - xh * m2);
    }
}
