// Counter-based Gaussian noise: Philox4x32-10 (Salmon et al. 2011) keyed by the 64-bit seed,
// counter (block, stream_lo, stream_hi, 0); each block of 4 uniforms becomes 4 normals by
// Box-Muller. Integer arithmetic alone decides the bits, so every backend draws the same uniforms;
// log, sin and cos then differ between drivers only in their last bits (tests state the tolerance).
struct Params { n: u32, key0: u32, key1: u32, stream_lo: u32, stream_hi: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;

// (hi, lo) of the 64-bit product, from 16-bit halves (WGSL has no 64-bit integers).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu; let a1 = a >> 16u;
    let b0 = b & 0xffffu; let b1 = b >> 16u;
    let p00 = a0 * b0; let p10 = a1 * b0; let p01 = a0 * b1; let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p10 & 0xffffu) + p01; // cannot overflow: <= 0xffffffff
    let hi = p11 + (p10 >> 16u) + (mid >> 16u);
    let lo = (mid << 16u) | (p00 & 0xffffu);
    return vec2<u32>(hi, lo);
}

fn philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Uniform in (0, 1): the top 24 bits, centred in their interval (never 0, never 1).
fn unit(x: u32) -> f32 {
    return (f32(x >> 8u) + 0.5) * (1.0 / 16777216.0);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let blk = (wg.x + wg.y * nwg.x) * 256u + li;
    if (blk * 4u >= P.n) { return; }
    let bits = philox(vec4<u32>(blk, P.stream_lo, P.stream_hi, 0u), vec2<u32>(P.key0, P.key1));
    let r0 = sqrt(-2.0 * log(unit(bits.x)));
    let t0 = 6.283185307179586 * unit(bits.y);
    let r1 = sqrt(-2.0 * log(unit(bits.z)));
    let t1 = 6.283185307179586 * unit(bits.w);
    let z = vec4<f32>(r0 * cos(t0), r0 * sin(t0), r1 * cos(t1), r1 * sin(t1));
    for (var j = 0u; j < 4u; j++) {
        if (blk * 4u + j < P.n) { OUT[blk * 4u + j] = z[j]; }
    }
}
