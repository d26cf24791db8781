//! Cooperative matrices (the tensor-core path), on adapters that offer them: wgpu's
//! `EXPERIMENTAL_COOPERATIVE_MATRIX` with f16 inputs and f32 accumulators. On lavapipe from Mesa
//! 26 (`.ci/coop-chroot`, which `.ci/run` uses with FEWSTEP_REQUIRE_COOP=1) this runs; on an
//! adapter without the feature each test says why it skips (and fails under
//! FEWSTEP_REQUIRE_COOP=1, so the chroot step cannot pass by skipping).

use half::f16;

/// The adapter and its f16 x f16 -> f32 matrix size, or why there is none.
fn coop_adapter() -> Result<(wgpu::Adapter, u32), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .map_err(|e| format!("no Vulkan adapter: {e}"))?;
    let name = adapter.get_info().name;
    let wanted = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    if !adapter.features().contains(wanted) {
        return Err(format!(
            "'{name}' offers no cooperative matrices with f16 (Mesa 26's lavapipe does: \
             .ci/coop-chroot)"
        ));
    }
    let size = adapter
        .cooperative_matrix_properties()
        .iter()
        .filter(|p| {
            p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
                && p.m_size == p.n_size
                && p.n_size == p.k_size
        })
        .map(|p| p.m_size)
        .min()
        .ok_or_else(|| format!("'{name}' lists no square f16 x f16 -> f32 configuration"))?;
    Ok((adapter, size))
}

/// Skips (with the reason) where the adapter has no cooperative matrices, unless they are
/// required here.
fn adapter_or_skip(test: &str) -> Option<(wgpu::Adapter, u32)> {
    match coop_adapter() {
        Ok(a) => Some(a),
        Err(why) if std::env::var("FEWSTEP_REQUIRE_COOP").is_ok_and(|v| v == "1") => {
            panic!("{test}: FEWSTEP_REQUIRE_COOP=1 but {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}

/// C = A B for S x S row-major f16 matrices through coopLoadT / coopMultiplyAdd / coopStoreT.
fn coop_product(adapter: &wgpu::Adapter, s: u32, a: &[f16], b: &[f16]) -> Vec<f32> {
    use wgpu::util::DeviceExt;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::SHADER_F16,
        // SAFETY: the feature is experimental in wgpu 30; this test checks its products.
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        ..Default::default()
    }))
    .expect("a device with cooperative matrices");
    let wgsl = format!(
        "enable f16;\nenable wgpu_cooperative_matrix;\n\
         @group(0) @binding(0) var<storage, read> X: array<f16>;\n\
         @group(0) @binding(1) var<storage, read> Y: array<f16>;\n\
         @group(0) @binding(2) var<storage, read_write> OUT: array<f32>;\n\
         @compute @workgroup_size({lanes})\n\
         fn main() {{\n\
             let ma = coopLoadT<coop_mat{s}x{s}<f16, A>>(&X[0], {s}u);\n\
             let mb = coopLoadT<coop_mat{s}x{s}<f16, B>>(&Y[0], {s}u);\n\
             var acc = coop_mat{s}x{s}<f32, C>();\n\
             acc = coopMultiplyAdd(ma, mb, acc);\n\
             coopStoreT(acc, &OUT[0], {s}u);\n\
         }}\n",
        lanes = adapter.get_info().subgroup_min_size.max(1),
    );
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("coop product"),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("coop product"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let input = |data: &[f16]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let (ba, bb) = (input(a), input(b));
    let bytes = (s * s * 4) as u64;
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ba.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: bb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: out.as_entire_binding(),
            },
        ],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    enc.copy_buffer_to_buffer(&out, 0, &read, 0, bytes);
    queue.submit([enc.finish()]);
    read.slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let view = read.slice(..).get_mapped_range().expect("mapped");
    bytemuck::cast_slice(&view).to_vec()
}

/// An asymmetric product (A B != B A, neither operand symmetric) of small integers in f16 is
/// exact in f32, so it must equal the f64 reference exactly; a transposed reading of either
/// operand would not.
#[test]
fn cooperative_matrix_products_are_row_major_and_exact() {
    let Some((adapter, s)) = adapter_or_skip("cooperative_matrix_products_are_row_major_and_exact")
    else {
        return;
    };
    let n = (s * s) as usize;
    let a: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(((i * 7 % 11) as f32) - 5.0))
        .collect();
    let b: Vec<f16> = (0..n)
        .map(|i| f16::from_f32(((i * 5 % 13) as f32) - 6.0))
        .collect();
    let s = s as usize;
    let reference = |x: &[f16], y: &[f16]| -> Vec<f64> {
        (0..s * s)
            .map(|ij| {
                let (i, j) = (ij / s, ij % s);
                (0..s)
                    .map(|k| x[i * s + k].to_f64() * y[k * s + j].to_f64())
                    .sum()
            })
            .collect()
    };
    let want = reference(&a, &b);
    assert_ne!(want, reference(&b, &a), "the operands do not commute");
    let got = coop_product(&adapter, s as u32, &a, &b);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{}: {s}x{s}x{s} f16 -> f32 cooperative product, max |err| {worst} (exact expected)",
        adapter.get_info().name
    );
    assert_eq!(worst, 0.0, "row-major A B, exactly");
}

// ---------------- the coop GEMM family ----------------

use crate::common::*;
use fewstep::gpu::{Gpu, GpuOptions, KernelVariant};
use fewstep::tensor::{Conv2d, MatmulOpts, Residual, Tensor};

