// Second pass of a split-K GEMM: OUT[i] = sum over parts s of IN[s * len + i], in a fixed order
// (deterministic, unlike atomics). Elem (prepended) is vec4<f32> when len is a multiple of 4.
// A workgroup covers 16 Elem columns with 16 lanes of parts each (lane l sums parts l, l + 16,
// ...), then adds its lanes in a fixed tree: a `tiny` weight gradient (16 x 144 values, ~200
// parts) thus runs on 36 workgroups instead of 9 with 200 sequential loads per invocation.
struct Params { len: u32, parts: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> IN: array<Elem>;
@group(0) @binding(2) var<storage, read_write> OUT: array<Elem>;

const COLS = 16u;
const PART_LANES = 16u;
var<workgroup> lanes: array<Elem, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let len = P.len / LANES;
    let col = li % COLS;
    let lane = li / COLS;
    let i = (wg.x + wg.y * nwg.x) * COLS + col;
    var acc = Elem(0.0);
    if (i < len) {
        for (var s = lane; s < P.parts; s += PART_LANES) {
            acc += IN[s * len + i];
        }
    }
    lanes[li] = acc;
    workgroupBarrier();
    for (var w = PART_LANES / 2u; w > 0u; w >>= 1u) {
        if (lane < w) { lanes[li] += lanes[li + w * COLS]; }
        workgroupBarrier();
    }
    if (lane == 0u && i < len) { OUT[i] = lanes[li]; }
}
