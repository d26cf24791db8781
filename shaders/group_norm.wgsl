// Group normalisation forward. X is [N, C, HW]; one workgroup per (sample, group) computes the
// group's mean and 1/std (two passes over the data: mean first, then centred variance, which is
// stable where E[x^2] - E[x]^2 is not), writes them to STATS for the backward pass, and writes
// OUT = (x - mean) * rstd * gamma[c] + beta[c], and with SILU (a prepended constant) SiLU of that,
// y * sigmoid(y) (GroupNorm + SiLU in one launch; the backward recomputes y).
// total: N * groups, the workgroups that have work (a grid folded over x and y rounds up).
struct Params { c: u32, hw: u32, groups: u32, eps: f32, total: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> GAMMA: array<f32>;
@group(0) @binding(3) var<storage, read> BETA: array<f32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(5) var<storage, read_write> STATS: array<f32>; // [N * groups, 2]: mean, rstd

// block_sum comes from block_sum.wgsl.

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let ng = wg.x + wg.y * nwg.x; // sample * groups + group
    // The rounded-up last row of a folded grid: nothing to do (uniform per workgroup, so the
    // barriers in block_sum stay in uniform control flow).
    if (ng >= P.total) { return; }
    let cpg = P.c / P.groups;
    let len = cpg * P.hw;
    let base = ng * len; // groups are contiguous: channels g*cpg .. (g+1)*cpg of one sample
    let g = ng % P.groups;
    var s = 0.0;
    for (var i = li; i < len; i += 256u) { s += X[base + i]; }
    let mean = block_sum(li, s) / f32(len);
    var q = 0.0;
    for (var i = li; i < len; i += 256u) { let d = X[base + i] - mean; q += d * d; }
    let rstd = inverseSqrt(block_sum(li, q) / f32(len) + P.eps);
    for (var i = li; i < len; i += 256u) {
        let c = g * cpg + i / P.hw;
        let y = (X[base + i] - mean) * rstd * GAMMA[c] + BETA[c];
        if (SILU) { OUT[base + i] = y * (1.0 / (1.0 + exp(-y))); } else { OUT[base + i] = y; }
    }
    if (li == 0u) { STATS[ng * 2u] = mean; STATS[ng * 2u + 1u] = rstd; }
}
