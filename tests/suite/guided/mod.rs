//! Issue 24: class conditioning, classifier-free guidance and guided distillation (Meng et al.
//! 2023) at tiny scale: the class embedding, the guided x_hat against f64 references, stage 1's
//! target and learning on a stand-in teacher, the guided halving's target, and the command line.
//! Tests by level: `math.rs` (the class embedding, guided x_hat, stage 1 and the guided
//! halving's targets, on the GPU against references), `commands.rs` (the command line, the app,
//! old files, evaluation and the guided recipe).

use crate::common::bin::{fewstep, stderr};
use crate::common::{assert_close, gpu, rng, uniform};
use fewstep::data::Dataset;
use fewstep::diffusion::distiller::{
    distill_target, guidance_student, guided_x_hat, substep_times, DistillBatch, Distiller, Teacher,
};
use fewstep::diffusion::sampler::ddim_coef;
use fewstep::diffusion::schedule::{alpha_sigma, Schedule};
use fewstep::diffusion::{Denoiser, DistillConfig, Parameterization};
use fewstep::gpu::Gpu;
use fewstep::nn::{GuidanceRange, NetCond, UNet, UNetConfig};
use fewstep::tensor::{AdamConfig, Tape, Tensor};

/// Float rounding of a few GPU elementwise ops on values of order 1.
const GPU_ATOL: f64 = 2e-5;
const GPU_RTOL: f64 = 2e-5;

fn tiny(classes: usize, param: Parameterization) -> UNetConfig {
    let mut a = UNetConfig::preset("tiny", 1, 8, 8, param.heads()).unwrap();
    a.classes = classes;
    a
}

/// A model whose every parameter is random (the zero-initialised output layers too, so the
/// output depends on everything).
fn random_model(g: &Gpu, arch: UNetConfig, param: Parameterization, seed: &str) -> Denoiser {
    let mut r = rng(seed);
    let net = UNet::new(g, arch, 1).unwrap();
    let params = net
        .layout
        .specs
        .iter()
        .map(|s| Tensor::from_slice(g, &s.shape, &uniform(&mut r, s.numel(), 0.3)))
        .collect();
    Denoiser {
        net: UNet::from_params(net.config.clone(), params).unwrap(),
        param,
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec_blocking().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A stand-in conditional teacher with a known x_hat: a_c z + b_c for class c, a_u z + b_u
/// without one (w is not an input: guidance takes its two evaluations).
struct ClassStandIn;
const A: [f64; 3] = [0.5, -0.3, 0.8];
const B: [f64; 3] = [0.2, -0.1, 0.4];
const A_U: f64 = 0.1;
const B_U: f64 = 0.05;
impl Teacher for ClassStandIn {
    fn x_hat(&self, z: &Tensor, _t: &[f64], cond: &NetCond) -> Tensor {
        let gpu = z.gpu();
        let n = z.shape()[0];
        let pick = |s: usize| cond.labels.get(s).copied().flatten().map(|c| c as usize);
        let a: Vec<f32> = (0..n)
            .map(|s| pick(s).map_or(A_U, |c| A[c]) as f32)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|s| pick(s).map_or(B_U, |c| B[c]) as f32)
            .collect();
        let len = z.numel() / n;
        let bias: Vec<f32> = (0..n).flat_map(|s| vec![b[s]; len]).collect();
        let bias = Tensor::from_slice(gpu, z.shape(), &bias);
        z.per_sample_axpby(
            &Tensor::from_slice(gpu, &[n], &a),
            Some((&bias, &Tensor::from_slice(gpu, &[n], &vec![1.0; n]))),
        )
    }
}
fn stand_in_guided(c: Option<usize>, w: f64, z: f64) -> f64 {
    let xu = A_U * z + B_U;
    match c {
        Some(c) => (1.0 + w) * (A[c] * z + B[c]) - w * xu,
        None => xu,
    }
}

fn stage1_config(updates: u64, lr: f32) -> DistillConfig {
    DistillConfig {
        teacher_steps: 8,
        updates,
        batch: 6,
        lr,
        grad_clip: 1.0,
        seed: 3,
        adam: AdamConfig::default(),
        ema_decay: None,
        guidance_stage: true,
    }
}

fn labelled_patterns() -> Dataset {
    // Six patterns in three classes (two each).
    let d = Dataset::synthetic_patterns(6, 1, 8, 8);
    let labels = (0..6u8).map(|i| i % 3).collect();
    Dataset::from_pixels("patterns", 1, 8, 8, d.pixels, Some(labels), false)
}

/// A w-conditioned stand-in: x_hat = (a_c + 0.1 w) z + b_c, one evaluation.
struct WStandIn;
impl Teacher for WStandIn {
    fn x_hat(&self, z: &Tensor, _t: &[f64], cond: &NetCond) -> Tensor {
        let gpu = z.gpu();
        let n = z.shape()[0];
        let len = z.numel() / n;
        let a: Vec<f32> = (0..n)
            .map(|s| (A[cond.labels[s].unwrap() as usize] + 0.1 * cond.w[s] as f64) as f32)
            .collect();
        let b: Vec<f32> = (0..n)
            .flat_map(|s| vec![B[cond.labels[s].unwrap() as usize] as f32; len])
            .collect();
        z.per_sample_axpby(
            &Tensor::from_slice(gpu, &[n], &a),
            Some((
                &Tensor::from_slice(gpu, z.shape(), &b),
                &Tensor::from_slice(gpu, &[n], &vec![1.0; n]),
            )),
        )
    }
    fn takes_guidance(&self) -> bool {
        true
    }
}

/// Three classes of two small RGB images each, one folder per class (`images:DIR` labels).
pub fn write_class_images(dir: &std::path::Path) {
    for (k, class) in ["circle", "square", "stripe"].iter().enumerate() {
        let sub = dir.join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(16 + i * 4, 16, |x, y| {
                let v = match k {
                    0 => ((x as i32 - 8).pow(2) + (y as i32 - 8).pow(2) < 30) as u8 * 200,
                    1 => ((4..12).contains(&x) && (4..12).contains(&y)) as u8 * 220,
                    _ => ((x / 3) % 2) as u8 * 180,
                };
                image::Rgb([v, v / 2 + i as u8 * 20, 255 - v])
            });
            img.save(sub.join(format!("img{i}.png"))).unwrap();
        }
    }
}

