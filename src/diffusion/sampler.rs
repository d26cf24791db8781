//! Incremental samplers: deterministic DDIM on the grid t_i = i / N and the ancestral
//! (stochastic) sampler. A caller advances one step at a time and can read z_t and x_hat after
//! each step, so a UI can draw every step and a browser never blocks.

use serde::{Deserialize, Serialize};

use super::model::{per_sample, Denoiser};
use super::schedule::{alpha_sigma, grid};
use crate::nn::NetCond;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Deterministic DDIM (what distilled models are made for).
    #[default]
    Ddim,
    /// Ancestral sampling: fresh noise at every step.
    Ancestral,
}

impl SamplerKind {
    /// Every choice, by the name the command line and the app's address use.
    pub const NAMES: [&'static str; 2] = ["ddim", "ancestral"];

    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ancestral => "ancestral",
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ddim" => Ok(SamplerKind::Ddim),
            "ancestral" => Ok(SamplerKind::Ancestral),
            _ => Err(format!("unknown sampler `{s}`: choose ddim or ancestral")),
        }
    }
}

/// The most sampling steps any command takes (a teacher is sampled with 64 to 1024; more only
/// costs time). Bounded so a mistyped count is refused instead of running for days.
pub const MAX_STEPS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    pub steps: usize,
    pub count: usize,
    pub seed: u64,
    pub kind: SamplerKind,
    /// Clip x_hat to [-1, 1] at every step (eps_hat is then recomputed from the clipped x_hat).
    pub clip: bool,
}

/// DDIM from t to s: z_s = (sigma_s / sigma_t) z_t + (alpha_s - sigma_s alpha_t / sigma_t) x_hat,
/// i.e. alpha_s x_hat + sigma_s eps_hat with eps_hat = (z_t - alpha_t x_hat) / sigma_t.
/// Returns (coefficient on z_t, coefficient on x_hat). Needs t > 0 (sigma_t > 0).
pub fn ddim_coef(t: f64, s: f64) -> (f64, f64) {
    let (at, st) = alpha_sigma(t);
    let (as_, ss) = alpha_sigma(s);
    (ss / st, as_ - ss * at / st)
}

/// The ancestral step's posterior q(z_s | z_t, x = x_hat): (coef on z_t, coef on x_hat, std).
pub fn ancestral_coef(t: f64, s: f64) -> (f64, f64, f64) {
    ancestral_coef_ab(alpha_sigma(t), alpha_sigma(s))
}

/// [`ancestral_coef`] at given (alpha, sigma) pairs of t and s (any schedule's).
pub fn ancestral_coef_ab((at, st): (f64, f64), (as_, ss): (f64, f64)) -> (f64, f64, f64) {
    // s < t <= 1, so alpha_s > 0 and sigma_t > 0.
    let a_ts = at / as_;
    let var_ts = (st * st - a_ts * a_ts * ss * ss).max(0.0);
    let cz = a_ts * ss * ss / (st * st);
    let cx = as_ * var_ts / (st * st);
    let std = (var_ts * ss * ss / (st * st)).sqrt();
    (cz, cx, std)
}

/// Noise stream of the initial z_1 (the ancestral sampler's per-step noise uses 1 + step).
pub const INIT_STREAM: u64 = 0;

pub struct Sampler {
    pub opts: SampleOptions,
    grid: Vec<f64>,
    done: usize,
    z: Tensor,
    x_hat: Option<Tensor>,
    /// Where this sampler's images start in the noise streams (see [`Sampler::new_from`]).
    first_value: usize,
    /// The class of each image and the guidance weight (empty: unconditional).
    cond: NetCond,
}

impl Sampler {
    /// Starts from z_1 = eps ~ N(0, I) drawn from `opts.seed`.
    pub fn new(model: &Denoiser, opts: SampleOptions) -> Sampler {
        Sampler::new_from(model, opts, 0)
    }

    /// Images `first .. first + opts.count` of what `new` with `first + opts.count` images (or
    /// more) would sample: the same noise, so chunks of a large count make the same images as
    /// one pass. `first` times the pixels per image must be a multiple of 4 (any multiple of 4
    /// images is).
    pub fn new_from(model: &Denoiser, opts: SampleOptions, first: usize) -> Sampler {
        assert!(opts.steps >= 1, "at least one sampling step");
        let [c, h, w] = model.image_shape();
        let first_value = first * c * h * w;
        let z = Tensor::randn_from(
            model.net.gpu(),
            &[opts.count, c, h, w],
            opts.seed,
            INIT_STREAM,
            first_value,
        );
        Sampler {
            opts,
            grid: grid(opts.steps),
            done: 0,
            z,
            x_hat: None,
            first_value,
            cond: NetCond::NONE,
        }
    }

