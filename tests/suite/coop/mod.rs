//! Cooperative matrices (the tensor-core path), on adapters that offer them: wgpu's
//! `EXPERIMENTAL_COOPERATIVE_MATRIX` with f16 inputs and f32 accumulators. On lavapipe from Mesa
//! 26 (`.ci/coop-chroot`, which `.ci/run` uses with FEWSTEP_REQUIRE_COOP=1) this runs; on an
//! adapter without the feature each test says why it skips (and fails under
//! FEWSTEP_REQUIRE_COOP=1, so the chroot step cannot pass by skipping). This file holds the
//! adapter and the bounds; `products.rs` the raw product and the coop GEMMs against their f16
//! bounds, `self_check.rs` the self-check, its cache and what a failed or lost one leads to,
//! `runs.rs` gradients, training, distillation, sampling and the app in mixed precision.

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

/// The f32 family this adapter runs when cooperative matrices are off.
fn f32_family(g: &Gpu) -> KernelVariant {
    if g.has_subgroups() {
        KernelVariant::Subgroup
    } else {
        KernelVariant::Blocked
    }
}

mod products;
mod runs;
mod self_check;
