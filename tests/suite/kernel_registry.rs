//! The GPU-free kernel check: every variant the registry lists (tensor/registry.rs: every kernel
//! family, every constant a launcher can pass on any adapter kind) is parsed by naga's WGSL front
//! end, validated with only the capabilities its platform has, translated by naga's SPIR-V
//! (Vulkan), MSL (Metal) and HLSL (DX12) back ends, and its uniform parameter struct compared
//! field by field with the Rust struct the launcher writes. No adapter is needed, so a WGSL
//! error or a drifted struct fails here, on any machine, naming the variant, instead of on a
//! user's adapter at the variant's first launch.
//!
//! `registry_covers_what_runs` (on an adapter) checks the other direction: every pipeline that
//! training, distillation and sampling compile is a registry variant.

use crate::common;
use common::*;
use fewstep::gpu::KernelVariant;
use fewstep::tensor::registry::{variants, Needs, ParamsLayout, Variant};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

/// The capabilities a variant may use: WebGPU's baseline, plus what its `needs` declare.
fn capabilities(needs: Needs) -> Capabilities {
    let mut caps = Capabilities::empty();
    if needs.subgroup_size.is_some() {
        caps |= Capabilities::SUBGROUP;
    }
    if needs.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if needs.cooperative_matrix {
        caps |= Capabilities::COOPERATIVE_MATRIX;
    }
    caps
}

/// naga's module and analysis of one variant's WGSL, validated with its platform's capabilities.
fn validate(v: &Variant) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(&v.wgsl)
        .map_err(|e| format!("WGSL does not parse:\n{}", e.emit_to_string(&v.wgsl)))?;
    let mut validator = Validator::new(ValidationFlags::all(), capabilities(v.needs));
    if v.needs.subgroup_size.is_some() {
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
    }
    let info = validator.validate(&module).map_err(|e| {
        format!(
            "naga's validator refuses it:\n{}",
            e.emit_to_string(&v.wgsl)
        )
    })?;
    if !module.entry_points.iter().any(|e| e.name == "main") {
        return Err("no entry point `main` (the pipeline cache asks for it)".into());
    }
    Ok((module, info))
}

/// The translations Vulkan, Metal and DX12 receive (wgpu-hal runs the same back ends).
fn translate(
    v: &Variant,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
) -> Result<(), String> {
    let subgroups = v.needs.subgroup_size.is_some();
    let spv = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    naga::back::spv::write_vec(module, info, &spv, None)
        .map_err(|e| format!("SPIR-V (Vulkan): {e}"))?;
    if v.needs.cooperative_matrix {
        // Only Vulkan offers wgpu's cooperative matrices (Metal and DX12 never get the family).
        return Ok(());
    }
    let msl = naga::back::msl::Options {
        lang_version: if subgroups { (2, 1) } else { (2, 0) },
        ..Default::default()
    };
    let msl_pipeline = naga::back::msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
        ..Default::default()
    };
    naga::back::msl::write_string(module, info, &msl, &msl_pipeline)
        .map_err(|e| format!("MSL (Metal): {e}"))?;
    let hlsl = naga::back::hlsl::Options {
        // Wave intrinsics need shader model 6.0; everything else must compile for 5.1 (FXC).
        shader_model: if subgroups {
            naga::back::hlsl::ShaderModel::V6_0
        } else {
            naga::back::hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
    };
    let mut out = String::new();
    naga::back::hlsl::Writer::new(&mut out, &hlsl, &hlsl_pipeline)
        .write(module, info, None)
        .map_err(|e| format!("HLSL (DX12): {e}"))?;
    Ok(())
}

/// The WGSL struct bound at group 0, binding 0 (every kernel's uniform `Params`): its name, its
/// members as (name, offset) and its size as naga lays it out for the uniform address space.
/// A WGSL struct as naga lays it out: (name, members as (name, byte offset), size in bytes).
type WgslStruct = (String, Vec<(String, usize)>, usize);