    /// Starts from the given z_1 [count, C, H, W] (an interpolation strip's, see
    /// interpolate.rs); the ancestral sampler's fresh noise still comes from `opts.seed`.
    pub fn from_start(opts: SampleOptions, z: Tensor) -> Sampler {
        assert!(opts.steps >= 1, "at least one sampling step");
        assert_eq!(z.dim(0), opts.count, "one start per image");
        Sampler {
            opts,
            grid: grid(opts.steps),
            done: 0,
            z,
            x_hat: None,
            first_value: 0,
            cond: NetCond::NONE,
        }
    }

    /// Samples the classes `cond.labels` (one per image) with classifier-free guidance weight
    /// `cond.w` ([`Denoiser::guided`]).
    pub fn with_cond(mut self, cond: NetCond) -> Sampler {
        assert!(
            cond.labels.is_empty() || cond.labels.len() == self.opts.count,
            "one class per image"
        );
        assert!(
            cond.w.is_empty() || cond.w.len() == self.opts.count,
            "one w per image"
        );
        self.cond = cond;
        self
    }

    pub fn steps_done(&self) -> usize {
        self.done
    }
    pub fn is_done(&self) -> bool {
        self.done == self.opts.steps
    }
    /// The current time (1 before the first step, 0 after the last).
    pub fn t(&self) -> f64 {
        self.grid[self.done]
    }
    /// z_t at the current time (after the last step: the sample).
    pub fn z(&self) -> &Tensor {
        &self.z
    }
    /// The model's x_hat of the last step taken.
    pub fn x_hat(&self) -> Option<&Tensor> {
        self.x_hat.as_ref()
    }

    /// Records one step's GPU work and submits it (no wait).
    pub fn step(&mut self, model: &Denoiser) {
        assert!(!self.is_done(), "sampling already finished");
        let (t, s) = (self.grid[self.done], self.grid[self.done + 1]);
        let n = self.opts.count;
        let gpu = model.net.gpu().clone();
        let raw = model.guided(&self.z, &vec![t; n], &self.cond);
        let schedule = model.net.config.noise_schedule.as_ref();
        let clip = match schedule {
            None => self.opts.clip.then_some(1.0),
            // An imported model clips as its scheduler config says (`clip_sample_range`).
            Some(d) => d.clip.filter(|_| self.opts.clip),
        };
        let x = match clip {
            Some(r) => raw.clamp(-r, r),
            None => raw.clone(),
        };
        let z = match (self.opts.kind, schedule) {
            (SamplerKind::Ddim, None) => {
                let (cz, cx) = ddim_coef(t, s);
                self.z.per_sample_axpby(
                    &per_sample(&gpu, &vec![cz; n]),
                    Some((&x, &per_sample(&gpu, &vec![cx; n]))),
                )
            }
            // diffusers' DDIMScheduler step (eta 0), step for step: the clipped x_hat with the
            // noise implied by the unclipped one, z_s = alpha_s x_clip + sigma_s (z - alpha_t
            // x_raw) / sigma_t, towards the timestep it steps to (`ddim_target_in`).
            (SamplerKind::Ddim, Some(d)) => {
                let acp = d.alphas_cumprod();
                let (at, st) = d.alpha_sigma_in(&acp, t);
                let (as_, ss) = d.ddim_target_in(&acp, t, self.opts.steps);
                self.z
                    .per_sample_axpby(
                        &per_sample(&gpu, &vec![ss / st; n]),
                        Some((&x, &per_sample(&gpu, &vec![as_; n]))),
                    )
                    .axpby(1.0, &raw, -(ss * at / st) as f32)
            }
            (SamplerKind::Ancestral, _) => {
                let schedule = super::schedule::Schedule::of(&model.net.config);
                let (cz, cx, std) =
                    ancestral_coef_ab(schedule.alpha_sigma(t), schedule.alpha_sigma(s));
                let mean = self.z.per_sample_axpby(
                    &per_sample(&gpu, &vec![cz; n]),
                    Some((&x, &per_sample(&gpu, &vec![cx; n]))),
                );
                if std > 0.0 {
                    let noise = Tensor::randn_from(
                        &gpu,
                        self.z.shape(),
                        self.opts.seed,
                        1 + self.done as u64,
                        self.first_value,
                    );
                    noise.axpby(std as f32, &mean, 1.0)
                } else {
                    mean
                }
            }
        };
        self.z = z;
        self.x_hat = Some(x);
        self.done += 1;
        gpu.flush();
    }
}

/// How many images one pass of the U-Net may take on this adapter; see [`images_per_pass`].
#[derive(Clone, Copy, Debug)]
pub struct PassLimit {
    /// Images per pass (a multiple of 4, at least 4).
    pub images: usize,
    /// Bytes of the largest tensor of a pass, per image.
    pub largest_per_image: u64,
    /// The largest tensor the adapter allows.
    pub tensor_limit: u64,
}