/// A device on the coop family (FEWSTEP_KERNELS=coop: its self-check passed), or why not.
fn coop_gpu_or_skip(test: &str) -> Option<Gpu> {
    let mut opts = GpuOptions::from_env();
    opts.variant = Some(KernelVariant::Coop);
    let why = match Gpu::new_blocking(opts) {
        Ok(g) if g.variant() == KernelVariant::Coop => return Some(g),
        Ok(g) => g.variant_reason(),
        Err(e) => e.to_string(),
    };
    if std::env::var("FEWSTEP_REQUIRE_COOP").is_ok_and(|v| v == "1") {
        panic!("{test}: FEWSTEP_REQUIRE_COOP=1 but {why}");
    }
    eprintln!("{test}: skipped: {why}");
    None
}

/// f16's unit roundoff: 11 significant bits, round to nearest, so |fl16(x) - x| <= U16 |x|
/// for x in f16's normal range (|x| >= 2^-14).
const U16: f64 = 1.0 / 2048.0;
/// Below 2^-14 f16 is subnormal with spacing 2^-24: the absolute error is at most 2^-25.
const ETA16: f64 = 1.0 / 33_554_432.0;
/// f32's unit roundoff.
const U32: f64 = 1.0 / 16_777_216.0;

/// The error bound of one output of the coop family, from the derivation in ARCHITECTURE.md
/// ("Tensor cores (the coop family)"): with a' = fl16(a), |a' - a| <= U16 |a| + ETA16 (and the same
/// for b), each product of the K terms is off by at most (2 U16 + U16^2) |a||b| +
/// ETA16 (1 + U16) (|a| + |b|) + ETA16^2; the product of two f16 values is exact in f32
/// (22 significant bits), so the f32 accumulation adds at most gamma_K = K U32 / (1 - K U32)
/// of sum |a'||b'|; the epilogue (alpha, bias, residual, three f32 roundings) at most
/// 4 U32 (|value| + sum |a'||b'|). `abs` is sum_k |a_k||b_k|, `l1` sum_k (|a_k| + |b_k|).
fn f16_bound(abs: f64, l1: f64, k: usize, value: f64) -> f64 {
    let kf = k as f64;
    let gamma = kf * U32 / (1.0 - kf * U32);
    let prod = (2.0 * U16 + U16 * U16) * abs + ETA16 * (1.0 + U16) * l1 + kf * ETA16 * ETA16;
    let abs16 = abs * (1.0 + U16).powi(2) + ETA16 * (1.0 + U16) * l1;
    prod + gamma * abs16 + 4.0 * U32 * (value.abs() + abs16)
}

/// Asserts |got - want| <= bound elementwise; returns the largest |err| / bound and |err|.
fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut ratio, mut worst) = (0.0f64, 0.0f64);
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= b,
            "{what}: element {i} is {g}, the f64 reference {w} (|err| {err:.3e} > the f16 bound {b:.3e})"
        );
        ratio = ratio.max(err / b);
        worst = worst.max(err);
    }
    (ratio, worst)
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Bounds of a GEMM's outputs given the references of |A||B| and (|A| 1 + 1 |B|) products.
fn bounds(abs_ref: &[f64], l1_ref: &[f64], k: usize, want: &[f64]) -> Vec<f64> {
    abs_ref
        .iter()
        .zip(l1_ref)
        .zip(want)
        .map(|((&a, &l), &w)| f16_bound(a, l, k, w))
        .collect()
}

/// Logs the largest error relative to its bound, and to f16's plain rounding of the result
/// (|err| / (U16 |want|max)): how much of the bound the family uses.
fn report(what: &str, (ratio, worst): (f64, f64), want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    eprintln!(
        "{what}: max |err| {worst:.2e} = {:.2} x U16 x max|ref|, {:.1}% of the f16 bound",
        worst / (U16 * scale.max(1e-30)),
        100.0 * ratio
    );
}

