// Gradient of a convolution with respect to its input, as an implicit GEMM:
// M = input channels, N = images * H * W, K = output channels * ks * ks.
// A(ci, (co, ky, kx)) = W[co, ci, ky, kx]; B((co, ky, kx), (img, y, x)) = dY[img, co, oy, ox] where
// y = oy * stride + ky - pad (zero where no such output position exists); C = dX [images, Cin, H, W].
const A_K_FAST: bool = false;
const B_N_FAST: bool = true;

fn load_a(b: u32, m: u32, k: u32) -> f32 {
    let kk = P.ks * P.ks;
    let co = k / kk;
    let r = k - co * kk;
    return A[(co * P.cin + m) * kk + r];
}

fn load_b(b: u32, k: u32, n: u32) -> f32 {
    let kk = P.ks * P.ks;
    let co = k / kk;
    let r = k - co * kk;
    let ky = r / P.ks;
    let kx = r - ky * P.ks;
    let hw = P.h * P.w;
    let img = n / hw;
    let p = n - img * hw;
    let y = p / P.w;
    let x = p - y * P.w;
    let ty = i32(y + P.pad) - i32(ky);
    let tx = i32(x + P.pad) - i32(kx);
    if (ty < 0 || tx < 0) { return 0.0; }
    let oy = u32(ty) / P.stride;
    let ox = u32(tx) / P.stride;
    if (oy * P.stride != u32(ty) || ox * P.stride != u32(tx) || oy >= P.oh || ox >= P.ow) { return 0.0; }
    return B[((img * P.cout + co) * P.oh + oy) * P.ow + ox];
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    let hw = P.h * P.w;
    let img = n / hw;
    let p = n - img * hw;
    epilogue((img * P.cin + m) * hw + p, 0u, acc);
}
