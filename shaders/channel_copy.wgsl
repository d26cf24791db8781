// Copies channels between tensors of layout [N, C, HW]: for concatenation along channels
// (forward: SRC [N, cs, HW] into DST [N, cd, HW] at channel `offset`) and for its gradient
// (the reverse slice, MODE 1: SRC [N, cd, HW] channels offset..offset+cs into DST [N, cs, HW]),
// and the gradient of a slice (MODE 2: SRC [N, cs, HW] placed at channel `offset` of DST
// [N, cd, HW], zeros in every other channel; one invocation per element of DST).
struct Params { n: u32, cs: u32, cd: u32, hw: u32, offset: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> SRC: array<f32>;
@group(0) @binding(2) var<storage, read_write> DST: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (MODE == 2u) {
        if (i >= P.n * P.cd * P.hw) { return; }
        let s = i / (P.cd * P.hw);
        let r = i - s * P.cd * P.hw;
        let lo = P.offset * P.hw;
        let hi = lo + P.cs * P.hw;
        var v = 0.0;
        if (r >= lo && r < hi) { v = SRC[s * P.cs * P.hw + r - lo]; }
        DST[i] = v;
        return;
    }
    // MODE 0 and 1: i indexes the small tensor [N, cs, HW].
    let per = P.cs * P.hw;
    if (i >= P.n * per) { return; }
    let s = i / per;
    let r = i - s * per;
    let big = s * P.cd * P.hw + P.offset * P.hw + r;
    if (MODE == 0u) { DST[big] = SRC[i]; } else { DST[i] = SRC[big]; }
}