/// Most images per pass that memory-minded code uses even where the buffer limits allow more:
/// beyond this, batching more images gains little throughput and only risks the GPU's memory.
pub const MAX_IMAGES_PER_PASS: usize = 1024;
/// Memory a pass may take, estimated as 8 times its largest tensor (activations saved for the
/// backward pass and their gradients make up the rest).
const PASS_MEMORY_BUDGET: u64 = 2 << 30;

/// Measures how many images one pass of `model`'s U-Net can take on its adapter: the largest
/// tensor of a forward pass of 4 images (a throwaway pass, measured by the buffer pool) must fit
/// the adapter's largest storage binding, and 8 of them `PASS_MEMORY_BUDGET`.
pub fn images_per_pass(model: &Denoiser) -> PassLimit {
    let gpu = model.net.gpu();
    let [c, h, w] = model.image_shape();
    // Submits what was recorded before: the probe's own launches are discarded unrun.
    gpu.flush();
    gpu.reset_largest_taken();
    let z = Tensor::zeros(gpu, &[4, c, h, w]);
    drop(model.predict(&z, &[0.5; 4]));
    gpu.discard_pending();
    let largest = gpu.pool_stats().largest_taken.div_ceil(4).max(1);
    let limit = gpu.max_tensor_bytes();
    let by_binding = (limit / largest) as usize;
    let by_memory = (PASS_MEMORY_BUDGET / (8 * largest)) as usize;
    let images = by_binding.min(by_memory).min(MAX_IMAGES_PER_PASS) / 4 * 4;
    PassLimit {
        images: images.max(4),
        largest_per_image: largest,
        tensor_limit: limit,
    }
}

/// Refuses a training or distillation batch whose tensors cannot fit this adapter, before any
/// GPU work or host allocation of that size, naming the largest batch that fits. `flag` is how
/// the user gave the batch (`--batch`).
pub fn check_batch(model: &Denoiser, batch: usize, flag: &str) -> Result<(), String> {
    let pass = images_per_pass(model);
    let fits = (pass.tensor_limit / pass.largest_per_image) as usize;
    if batch == 0 {
        return Err(format!("{flag} 0: a batch needs at least one image"));
    }
    if fits == 0 {
        return Err(format!(
            "{flag} {batch} cannot run on '{}': one image alone needs a tensor of {:.1} MB and \
             this adapter allows at most {} MB per buffer, so no batch fits; use a smaller \
             model (--preset) or smaller images, or an adapter with larger buffers \
             (FEWSTEP_ADAPTER)",
            model.net.gpu().info().name,
            pass.largest_per_image as f64 / 1e6,
            pass.tensor_limit >> 20
        ));
    }
    if batch > fits {
        return Err(format!(
            "{flag} {batch} cannot run on '{}': a tensor of the U-Net would need {:.1} MB and \
             this adapter allows at most {} MB per buffer; the largest batch that fits is {fits} \
             ({flag} {fits} or less)",
            model.net.gpu().info().name,
            (batch as u64 * pass.largest_per_image) as f64 / 1e6,
            pass.tensor_limit >> 20
        ));
    }
    Ok(())
}

/// `opts.count` samples, in passes of at most `per_pass` images (a multiple of 4), read back to
/// the host: the same images as one pass of all of them (each pass starts where the last one
/// ended in the noise streams).
#[cfg(not(target_arch = "wasm32"))]
pub fn sample_in_passes(
    model: &Denoiser,
    opts: SampleOptions,
    cond: &NetCond,
    per_pass: usize,
) -> Result<Vec<f32>, crate::gpu::GpuError> {
    assert!(per_pass >= 4 && per_pass.is_multiple_of(4));
    let mut out = Vec::new();
    // An empty list stays empty (no class / no w for every image).
    fn part<T: Clone>(v: &[T], a: usize, b: usize) -> Vec<T> {
        if v.is_empty() {
            Vec::new()
        } else {
            v[a..b].to_vec()
        }
    }
    for first in (0..opts.count).step_by(per_pass) {
        let count = per_pass.min(opts.count - first);
        let end = first + count;
        let c = NetCond {
            labels: part(&cond.labels, first, end),
            w: part(&cond.w, first, end),
        };
        let s = Sampler::new_from(model, SampleOptions { count, ..opts }, first).with_cond(c);
        out.extend(s.run(model).to_vec_blocking()?);
    }
    Ok(out)
}

impl Sampler {
    /// Runs every remaining step; returns the samples [count, C, H, W].
    pub fn run(mut self, model: &Denoiser) -> Tensor {
        while !self.is_done() {
            self.step(model);
        }
        self.z
    }
}
