//! The diffusion math (schedule, parameterizations, weightings, DDIM and ancestral steps) against
//! closed forms, and model files: round trip, and refusal of truncated, corrupt and mismatched
//! files with a message.

use crate::common;

use common::*;
use fewstep::diffusion::model_file::{parse_model, save_model, Lineage, ModelMeta};
use fewstep::diffusion::parameterization::XHatCoef;
use fewstep::diffusion::sampler::{ancestral_coef, ddim_coef};
use fewstep::diffusion::schedule::{alpha_sigma, grid, logsnr, time_of_logsnr};
use fewstep::diffusion::{
    load_model_bytes, Denoiser, Parameterization, SampleOptions, Sampler, SamplerKind, Weighting,
};
use fewstep::nn::{self, StoreAs, UNet, UNetConfig};
use fewstep::tensor::{Tape, Tensor, Var};
use rand::Rng;

const ALL_PARAMS: [Parameterization; 4] = [
    Parameterization::V,
    Parameterization::Eps,
    Parameterization::X,
    Parameterization::Both,
];
/// f64 closed forms: only rounding separates the two sides.
const EXACT: f64 = 1e-12;
/// The same through f32 GPU kernels.
const GPU_ATOL: f64 = 1e-4;
const GPU_RTOL: f64 = 1e-4;

