//! The DDPM-style U-Net (ARCHITECTURE.md, The U-Net), on the autodiff tape.
//!
//! [`Layout::new`] (`layout.rs`) walks the architecture once and produces both the parameter
//! list (names, shapes, initialisers: what model files store) and the block structure that
//! [`UNet::forward`] runs, so the two can never disagree.

use rand::SeedableRng;
use rand_pcg::Pcg64;

use super::config::{ConfigError, UNetConfig};
use super::layout::{AttnP, ConvP, DenseP, Layout, NormP, ResP, Resample, Resize};
use crate::gpu::Gpu;
use crate::tensor::{Tape, Tensor, Var};

/// Dropout noise source for one forward pass: each res block draws its own Gaussian noise from
/// (seed, stream + block index), so a step's masks are reproducible.
#[derive(Clone, Copy, Debug)]
pub struct DropoutNoise {
    pub seed: u64,
    pub stream: u64,
}

/// What the network is conditioned on besides t, one entry per sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetCond {
    /// The class of each sample (`None`: "no class"); empty: every sample "no class".
    pub labels: Vec<Option<u32>>,
    /// The guidance weight of each sample, for a w-conditioned model; empty: 0 for all.
    pub w: Vec<f32>,
}

impl NetCond {
    /// No class and no guidance: what an unconditional model always sees.
    pub const NONE: NetCond = NetCond {
        labels: Vec::new(),
        w: Vec::new(),
    };

    /// Every sample of class `label` (or none) with guidance weight `w`.
    pub fn uniform(n: usize, label: Option<u32>, w: f32) -> NetCond {
        NetCond {
            labels: vec![label; n],
            w: vec![w; n],
        }
    }
}

/// The one-hot rows [n, classes + 1] of `labels` (the last column is "no class").
pub fn one_hot(labels: &[Option<u32>], n: usize, classes: usize) -> Vec<f32> {
    let k = classes + 1;
    let mut out = vec![0.0f32; n * k];
    for s in 0..n {
        let col = match labels.get(s).copied().flatten() {
            Some(l) => {
                assert!(
                    (l as usize) < classes,
                    "label {l} is not one of the model's {classes} classes"
                );
                l as usize
            }
            None => classes,
        };
        out[s * k + col] = 1.0;
    }
    out
}

/// The network: configuration, layout and the parameter tensors (in layout order).
pub struct UNet {
    pub config: UNetConfig,
    pub layout: Layout,
    pub params: Vec<Tensor>,
}

impl UNet {
    /// Fresh parameters drawn from `seed`.
    pub fn new(gpu: &Gpu, config: UNetConfig, seed: u64) -> Result<UNet, ConfigError> {
        config.validate()?;
        let layout = Layout::new(&config)?;
        let mut rng = Pcg64::seed_from_u64(seed);
        let params = layout
            .specs
            .iter()
            .map(|s| Tensor::from_slice(gpu, &s.shape, &s.initial_values(&mut rng)))
            .collect();
        Ok(UNet {
            config,
            layout,
            params,
        })
    }

