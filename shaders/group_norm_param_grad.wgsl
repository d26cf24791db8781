// Group normalisation: gradients of gamma and beta, one workgroup per channel c:
//   dgamma[c] = sum over samples and pixels of dy * xh,   dbeta[c] = sum of dy,
// where with SILU (a prepended constant) dy is first multiplied by silu'(y), y = xh * gamma[c] + beta[c].
// Elem (prepended) is vec4<f32> when hw is a multiple of 4, else f32: one workgroup per channel
// means few workgroups (16 for `tiny`), so 16-byte loads keep more bytes in flight.
struct Params { c: u32, hw: u32, groups: u32, n: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<Elem>;
@group(0) @binding(2) var<storage, read> DY: array<Elem>;
@group(0) @binding(3) var<storage, read> STATS: array<f32>;
@group(0) @binding(4) var<storage, read_write> DGAMMA: array<f32>;
@group(0) @binding(5) var<storage, read_write> DBETA: array<f32>;
@group(0) @binding(6) var<storage, read> GAMMA: array<f32>; // read only with SILU
@group(0) @binding(7) var<storage, read> BETA: array<f32>; // read only with SILU

var<workgroup> ra: array<f32, 256>;
var<workgroup> rb: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let cpg = P.c / P.groups;
    let g = c / cpg;
    let hw = P.hw / LANES;
    let total = P.n * hw;
    var sa = Elem(0.0);
    var sb = Elem(0.0);
    for (var e = li; e < total; e += 256u) {
        let s = e / hw;
        let p = e - s * hw;
        let idx = (s * P.c + c) * hw + p;
        let st = (s * P.groups + g) * 2u;
        let xh = (X[idx] - Elem(STATS[st])) * STATS[st + 1u];
        var dy = DY[idx];
        if (SILU) {
            let y = xh * GAMMA[c] + BETA[c];
            let s = 1.0 / (1.0 + exp(-y));
            dy = dy * s * (1.0 + y * (1.0 - s));
        }
        sa += dy * xh;
        sb += dy;
    }
    ra[li] = hsum(sa);
    rb[li] = hsum(sb);
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { ra[li] += ra[li + w]; rb[li] += rb[li + w]; }
        workgroupBarrier();
    }
    if (li == 0u) { DGAMMA[c] = ra[0]; DBETA[c] = rb[0]; }
}