fn meta_of(path: &std::path::Path) -> fewstep::diffusion::ModelMeta {
    let bytes = std::fs::read(path).unwrap();
    fewstep::diffusion::parse_model(path, &bytes).unwrap().0
}

/// A class-conditional family as the app lists it: the bundled models' descriptions with three
/// named classes (and a w input on the students).
fn conditional_state() -> fewstep::app::state::AppState {
    use fewstep::bundled;
    let mut s = fewstep::app::state::AppState::default();
    for b in bundled::BUNDLED {
        let (mut meta, tensors) =
            fewstep::diffusion::parse_model(std::path::Path::new(b.file), b.bytes()).unwrap();
        meta.arch.classes = 3;
        meta.arch.class_names = vec!["Dress".into(), "Bag".into(), "Ankle boot".into()];
        if meta.steps.is_some() {
            meta.arch.guidance = Some(GuidanceRange {
                w_min: 0.0,
                w_max: 4.0,
            });
        }
        s.add_model(fewstep::app::engine::ModelInfo {
            name: format!("cond-{}", b.name),
            meta,
            params: tensors.iter().map(|t| t.data.len()).sum(),
            file_bytes: 0,
        });
    }
    s
}

/// The synthetic patterns as class folders of 8x8 PNGs: 8 shapes (the classes), `per_class`
/// variants of each (shifted, resized, on lighter backgrounds).
pub fn write_pattern_classes(dir: &std::path::Path, per_class: usize) {
    const NAMES: [&str; 8] = [
        "disc", "hbar", "vbar", "ring", "cross", "square", "diagonal", "dots",
    ];
    let d = Dataset::synthetic_patterns(8 * per_class, 1, 8, 8);
    for i in 0..d.len() {
        let sub = dir.join(NAMES[i % 8]);
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::GrayImage::from_raw(8, 8, d.image(i).to_vec()).unwrap();
        img.save(sub.join(format!("{i:03}.png"))).unwrap();
    }
}

fn run_ok(args: &[&str]) -> String {
    let o = fewstep(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

mod commands;
mod math;
