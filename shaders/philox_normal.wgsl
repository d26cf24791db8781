// Counter-based Gaussian noise: Philox4x32-10 (Salmon et al. 2011) keyed by the 64-bit seed,
// counter (block, stream_lo, stream_hi, 0); each block of 4 uniforms becomes 4 normals by
// Box-Muller. Integer arithmetic alone decides the uniforms. The built-in log, sin and cos may be
// loose (WGSL allows cos an absolute error of 2^-11; SwiftShader in Chromium differs from Mesa by
// 2e-4), so they are computed here from +, *, / and sqrt only, accurate to ~1e-7 on every backend.
struct Params { n: u32, key0: u32, key1: u32, stream_lo: u32, stream_hi: u32, block0: u32, _p1: u32, _p2: u32 }

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

// ln(u) for u in (0, 1): u = m * 2^e with m in [sqrt(1/2), sqrt(2)) taken from the bits, then
// ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, series to s^11 (error < 1e-9).
fn ln_unit(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = i32((bits >> 23u) & 0xffu) - 127;
    var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    if (m > 1.41421356) { m = m * 0.5; e = e + 1; }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
    return 2.0 * s * series + f32(e) * 0.6931471805599453;
}

// (cos, sin) of 2 pi u: quadrant from round(4u), remainder angle in [-pi/4, pi/4], Taylor series
// to degree 10 (error < 1e-9), then a rotation by the quadrant (exact).
fn cos_sin_turns(u: f32) -> vec2<f32> {
    let q = round(4.0 * u);
    let a = 6.283185307179586 * (u - 0.25 * q);
    let a2 = a * a;
    let c = 1.0 - a2 / 2.0 * (1.0 - a2 / 12.0 * (1.0 - a2 / 30.0 * (1.0 - a2 / 56.0 * (1.0 - a2 / 90.0))));
    let sn = a * (1.0 - a2 / 6.0 * (1.0 - a2 / 20.0 * (1.0 - a2 / 42.0 * (1.0 - a2 / 72.0 * (1.0 - a2 / 110.0)))));
    switch (u32(q) & 3u) {
        case 1u: { return vec2<f32>(-sn, c); }
        case 2u: { return vec2<f32>(-c, -sn); }
        case 3u: { return vec2<f32>(sn, -c); }
        default: { return vec2<f32>(c, sn); }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let blk = (wg.x + wg.y * nwg.x) * 256u + li;
    if (blk * 4u >= P.n) { return; }
    // block0: where this draw starts in the stream (a chunk of a larger draw, in blocks of 4).
    let bits = philox(vec4<u32>(blk + P.block0, P.stream_lo, P.stream_hi, 0u), vec2<u32>(P.key0, P.key1));
    let r0 = sqrt(-2.0 * ln_unit(unit(bits.x)));
    let cs0 = cos_sin_turns(unit(bits.y));
    let r1 = sqrt(-2.0 * ln_unit(unit(bits.z)));
    let cs1 = cos_sin_turns(unit(bits.w));
    let z = vec4<f32>(r0 * cs0.x, r0 * cs0.y, r1 * cs1.x, r1 * cs1.y);
    for (var j = 0u; j < 4u; j++) {
        if (blk * 4u + j < P.n) { OUT[blk * 4u + j] = z[j]; }
    }
}