#[test]
fn schedule_and_weights_are_finite_at_both_ends() {
    assert_eq!(alpha_sigma(0.0), (1.0, 0.0));
    assert_eq!(alpha_sigma(1.0), (0.0, 1.0));
    for t in [0.0, 1e-9, 0.5, 1.0 - 1e-9, 1.0] {
        let (a, s) = alpha_sigma(t);
        assert!(
            (a * a + s * s - 1.0).abs() < EXACT,
            "alpha^2 + sigma^2 at {t}"
        );
        let l = logsnr(t);
        assert!(
            l.is_finite() && (-20.0..=20.0).contains(&l),
            "logsnr({t}) = {l}"
        );
        for w in [
            Weighting::SnrTrunc,
            Weighting::VMse,
            Weighting::Snr,
            Weighting::Constant,
        ] {
            let v = w.weight(t);
            assert!(v.is_finite() && v >= 0.0, "{w:?} weight at {t} = {v}");
        }
        for p in ALL_PARAMS {
            let XHatCoef { cz, c0, c1 } = p.x_hat_coef(t);
            assert!(
                cz.is_finite() && c0.is_finite() && c1.is_finite(),
                "{p} at {t}"
            );
        }
    }
    // Truncated SNR: 1 at high noise, SNR at low noise; v_mse = SNR + 1.
    assert_eq!(Weighting::SnrTrunc.weight(0.9), 1.0);
    let t = 0.2;
    let snr = logsnr(t).exp();
    assert!((Weighting::SnrTrunc.weight(t) - snr).abs() < EXACT * snr);
    assert!((Weighting::VMse.weight(t) - (snr + 1.0)).abs() < EXACT * snr);
    // logsnr and time invert each other inside the clamp.
    for t in [0.1, 0.5, 0.9] {
        assert!((time_of_logsnr(logsnr(t)) - t).abs() < 1e-12);
    }
    assert_eq!(grid(4), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
}

#[test]
fn parameterizations_round_trip() {
    let mut r = rng("parameterizations");
    for p in ALL_PARAMS {
        for &t in &[0.0, 0.01, 0.3, 0.77, 0.999, 1.0] {
            if p == Parameterization::Eps && t > 0.99 {
                continue; // eps-prediction cannot recover x where alpha ~ 0 (samplers clip)
            }
            let (a, s) = alpha_sigma(t);
            let x: f64 = r.random_range(-1.0..1.0);
            let eps: f64 = r.random_range(-2.0..2.0);
            let z = a * x + s * eps;
            let out = p.ideal_output(t, x, eps);
            let k = p.x_hat_coef(t);
            let x_hat = k.cz * z + k.c0 * out[0] + k.c1 * out[1];
            assert!(
                (x_hat - x).abs() < 1e-9,
                "{p} at t={t}: x_hat {x_hat} vs x {x}"
            );
        }
    }
}

/// The GPU path that forms x_hat from a network output agrees with the closed form.
#[test]
fn x_hat_on_the_gpu_matches_the_closed_form() {
    let g = gpu();
    let mut r = rng("x_hat gpu");
    let (n, c, h, w) = (3usize, 1usize, 4usize, 4usize);
    let len = c * h * w;
    let t = [0.05f64, 0.5, 0.97];
    let x = uniform(&mut r, n * len, 1.0);
    let eps = uniform(&mut r, n * len, 2.0);
    for p in [
        Parameterization::V,
        Parameterization::X,
        Parameterization::Both,
    ] {
        let cfg = UNetConfig::preset("tiny", c, h, w, p.heads()).unwrap();
        let model = Denoiser {
            net: UNet::new(&g, cfg, 0).unwrap(),
            param: p,
        };
        let mut z = vec![0f32; n * len];
        let mut out = vec![0f32; n * len * p.heads()];
        for s in 0..n {
            let (a, sg) = alpha_sigma(t[s]);
            for i in 0..len {
                let (xv, ev) = (x[s * len + i] as f64, eps[s * len + i] as f64);
                z[s * len + i] = (a * xv + sg * ev) as f32;
                let o = p.ideal_output(t[s], xv, ev);
                for hd in 0..p.heads() {
                    out[(s * p.heads() + hd) * len + i] = o[hd] as f32;
                }
            }
        }
        let zt = Tensor::from_slice(&g, &[n, c, h, w], &z);
        let ot = Var::constant(Tensor::from_slice(&g, &[n, c * p.heads(), h, w], &out));
        let got = model
            .combine(&Tape::new(), &ot, &zt, &t)
            .value
            .to_vec_blocking()
            .unwrap();
        assert_close(&format!("{p} x_hat"), &got, &to_f64(&x), GPU_ATOL, GPU_RTOL);
    }
}

#[test]
fn ddim_step_with_the_true_x_lands_on_the_forward_process() {
    let mut r = rng("ddim exact");
    for _ in 0..50 {
        let t: f64 = r.random_range(0.01..1.0);
        let s: f64 = r.random_range(0.0..t);
        let x: f64 = r.random_range(-1.0..1.0);
        let eps: f64 = r.random_range(-3.0..3.0);
        let (at, st) = alpha_sigma(t);
        let (as_, ss) = alpha_sigma(s);
        let (cz, cx) = ddim_coef(t, s);
        let zs = cz * (at * x + st * eps) + cx * x;
        assert!(
            (zs - (as_ * x + ss * eps)).abs() < 1e-9,
            "DDIM {t} -> {s}: {zs} vs {}",
            as_ * x + ss * eps
        );
    }
    // The last step returns x_hat itself; from t = 1 the start is pure noise.
    assert_eq!(ddim_coef(0.25, 0.0), (0.0, 1.0));
    let (cz, cx, std) = ancestral_coef(0.25, 0.0);
    assert_eq!((cz, cx, std), (0.0, 1.0, 0.0));
    // Ancestral posterior: mean and variance of q(z_s | z_t, x) match the Gaussian closed form
    // (marginal variance of z_s given x: cz^2 sigma_t^2 + std^2 = sigma_s^2).
    for (t, s) in [(1.0, 0.5), (0.6, 0.3), (0.2, 0.1)] {
        let (cz, cx, std) = ancestral_coef(t, s);
        let (at, st) = alpha_sigma(t);
        let (as_, ss) = alpha_sigma(s);
        assert!((cz * at + cx - as_).abs() < EXACT, "mean of x at {t}->{s}");
        assert!(
            (cz * cz * st * st + std * std - ss * ss).abs() < EXACT,
            "variance at {t}->{s}"
        );
    }
}

/// The GPU sampler, step by step: starts from the seeded noise, clips, ends on its last x_hat,
/// repeats itself for a seed, and the ancestral sampler differs.
#[test]
fn sampler_is_deterministic_and_incremental() {
    let g = gpu();
    let cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let model = Denoiser {
        net: randomised(&g, cfg, 3),
        param: Parameterization::V,
    };
    let opts = SampleOptions {
        steps: 4,
        count: 3,
        seed: 11,
        kind: SamplerKind::Ddim,
        clip: true,
    };
    let mut s = Sampler::new(&model, opts);
    assert_eq!(s.t(), 1.0);
    // z_1 is exactly the seeded noise.
    let z1 = s.z().to_vec_blocking().unwrap();
    let want = fewstep::tensor::philox_normal_cpu(11, 0, 3 * 64);
    assert_close("z_1", &z1, &to_f64(&want), GPU_ATOL, GPU_RTOL);
    let mut seen = vec![];
    while !s.is_done() {
        s.step(&model);
        let x = s.x_hat().unwrap().to_vec_blocking().unwrap();
        assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)), "clipped x_hat");
        seen.push(s.z().to_vec_blocking().unwrap());
    }
    assert_eq!(s.t(), 0.0);
    assert_eq!(seen.len(), 4);
    // The last z is the last x_hat.
    assert_eq!(
        seen[3],
        s.x_hat().unwrap().to_vec_blocking().unwrap(),
        "final sample = final x_hat"
    );
    let again = Sampler::new(&model, opts)
        .run(&model)
        .to_vec_blocking()
        .unwrap();
    assert_eq!(again, seen[3], "same seed, same images");
    let anc = Sampler::new(
        &model,
        SampleOptions {
            kind: SamplerKind::Ancestral,
            ..opts
        },
    )
    .run(&model)
    .to_vec_blocking()
    .unwrap();
    assert_ne!(anc, seen[3], "ancestral sampling draws fresh noise");
}

