// Strided sums: X viewed as [outer, rows, inner]; OUT[out_offset + r] =
//   scale * sum over (o, j) of f(X[(o * rows + r) * inner + j])
// with MODE 0: x, 1: x * x, 2: x * Y (same layout). One workgroup per row r.
// Covers sums per sample (outer 1), per channel over batch and pixels (outer = batch),
// over everything (rows 1), and the squared norms that gradient clipping needs.
struct Params { outer: u32, rows: u32, inner: u32, out_offset: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= P.rows) { return; }
    let per = P.outer * P.inner;
    // Y is read once outside the loop so that the automatic layout keeps its binding in every MODE.
    var s = 0.0 * Y[0];
    for (var e = li; e < per; e += 256u) {
        let o = e / P.inner;
        let j = e - o * P.inner;
        let idx = (o * P.rows + r) * P.inner + j;
        let x = X[idx];
        switch MODE {
            case 1u: { s += x * x; }
            case 2u: { s += x * Y[min(idx, arrayLength(&Y) - 1u)]; }
            default: { s += x; }
        }
    }
    partial[li] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { partial[li] += partial[li + w]; }
        workgroupBarrier();
    }
    if (li == 0u) { OUT[P.out_offset + r] = partial[0] * P.scale; }
}
