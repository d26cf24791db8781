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