fn wgsl_params(module: &naga::Module) -> Result<WgslStruct, String> {
    let var = module
        .global_variables
        .iter()
        .map(|(_, g)| g)
        .find(|g| {
            g.space == naga::AddressSpace::Uniform
                && g.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
        })
        .ok_or("no uniform at @group(0) @binding(0)")?;
    let ty = &module.types[var.ty];
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => Ok((
            ty.name.clone().unwrap_or_default(),
            members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                .collect(),
            *span as usize,
        )),
        other => Err(format!("binding 0 is not a struct: {other:?}")),
    }
}

/// Compares the Rust twin with the WGSL struct: every named field at the same offset on both
/// sides, padding (`_`-prefixed names) only through the total size, a trailing `tab` the size of
/// what the launcher appends.
fn compare_params(rust: &ParamsLayout, wgsl: &WgslStruct) -> Result<(), String> {
    let (wgsl_name, members, span) = wgsl;
    let named = |n: &str| !n.starts_with('_');
    for (name, offset) in members.iter().filter(|(n, _)| named(n)) {
        if rust.tail > 0 && name == "tab" {
            if *offset != rust.size {
                return Err(format!(
                    "WGSL `{wgsl_name}.tab` starts at byte {offset}, after {} bytes of Rust `{}`",
                    rust.size, rust.rust_name
                ));
            }
            continue;
        }
        match rust.fields.iter().find(|(n, _)| n == name) {
            None => {
                return Err(format!(
                "field `{name}` of WGSL `{wgsl_name}` (byte {offset}) is missing from Rust `{}`",
                rust.rust_name
            ))
            }
            Some((_, o)) if o != offset => {
                return Err(format!(
                    "field `{name}`: byte {offset} in WGSL `{wgsl_name}`, byte {o} in Rust `{}`",
                    rust.rust_name
                ))
            }
            Some(_) => {}
        }
    }
    for (name, offset) in rust.fields.iter().filter(|(n, _)| named(n)) {
        if !members.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "field `{name}` of Rust `{}` (byte {offset}) is not in WGSL `{wgsl_name}`",
                rust.rust_name
            ));
        }
    }
    let rust_size = rust.size + rust.tail;
    if rust_size != *span {
        return Err(format!(
            "size: WGSL `{wgsl_name}` is {span} bytes, Rust `{}` writes {rust_size}",
            rust.rust_name
        ));
    }
    Ok(())
}

/// Everything the GPU-free check asks of one variant.
fn check(v: &Variant) -> Result<(), String> {
    let (module, info) = validate(v)?;
    translate(v, &module, &info)?;
    compare_params(&v.params, &wgsl_params(&module)?)?;
    if v.cached {
        fewstep::gpu::declared_bindings(&v.wgsl).map_err(|e| format!("bindings: {e}"))?;
    }
    Ok(())
}

#[test]
fn every_registered_kernel_validates_and_translates_without_a_gpu() {
    let start = std::time::Instant::now();
    let all = variants();
    let mut failures = Vec::new();
    let mut families = std::collections::BTreeMap::<&str, usize>::new();
    for v in &all {
        *families.entry(v.key.name).or_default() += 1;
        if let Err(e) = check(v) {
            failures.push(format!("kernel `{}`: {e}", v.label()));
        }
    }
    eprintln!(
        "{} variants of {} kernels checked in {:.1} s: {families:?}",
        all.len(),
        families.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} variants fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
    // Every shader file is used by some variant (a file nobody renders is checked by nothing).
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Each file's first non-comment line appears in some variant's text.
        let probe = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .unwrap_or("");
        assert!(
            all.iter().any(|v| v.wgsl.contains(probe)),
            "{} is in no registered variant",
            path.display()
        );
    }
}

#[test]
fn registry_keys_are_unique() {
    let all = variants();
    let mut seen = std::collections::HashSet::new();
    for v in &all {
        assert!(seen.insert(v.key.clone()), "{} listed twice", v.label());
    }
}

