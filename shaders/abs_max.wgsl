// The largest |x| of a tensor, as its f32 bit pattern (non-negative floats order like their
// bits), max-ed into OUT[P.slot] with atomics: the cooperative-matrix family scales a gradient
// operand by a power of 2 from it before rounding it to f16 (gemm_coop.wgsl `pow2_scale`).
// OUT starts at 0; the result does not depend on the workgroups' order.
struct Params { len: u32, slot: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<atomic<u32>>;

var<workgroup> wmax: atomic<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    var m = 0u;
    let stride = nwg.x * 256u;
    for (var i = wg.x * 256u + li; i < P.len; i += stride) {
        // NaN and infinities count as the largest value (their bits exceed every finite one's).
        m = max(m, bitcast<u32>(abs(X[i])));
    }
    atomicMax(&wmax, m);
    workgroupBarrier();
    if (li == 0u) {
        atomicMax(&OUT[P.slot], atomicLoad(&wmax));
    }
}
