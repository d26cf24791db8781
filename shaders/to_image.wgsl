// Draws a batch of images x [N, C, H, W] (values in [-1, 1]) as a grid into an rgba8unorm storage
// texture, so the app shows samples without a trip through the CPU. One invocation per texel.
// Values are written as they are (gamma space): egui samples textures as gamma-space colours.

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    cols: u32,
    pad: u32,
    tex_w: u32,
    tex_h: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var out: texture_storage_2d<rgba8unorm, write>;

const BACKGROUND: f32 = 0.12;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.tex_w || gid.y >= p.tex_h) {
        return;
    }
    let cell_w = p.w + p.pad;
    let cell_h = p.h + p.pad;
    // The grid has `pad` texels of background before each cell and after the last column/row.
    let cx = gid.x / cell_w;
    let cy = gid.y / cell_h;
    let ix = gid.x % cell_w;
    let iy = gid.y % cell_h;
    let i = cy * p.cols + cx;
    var rgb = vec3<f32>(BACKGROUND);
    if (ix >= p.pad && iy >= p.pad && cx < p.cols && i < p.n) {
        let px = ix - p.pad;
        let py = iy - p.pad;
        let plane = p.h * p.w;
        let base = i * p.c * plane + py * p.w + px;
        let v0 = x[base];
        if (p.c >= 3u) {
            rgb = vec3<f32>(v0, x[base + plane], x[base + 2u * plane]);
        } else {
            rgb = vec3<f32>(v0);
        }
        rgb = clamp(rgb * 0.5 + vec3<f32>(0.5), vec3<f32>(0.0), vec3<f32>(1.0));
    }
    textureStore(out, vec2<i32>(gid.xy), vec4<f32>(rgb, 1.0));
}
