// Loader for plain batched matmul. A is [M, K] (or [K, M] when TRANS_A), B is [K, N] (or [N, K]
// when TRANS_B), C is [M, N]; all row-major. TRANS_A / TRANS_B are prepended constants.
const A_K_FAST: bool = !TRANS_A;
const B_N_FAST: bool = !TRANS_B;

fn load_a(b: u32, m: u32, k: u32) -> f32 {
    let base = b * P.sa;
    if (TRANS_A) { return A[base + k * P.m + m]; }
    return A[base + m * P.k + k];
}

fn load_b(b: u32, k: u32, n: u32) -> f32 {
    let base = b * P.sb;
    if (TRANS_B) { return B[base + n * P.k + k]; }
    return B[base + k * P.n + n];
}

fn store_c(b: u32, m: u32, n: u32, acc: f32) {
    epilogue(b * P.sc + m * P.n + n, select(m, n, P.bias_per_col != 0u), acc);
}