    /// Parameters given as tensors in layout order (loading a model file).
    pub fn from_params(config: UNetConfig, params: Vec<Tensor>) -> Result<UNet, ConfigError> {
        config.validate()?;
        let layout = Layout::new(&config)?;
        assert_eq!(params.len(), layout.specs.len(), "one tensor per parameter");
        Ok(UNet {
            config,
            layout,
            params,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        self.params[0].gpu()
    }

    pub fn param_count(&self) -> usize {
        self.layout.param_count()
    }

    /// The parameters as tape variables: gradients flow to them when `train`, else constants.
    pub fn vars(&self, tape: &Tape, train: bool) -> Vec<Var> {
        super::param_vars(tape, &self.params, train)
    }

    /// Runs the network on z [N, C, H, W] at per-sample times t (N values in [0, 1]),
    /// conditioned on `cond` (classes and guidance weights; ignored parts must be empty).
    pub fn forward(
        &self,
        tape: &Tape,
        p: &[Var],
        z: &Tensor,
        t: &[f32],
        cond: &NetCond,
        dropout: Option<DropoutNoise>,
    ) -> Var {
        let c = &self.config;
        let n = z.shape()[0];
        assert_eq!(t.len(), n, "one time per sample");
        assert!(
            cond.labels.is_empty() || cond.labels.len() == n,
            "one label per sample"
        );
        assert!(cond.w.is_empty() || cond.w.len() == n, "one w per sample");
        assert!(
            c.classes > 0 || cond.labels.iter().all(Option::is_none),
            "an unconditional model was given classes"
        );
        assert!(
            c.guidance.is_some() || cond.w.iter().all(|&w| w == 0.0),
            "a model without a guidance input was given w"
        );
        assert_eq!(
            &z.shape()[1..],
            &[c.in_channels, c.height, c.width],
            "input shape does not match the model"
        );
        let l = &self.layout;
        let mut f = Fwd {
            tape,
            p,
            groups: c.groups,
            eps: c.norm_eps,
            head_dim: c.attn_head_dim,
            dropout: dropout.filter(|_| c.dropout > 0.0).map(|d| (d, c.dropout)),
            blocks_run: 0,
        };
        let emb = Tensor::from_slice(z.gpu(), &[n, c.ch], &c.embed_time(t));
        let emb = f.dense(&Var::constant(emb), l.temb[0]);
        let mut emb = f.dense(&tape.silu(&emb), l.temb[1]);
        if let Some(ce) = l.class_emb {
            let hot = one_hot(&cond.labels, n, c.classes);
            let hot = Tensor::from_slice(z.gpu(), &[n, c.classes + 1], &hot);
            emb = tape.add(&emb, &f.dense(&Var::constant(hot), ce));
        }
        if let Some(we) = l.wemb {
            let w: Vec<f32> = if cond.w.is_empty() {
                vec![0.0; n]
            } else {
                cond.w.clone()
            };
            // w embedded exactly like t (Meng et al.): the same sinusoids, its own two layers.
            let e = Tensor::from_slice(z.gpu(), &[n, c.ch], &time_embedding(&w, c.ch));
            let e = f.dense(&Var::constant(e), we[0]);
            emb = tape.add(&emb, &f.dense(&tape.silu(&e), we[1]));
        }
        let emb_act = tape.silu(&emb);

        let input = if c.center_input {
            // 2 z - 1 (diffusers' center_input_sample), before the padding of conv_in.
            let minus_one =
                Tensor::from_slice(z.gpu(), &[c.in_channels], &vec![-1.0; c.in_channels]);
            tape.add_channel_vector(
                &tape.scale(&Var::constant(z.clone()), 2.0),
                &Var::constant(minus_one),
            )
        } else {
            Var::constant(z.clone())
        };
        let mut h = f.conv(&input, l.conv_in);
        let mut hs = vec![h.clone()];
        for level in &l.down {
            for (r, a) in &level.blocks {
                h = f.res(&h, &emb_act, r);
                if let Some(a) = a {
                    h = f.attn(&h, a);
                }
                hs.push(h.clone());
            }
            match &level.resample {
                Some(Resample::Conv(d)) => h = f.conv(&h, *d),
                Some(Resample::Res(r)) => h = f.res(&h, &emb_act, r),
                None => continue,
            }
            hs.push(h.clone());
        }
        // The middle block divides each residual sum by mid_scale (diffusers'
        // mid_block_scale_factor; 1 for fewstep's own networks, where no op is recorded).
        let mid_scaled = |x: Var| {
            if c.mid_scale == 1.0 {
                x
            } else {
                tape.scale(&x, 1.0 / c.mid_scale)
            }
        };
        h = mid_scaled(f.res(&h, &emb_act, &l.mid.0));
        if let Some(a) = &l.mid.1 {
            h = mid_scaled(f.attn(&h, a));
        }
        h = mid_scaled(f.res(&h, &emb_act, &l.mid.2));
        for level in &l.up {
            for (r, a) in &level.blocks {
                let skip = hs.pop().expect("skip");
                h = f.res(&tape.concat_channels(&h, &skip), &emb_act, r);
                if let Some(a) = a {
                    h = f.attn(&h, a);
                }
            }
            match &level.resample {
                Some(Resample::Conv(u)) => h = f.conv(&tape.upsample2x(&h), *u),
                Some(Resample::Res(r)) => h = f.res(&h, &emb_act, r),
                None => {}
            }
        }
        let h = f.norm_silu(&h, l.out_norm);
        f.conv(&h, l.out_conv)
    }
}

impl UNetConfig {
    /// The sinusoidal embedding of per-sample times `t` for this network (see
    /// [`TimeEmbedding`](super::config::TimeEmbedding)), [t.len(), ch].
    pub fn embed_time(&self, t: &[f32]) -> Vec<f32> {
        match &self.time_embedding {
            None => time_embedding(t, self.ch),
            Some(e) => diffusers_time_embedding(t, self.ch, e),
        }
    }
}

/// diffusers' `get_timestep_embedding` as torch computes it (f32 frequencies, f32 products), so
/// that an imported network sees the inputs it was trained with.
fn diffusers_time_embedding(t: &[f32], dim: usize, e: &super::config::TimeEmbedding) -> Vec<f32> {
    let half = dim / 2;
    let ln = 10000f64.ln() as f32;
    let denom = (half as f64 - e.freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|j| ((-ln * j as f32) / denom).exp())
        .collect();
    let mut out = vec![0.0f32; t.len() * dim];
    for (s, &ts) in t.iter().enumerate() {
        let step = e.scale * ts as f64 + e.offset;
        let step = if e.integer { step.round() } else { step } as f32;
        let (sin_at, cos_at) = if e.flip_sin_to_cos {
            (half, 0)
        } else {
            (0, half)
        };
        for (j, f) in freqs.iter().enumerate() {
            let a = (step * f) as f64;
            out[s * dim + sin_at + j] = a.sin() as f32;
            out[s * dim + cos_at + j] = a.cos() as f32;
        }
    }
    out
}

/// DDPM's sinusoidal embedding of 1000 * t, computed on the CPU in f64 so that every backend
/// (and the browser) feeds the network bit-identical inputs.
pub fn time_embedding(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let denom = (half.max(2) - 1) as f64;
    let mut out = vec![0.0f32; t.len() * dim];
    for (s, &ts) in t.iter().enumerate() {
        for j in 0..half {
            let freq = (-(10000f64.ln()) * j as f64 / denom).exp();
            let a = 1000.0 * ts as f64 * freq;
            out[s * dim + j] = a.sin() as f32;
            out[s * dim + half + j] = a.cos() as f32;
        }
    }
    out
}

struct Fwd<'a> {
    tape: &'a Tape,
    p: &'a [Var],
    groups: usize,
    eps: f32,
    /// Channels per attention head; None: one head.
    head_dim: Option<usize>,
    dropout: Option<(DropoutNoise, f32)>,
    blocks_run: u64,
}

impl Fwd<'_> {
    fn conv(&self, x: &Var, c: ConvP) -> Var {
        self.tape
            .conv2d(x, &self.p[c.w], Some(&self.p[c.b]), c.conv)
    }
    /// conv(x) + r, the add done by the convolution's epilogue.
    fn conv_add(&self, x: &Var, c: ConvP, r: &Var) -> Var {
        self.tape
            .conv2d_add(x, &self.p[c.w], Some(&self.p[c.b]), c.conv, r)
    }
    /// conv(x) + v[image, channel] (the block's time embedding), added by the epilogue.
    fn conv_add_channels(&self, x: &Var, c: ConvP, v: &Var) -> Var {
        self.tape
            .conv2d_add_channels(x, &self.p[c.w], Some(&self.p[c.b]), c.conv, v)
    }
    fn dense(&self, x: &Var, d: DenseP) -> Var {
        self.tape.linear(x, &self.p[d.w], &self.p[d.b])
    }
    fn norm_silu(&self, x: &Var, n: NormP) -> Var {
        self.tape
            .group_norm_silu(x, &self.p[n.g], &self.p[n.b], self.groups, self.eps)
    }
    fn res(&mut self, x: &Var, emb_act: &Var, r: &ResP) -> Var {
        let t = self.tape;
        let resize = |v: &Var| match r.resize {
            Resize::Keep => v.clone(),
            Resize::Down => t.avg_pool2x(v),
            Resize::Up => t.upsample2x(v),
        };
        let a = resize(&self.norm_silu(x, r.norm1));
        let x = &resize(x);
        let emb = self.dense(emb_act, r.emb);
        let mut h = if r.scale_shift {
            // norm2(conv1(a)) * (1 + scale) + shift, scale and shift the halves of emb.
            let h = self.conv(&a, r.conv1);
            let h = t.group_norm(
                &h,
                &self.p[r.norm2.g],
                &self.p[r.norm2.b],
                self.groups,
                self.eps,
            );
            let c = h.shape()[1];
            let emb = t.reshape(&emb, &[emb.shape()[0], 2 * c, 1, 1]);
            let flat = |v: Var| t.reshape(&v, &[v.shape()[0], c]);
            let scale = flat(t.slice_channels(&emb, 0, c));
            let shift = flat(t.slice_channels(&emb, c, c));
            let ones = Tensor::full(h.value.gpu(), h.shape(), 1.0);
            let factor = t.add_channel_vector(&Var::constant(ones), &scale);
            t.silu(&t.add_channel_vector(&t.mul(&h, &factor), &shift))
        } else {
            let h = self.conv_add_channels(&a, r.conv1, &emb);
            self.norm_silu(&h, r.norm2)
        };
        if let Some((d, p)) = self.dropout {
            let noise = Tensor::randn(h.value.gpu(), h.shape(), d.seed, d.stream + self.blocks_run);
            // Drop where noise <= Phi^-1(p): probability p.
            h = t.dropout(
                &h,
                &noise,
                normal_quantile(p as f64) as f32,
                1.0 / (1.0 - p),
            );
        }
        self.blocks_run += 1;
        let skip = match r.skip {
            Some(s) => self.conv(x, s),
            None => x.clone(),
        };
        self.conv_add(&h, r.conv2, &skip)
    }
    fn attn(&self, x: &Var, a: &AttnP) -> Var {
        let t = self.tape;
        let s = x.shape().to_vec();
        let (n, hw) = (s[0], s[2] * s[3]);
        let normed = match a.norm {
            Some(norm) => t.group_norm(x, &self.p[norm.g], &self.p[norm.b], self.groups, self.eps),
            None => x.clone(),
        };
        let qkv = self.conv(&normed, a.qkv);
        let qkv = t.reshape(&qkv, &[n, 3 * a.ch, hw, 1]);
        // Heads are consecutive channel slices: [n, ch, hw] read as [n * heads, head_dim, hw].
        let d = self.head_dim.unwrap_or(a.ch);
        let heads = a.ch / d;
        let part =
            |i: usize| t.reshape(&t.slice_channels(&qkv, i * a.ch, a.ch), &[n * heads, d, hw]);
        let o = t.attention(&part(0), &part(1), &part(2));
        self.conv_add(&t.reshape(&o, &s), a.proj, x)
    }
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9),
/// for turning a dropout probability into a threshold on Gaussian noise.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}
