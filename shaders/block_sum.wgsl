// Sum of one value per invocation over a 256-invocation workgroup (tree reduction); every
// invocation gets the total. Prepended to the kernels that need it.
var<workgroup> red: array<f32, 256>;

fn block_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) { red[li] += red[li + w]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
