//! Kernel self-checks that run anywhere the library runs: natively (`fewstep selftest`) and in a
//! browser tab on WebGPU (web/selftest.html), where the headless-Chromium harness of `.ci/run`
//! reads the report. Inputs are fresh each run (drawn from the CPU Philox reference by a seed the
//! caller passes); every check compares against `reference` with the tolerance it states.

use serde::Serialize;

use crate::gpu::{Gpu, KernelVariant};
use crate::reference::{group_norm_ref, matmul_ref, softmax_ref, worst_excess, ConvShape};
use crate::tensor::{philox_normal_cpu, Conv2d, MatmulOpts, Tensor};

/// The noise the web page and native must agree on: seed, stream and count.
pub const NOISE_PROBE: (u64, u64, usize) = (42, 0, 16);

#[derive(Serialize, Clone, Debug)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Worst |diff| beyond the tolerance (<= 0 passes), or the error.
    pub detail: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub adapter: String,
    pub backend: String,
    pub seed: u64,
    pub checks: Vec<Check>,
    /// What was not checked here, and why (the tensor-core family where the adapter has none).
    pub notes: Vec<String>,
    /// `Tensor::randn` at NOISE_PROBE, to compare between platforms.
    pub noise: Vec<f32>,
    pub passed: usize,
    pub failed: usize,
}

fn inputs(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    // Uniform-ish in [-1, 1]: squash the reference normals (any deterministic spread will do).
    philox_normal_cpu(seed, stream, n)
        .into_iter()
        .map(|z| (z * 0.5).tanh())
        .collect()
}

struct Checker {
    seed: u64,
    stream: u64,
    checks: Vec<Check>,
}

impl Checker {
    fn data(&mut self, n: usize) -> Vec<f32> {
        self.stream += 1;
        inputs(self.seed, self.stream, n)
    }
    async fn compare(&mut self, name: String, t: &Tensor, want: &[f64], atol: f64, rtol: f64) {
        let check = match t.to_vec().await {
            Ok(got) => {
                let e = worst_excess(&got, want, atol, rtol);
                Check {
                    name,
                    passed: e <= 0.0,
                    detail: format!("worst excess {e:.3e} (atol {atol:.0e}, rtol {rtol:.0e})"),
                }
            }
            Err(e) => Check {
                name,
                passed: false,
                detail: e.to_string(),
            },
        };
        self.checks.push(check);
    }
}

/// Absolute tolerance of a K-long product of inputs in [-1, 1]: f32's (~sqrt(K) ulps), or for
/// the coop family f16's worst case (2^-10 per term from rounding both operands, plus f32
/// accumulation; the derivation is in ARCHITECTURE.md, "Tensor cores (the coop family)").
fn gemm_atol(v: KernelVariant, k: usize) -> f64 {
    let k = k as f64;
    if v == KernelVariant::Coop {
        1.1 * (1.0 / 1024.0 + k / 8_388_608.0) * k
    } else {
        1e-5 * k.sqrt()
    }
}

