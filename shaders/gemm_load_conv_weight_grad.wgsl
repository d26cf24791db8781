// Gradient of a convolution with respect to its weights, as an implicit GEMM:
// M = output channels, N = Cin * ks * ks, K = images * OH * OW.
// A(co, (img, oy, ox)) = dY[img, co, oy, ox]; B((img, oy, ox), (ci, ky, kx)) = X[img, ci, iy, ix];
// C = dW [Cout, Cin, ks, ks] (beta = 1 accumulates into an existing gradient).
const A_K_FAST: bool = true;
const B_N_FAST: bool = false;

fn load_a(b: u32, m: u32, k: u32) -> f32 {
    let hw = P.oh * P.ow;
    let img = k / hw;
    let p = k - img * hw;
    return A[(img * P.cout + m) * hw + p];
}

fn load_b(b: u32, k: u32, n: u32) -> f32 {
    let kk = P.ks * P.ks;
    let ci = n / kk;
    let r = n - ci * kk;
    let ky = r / P.ks;
    let kx = r - ky * P.ks;
    let hw = P.oh * P.ow;
    let img = k / hw;
    let p = k - img * hw;
    let oy = p / P.ow;
    let ox = p - oy * P.ow;
    let iy = i32(oy * P.stride + ky) - i32(P.pad);
    let ix = i32(ox * P.stride + kx) - i32(P.pad);
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) { return 0.0; }
    return B[((img * P.cin + ci) * P.h + u32(iy)) * P.w + u32(ix)];
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    epilogue(m * P.n + n, 0u, acc);
}