#[test]
fn coop_matmul_is_within_its_f16_bound() {
    let Some(g) = coop_gpu_or_skip("coop_matmul_is_within_its_f16_bound") else {
        return;
    };
    let mut r = rng("coop matmul");
    let (s, _) = g.coop_sizes().unwrap();
    let s = s as usize;
    // Odd sizes, edge tiles on every side, K shorter than a slice, one slice plus one, and
    // shapes that reach every tile of the rule (M up to S, 2S, 4S and more).
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (s - 1, 9 * s + 3, 2 * s + 1),
        (2 * s - 3, 33, 4 * s + 3),
        (65, 33, 17),
        (4 * s + 1, 4 * s + 5, 129),
        (100, 7, 130),
        (17, 129, 65),
        (9 * s + 5, 30 * s + 1, 3 * s - 1),
    ];
    let mut worst = (0.0f64, 0.0f64);
    let mut largest = vec![0.0f64];
    for &(m, n, k) in &shapes {
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
            for batch in [1usize, 3] {
                let a = uniform(&mut r, batch * m * k, 1.0);
                let b = uniform(&mut r, batch * k * n, 1.0);
                let ash = if ta { [batch, k, m] } else { [batch, m, k] };
                let bsh = if tb { [batch, n, k] } else { [batch, k, n] };
                let c = Tensor::from_slice(&g, &ash, &a).matmul_with(
                    &Tensor::from_slice(&g, &bsh, &b),
                    MatmulOpts {
                        trans_a: ta,
                        trans_b: tb,
                        alpha: 1.0,
                        gradients: (false, false),
                    },
                    None,
                );
                assert_eq!(g.last_gemm().unwrap().0, KernelVariant::Coop);
                let want = matmul_ref(&a, &b, batch, m, n, k, ta, tb);
                let abs_ref = matmul_ref(&abs(&a), &abs(&b), batch, m, n, k, ta, tb);
                let ones_a = vec![1.0; a.len()];
                let ones_b = vec![1.0; b.len()];
                let l1: Vec<f64> = matmul_ref(&abs(&a), &ones_b, batch, m, n, k, ta, tb)
                    .iter()
                    .zip(matmul_ref(&ones_a, &abs(&b), batch, m, n, k, ta, tb))
                    .map(|(x, y)| x + y)
                    .collect();
                let what = format!("coop matmul {m}x{n}x{k} batch {batch} ta {ta} tb {tb}");
                let got = c.to_vec_blocking().unwrap();
                let e = assert_within(&what, &got, &want, &bounds(&abs_ref, &l1, k, &want));
                if e.0 > worst.0 {
                    worst = e;
                    largest = want.clone();
                }
            }
        }
    }
    report("coop matmul, all shapes", worst, &largest);

    // A 2-D operand shared across the batch of the other, alpha and a bias per column; and
    // values past f16's range saturate instead of turning into infinities.
    let (batch, m, n, k) = (2, 21, 19, 37);
    let a = uniform(&mut r, batch * m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let bias = uniform(&mut r, n, 1.0);
    let c = Tensor::from_slice(&g, &[batch, m, k], &a).matmul_with(
        &Tensor::from_slice(&g, &[k, n], &b),
        MatmulOpts {
            alpha: 0.25,
            ..Default::default()
        },
        Some(&Tensor::from_slice(&g, &[n], &bias)),
    );
    let b2: Vec<f32> = (0..batch).flat_map(|_| b.iter().copied()).collect();
    let mut want = matmul_ref(&a, &b2, batch, m, n, k, false, false);
    let mut bound = bounds(
        &matmul_ref(&abs(&a), &abs(&b2), batch, m, n, k, false, false),
        &vec![2.0 * k as f64; want.len()],
        k,
        &want,
    );
    for (i, (w, bd)) in want.iter_mut().zip(&mut bound).enumerate() {
        *w = 0.25 * *w + bias[i % n] as f64;
        *bd = 0.25 * *bd + 4.0 * U32 * (w.abs() + bias[i % n].abs() as f64);
    }
    let e = assert_within(
        "coop matmul shared B, alpha, bias",
        &c.to_vec_blocking().unwrap(),
        &want,
        &bound,
    );
    report("coop matmul shared B, alpha, bias", e, &want);
    let big = Tensor::from_slice(&g, &[1, 2], &[1e6, -1e6]).matmul(&Tensor::from_slice(
        &g,
        &[2, 1],
        &[1.0, 0.5],
    ));
    let v = big.to_vec_blocking().unwrap()[0];
    assert_eq!(
        v,
        65504.0 * 0.5,
        "out-of-range operands saturate to f16's largest value"
    );
}