/// A network with every parameter random (zero-initialised layers would hide gradients).
pub fn randomised(g: &fewstep::gpu::Gpu, cfg: UNetConfig, seed: u64) -> UNet {
    let mut r = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let layout = nn::Layout::new(&cfg).unwrap();
    let params = layout
        .specs
        .iter()
        .map(|s| {
            let n = s.numel();
            let fan = if s.shape.len() > 1 {
                s.shape[1..].iter().product::<usize>()
            } else {
                4
            };
            let scale = (1.5 / fan as f32).sqrt();
            let v: Vec<f32> = if s.name.ends_with(".g") {
                (0..n).map(|_| 1.0 + r.random_range(-0.2..0.2)).collect()
            } else {
                (0..n).map(|_| r.random_range(-scale..scale)).collect()
            };
            Tensor::from_slice(g, &s.shape, &v)
        })
        .collect();
    UNet::from_params(cfg, params).unwrap()
}

fn meta_for(cfg: &UNetConfig) -> ModelMeta {
    ModelMeta {
        format_version: 1,
        arch: cfg.clone(),
        image: [cfg.in_channels, cfg.height, cfg.width],
        parameterization: Parameterization::V,
        schedule: "cosine".into(),
        steps: Some(4),
        lineage: Lineage::default(),
        dataset: "synthetic".into(),
        training_steps: 7,
        command: "test".into(),
        precision: Default::default(),
        kernel_plan: None,
    }
}

#[test]
fn model_files_round_trip_and_bad_files_are_refused() {
    let g = gpu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let net = randomised(&g, cfg.clone(), 5);
    let host = pollster::block_on(nn::read_tensors(&net.layout.specs, &net.params, "")).unwrap();
    let meta = meta_for(&cfg);
    let path = dir.path().join("m.safetensors");
    save_model(&path, &meta, &host, StoreAs::F32).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (back_meta, back) = parse_model(&path, &bytes).unwrap();
    assert_eq!(back_meta, meta);
    assert_eq!(back, host, "weights round-trip exactly");
    // f16 files load as f32 within half precision.
    let p16 = dir.path().join("m16.safetensors");
    save_model(&p16, &meta, &host, StoreAs::F16).unwrap();
    let (_, back16) = parse_model(&p16, &std::fs::read(&p16).unwrap()).unwrap();
    for (a, b) in host.iter().zip(&back16) {
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((x - y).abs() <= 1e-3 * x.abs().max(1e-2), "f16 {x} vs {y}");
        }
    }
    // The loaded model computes what the original does.
    let (loaded, _) = load_model_bytes(&g, &path, &bytes).unwrap();
    let z = Tensor::randn(&g, &[2, 1, 8, 8], 1, 2);
    let orig = Denoiser {
        net,
        param: Parameterization::V,
    };
    assert_eq!(
        orig.predict(&z, &[0.3, 0.6]).to_vec_blocking().unwrap(),
        loaded.predict(&z, &[0.3, 0.6]).to_vec_blocking().unwrap()
    );

    let refuse = |what: &str, data: &[u8], needle: &str| {
        let err = match parse_model(&path, data) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(needle),
            "{what}: message `{err}` lacks `{needle}`"
        );
        eprintln!("{what}: {err}");
    };
    refuse(
        "truncated",
        &bytes[..bytes.len() - 100],
        "truncated or corrupt",
    );
    refuse("truncated header", &bytes[..20], "truncated or corrupt");
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[8..40] {
        *b = b'#';
    }
    refuse("corrupt header", &corrupt, "corrupt");
    refuse("empty", &[], "corrupt");

    // Another architecture's description over these tensors: the first mismatch is named.
    let mut other = meta.clone();
    other.arch = UNetConfig::preset("tiny", 1, 8, 8, 2).unwrap();
    other.parameterization = Parameterization::Both;
    let p2 = dir.path().join("other.safetensors");
    save_model(&p2, &other, &host, StoreAs::F32).unwrap();
    refuse(
        "mismatched",
        &std::fs::read(&p2).unwrap(),
        "tensor `out.conv.w` has shape",
    );
    // A missing tensor.
    let p3 = dir.path().join("missing.safetensors");
    save_model(&p3, &meta, &host[1..], StoreAs::F32).unwrap();
    refuse("missing tensor", &std::fs::read(&p3).unwrap(), "is missing");
    // A safetensors file that fewstep did not write.
    let p4 = dir.path().join("plain.safetensors");
    nn::tensor_file::write(&p4, &host, Default::default(), StoreAs::F32).unwrap();
    refuse(
        "foreign",
        &std::fs::read(&p4).unwrap(),
        "not a fewstep model",
    );
}

