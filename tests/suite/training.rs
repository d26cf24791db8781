//! The U-Net and Algorithm 1 end to end: the network's gradient against finite differences,
//! training `tiny` on a handful of fixed patterns (loss falls, DDIM samples land near the
//! patterns), and a run stopped and resumed equals one run straight through.

use crate::common;

use common::*;
use fewstep::data::Dataset;
use fewstep::diffusion::train_run::{RunOptions, TrainRun};
use fewstep::diffusion::{
    Denoiser, Parameterization, SampleOptions, Sampler, SamplerKind, TrainConfig, Trainer,
    Weighting,
};
use fewstep::nn::{self, UNet, UNetConfig};
use fewstep::tensor::{AdamConfig, Tape, Tensor};
use rand::Rng;

/// Central differences of an f32 forward pass: step and tolerances for gradients through ~60 ops.
const FD_EPS: f32 = 1e-2;
pub const FD_ATOL: f64 = 4e-3;
pub const FD_RTOL: f64 = 5e-2;

/// Every parameter random (the zero-initialised output layers of a fresh net would make almost
/// every gradient zero).
fn randomised(g: &fewstep::gpu::Gpu, cfg: UNetConfig, seed: u64) -> UNet {
    let mut r = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let layout = nn::Layout::new(&cfg).unwrap();
    let params = layout
        .specs
        .iter()
        .map(|s| {
            let fan = s.shape[1..].iter().product::<usize>().max(4);
            let scale = (1.5 / fan as f32).sqrt();
            let v: Vec<f32> = (0..s.numel())
                .map(|_| {
                    if s.name.ends_with(".g") {
                        1.0 + r.random_range(-0.2..0.2)
                    } else {
                        r.random_range(-scale..scale)
                    }
                })
                .collect();
            Tensor::from_slice(g, &s.shape, &v)
        })
        .collect();
    UNet::from_params(cfg, params).unwrap()
}

#[test]
fn unet_gradient_matches_finite_differences() {
    let g = gpu();
    let v = g.variant();
    unet_gradient_check(&g, v, v, (FD_ATOL, FD_RTOL));
}

/// The gradient of a randomised `tiny` U-Net's loss (every part: time embedding, convolutions,
/// attention, norms, skips) on the `grad_family` GEMM family against central differences of its
/// forward pass on `fd_family`, within `tol` (atol, rtol).
pub fn unet_gradient_check(
    g: &fewstep::gpu::Gpu,
    grad_family: fewstep::gpu::KernelVariant,
    fd_family: fewstep::gpu::KernelVariant,
    (atol, rtol): (f64, f64),
) {
    let mut cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    cfg.attn_res = vec![4]; // attention in the up/down path too, not only the middle
                            // A few parameters from every part of the network.
    let picks = [
        "temb.0.w",
        "conv_in.w",
        "down.0.0.res.conv1.w",
        "down.1.0.attn.qkv.w",
        "mid.attn.proj.w",
        "mid.res1.norm1.g",
        "up.1.1.res.skip.w",
        "up.0.1.res.emb.b",
        "out.conv.w",
    ];
    gradient_check_of(g, cfg, &picks, grad_family, fd_family, (atol, rtol));
}

/// The blocks of imported diffusers networks: the time embedding scaling and shifting norm2's
/// output (scale_shift), resampling by res blocks (average pooling down, nearest up), a middle
/// attention without a norm. The gradient against central differences, as for `tiny`.
#[test]
fn diffusers_blocks_gradient_matches_finite_differences() {
    let g = gpu();
    let v = g.variant();
    let mut cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    cfg.time_scale_shift = true;
    cfg.resnet_down = vec![true, false];
    cfg.resnet_up = vec![false, true];
    cfg.mid_attention = fewstep::nn::MidAttention::Unnormed;
    let picks = [
        "conv_in.w",
        "down.0.down.conv1.w",
        "down.0.down.emb.w",
        "down.0.0.res.norm2.b",
        "mid.attn.qkv.w",
        "up.1.up.norm1.g",
        "up.1.up.emb.b",
        "up.0.1.res.emb.w",
    ];
    gradient_check_of(&g, cfg, &picks, v, v, (FD_ATOL, FD_RTOL));
}