#[test]
fn coop_convolutions_are_within_their_f16_bound() {
    let Some(g) = coop_gpu_or_skip("coop_convolutions_are_within_their_f16_bound") else {
        return;
    };
    let mut r = rng("coop conv");
    let cs = |n, cin, h, w, cout, ks, stride, pad| ConvShape {
        n,
        cin,
        h,
        w,
        cout,
        ks,
        stride,
        pad,
    };
    let shapes = [
        cs(1, 1, 1, 1, 1, 1, 1, 0),
        cs(2, 3, 7, 5, 4, 3, 1, 1),
        cs(1, 5, 8, 8, 3, 3, 2, 1),
        cs(3, 4, 6, 6, 17, 1, 1, 0),
        cs(2, 16, 17, 17, 65, 3, 1, 1),
        cs(2, 6, 3, 3, 5, 3, 2, 1),
        // `tiny`'s 16-channel convolutions, and weight gradients long enough along K to be
        // split into chunks (the last one partial).
        cs(2, 16, 9, 9, 16, 3, 1, 1),
        cs(8, 16, 16, 16, 16, 3, 1, 1),
        cs(5, 3, 23, 22, 6, 3, 1, 1),
        cs(14, 2, 30, 30, 3, 3, 2, 1),
        cs(2, 33, 7, 9, 130, 1, 1, 0),
    ];
    let mut worst = [(0.0f64, 0.0f64); 3];
    let mut scale = [0.0f64; 3];
    for (si, c) in shapes.iter().enumerate() {
        let x = uniform(&mut r, c.x_len(), 1.0);
        let w = uniform(&mut r, c.w_len(), 1.0);
        let bias = uniform(&mut r, c.cout, 1.0);
        let dy = uniform(&mut r, c.y_len(), 1.0);
        let per_channel = uniform(&mut r, c.n * c.cout, 1.0);
        let conv = Conv2d {
            stride: c.stride,
            pad: c.pad,
            pad_end: 0,
        };
        let xs = [c.n, c.cin, c.h, c.w];
        let ws = [c.cout, c.cin, c.ks, c.ks];
        let ys = [c.n, c.cout, c.oh(), c.ow()];
        let (xt, wt) = (
            Tensor::from_slice(&g, &xs, &x),
            Tensor::from_slice(&g, &ws, &w),
        );
        let dyt = Tensor::from_slice(&g, &ys, &dy);
        let pct = Tensor::from_slice(&g, &[c.n, c.cout], &per_channel);
        let hw = c.oh() * c.ow();
        // Shapes take turns adding nothing, a full residual and a value per image and channel.
        let (res, added): (Option<Residual>, Vec<f32>) = match si % 3 {
            0 => (None, vec![0.0; c.y_len()]),
            1 => (Some(Residual::Full(&dyt)), dy.clone()),
            _ => (
                Some(Residual::PerImageChannel(&pct)),
                (0..c.y_len()).map(|j| per_channel[j / hw]).collect(),
            ),
        };
        let y = conv.forward_add(
            &xt,
            &wt,
            Some(&Tensor::from_slice(&g, &[c.cout], &bias)),
            res,
        );
        assert_eq!(g.last_gemm().unwrap().0, KernelVariant::Coop);
        let dx = conv.input_grad(&dyt, &wt, &xs);
        let dw = conv.weight_grad(&dyt, &xt, &ws);
        let (ax, aw, ady) = (abs(&x), abs(&w), abs(&dy));
        let ones = |n| vec![1.0f32; n];
        let l1 = |p: Vec<f64>, q: Vec<f64>| p.iter().zip(q).map(|(a, b)| a + b).collect::<Vec<_>>();
        let kf = c.cin * c.ks * c.ks;
        let kx = c.cout * c.ks * c.ks;
        let kw = c.n * hw;
        // Forward: conv + bias + residual; the bound's epilogue term covers the two adds.
        let want_y: Vec<f64> = c
            .forward_ref(&x, &w, Some(&bias))
            .iter()
            .zip(&added)
            .map(|(f, &d)| f + d as f64)
            .collect();
        let by = bounds(
            &c.forward_ref(&ax, &aw, None),
            &l1(
                c.forward_ref(&ax, &ones(w.len()), None),
                c.forward_ref(&ones(x.len()), &aw, None),
            ),
            kf,
            &want_y,
        );
        let by: Vec<f64> = by
            .iter()
            .enumerate()
            .map(|(i, b)| b + 4.0 * U32 * (bias[i / hw % c.cout].abs() + added[i].abs()) as f64)
            .collect();
        let want_dx = c.input_grad_ref(&dy, &w);
        let bx = bounds(
            &c.input_grad_ref(&ady, &aw),
            &l1(
                c.input_grad_ref(&ady, &ones(w.len())),
                c.input_grad_ref(&ones(dy.len()), &aw),
            ),
            kx,
            &want_dx,
        );
        let want_dw = c.weight_grad_ref(&dy, &x);
        // Split-K adds the chunks' partial sums in f32 once more: counted as K terms again.
        let bw: Vec<f64> = bounds(
            &c.weight_grad_ref(&ady, &ax),
            &l1(
                c.weight_grad_ref(&ady, &ones(x.len())),
                c.weight_grad_ref(&ones(dy.len()), &ax),
            ),
            2 * kw,
            &want_dw,
        );
        let results = [
            ("forward", y, want_y, by),
            ("dx", dx, want_dx, bx),
            ("dw", dw, want_dw, bw),
        ];
        for (p, (name, got, want, bound)) in results.into_iter().enumerate() {
            let e = assert_within(
                &format!("coop conv {name} {c:?} (residual kind {})", si % 3),
                &got.to_vec_blocking().unwrap(),
                &want,
                &bound,
            );
            if e.0 > worst[p].0 {
                worst[p] = e;
                scale[p] = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
            }
        }
    }
    for (p, name) in ["forward", "dx", "dw"].iter().enumerate() {
        report(
            &format!("coop conv {name}, all shapes"),
            worst[p],
            &[scale[p]],
        );
    }
}

/// The self-check passes on this driver (the tests above ran on its verdict), its verdict is
/// cached, and a kernel that reads B column-major (a wrong product, of the kind the wgpu example
/// had before gfx-rs/wgpu#9892) fails it: the device then runs the blocked family, says why,
/// and its products are right.
#[test]
fn the_self_check_fails_a_wrong_product_and_the_blocked_family_runs() {
    let test = "the_self_check_fails_a_wrong_product_and_the_blocked_family_runs";
    let Some(good) = coop_gpu_or_skip(test) else {
        return;
    };
    assert!(good.coop_verdict().unwrap().is_ok());
    eprintln!("{test}: {}", good.variant_reason());
    let cached = std::fs::read_to_string(fewstep::tensor::coop_check_cache_file().unwrap())
        .expect("the verdict is cached");
    assert!(
        cached
            .lines()
            .any(|l| l.starts_with(&good.info().name) && l.contains("\tok")),
        "no cached verdict for '{}' in:\n{cached}",
        good.info().name
    );

    let mut opts = GpuOptions::from_env();
    opts.variant = Some(KernelVariant::Coop);
    opts.coop_fault = true;
    let bad = Gpu::new_blocking(opts).unwrap();
    assert_eq!(bad.variant(), KernelVariant::Blocked);
    let why = bad.variant_reason();
    eprintln!("{test}: with the fault: {why}");
    assert!(
        why.contains("failed fewstep's self-check") && why.contains("the exact product is"),
        "{why}"
    );
    assert!(bad.coop_verdict().unwrap().is_err());
    // Asking again does not bring the family back.
    assert_eq!(bad.set_variant(KernelVariant::Coop), KernelVariant::Blocked);
    let mut r = rng(test);
    let (m, n, k) = (19, 23, 29);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let c = Tensor::from_slice(&bad, &[m, k], &a).matmul(&Tensor::from_slice(&bad, &[k, n], &b));
    assert_eq!(bad.last_gemm().unwrap().0, KernelVariant::Blocked);
    assert_close(
        "blocked fallback",
        &c.to_vec_blocking().unwrap(),
        &matmul_ref(&a, &b, 1, m, n, k, false, false),
        1e-5,
        1e-5,
    );
    // The fault is never cached: the good verdict stands.
    let again = std::fs::read_to_string(fewstep::tensor::coop_check_cache_file().unwrap()).unwrap();
    assert_eq!(again, cached);
}