/// The check itself: a broken kernel and a drifted struct must fail it, naming what is wrong.
#[test]
fn the_check_catches_a_broken_kernel_and_a_drifted_struct() {
    let all = variants();
    let gemm = all
        .iter()
        .find(|v| v.key.name == "conv_forward" && v.key.consts.iter().any(|(k, _)| *k == "BM"))
        .expect("a blocked conv_forward variant");

    // A type error in the generated core: caught by the validator, with the variant's name.
    let mut broken = Variant {
        key: gemm.key.clone(),
        wgsl: gemm.wgsl.replacen(
            "var acc0_0 = vec4<f32>(0.0);",
            "var acc0_0 = vec4<f32>(0.0, 1u);",
            1,
        ),
        params: gemm.params.clone(),
        needs: gemm.needs,
        cached: true,
    };
    assert_ne!(broken.wgsl, gemm.wgsl, "the blocked core declares acc0_0");
    let e = check(&broken).expect_err("a broken kernel fails");
    eprintln!("broken kernel: {e}");
    assert!(e.contains("parse") || e.contains("validator"), "{e}");

    // Subgroup operations without the capability: refused for a platform without subgroups.
    let sg = all
        .iter()
        .find(|v| v.needs.subgroup_size.is_some())
        .expect("a subgroup variant");
    let no_caps = Variant {
        key: sg.key.clone(),
        wgsl: sg.wgsl.clone(),
        params: sg.params.clone(),
        needs: Needs::default(),
        cached: true,
    };
    let e = check(&no_caps).expect_err("subgroups without the capability fail");
    eprintln!("subgroups undeclared: {e}");

    // A field moved on the WGSL side (two members swapped): fails naming the field.
    broken.wgsl = gemm.wgsl.replacen("m: u32, n: u32,", "n: u32, m: u32,", 1);
    assert_ne!(
        broken.wgsl, gemm.wgsl,
        "gemm_common.wgsl declares m, n first"
    );
    let e = check(&broken).expect_err("a drifted struct fails");
    eprintln!("drifted struct: {e}");
    assert!(e.contains("field `m`") || e.contains("field `n`"), "{e}");

    // A field added on the Rust side only: fails naming it.
    let mut extra = gemm.params.clone();
    extra.fields.push(("gamma", extra.size));
    extra.size += 4;
    broken.wgsl = gemm.wgsl.clone();
    broken.params = extra;
    let e = check(&broken).expect_err("a Rust-only field fails");
    eprintln!("Rust-only field: {e}");
    assert!(e.contains("`gamma`"), "{e}");

    // A size mismatch (a padding field dropped on the Rust side).
    let mut short = gemm.params.clone();
    short.size -= 4;
    short.fields.retain(|(n, _)| *n != "_r2");
    broken.params = short;
    let e = check(&broken).expect_err("a short struct fails");
    eprintln!("short struct: {e}");
    assert!(e.contains("size"), "{e}");
}

/// The check is ready for kernels with f16 and cooperative matrices (the tensor-core family):
/// an 8x8 f16 product through `coopLoadT` / `coopMultiplyAdd` / `coopStoreT` validates and
/// translates to SPIR-V with the two capabilities declared, and is refused without them.
#[test]
fn f16_and_cooperative_matrix_kernels_are_checked_with_their_capabilities() {
    let wgsl = "enable f16;\nenable wgpu_cooperative_matrix;\n\
        struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }\n\
        @group(0) @binding(0) var<uniform> P: Params;\n\
        @group(0) @binding(1) var<storage, read> X: array<f16>;\n\
        @group(0) @binding(2) var<storage, read> Y: array<f16>;\n\
        @group(0) @binding(3) var<storage, read_write> OUT: array<f32>;\n\
        @compute @workgroup_size(8)\n\
        fn main() {\n\
            let ma = coopLoadT<coop_mat8x8<f16, A>>(&X[0], 8u);\n\
            let mb = coopLoadT<coop_mat8x8<f16, B>>(&Y[0], 8u);\n\
            var acc = coop_mat8x8<f32, C>();\n\
            acc = coopMultiplyAdd(ma, mb, acc);\n\
            coopStoreT(acc, &OUT[0], 8u);\n\
        }\n";
    let params = ParamsLayout {
        rust_name: "probe",
        size: 16,
        fields: vec![("n", 0)],
        tail: 0,
    };
    let with = Needs {
        f16: true,
        cooperative_matrix: true,
        ..Needs::default()
    };
    let v = |needs| Variant {
        key: fewstep::gpu::KernelKey::new("coop_probe"),
        wgsl: wgsl.to_string(),
        params: params.clone(),
        needs,
        cached: true,
    };
    check(&v(with)).expect("an f16 cooperative-matrix kernel with its capabilities");
    let e = check(&v(Needs::default())).expect_err("refused without the capabilities");
    eprintln!("without f16 and cooperative matrices: {e}");
}

