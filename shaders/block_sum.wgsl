// Sum of one value per invocation over a 256-invocation workgroup; every invocation gets the total.
// Two levels of 16 (16 invocations add 16 values each, then everyone adds those 16) instead of a
// binary tree: 2 barriers instead of 9, in a fixed order (deterministic). On CPU adapters
// (lavapipe) each barrier splits the shader and costs more than the additions it saves.
// Prepended to the kernels that need it.
var<workgroup> red: array<f32, 256>;
var<workgroup> red16: array<f32, 16>;

fn block_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    if (li < 16u) {
        var t = 0.0;
        for (var k = 0u; k < 16u; k++) { t += red[li * 16u + k]; }
        red16[li] = t;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var k = 0u; k < 16u; k++) { total += red16[k]; }
    // No third barrier: the next call writes `red` (read only before the second barrier) and then
    // waits before anyone writes `red16` again.
    return total;
}