/// A cached verdict stands until someone asks: with a failure planted under this adapter's key
/// (in a cache folder of its own, so the other tests keep theirs), `fewstep info` reports the
/// planted reason as the cached verdict, and `fewstep selftest` checks afresh, passes, and caches
/// the pass over it.
#[test]
fn selftest_checks_afresh_whatever_the_cache_says() {
    let test = "selftest_checks_afresh_whatever_the_cache_says";
    let Some(good) = coop_gpu_or_skip(test) else {
        return;
    };
    let key = fewstep::tensor::coop_check_key(&good).expect("a key");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coop-check.tsv");
    std::fs::write(&file, format!("{key}\tfail\tplanted by a test\n")).unwrap();
    let run = |args: &[&str]| {
        let o = crate::common::bin::command()
            .args(args)
            .env("FEWSTEP_CACHE_DIR", dir.path())
            .env("FEWSTEP_KERNELS", "coop")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("$ fewstep {}\n{text}", args.join(" "));
        text
    };
    let info = run(&["info"]);
    assert!(
        info.contains("planted by a test (cached verdict)"),
        "info did not use the cached verdict:\n{info}"
    );
    let report = run(&["selftest"]);
    assert!(
        report.contains("self-check run afresh, ignoring the cache: passed"),
        "{report}"
    );
    let cached = std::fs::read_to_string(&file).unwrap();
    assert_eq!(cached, format!("{key}\tok\n"));
}

/// The f32 family this adapter runs when cooperative matrices are off.
fn f32_family(g: &Gpu) -> KernelVariant {
    if g.has_subgroups() {
        KernelVariant::Subgroup
    } else {
        KernelVariant::Blocked
    }
}

/// The U-Net's gradient with every GEMM of the backward (and forward) pass on the coop family
/// against central differences of the f32 forward pass, at the f32 test's tolerances.
#[test]
fn coop_unet_gradient_matches_finite_differences() {
    let Some(g) = coop_gpu_or_skip("coop_unet_gradient_matches_finite_differences") else {
        return;
    };
    let f32s = f32_family(&g);
    crate::training::unet_gradient_check(
        &g,
        KernelVariant::Coop,
        f32s,
        (crate::training::FD_ATOL, crate::training::FD_RTOL),
    );
}

/// The `tiny` training both coop training tests run on 8x8 patterns.
fn patterns_config() -> fewstep::diffusion::TrainConfig {
    use fewstep::diffusion::{Parameterization, TrainConfig, Weighting};
    TrainConfig {
        param: Parameterization::V,
        weighting: Weighting::SnrTrunc,
        batch: 16,
        lr: 2e-3,
        warmup: 20,
        ema_decay: 0.99,
        grad_clip: 1.0,
        seed: 1,
        adam: fewstep::tensor::AdamConfig::default(),
        uncond_prob: 0.0,
    }
}

/// Largest |a - b| / |b| over two loss curves.
fn worst_relative(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64 / y as f64).abs())
        .fold(0.0, f64::max)
}

/// PSNR of `a` against `b`, pixels in [-1, 1] (peak-to-peak 2).
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (4.0 / mse.max(1e-30)).log10()
}

/// Stated bounds of the coop family against f32 on the same adapter (measured on lavapipe,
/// ARCHITECTURE.md "Tensor cores (the coop family)": 0.04% and 0.03% worst, 79-83 dB): the mean
/// training loss of every 25 updates within 5% of f32's, the same for a distillation halving,
/// and DDIM samples of one model at least 50 dB PSNR from f32's.
const LOSS_REL_BOUND: f64 = 0.05;
const SAMPLE_PSNR_MIN: f64 = 50.0;

