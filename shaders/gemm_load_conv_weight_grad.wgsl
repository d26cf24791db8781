// Gradient of a convolution with respect to its weights, as an implicit GEMM:
// M = output channels, N = Cin * ks * ks, K = images * OH * OW.
// A(co, (img, oy, ox)) = dY[img, co, oy, ox]; B((img, oy, ox), (ci, ky, kx)) = X[img, ci, iy, ix];
// C = dW [Cout, Cin, ks, ks] (beta = 1 accumulates into an existing gradient).
// Split-K: K is long (every pixel of every image) while M x N is small, so workgroup z = b sums
// only K chunk b (P.k long) into its own slice of C; a second pass (split_sum.wgsl) adds the
// slices. A k past the end (the last chunk) loads zeros.
const A_K_FAST: bool = true;
const B_N_FAST: bool = false;

// k = (img, oy, ox) -> (image offset in X, top row, left column, offset of dY[img, 0, oy, ox])
fn k_state(b: u32, kc: u32) -> vec4<i32> {
    let k = b * P.k + kc;
    if (k >= P.k_total) { return vec4<i32>(0, -1048576, 0, -1); }
    let hw = P.oh * P.ow;
    let img = k / hw;
    let p = k - img * hw;
    let oy = p / P.ow;
    let ox = p - oy * P.ow;
    return vec4<i32>(i32(img * P.cin * P.h * P.w), i32(oy * P.stride) - i32(P.pad), i32(ox * P.stride) - i32(P.pad),
                     i32(img * P.cout * hw + p));
}

// n = (ci, ky, kx) -> (channel plane offset, ky, kx, 0)
fn col_state(b: u32, n: u32) -> vec4<i32> {
    let kk = P.ks * P.ks;
    let ci = n / kk;
    let r = n - ci * kk;
    let ky = r / P.ks;
    return vec4<i32>(i32(ci * P.h * P.w), i32(ky), i32(r - ky * P.ks), 0);
}

fn load_ak(b: u32, ks: vec4<i32>, m: u32) -> f32 {
    if (ks.w < 0) { return 0.0; }
    return MAT_A[u32(ks.w) + m * P.oh * P.ow];
}

fn load_bk(ks: vec4<i32>, cs: vec4<i32>) -> f32 {
    return patch_load(ks, cs);
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    epilogue(b * P.sc + m * P.n + n, 0u, acc);
}
