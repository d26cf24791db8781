// Group normalisation forward. X is [N, C, HW]; one workgroup per (sample, group) computes the
// group's mean and 1/std (one pass of sums shifted by the group's first value), writes them to STATS for the backward pass, and writes
// OUT = (x - mean) * rstd * gamma[c] + beta[c], and with SILU (a prepended constant) SiLU of that,
// y * sigmoid(y) (GroupNorm + SiLU in one launch; the backward recomputes y).
// total: N * groups, the workgroups that have work (a grid folded over x and y rounds up).
// Elem (prepended) is vec4<f32> when hw is a multiple of 4 (a vec4 never straddles two channels):
// a quarter of the loads, which is what CPU adapters (lavapipe) are slowest at.
struct Params { c: u32, hw: u32, groups: u32, eps: f32, total: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<Elem>;
@group(0) @binding(2) var<storage, read> GAMMA: array<f32>;
@group(0) @binding(3) var<storage, read> BETA: array<f32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<Elem>;
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
    let hw = P.hw / LANES;
    let n = len / LANES; // Elems in the group
    let base = ng * n; // groups are contiguous: channels g*cpg .. (g+1)*cpg of one sample
    let g = ng % P.groups;
    // Mean and variance in one pass over shifted values (x - k, k the group's first value: any
    // value of the data keeps the shifted sums small, so sum(d^2) - sum(d)^2 / n does not cancel
    // the way E[x^2] - E[x]^2 does far from zero).
    let k = lane0(X[base]);
    var s = Elem(0.0);
    var q = Elem(0.0);
    for (var i = li; i < n; i += 256u) { let d = X[base + i] - k; s += d; q += d * d; }
    let sd = block_sum(li, hsum(s));
    let sq = block_sum(li, hsum(q));
    let mean_d = sd / f32(len);
    let mean = k + mean_d;
    let rstd = inverseSqrt(max(sq / f32(len) - mean_d * mean_d, 0.0) + P.eps);
    // y = x * a + b per channel: the channel's scale and shift computed once, no division per value.
    for (var cc = 0u; cc < cpg; cc++) {
        let c = g * cpg + cc;
        let a = rstd * GAMMA[c];
        let b = BETA[c] - mean * a;
        let row = base + cc * hw;
        for (var j = li; j < hw; j += 256u) {
            let y = X[row + j] * a + b;
            if (SILU) { OUT[row + j] = y * (1.0 / (1.0 + exp(-y))); } else { OUT[row + j] = y; }
        }
    }
    if (li == 0u) { STATS[ng * 2u] = mean; STATS[ng * 2u + 1u] = rstd; }
}