#[test]
fn coop_training_distillation_and_sampling_track_f32() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::{
        DistillConfig, Distiller, SampleOptions, Sampler, SamplerKind, Trainer,
    };
    use fewstep::nn::UNetConfig;
    use fewstep::tensor::AdamConfig;
    let test = "coop_training_distillation_and_sampling_track_f32";
    let Some(g) = coop_gpu_or_skip(test) else {
        return;
    };
    let f32s = f32_family(&g);
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let cfg = patterns_config();
    let (updates, every) = (200, 25);
    let train = |family| {
        assert_eq!(g.set_variant(family), family);
        let mut tr = Trainer::new(&g, arch.clone(), cfg.clone()).unwrap();
        let mut losses = vec![];
        for i in 0..updates {
            tr.step(&data);
            if (i + 1) % every == 0 {
                losses.push(pollster::block_on(tr.take_mean_loss()).unwrap().unwrap());
            }
        }
        assert_eq!(g.last_gemm().unwrap().0, family);
        (losses, tr.ema_model())
    };
    let (loss_f32, teacher) = train(f32s);
    let (loss_coop, _) = train(KernelVariant::Coop);
    let rel = worst_relative(&loss_coop, &loss_f32);
    eprintln!("{test}: training, mean loss per {every} updates\n  f32  {loss_f32:.4?}\n  coop {loss_coop:.4?}\n  worst relative difference {:.2}%", 100.0 * rel);
    assert!(loss_coop.iter().all(|l| l.is_finite()));
    assert!(
        rel <= LOSS_REL_BOUND,
        "coop training's loss strays {:.1}% from f32's (bound {:.0}%)",
        100.0 * rel,
        100.0 * LOSS_REL_BOUND
    );

    // One halving (8 -> 4 steps) of the f32-trained teacher, on each family.
    let dcfg = DistillConfig {
        teacher_steps: 8,
        updates: 50,
        batch: 16,
        lr: 5e-4,
        grad_clip: 1.0,
        seed: 4,
        adam: AdamConfig::default(),
        ema_decay: None,
        guidance_stage: false,
    };
    let distill = |family| {
        assert_eq!(g.set_variant(family), family);
        let copy = fewstep::diffusion::Denoiser {
            net: fewstep::nn::UNet::from_params(
                teacher.net.config.clone(),
                teacher.net.params.iter().map(|p| p.deep_clone()).collect(),
            )
            .unwrap(),
            param: teacher.param,
        };
        let mut d = Distiller::new(&g, copy, dcfg.clone());
        let mut losses = vec![];
        while !d.is_done() {
            d.step(&data);
            if d.update.is_multiple_of(every) {
                losses.push(pollster::block_on(d.take_mean_loss()).unwrap().unwrap());
            }
        }
        assert_eq!(g.last_gemm().unwrap().0, family);
        losses
    };
    let d_f32 = distill(f32s);
    let d_coop = distill(KernelVariant::Coop);
    let rel = worst_relative(&d_coop, &d_f32);
    eprintln!("{test}: halving 8 -> 4, mean loss per {every} updates\n  f32  {d_f32:.5?}\n  coop {d_coop:.5?}\n  worst relative difference {:.2}%", 100.0 * rel);
    assert!(
        rel <= LOSS_REL_BOUND,
        "coop distillation's loss strays {:.1}% from f32's (bound {:.0}%)",
        100.0 * rel,
        100.0 * LOSS_REL_BOUND
    );

    // DDIM samples of the same model.
    let sample = |family, steps| {
        assert_eq!(g.set_variant(family), family);
        let out = Sampler::new(
            &teacher,
            SampleOptions {
                steps,
                count: 16,
                seed: 5,
                kind: SamplerKind::Ddim,
                clip: true,
            },
        )
        .run(&teacher)
        .to_vec_blocking()
        .unwrap();
        assert_eq!(g.last_gemm().unwrap().0, family);
        out
    };
    for steps in [4, 16] {
        let p = psnr(&sample(KernelVariant::Coop, steps), &sample(f32s, steps));
        eprintln!("{test}: {steps}-step DDIM samples, coop against f32: {p:.1} dB");
        assert!(
            p >= SAMPLE_PSNR_MIN,
            "{steps} steps: {p:.1} dB < {SAMPLE_PSNR_MIN} dB"
        );
    }
}

/// How many GEMM operand values of a `tiny` training update fall outside f16's normal range
/// (measured on the f32 family: what rounding to f16 would do to them, per pass and operand
/// kind). Below 2^-14 f16 is subnormal (fewer significant bits), below 2^-25 a value rounds to
/// 0, above 65504 it saturates. Values (weights, activations) fit: fewer than 0.1% round to 0,
/// none saturate (the subnormal ones, ~3% of the matmuls' after 30-60 updates, are attention
/// probabilities below 2^-14, off by at most 2^-25 each in a row that sums to 1). Gradients need
/// scaling (measured: ARCHITECTURE.md "Tensor cores (the coop family)"): the coop family scales each
/// gradient operand by a power of 2 from its largest value (gemm_coop.wgsl), after which fewer
/// than 1% of them are subnormal and none saturate.
#[test]
fn gemm_operands_of_a_training_update_fit_f16_once_gradients_are_scaled() {
    use fewstep::data::Dataset;
    use fewstep::diffusion::Trainer;
    use fewstep::nn::UNetConfig;
    use fewstep::tensor::gemm_census;
    let g = gpu();
    let f32s = f32_family(&g);
    g.set_variant(f32s);
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let cfg = patterns_config();
    let mut tr = Trainer::new(&g, arch, cfg).unwrap();
    const SUBNORMAL: f32 = 6.103_515_6e-5; // 2^-14
    const ZERO: f32 = 2.980_232_2e-8; // 2^-25
                                      // The scale gemm_coop.wgsl's pow2_scale gives a tensor of largest value `max`.
    let scale_of = |max: f32| {
        if max == 0.0 {
            1.0
        } else {
            2f32.powi((14 - max.log2().floor() as i32).clamp(-126, 126))
        }
    };
    // At the start (the output layer's zero init makes the first gradients tiny) and after
    // 30 updates.
    for (at, warm) in [(0, 0), (30, 30)] {
        for _ in 0..warm {
            tr.step(&data);
        }
        gemm_census::start();
        tr.step(&data);
        // (pass, gradient?) -> [nonzero, subnormal, to 0, saturate, subnormal once scaled]
        let mut counts: Vec<((&str, bool), [u64; 5])> = Vec::new();
        for (pass, operands) in gemm_census::take() {
            for (t, grad) in operands {
                let v = t.to_vec_blocking().unwrap();
                let i = match counts.iter().position(|(k, _)| *k == (pass, grad)) {
                    Some(i) => i,
                    None => {
                        counts.push(((pass, grad), [0; 5]));
                        counts.len() - 1
                    }
                };
                let c = &mut counts[i].1;
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = if grad { scale_of(max) } else { 1.0 };
                for x in v.iter().map(|x| x.abs()).filter(|&x| x > 0.0) {
                    c[0] += 1;
                    c[1] += (x < SUBNORMAL) as u64;
                    c[2] += (x < ZERO) as u64;
                    c[3] += (x * s > 65504.0) as u64;
                    c[4] += (x * s < SUBNORMAL) as u64;
                }
            }
        }
        for ((pass, grad), [n, sub, zero, sat, scaled_sub]) in &counts {
            let pct = |x: &u64| 100.0 * *x as f64 / (*n).max(1) as f64;
            let kind = if *grad { "gradient" } else { "value" };
            let line = format!(
                "update {at:>2}, {pass:<16} {kind:<8}: {n:>7} nonzero, unscaled {:.3}% subnormal in f16 and {:.4}% rounding to 0; {:.3}% subnormal once scaled, {:.4}% saturating",
                pct(sub),
                pct(zero),
                pct(scaled_sub),
                pct(sat)
            );
            eprintln!("{line}");
            assert_eq!(*sat, 0, "{line}");
            if *grad {
                assert!(pct(scaled_sub) < 1.0, "{line}");
            } else {
                assert!(pct(zero) < 0.1, "{line}");
            }
        }
        assert!(
            counts.iter().any(|((_, grad), _)| *grad),
            "no gradient operand was marked"
        );
    }
}

