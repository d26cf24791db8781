// Strided sums: X viewed as [outer, rows, inner]; OUT[out_offset + r] =
//   scale * sum over (o, j) of f(X[(o * rows + r) * inner + j])
// with MODE 0: x, 1: x * x, 2: x * Y (same layout). One workgroup per row r.
// Covers sums per sample (outer 1), per channel over batch and pixels (outer = batch: the bias
// gradients), over everything (rows 1), and the squared norms that gradient clipping needs.
// Elem (prepended by the launcher) is vec4<f32> when inner is a multiple of 4, else f32: with
// few rows (16 channels: 16 workgroups on a GPU with 132 cores) the loop is bound by memory
// latency, and 16-byte loads, two per iteration, keep four to eight times more bytes in flight.
struct Params { outer: u32, rows: u32, inner: u32, out_offset: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<Elem>;
@group(0) @binding(2) var<storage, read> Y: array<Elem>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn term(idx: u32) -> Elem {
    let x = X[idx];
    switch MODE {
        case 1u: { return x * x; }
        case 2u: { return x * Y[idx]; }
        default: { return x; }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= P.rows) { return; }
    let inner = P.inner / LANES;
    let per = P.outer * inner;
    // Y is read in MODE 2 only (term); the other modes bind a stand-in (explicit layout).
    var s0 = Elem(0.0);
    var s1 = Elem(0.0);
    var e = li;
    for (; e + 256u < per; e += 512u) {
        let o0 = e / inner;
        let e1 = e + 256u;
        let o1 = e1 / inner;
        s0 += term((o0 * P.rows + r) * inner + (e - o0 * inner));
        s1 += term((o1 * P.rows + r) * inner + (e1 - o1 * inner));
    }
    if (e < per) {
        let o = e / inner;
        s0 += term((o * P.rows + r) * inner + (e - o * inner));
    }
    partial[li] = hsum(s0 + s1);
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { partial[li] += partial[li + w]; }
        workgroupBarrier();
    }
    if (li == 0u) { OUT[P.out_offset + r] = partial[0] * P.scale; }
}
