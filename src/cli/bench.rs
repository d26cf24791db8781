//! `fewstep bench kernels`: throughput of the kernels that dominate training, next to the adapter's
//! own FMA-only throughput (so a number reads as a fraction of what the device can do).

use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::gpu::{Dispatch, Gpu};
use crate::tensor::registry::{FmaPeakParams, WgslParams};
use crate::tensor::{Conv2d, Tensor};

#[derive(Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    what: BenchWhat,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Minimum seconds to spend per measurement (more repetitions, steadier numbers).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// train/sample/distill: presets to measure (repeatable) [default: tiny and small, and cifar on a
    /// real GPU].
    #[arg(long)]
    preset: Vec<String>,
    /// train/distill: images per update.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// train/sample: also print the kernel launches of one update (or sampling step) per kernel
    /// (name and constants), largest first.
    #[arg(long)]
    launches: bool,
    /// train/distill/sample: also print GPU time per kernel family and per kernel (timestamp
    /// queries; each launch then runs in its own pass, so the sum is an upper bound of an update's
    /// or a sampling step's GPU time).
    #[arg(long)]
    profile: bool,
    /// sample: images sampled together.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// train: time each preset with the fixed kernel rule, then tune its GEMMs afresh (the
    /// cost is printed; nothing is read from or written to the plan cache) and time it again
    /// with the tuned plan, on the same device.
    #[arg(long)]
    tuned: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchWhat {
    /// matmul, conv2d (all three passes), group norm, attention, and the FMA peak.
    Kernels,
    /// Whole training updates (forward, backward, Adam, EMA) per preset: ms/update, images/s.
    Train,
    /// DDIM sampling steps per preset: ms/step, images/s at 4 steps.
    Sample,
    /// Whole distillation updates per preset (two teacher steps, one student update):
    /// ms/update, images/s.
    Distill,
}

struct Row {
    kernel: &'static str,
    pass: &'static str,
    shape: String,
    /// Work per run: FLOPs (unit "gflops") or bytes moved (unit "gbps").
    work: f64,
    unit: &'static str,
    ms: f64,
    /// GEMM rows: the family and tile that ran ("blocked 128x128x16x8x8").
    gemm: Option<String>,
}

/// The family and tile of the last GEMM recorded on `gpu`.
fn last_gemm(gpu: &Gpu) -> Option<String> {
    gpu.last_gemm().map(|(v, t)| format!("{} {t}", v.name()))
}