fn gradient_check_of(
    g: &fewstep::gpu::Gpu,
    cfg: UNetConfig,
    picks: &[&str],
    grad_family: fewstep::gpu::KernelVariant,
    fd_family: fewstep::gpu::KernelVariant,
    (atol, rtol): (f64, f64),
) {
    assert_eq!(g.set_variant(grad_family), grad_family);
    let mut r = rng("unet fd");
    let model = Denoiser {
        net: randomised(g, cfg, r.random()),
        param: Parameterization::V,
    };
    let n = 2;
    let z = Tensor::from_slice(g, &[n, 1, 8, 8], &uniform(&mut r, n * 64, 1.0));
    let x = Tensor::from_slice(g, &[n, 1, 8, 8], &uniform(&mut r, n * 64, 1.0));
    let t = [0.3, 0.8];
    let w = Tensor::from_slice(g, &[n], &[1.0, 2.0]);
    let loss_of = |net: &UNet, train: bool| {
        let tape = Tape::new();
        let p = net.vars(&tape, train);
        let m = Denoiser {
            net: UNet::from_params(net.config.clone(), net.params.clone()).unwrap(),
            param: Parameterization::V,
        };
        let xh = m.x_hat(&tape, &p, &z, &t, &fewstep::nn::NetCond::NONE, None);
        let loss = tape.mean_all(&tape.weighted_mse(&xh, &x, &w));
        (tape, loss)
    };
    let (tape, loss) = loss_of(&model.net, true);
    let (grads, _) = tape.backward(&loss, None);
    let specs = &model.net.layout.specs;
    let picks: Vec<usize> = picks
        .iter()
        .map(|n| {
            specs
                .iter()
                .position(|s| s.name == *n)
                .unwrap_or_else(|| panic!("no {n}"))
        })
        .collect();
    let mut worst = 0.0f64;
    for &pi in &picks {
        let grad = grads
            .get(pi)
            .expect("a gradient")
            .to_vec_blocking()
            .unwrap();
        let base = model.net.params[pi].to_vec_blocking().unwrap();
        for _ in 0..2 {
            let j = r.random_range(0..base.len());
            g.set_variant(fd_family);
            let fd = central_difference(&base, j, FD_EPS, |d| {
                let mut params = model.net.params.clone();
                params[pi] = Tensor::from_slice(g, &specs[pi].shape, d);
                let net = UNet::from_params(model.net.config.clone(), params).unwrap();
                let (_, l) = loss_of(&net, false);
                l.value.to_vec_blocking().unwrap()[0] as f64
            });
            assert_close(
                &format!("{grad_family:?}: d loss / d {}[{j}]", specs[pi].name),
                &grad[j..j + 1],
                &[fd],
                atol,
                rtol,
            );
            worst = worst.max((grad[j] as f64 - fd).abs() / (atol + rtol * fd.abs()));
        }
    }
    eprintln!(
        "{grad_family:?} gradient vs {fd_family:?} central differences: worst |err| {:.0}% of the tolerance",
        100.0 * worst
    );
}

fn pattern_config(batch: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        param: Parameterization::V,
        weighting: Weighting::SnrTrunc,
        batch,
        lr: 2e-3,
        warmup: 20,
        ema_decay: 0.99,
        grad_clip: 1.0,
        seed,
        adam: AdamConfig::default(),
        uncond_prob: 0.0,
    }
}

