// Gradient of a convolution with respect to its input, as an implicit GEMM:
// M = input channels, N = images * H * W, K = output channels * ks * ks.
// A(ci, (co, ky, kx)) = W[co, ci, ky, kx]; B((co, ky, kx), (img, y, x)) = dY[img, co, oy, ox] where
// y = oy * stride + ky - pad (zero where no such output position exists); C = dX [images, Cin, H, W].
const A_K_FAST: bool = false;
const B_N_FAST: bool = true;

// k = (co, ky, kx) -> (plane offset of dY channel co, ky, kx, offset of W[co, 0, ky, kx])
fn k_state(b: u32, k: u32) -> vec4<i32> {
    let kk = P.ks * P.ks;
    let co = k / kk;
    let r = k - co * kk;
    let ky = r / P.ks;
    return vec4<i32>(i32(co * P.oh * P.ow), i32(ky), i32(r - ky * P.ks), i32(co * P.cin * kk + r));
}

// n = (img, y, x) -> (image offset in dY, y + pad, x + pad, 0)
fn col_state(b: u32, n: u32) -> vec4<i32> {
    let hw = P.h * P.w;
    let img = n / hw;
    let p = n - img * hw;
    let y = p / P.w;
    let x = p - y * P.w;
    return vec4<i32>(i32(img * P.cout * P.oh * P.ow), i32(y + P.pad), i32(x + P.pad), 0);
}

fn load_ak(b: u32, ks: vec4<i32>, m: u32) -> f32 {
    return MAT_A[u32(ks.w) + m * P.ks * P.ks];
}

fn load_bk(ks: vec4<i32>, cs: vec4<i32>) -> f32 {
    let ty = cs.y - ks.y;
    let tx = cs.z - ks.z;
    if (ty < 0 || tx < 0) { return 0.0; }
    let s = i32(P.stride);
    let oy = ty / s;
    let ox = tx / s;
    if (oy * s != ty || ox * s != tx || oy >= i32(P.oh) || ox >= i32(P.ow)) { return 0.0; }
    return MAT_B[u32(cs.x + ks.x + oy * i32(P.ow) + ox)];
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    let hw = P.h * P.w;
    let img = n / hw;
    let p = n - img * hw;
    epilogue((img * P.cin + m) * hw + p, 0u, acc);
}