/// Every pipeline a training step, a distillation step and sampling compile on the coop family
/// (its GEMM cores, the operand scaling) is a registry variant, so the GPU-free naga check
/// (tests/suite/kernel_registry.rs) covers what runs on cooperative matrices.
#[test]
fn coop_pipelines_are_registered() {
    let Some(g) = coop_gpu_or_skip("coop_pipelines_are_registered") else {
        return;
    };
    let registered: std::collections::HashSet<_> = fewstep::tensor::registry::variants()
        .into_iter()
        .map(|v| v.key)
        .collect();
    crate::kernel_registry::one_of_everything(&g);
    assert_eq!(g.variant(), KernelVariant::Coop);
    let compiled = g.pipeline_keys();
    let coop: Vec<_> = compiled
        .iter()
        .filter(|k| k.label().contains(" S="))
        .collect();
    assert!(!coop.is_empty(), "no coop GEMM pipeline compiled");
    assert!(
        compiled.iter().any(|k| k.name == "abs_max"),
        "gradient scaling did not run"
    );
    let missing: Vec<String> = compiled
        .iter()
        .filter(|k| !registered.contains(*k))
        .map(|k| k.label())
        .collect();
    eprintln!(
        "{} pipelines compiled ({} coop GEMMs), all registered: {}",
        compiled.len(),
        coop.len(),
        missing.is_empty()
    );
    assert!(
        missing.is_empty(),
        "compiled but not in the registry:\n{}",
        missing.join("\n")
    );
}

/// `--precision mixed` runs the coop family and a run records it: its model file says so,
/// `--resume` without the flag continues in mixed and ends with the bytes of an uninterrupted
/// run, and `--resume --precision f32` is refused, naming the flag.
#[test]
fn a_mixed_precision_run_records_it_and_resumes_in_it() {
    let test = "a_mixed_precision_run_records_it_and_resumes_in_it";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    crate::common::bin::write_images(&imgs);
    let run = |args: Vec<String>| {
        let o = crate::common::bin::command()
            .args(&args)
            .env_remove("FEWSTEP_KERNELS")
            .env_remove("FEWSTEP_PRECISION")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        eprintln!("$ fewstep {}\n{err}", args.join(" "));
        (
            o.status.success(),
            err + &String::from_utf8_lossy(&o.stdout),
        )
    };
    let args = |out: &std::path::Path, steps: &str| {
        crate::common::bin::tiny_train_args(&imgs, out, &["--precision", "mixed", "--steps", steps])
    };
    let straight = tmp.path().join("straight");
    assert!(run(args(&straight, "4")).0);
    let part = tmp.path().join("part");
    assert!(run(args(&part, "2")).0);
    let resume = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--resume",
            "--out",
            part.to_str().unwrap(),
            "--steps",
            "4",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        run(a)
    };
    let (ok, text) = resume(&["--precision", "f32"]);
    assert!(
        !ok && text.contains("was made in mixed precision") && text.contains("--precision mixed"),
        "{text}"
    );
    let (ok, text) = resume(&[]);
    assert!(ok && text.contains("resuming in mixed precision"), "{text}");
    // The same model but for the command line each run recorded (--steps 4 and --steps 2).
    let model = crate::common::bin::model_of_run;
    assert!(
        model(&straight) == model(&part),
        "a resumed mixed run differs from an uninterrupted one"
    );
    let (ok, text) = run(vec![
        "info".into(),
        "--model".into(),
        straight.join("model.safetensors").to_str().unwrap().into(),
    ]);
    assert!(ok && text.contains("computed in mixed precision"), "{text}");
}

