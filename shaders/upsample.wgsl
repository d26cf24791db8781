// Nearest-neighbour x2 upsampling of [N*C, H, W] planes. MODE 0 forward: OUT[.., y, x] =
// X[.., y/2, x/2] (one invocation per output). MODE 1 backward: OUT[.., y, x] = sum of the 2x2
// block of X (the incoming gradient) that the input pixel was copied to (one per input pixel).
struct Params { planes: u32, h: u32, w: u32, _p: u32 }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (MODE == 0u) {
        let ow = 2u * P.w;
        let per = 4u * P.h * P.w;
        if (i >= P.planes * per) { return; }
        let pl = i / per;
        let r = i - pl * per;
        let y = r / ow;
        let x = r - y * ow;
        OUT[i] = X[(pl * P.h + y / 2u) * P.w + x / 2u];
    } else {
        let per = P.h * P.w;
        if (i >= P.planes * per) { return; }
        let pl = i / per;
        let r = i - pl * per;
        let y = r / P.w;
        let x = r - y * P.w;
        let ow = 2u * P.w;
        let b = pl * per * 4u + (2u * y) * ow + 2u * x;
        OUT[i] = X[b] + X[b + 1u] + X[b + ow] + X[b + ow + 1u];
    }
}
