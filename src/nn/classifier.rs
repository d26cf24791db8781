//! A small convolutional classifier for evaluation: its pooled features feed the Fréchet
//! distance of `fewstep eval`, and it is trained by fewstep's own engine (`train-classifier`).
//!
//! conv3x3 C->32, SiLU; three stride-2 conv3x3 (32->64->64->128) each with GN(8) + SiLU;
//! global average pooling -> 128 features; linear 128 -> classes.

use rand::SeedableRng;
use rand_pcg::Pcg64;

use super::layout::{Init, ParamSpec};
use crate::gpu::Gpu;
use crate::tensor::{Conv2d, MatmulOpts, Tape, Tensor, Var};

pub const FEATURES: usize = 128;
const WIDTHS: [usize; 4] = [32, 64, 64, 128];
const GROUPS: usize = 8;

pub struct Classifier {
    pub channels: usize,
    pub classes: usize,
    pub specs: Vec<ParamSpec>,
    pub params: Vec<Tensor>,
}

pub fn layout(channels: usize, classes: usize) -> Vec<ParamSpec> {
    let mut specs = vec![];
    let mut add =
        |name: String, shape: Vec<usize>, init: Init| specs.push(ParamSpec { name, shape, init });
    let mut cin = channels;
    for (i, &w) in WIDTHS.iter().enumerate() {
        let init = Init::FanAvg {
            fan_in: cin * 9,
            fan_out: w * 9,
        };
        add(format!("conv{i}.w"), vec![w, cin, 3, 3], init);
        add(format!("conv{i}.b"), vec![w], Init::Zeros);
        if i > 0 {
            add(format!("norm{i}.g"), vec![w], Init::Ones);
            add(format!("norm{i}.b"), vec![w], Init::Zeros);
        }
        cin = w;
    }
    let init = Init::FanAvg {
        fan_in: FEATURES,
        fan_out: classes,
    };
    add("fc.w".into(), vec![classes, FEATURES], init);
    add("fc.b".into(), vec![classes], Init::Zeros);
    specs
}

impl Classifier {
    pub fn new(gpu: &Gpu, channels: usize, classes: usize, seed: u64) -> Classifier {
        let specs = layout(channels, classes);
        let mut rng = Pcg64::seed_from_u64(seed);
        let params = specs
            .iter()
            .map(|s| Tensor::from_slice(gpu, &s.shape, &s.initial_values(&mut rng)))
            .collect();
        Classifier {
            channels,
            classes,
            specs,
            params,
        }
    }

    pub fn vars(&self, tape: &Tape, train: bool) -> Vec<Var> {
        super::param_vars(tape, &self.params, train)
    }

    /// (features [N, 128], logits [N, classes]) of images x [N, C, H, W] in [-1, 1].
    pub fn forward(&self, tape: &Tape, p: &[Var], x: &Tensor) -> (Var, Var) {
        let n = x.shape()[0];
        let mut h = Var::constant(x.clone());
        let mut k = 0;
        for i in 0..WIDTHS.len() {
            let conv = Conv2d {
                stride: if i == 0 { 1 } else { 2 },
                pad: 1,
                pad_end: 0,
            };
            h = tape.conv2d(&h, &p[k], Some(&p[k + 1]), conv);
            k += 2;
            if i > 0 {
                h = tape.group_norm(&h, &p[k], &p[k + 1], GROUPS, 1e-5);
                k += 2;
            }
            h = tape.silu(&h);
        }
        let hw = h.shape()[2] * h.shape()[3];
        let pool = Var::constant(Tensor::full(x.gpu(), &[hw, 1], 1.0 / hw as f32));
        let flat = tape.reshape(&h, &[n, FEATURES, hw]);
        let features = tape.reshape(
            &tape.matmul(&flat, &pool, MatmulOpts::default()),
            &[n, FEATURES],
        );
        let logits = tape.linear(&features, &p[k], &p[k + 1]);
        (features, logits)
    }
}