/// Runs `f` (which records launches) until `seconds` have passed, flushing and waiting each time;
/// returns the median milliseconds per run after one warm-up (which also compiles pipelines).
fn time_runs(gpu: &Gpu, seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    gpu.finish_blocking().expect("GPU finished");
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < seconds && times.len() < 50) {
        let t = Instant::now();
        f();
        gpu.finish_blocking().expect("GPU finished");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

fn fma_peak(gpu: &Gpu, seconds: f64) -> Row {
    let invocations = 256 * 256u32;
    let iters = 4096u32;
    let out = Tensor::empty(gpu, &[invocations as usize]);
    let def = crate::tensor::registry::probe_fma_peak_def();
    let pipeline = gpu.pipeline(&def.key, def.source);
    let ms = time_runs(gpu, seconds, || {
        gpu.dispatch(Dispatch {
            pipeline: pipeline.clone(),
            params: FmaPeakParams {
                iters,
                seed: 0.5,
                ..Default::default()
            }
            .bytes(),
            buffers: vec![out.bind()],
            workgroups: [invocations / 256, 1, 1],
        })
    });
    Row {
        kernel: "fma_peak",
        pass: "forward",
        shape: format!("{invocations} invocations x {iters} x 8 vec4 FMA"),
        work: invocations as f64 * iters as f64 * 8.0 * 4.0 * 2.0,
        unit: "gflops",
        ms,
        gemm: None,
    }
}

fn rand_tensor(gpu: &Gpu, shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(gpu, shape, seed, 0)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let gpu = super::open_gpu()?;
    let (s, json, show) = (args.seconds, args.json, (args.launches, args.profile));
    let presets = || super::bench_model::presets(&gpu, &args.preset);
    match args.what {
        BenchWhat::Kernels => {
            kernels(&gpu, s, json);
            Ok(())
        }
        BenchWhat::Train if args.tuned => {
            super::bench_model::train_rule_vs_tuned(&gpu, &presets(), args.batch, s, json, show)
        }
        BenchWhat::Train => super::bench_model::train(
            &gpu,
            &presets(),
            args.batch,
            s,
            json,
            args.launches,
            args.profile,
        )
        .map(drop),
        BenchWhat::Sample => {
            super::bench_model::sample(&gpu, &presets(), args.count, s, json, show)
        }
        BenchWhat::Distill => {
            super::bench_distill::distill(&gpu, &presets(), args.batch, s, json, args.profile)
        }
    }
}

/// `bench kernels`: the GEMM configuration, the FMA peak, then each kernel's rate beside it.
fn kernels(gpu: &Gpu, s: f64, json: bool) {
    print_gemm_config(gpu, json);
    let peak = fma_peak(gpu, s);
    let table = Table {
        peak_gflops: peak.work / peak.ms / 1e6,
        json,
    };
    table.emit(peak);
    matmuls(gpu, s, &table);
    convolutions(gpu, s, &table);
    group_norms(gpu, s, &table);
    attention(gpu, s, &table);
}

/// Prints rows as they are measured (a table, or JSON lines), each GEMM's rate also as a
/// fraction of the FMA peak.
struct Table {
    peak_gflops: f64,
    json: bool,
}

impl Table {
    fn emit(&self, r: Row) {
        print_row(&r, self.peak_gflops, self.json);
    }
}

fn print_gemm_config(gpu: &Gpu, json: bool) {
    if !json {
        println!(
            "adapter: {} ({:?}, {:?})\nGEMM: {}\nprecision: {}\n(FEWSTEP_KERNELS=tiled|subgroup|blocked|coop, FEWSTEP_PRECISION=f32 and FEWSTEP_GEMM_TILE=BMxBNxBKxTMxTN override; \
             the gemm column shows family and BMxBNxBKxTMxTN per row)",
            gpu.info().name,
            gpu.info().backend,
            gpu.info().device_type,
            crate::tensor::kernel_policy::describe_gemm(gpu),
            crate::tensor::kernel_policy::describe_precision(gpu)
        );
    } else {
        let forced = gpu.gemm_tile().map(|t| t.to_string());
        println!(
            "{}",
            serde_json::json!({"kernel": "gemm_config", "adapter": gpu.info().name, "gemm_family": gpu.variant().name(),
                "gemm_reason": gpu.variant_reason(), "gemm_tile_forced": forced,
                "precision": crate::tensor::kernel_policy::describe_precision(gpu),
                "coop_matrix_size": gpu.coop_sizes().map(|(s, _)| s)})
        );
    }
}

fn matmuls(gpu: &Gpu, s: f64, table: &Table) {
    for &(m, n, k) in &[(1024usize, 1024usize, 1024usize), (4096, 128, 1152)] {
        let a = rand_tensor(gpu, &[m, k], 1);
        let b = rand_tensor(gpu, &[k, n], 2);
        let ms = time_runs(gpu, s, || {
            a.matmul(&b);
        });
        table.emit(Row {
            kernel: "matmul",
            pass: "forward",
            shape: format!("{m}x{n}x{k}"),
            work: 2.0 * (m * n * k) as f64,
            unit: "gflops",
            ms,
            gemm: last_gemm(gpu),
        });
    }
}

/// The 3x3 convolution of a mid-sized net, then the 16-channel one of `tiny` (small M), each
/// pass timed.
fn convolutions(gpu: &Gpu, s: f64, table: &Table) {
    for (kernel, bn, cin, hw, cout) in [
        ("conv2d_3x3", 32usize, 64usize, 28usize, 64usize),
        ("conv2d_3x3_c16", 64, 16, 28, 16),
    ] {
        let conv = Conv2d::same(3);
        let x = rand_tensor(gpu, &[bn, cin, hw, hw], 3);
        let w = rand_tensor(gpu, &[cout, cin, 3, 3], 4);
        let dy = rand_tensor(gpu, &[bn, cout, hw, hw], 5);
        let flops = 2.0 * (bn * cout * hw * hw * cin * 9) as f64;
        let shape = format!("{bn}x{cin}x{hw}x{hw} -> {cout}, 3x3");
        let passes: [(&'static str, &dyn Fn()); 3] = [
            ("forward", &|| drop(conv.forward(&x, &w, None))),
            ("backward_input", &|| {
                drop(conv.input_grad(&dy, &w, x.shape()))
            }),
            ("backward_weight", &|| {
                drop(conv.weight_grad(&dy, &x, w.shape()))
            }),
        ];
        for (pass, f) in passes {
            let ms = time_runs(gpu, s, f);
            table.emit(Row {
                kernel,
                pass,
                shape: shape.clone(),
                work: flops,
                unit: "gflops",
                ms,
                gemm: last_gemm(gpu),
            });
        }
    }
}

fn group_norms(gpu: &Gpu, s: f64, table: &Table) {
    let (bn, cin, hw, cout) = (32usize, 64usize, 28usize, 64usize);
    let x = rand_tensor(gpu, &[bn, cin, hw, hw], 3);
    let dy = rand_tensor(gpu, &[bn, cout, hw, hw], 5);

    let gamma = Tensor::full(gpu, &[cin], 1.0);
    let beta = Tensor::zeros(gpu, &[cin]);
    let bytes = (x.numel() * 4 * 4) as f64; // three reads, one write
    let gshape = format!("{bn}x{cin}x{hw}x{hw}, 8 groups");
    let ms = time_runs(gpu, s, || {
        x.group_norm(&gamma, &beta, 8, 1e-5);
    });
    table.emit(Row {
        kernel: "group_norm",
        pass: "forward",
        shape: gshape.clone(),
        work: bytes,
        unit: "gbps",
        ms,
        gemm: None,
    });
    let (_, saved) = x.group_norm(&gamma, &beta, 8, 1e-5);
    let ms = time_runs(gpu, s, || {
        x.group_norm_grad(&gamma, &dy, &saved);
    });
    table.emit(Row {
        kernel: "group_norm",
        pass: "backward_input",
        shape: gshape,
        work: bytes * 2.0,
        unit: "gbps",
        ms,
        gemm: None,
    });
}

/// Attention over the pixels of a 14x14 map with 64 channels: softmax(Q^T K / sqrt(C)) and
/// V P^T.
fn attention(gpu: &Gpu, s: f64, table: &Table) {
    let (an, ac, ahw) = (32usize, 64usize, 196usize);
    let q = rand_tensor(gpu, &[an, ac, ahw], 6);
    let kk = rand_tensor(gpu, &[an, ac, ahw], 7);
    let v = rand_tensor(gpu, &[an, ac, ahw], 8);
    let aflops = 2.0 * 2.0 * (an * ahw * ahw * ac) as f64;
    let ms = time_runs(gpu, s, || {
        crate::tensor::attention(&q, &kk, &v);
    });
    table.emit(Row {
        kernel: "attention",
        pass: "forward",
        shape: format!("{an}x{ac}x{ahw} (14x14 pixels)"),
        work: aflops,
        unit: "gflops",
        ms,
        gemm: last_gemm(gpu),
    });
}

fn print_row(r: &Row, peak_gflops: f64, json: bool) {
    let rate = r.work / r.ms / 1e6;
    if json {
        let mut o = serde_json::json!({"kernel": r.kernel, "pass": r.pass, "shape": r.shape, "ms": round3(r.ms)});
        if r.unit == "gflops" {
            o["gflops"] = round3(rate).into();
            o["fraction_of_fma_peak"] = round3(rate / peak_gflops).into();
        } else {
            o["gbps"] = round3(rate).into();
        }
        if let Some(g) = &r.gemm {
            o["gemm"] = g.clone().into();
        }
        println!("{o}");
    } else {
        let frac = if r.unit == "gflops" {
            format!("{:5.1}% of FMA peak", 100.0 * rate / peak_gflops)
        } else {
            String::new()
        };
        println!(
            "{:<14} {:<16} {:<36} {:>9.3} ms {:>9.2} {:<6} {:<18} {}",
            r.kernel,
            r.pass,
            r.shape,
            r.ms,
            rate,
            if r.unit == "gflops" {
                "GFLOP/s"
            } else {
                "GB/s"
            },
            frac,
            r.gemm.as_deref().unwrap_or("")
        );
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