/// RMS distance from each sample to its nearest pattern.
fn nearest_pattern_rms(samples: &[f32], data: &Dataset) -> Vec<f64> {
    let len = data.image_len();
    let mut pats = vec![vec![0f32; len]; data.len()];
    for (i, p) in pats.iter_mut().enumerate() {
        data.write_image(i, false, p);
    }
    samples
        .chunks(len)
        .map(|s| {
            pats.iter()
                .map(|p| {
                    let d: f64 = s.iter().zip(p).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
                    (d / len as f64).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

#[test]
fn tiny_learns_a_handful_of_patterns() {
    let g = gpu();
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let mut tr = Trainer::new(&g, arch, pattern_config(16, 1)).unwrap();
    let steps = 300;
    let mut losses = vec![];
    for i in 0..steps {
        tr.step(&data);
        if (i + 1) % 50 == 0 {
            losses.push(pollster::block_on(tr.take_mean_loss()).unwrap().unwrap());
        }
    }
    eprintln!("mean loss per 50 updates: {losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last.is_finite() && last < 0.5 * first,
        "loss fell only from {first} to {last} (need 2x)"
    );
    let model = tr.ema_model();
    let samples = Sampler::new(
        &model,
        SampleOptions {
            steps: 16,
            count: 16,
            seed: 5,
            kind: SamplerKind::Ddim,
            clip: true,
        },
    )
    .run(&model)
    .to_vec_blocking()
    .unwrap();
    let d = nearest_pattern_rms(&samples, &data);
    let noise = nearest_pattern_rms(&fewstep::tensor::philox_normal_cpu(5, 0, 16 * 64), &data);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "nearest-pattern RMS: samples {:.3} (per sample {d:.2?}), the initial noise {:.3}",
        mean(&d),
        mean(&noise)
    );
    // Pixels span [-1, 1]; the noise is ~1.2 from every pattern.
    assert!(mean(&d) < 0.25, "samples are not near the patterns");
}

#[test]
fn resumed_run_equals_an_uninterrupted_one() {
    let g = gpu();
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let arch = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let k = 4;
    let opts = |total| RunOptions {
        total_steps: total,
        checkpoint_every: k,
        log_every: 2,
        sample_every: 0,
        sample_steps: 4,
        dataset: "synthetic".into(),
        command: "test".into(),
    };
    let cfg = TrainConfig {
        lr: 1e-3,
        ..pattern_config(8, 9)
    };
    let straight = tempfile::tempdir().unwrap();
    let mut a = TrainRun::create(
        &g,
        straight.path(),
        data.clone(),
        arch.clone(),
        cfg.clone(),
        opts(2 * k),
    )
    .unwrap();
    while !a.is_done() {
        a.advance().unwrap();
    }
    let stopped = tempfile::tempdir().unwrap();
    // The first half; then "killed" after one more update that never reached a checkpoint.
    let mut b = TrainRun::create(
        &g,
        stopped.path(),
        data.clone(),
        arch.clone(),
        cfg,
        opts(2 * k),
    )
    .unwrap();
    for _ in 0..k + 1 {
        b.advance().unwrap();
    }
    drop(b);
    let mut b = TrainRun::resume(&g, stopped.path(), data.clone(), None).unwrap();
    assert_eq!(b.step(), k, "resumes from the last checkpoint");
    while !b.is_done() {
        b.advance().unwrap();
    }
    // Same weights, Adam moments and EMA, to f32 rounding (the computation is the same).
    let ta = pollster::block_on(a.trainer.state_tensors()).unwrap();
    let tb = pollster::block_on(b.trainer.state_tensors()).unwrap();
    let mut worst = 0f32;
    for (x, y) in ta.iter().zip(&tb) {
        assert_eq!(x.name, y.name);
        for (p, q) in x.data.iter().zip(&y.data) {
            worst = worst.max((p - q).abs());
        }
    }
    eprintln!("largest difference between the runs: {worst:e}");
    assert!(worst <= 1e-6, "resumed run differs by {worst}");
    // The metrics of the resumed run have no duplicated or missing steps.
    let m = std::fs::read_to_string(stopped.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = m
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![2, 4, 6, 8]);
    // A second run in the same directory is refused rather than overwriting it.
    let err = TrainRun::create(
        &g,
        stopped.path(),
        data,
        arch,
        pattern_config(8, 9),
        opts(1),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("--resume"), "{err}");
}