/// The tuner times cooperative-matrix tiles only where they passed their self-check: with the
/// check's deliberate fault, a clock that calls them fastest still gets an f32 family's kernel;
/// without it, the clock's favourite coop tile runs, and computes the exact product (small
/// integers: exact in f16, their sums exact in f32).
#[test]
fn a_coop_tile_that_fails_its_self_check_is_never_tuned_in() {
    let test = "a_coop_tile_that_fails_its_self_check_is_never_tuned_in";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let mut rng = crate::common::rng(test);
    let (m, k, n) = (40, 70, 90);
    let ints = |rng: &mut rand::rngs::StdRng, len: usize| -> Vec<f32> {
        use rand::Rng;
        (0..len)
            .map(|_| rng.random_range(-3i32..=3) as f32)
            .collect()
    };
    let a = ints(&mut rng, m * k);
    let b = ints(&mut rng, k * n);
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|l| (a[i * k + l] * b[l * n + j]) as f64).sum();
        }
    }
    for fault in [false, true] {
        let mut opts = GpuOptions::from_env();
        opts.variant = None;
        opts.precision = Some(fewstep::gpu::Precision::Mixed);
        opts.tune = Some(true);
        opts.coop_fault = fault;
        let gpu = Gpu::new_blocking(opts).unwrap();
        assert_eq!(
            gpu.variant() == KernelVariant::Coop,
            !fault,
            "fault {fault}"
        );
        fewstep::tensor::tuner::start_afresh(&gpu, false);
        let timed = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
        let t2 = timed.clone();
        fewstep::tensor::tuner::set_clock(
            &gpu,
            Some(Box::new(move |_: &str, c: &str| {
                t2.borrow_mut().push(c.to_string());
                if c.starts_with("coop") {
                    1e-4
                } else {
                    1e-3
                }
            })),
        );
        let got = Tensor::from_slice(&gpu, &[m, k], &a)
            .matmul(&Tensor::from_slice(&gpu, &[k, n], &b))
            .to_vec_blocking()
            .unwrap();
        crate::common::assert_close(test, &got, &want, 0.0, 0.0);
        let family = gpu.last_gemm().unwrap().0;
        let coop_timed = timed.borrow().iter().any(|c| c.starts_with("coop"));
        if fault {
            assert_ne!(family, KernelVariant::Coop, "a failed coop tile was picked");
            assert!(!coop_timed, "coop tiles were timed: {:?}", timed.borrow());
        } else {
            assert_eq!(family, KernelVariant::Coop, "the clock's fastest runs");
        }
    }
}

/// A driver that loses the device during the coop self-check leaves a usable device: a fresh
/// one without cooperative matrices, computing in f32, with the reason where `fewstep info`
/// shows it.
#[test]
fn a_device_lost_during_the_self_check_is_replaced_by_a_fresh_one() {
    let test = "a_device_lost_during_the_self_check_is_replaced_by_a_fresh_one";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let mut opts = GpuOptions::from_env();
    opts.variant = None;
    opts.precision = Some(fewstep::gpu::Precision::Mixed);
    opts.coop_lose = true;
    let gpu = Gpu::new_blocking(opts).expect("a fresh device");
    assert!(gpu.fault().is_ok(), "the fresh device is not the lost one");
    assert_eq!(gpu.coop_sizes(), None);
    assert_ne!(gpu.variant(), KernelVariant::Coop);
    assert_eq!(gpu.precision(), fewstep::gpu::Precision::F32);
    let info = fewstep::tensor::kernel_policy::describe_precision(&gpu);
    assert!(
        info.contains("lost the device during their self-check"),
        "{info}"
    );
    let a = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = Tensor::from_slice(&gpu, &[3, 1], &[1., 1., 1.]);
    assert_eq!(a.matmul(&b).to_vec_blocking().unwrap(), vec![6., 15.]);
}

/// The app asks for the command line's device features (`app::device_descriptor`): with
/// `--precision mixed` its engine settles the coop family and samples exactly what `fewstep
/// sample --precision mixed` samples (the same kernels), which differs from f32's samples.
#[test]
fn the_app_samples_what_fewstep_sample_does_in_mixed_precision() {
    use fewstep::app::engine::{self, Event, Job, SharedDevice};
    use fewstep::diffusion::{load_model_bytes, SampleOptions, Sampler, SamplerKind};
    let test = "the_app_samples_what_fewstep_sample_does_in_mixed_precision";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let (adapter, _) = coop_adapter().unwrap();
    let mut opts = GpuOptions::from_env();
    opts.variant = None;
    opts.precision = Some(fewstep::gpu::Precision::Mixed);
    let desc = fewstep::app::device_descriptor_for(&adapter, &opts);
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let handle = engine::spawn(
        SharedDevice {
            device,
            queue,
            info: adapter.get_info(),
            fault: None,
        },
        eframe::egui::Context::default(),
    );
    handle.send(Job::Coop(fewstep::app::device_coop_for(&adapter, &opts)));
    let b = fewstep::bundled::find("fmnist-4step").unwrap();
    handle.send(Job::Load {
        name: b.name.into(),
        bytes: b.bytes().to_vec(),
    });
    let sample = SampleOptions {
        steps: 4,
        count: 3,
        seed: 7,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    handle.send(Job::Run {
        run: 1,
        rows: vec![engine::RowSpec {
            model: 0,
            opts: sample,
            label: "4 distilled".into(),
            class: None,
            guidance: 0.0,
            strip: None,
        }],
        draw_steps: false,
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let app = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let done = handle.drain().into_iter().find_map(|e| match e {
            Event::RowDone { samples, .. } => Some(Ok(samples)),
            Event::Failed { error, .. } => Some(Err(error)),
            _ => None,
        });
        if let Some(r) = done {
            break r.expect("the app's run");
        }
    };
    // `fewstep sample --precision mixed`: a device from Gpu::new with the same options.
    let cli = |precision| {
        let mut o = opts.clone();
        o.precision = Some(precision);
        let gpu = Gpu::new_blocking(o).unwrap();
        let (model, _) = load_model_bytes(&gpu, std::path::Path::new(b.file), b.bytes()).unwrap();
        let x = Sampler::new(&model, sample)
            .run(&model)
            .to_vec_blocking()
            .unwrap();
        (gpu.variant(), x)
    };
    let (family, mixed) = cli(fewstep::gpu::Precision::Mixed);
    assert_eq!(family, KernelVariant::Coop);
    assert!(
        app == mixed,
        "the app's samples differ from fewstep sample's"
    );
    let (_, f32s) = cli(fewstep::gpu::Precision::F32);
    assert!(
        app != f32s,
        "mixed precision computed nothing in f16: the check above proves nothing"
    );
}