/// Large counts are sampled in passes that fit the adapter: the passes make the same images as
/// one pass of them all (each pass starts where the last ended in the noise streams), for both
/// samplers, with a count that is not a multiple of the pass.
#[test]
fn sampling_in_passes_makes_the_same_images_as_one_pass() {
    use fewstep::diffusion::sampler::sample_in_passes;
    use fewstep::diffusion::{images_per_pass, SampleOptions, Sampler, SamplerKind};
    let g = gpu();
    let arch = fewstep::nn::UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let model = fewstep::diffusion::Denoiser {
        net: fewstep::nn::UNet::new(&g, arch, 5).unwrap(),
        param: fewstep::diffusion::Parameterization::V,
    };
    let limit = images_per_pass(&model);
    assert!(
        limit.images >= 4 && limit.images.is_multiple_of(4),
        "{limit:?}"
    );
    assert!(limit.largest_per_image > 0 && limit.largest_per_image < limit.tensor_limit);
    for kind in [SamplerKind::Ddim, SamplerKind::Ancestral] {
        let opts = SampleOptions {
            steps: 3,
            count: 10,
            seed: 11,
            kind,
            clip: true,
        };
        let whole = Sampler::new(&model, opts)
            .run(&model)
            .to_vec_blocking()
            .unwrap();
        let parts = sample_in_passes(&model, opts, &fewstep::nn::NetCond::NONE, 4).unwrap();
        assert_eq!(whole.len(), parts.len());
        let worst = whole
            .iter()
            .zip(&parts)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{kind:?}: 10 images in passes of 4 vs one pass: max |diff| {worst:e}");
        assert!(
            worst <= 1e-6,
            "{kind:?}: passes differ from one pass by {worst}"
        );
    }
}

/// eval samples a batch of 250 in as many passes as the adapter needs (an imported model's
/// multi-head attention over 300 images at 14x14 overflowed lavapipe's 128 MiB binding): passes
/// of 4 images give what one pass gives, guided classes included.
#[test]
fn eval_samples_are_the_same_in_any_number_of_passes() {
    use fewstep::eval::metrics::sample_in_passes_of;
    let g = gpu();
    let mut cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    cfg.classes = 3;
    let m = Denoiser {
        net: UNet::new(&g, cfg, 4).unwrap(),
        param: Parameterization::V,
    };
    for ask in [None, Some((3, 1.5))] {
        let (one, _) = sample_in_passes_of(&m, 2, 10, 7, ask, 252).unwrap();
        let (many, _) = sample_in_passes_of(&m, 2, 10, 7, ask, 4).unwrap();
        assert_eq!(one.len(), 10 * 64);
        let worst = one
            .iter()
            .zip(&many)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{ask:?}: passes of 4 differ by {worst}");
    }
}