/// Runs the checks on `gpu`; `seed` picks the inputs.
pub async fn run(gpu: &Gpu, seed: u64) -> Report {
    let mut c = Checker {
        seed,
        stream: 0,
        checks: Vec::new(),
    };
    let g = gpu.clone();
    let mut variants = vec![KernelVariant::Tiled];
    if g.has_subgroups() {
        variants.push(KernelVariant::Subgroup);
    }
    let mut notes = Vec::new();
    if g.coop_sizes().is_some() {
        // Whatever an earlier run cached: this is where a user asks whether the family works.
        let passed = g.recheck_coop();
        notes.push(format!(
            "tensor cores (the coop GEMM family): self-check run afresh, ignoring the cache: {}",
            if passed { "passed" } else { "failed" }
        ));
        variants.push(KernelVariant::Coop);
    } else {
        notes.push(format!(
            "tensor cores (the coop GEMM family): unavailable here: {}",
            if cfg!(target_arch = "wasm32") {
                "WebGPU has no cooperative matrices".to_string()
            } else {
                g.coop_absent()
            }
        ));
    }
    let original = g.variant();
    for v in variants {
        if g.set_variant(v) != v {
            notes.push(format!(
                "the {} family did not run: {}",
                v.name(),
                g.variant_reason()
            ));
            continue;
        }
        for &(m, n, k, ta, tb) in &[
            (65usize, 33usize, 17usize, false, false),
            (17, 70, 129, true, true),
            (1, 1, 3, false, true),
        ] {
            let a = c.data(m * k);
            let b = c.data(k * n);
            let at = Tensor::from_slice(&g, &if ta { [k, m] } else { [m, k] }, &a);
            let bt = Tensor::from_slice(&g, &if tb { [n, k] } else { [k, n] }, &b);
            let out = at.matmul_with(
                &bt,
                MatmulOpts {
                    trans_a: ta,
                    trans_b: tb,
                    ..Default::default()
                },
                None,
            );
            let want = matmul_ref(&a, &b, 1, m, n, k, ta, tb);
            c.compare(
                format!("{v:?} matmul {m}x{n}x{k} ta={ta} tb={tb}"),
                &out,
                &want,
                gemm_atol(v, k),
                1e-5,
            )
            .await;
        }
        let shapes = [
            ConvShape {
                n: 2,
                cin: 3,
                h: 9,
                w: 9,
                cout: 4,
                ks: 3,
                stride: 1,
                pad: 1,
            },
            ConvShape {
                n: 2,
                cin: 5,
                h: 9,
                w: 7,
                cout: 3,
                ks: 3,
                stride: 2,
                pad: 1,
            },
            ConvShape {
                n: 3,
                cin: 4,
                h: 5,
                w: 5,
                cout: 17,
                ks: 1,
                stride: 1,
                pad: 0,
            },
        ];
        for cs in shapes {
            let x = c.data(cs.x_len());
            let w = c.data(cs.w_len());
            let dy = c.data(cs.y_len());
            let conv = Conv2d {
                stride: cs.stride,
                pad: cs.pad,
                pad_end: 0,
            };
            let xs = [cs.n, cs.cin, cs.h, cs.w];
            let ws = [cs.cout, cs.cin, cs.ks, cs.ks];
            let xt = Tensor::from_slice(&g, &xs, &x);
            let wt = Tensor::from_slice(&g, &ws, &w);
            let dyt = Tensor::from_slice(&g, &[cs.n, cs.cout, cs.oh(), cs.ow()], &dy);
            let tol = if v == KernelVariant::Coop {
                let k = (cs.cin.max(cs.cout) * cs.ks * cs.ks).max(cs.n * cs.oh() * cs.ow());
                gemm_atol(v, k)
            } else {
                1e-5 * ((cs.cin * cs.ks * cs.ks + cs.n * cs.h * cs.w) as f64).sqrt()
            };
            let y = conv.forward(&xt, &wt, None);
            c.compare(
                format!("{v:?} conv2d forward {cs:?}"),
                &y,
                &cs.forward_ref(&x, &w, None),
                tol,
                1e-5,
            )
            .await;
            let dx = conv.input_grad(&dyt, &wt, &xs);
            c.compare(
                format!("{v:?} conv2d backward_input {cs:?}"),
                &dx,
                &cs.input_grad_ref(&dy, &w),
                tol,
                1e-5,
            )
            .await;
            let dw = conv.weight_grad(&dyt, &xt, &ws);
            c.compare(
                format!("{v:?} conv2d backward_weight {cs:?}"),
                &dw,
                &cs.weight_grad_ref(&dy, &x),
                tol,
                1e-5,
            )
            .await;
        }
    }
    g.set_variant(original);

    let (n, ch, hw, groups) = (2, 8, 25, 4);
    let x = c.data(n * ch * hw);
    let gamma = c.data(ch);
    let beta = c.data(ch);
    let (y, _) = Tensor::from_slice(&g, &[n, ch, 5, 5], &x).group_norm(
        &Tensor::from_slice(&g, &[ch], &gamma),
        &Tensor::from_slice(&g, &[ch], &beta),
        groups,
        1e-5,
    );
    let want = group_norm_ref(&x, n, ch, hw, groups, &gamma, &beta, 1e-5);
    c.compare(
        "group norm 2x8x5x5 / 4 groups".into(),
        &y,
        &want,
        2e-5,
        2e-4,
    )
    .await;

    let s = c.data(7 * 33);
    let p = Tensor::from_slice(&g, &[7, 33], &s).softmax(0.5);
    c.compare(
        "softmax 7x33".into(),
        &p,
        &softmax_ref(&s, 33, 0.5),
        2e-6,
        2e-5,
    )
    .await;

    let (ns, nst, nn) = NOISE_PROBE;
    let noise_t = Tensor::randn(&g, &[nn], ns, nst);
    let want: Vec<f64> = philox_normal_cpu(ns, nst, nn)
        .iter()
        .map(|&v| v as f64)
        .collect();
    c.compare(
        "gaussian generator vs CPU Philox".into(),
        &noise_t,
        &want,
        1e-5,
        1e-5,
    )
    .await;
    let noise = noise_t.to_vec().await.unwrap_or_default();

    let passed = c.checks.iter().filter(|k| k.passed).count();
    let failed = c.checks.len() - passed;
    Report {
        adapter: g.info().name.clone(),
        backend: format!("{:?}", g.info().backend),
        seed,
        checks: c.checks,
        notes,
        noise,
        passed,
        failed,
    }
}
