// Loader for plain batched matmul. A is [M, K] (or [K, M] when TRANS_A), B is [K, N] (or [N, K]
// when TRANS_B), C is [M, N]; all row-major. TRANS_A / TRANS_B are prepended constants.
const A_K_FAST: bool = !TRANS_A;
const B_N_FAST: bool = !TRANS_B;

// x: offset of B's k-th row (or column), y: offset of A's k-th column (or row).
fn k_state(b: u32, k: u32) -> vec4<i32> {
    let kb = select(k * P.n, k, TRANS_B);
    let ka = select(k, k * P.m, TRANS_A);
    return vec4<i32>(i32(b * P.sb + kb), i32(b * P.sa + ka), 0, 0);
}

fn col_state(b: u32, n: u32) -> vec4<i32> {
    return vec4<i32>(i32(select(n, n * P.k, TRANS_B)), 0, 0, 0);
}

fn load_ak(b: u32, ks: vec4<i32>, m: u32) -> f32 {
    return MAT_A[u32(ks.y) + select(m * P.k, m, TRANS_A)];
}

fn load_bk(ks: vec4<i32>, cs: vec4<i32>) -> f32 {
    return MAT_B[u32(ks.x + cs.x)];
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    epilogue(b * P.sc + m * P.n + n, select(m, n, P.bias_per_col != 0u), acc);
}
