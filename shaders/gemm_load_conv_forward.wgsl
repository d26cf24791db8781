// Convolution forward as an implicit GEMM (no im2col buffer):
// M = output channels, N = images * OH * OW, K = input channels * ks * ks.
// A = weights [Cout, Cin, ks, ks]; B = the input patch element; C = output [images, Cout, OH, OW].
const A_K_FAST: bool = true;
const B_N_FAST: bool = true;

// k = (ci, ky, kx) -> (channel plane offset, ky, kx, k)
fn k_state(b: u32, k: u32) -> vec4<i32> {
    let kk = P.ks * P.ks;
    let ci = k / kk;
    let r = k - ci * kk;
    let ky = r / P.ks;
    return vec4<i32>(i32(ci * P.h * P.w), i32(ky), i32(r - ky * P.ks), i32(k));
}

// n = (img, oy, ox) -> (image offset, top row, left column, 0) of its receptive field
fn col_state(b: u32, n: u32) -> vec4<i32> {
    let hw = P.oh * P.ow;
    let img = n / hw;
    let p = n - img * hw;
    let oy = p / P.ow;
    let ox = p - oy * P.ow;
    return vec4<i32>(i32(img * P.cin * P.h * P.w), i32(oy * P.stride) - i32(P.pad), i32(ox * P.stride) - i32(P.pad), 0);
}

fn load_ak(b: u32, ks: vec4<i32>, m: u32) -> f32 {
    return MAT_A[m * P.k + u32(ks.w)];
}

fn load_bk(ks: vec4<i32>, cs: vec4<i32>) -> f32 {
    return patch_load(ks, cs);
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    let hw = P.oh * P.ow;
    let img = n / hw;
    let p = n - img * hw;
    let ci = (img * P.cout + m) * hw + p;
    epilogue_res(ci, m, select(ci, img * P.cout + m, P.residual == 2u), acc);
}