/// Every pipeline a training step, a distillation step and sampling compile on this adapter, on
/// every GEMM family it has, is a registry variant (so the GPU-free check covers what runs).
#[test]
fn registry_covers_what_runs() {
    let registered: std::collections::HashSet<_> = variants().into_iter().map(|v| v.key).collect();
    let g = gpu();
    let mut families = vec![KernelVariant::Blocked];
    families.extend(variants_of(&g));
    for family in families {
        g.set_variant(family);
        for alone in [false, true] {
            g.set_softmax_row_per_invocation(Some(alone));
            one_of_everything(&g);
        }
    }
    let compiled = g.pipeline_keys();
    assert!(
        compiled.len() > 20,
        "only {} pipelines compiled",
        compiled.len()
    );
    let missing: Vec<String> = compiled
        .iter()
        .filter(|k| !registered.contains(*k))
        .map(|k| k.label())
        .collect();
    eprintln!(
        "{} pipelines compiled, all registered: {}",
        compiled.len(),
        missing.is_empty()
    );
    assert!(
        missing.is_empty(),
        "compiled but not in the registry:\n{}",
        missing.join("\n")
    );
}

fn variants_of(g: &fewstep::gpu::Gpu) -> Vec<KernelVariant> {
    common::variants(g)
}

/// Two training updates (with the weight EMA), one distillation update (without) and two
/// sampling steps of each sampler on a `tiny` 8x8 model, read back.
pub(crate) fn one_of_everything(g: &fewstep::gpu::Gpu) {
    use fewstep::data::Dataset;
    use fewstep::diffusion::distiller::{DistillConfig, Distiller};
    use fewstep::diffusion::{
        Parameterization, SampleOptions, Sampler, SamplerKind, TrainConfig, Trainer, Weighting,
    };
    use fewstep::nn::UNetConfig;
    use fewstep::tensor::AdamConfig;
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let cfg = TrainConfig {
        param: Parameterization::V,
        weighting: Weighting::SnrTrunc,
        batch: 2,
        lr: 1e-3,
        warmup: 1,
        ema_decay: 0.9,
        grad_clip: 1.0,
        seed: 1,
        adam: AdamConfig::default(),
        uncond_prob: 0.0,
    };
    let mut tr = Trainer::new(g, arch, cfg).unwrap();
    tr.step(&data);
    tr.step(&data);
    let teacher = tr.ema_model();
    let mut d = Distiller::new(
        g,
        teacher,
        DistillConfig {
            teacher_steps: 4,
            updates: 1,
            batch: 2,
            lr: 1e-4,
            grad_clip: 1.0,
            seed: 2,
            adam: AdamConfig::default(),
            ema_decay: None,
            guidance_stage: false,
        },
    );
    d.step(&data);
    assert!(pollster::block_on(d.take_mean_loss())
        .unwrap()
        .unwrap()
        .is_finite());
    for kind in [SamplerKind::Ddim, SamplerKind::Ancestral] {
        let opts = SampleOptions {
            steps: 2,
            count: 2,
            seed: 3,
            kind,
            clip: true,
        };
        let x = Sampler::new(&d.student, opts)
            .run(&d.student)
            .to_vec_blocking()
            .unwrap();
        assert!(x.iter().all(|v| v.is_finite()));
    }
}
