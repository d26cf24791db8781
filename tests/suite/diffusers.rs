//! diffusers models in fewstep (issue 32), checked against fixtures the real diffusers made
//! (tests/fixtures/diffusers/make_fixtures.py; CI reads the committed files): the imported
//! network's output equals `UNet2DModel`'s, the discrete schedule equals the scheduler's, and
//! every config fewstep cannot compute exactly is refused with its field named.

use std::path::{Path, PathBuf};

use crate::common::gpu;
use fewstep::diffusers::import_folder;
use fewstep::nn::tensor_file;
use fewstep::nn::{NetCond, UNet};
use fewstep::tensor::{Tape, Tensor};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(case)
}

fn expected(case: &str) -> tensor_file::LoadedFile {
    tensor_file::read(&fixture(case).join("expected.safetensors")).unwrap()
}

/// A copy of a fixture's folder in `dir`, for edits.
fn copy_fixture(case: &str, dir: &Path) -> PathBuf {
    let to = dir.join(case);
    for sub in ["unet", "scheduler"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for f in std::fs::read_dir(fixture(case).join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(sub).join(f.file_name())).unwrap();
        }
    }
    std::fs::copy(
        fixture(case).join("model_index.json"),
        to.join("model_index.json"),
    )
    .unwrap();
    to
}

/// A fixture's imported network, its expected outputs, and the forward pass's inputs (x as z, and
/// the timesteps as fewstep's t).
fn imported_with_inputs(
    g: &fewstep::gpu::Gpu,
    case: &str,
) -> (UNet, tensor_file::LoadedFile, Tensor, Vec<f32>) {
    let m = import_folder(&fixture(case)).unwrap();
    let refs: Vec<_> = m.tensors.iter().collect();
    let net = UNet::from_params(m.arch.clone(), fewstep::nn::upload_tensors(g, &refs)).unwrap();
    let e = expected(case);
    let x = e.get("x").unwrap();
    let z = Tensor::from_slice(g, &x.shape, &x.data);
    // fewstep's t in [0, 1] for diffusers' integer timestep T: t = (T + 1) / timesteps.
    let steps = m.scheduler.num_train_timesteps() as f32;
    let t: Vec<f32> = e
        .get("timesteps")
        .unwrap()
        .data
        .iter()
        .map(|&ts| (ts + 1.0) / steps)
        .collect();
    (net, e, z, t)
}

/// `UNet2DModel(x, timesteps, class_labels)` through fewstep's network: the largest difference
/// and the largest output, over both images.
fn forward_difference(case: &str) -> (f32, f32) {
    let g = gpu();
    let (net, e, z, t) = imported_with_inputs(&g, case);
    let cond = match e.get("class_labels") {
        Some(l) => NetCond {
            labels: l.data.iter().map(|&c| Some(c as u32)).collect(),
            w: vec![],
        },
        None => NetCond::NONE,
    };
    let tape = Tape::new();
    let vars = net.vars(&tape, false);
    let got = net
        .forward(&tape, &vars, &z, &t, &cond, None)
        .value
        .to_vec_blocking()
        .unwrap();
    let want = &e.get("unet_out").unwrap().data;
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    (diff, scale)
}

/// The tutorial's defaults (flip_sin_to_cos, freq_shift 0, norm_eps 1e-5, heads of 8 channels)
/// and DDPM's (no flip, freq_shift 1, one head) with classes, a centred input and a mid-block
/// scale; the improved-DDPM block (scale_shift) with resampling res blocks and a middle
/// attention without a norm; no middle attention: fewstep's network computes what UNet2DModel
/// computes. Tolerance: 1e-5 of the output's largest value (f32 through ~40 layers on lavapipe;
/// measured 1.4e-6 and 7.5e-7 on 2026-12-06).
#[test]
fn imported_networks_compute_what_diffusers_computes() {
    for case in [
        "tutorial-eps",
        "class-v",
        "ddpm-sample",
        "resnet-scale-shift",
        "no-mid-attention",
    ] {
        let (diff, scale) = forward_difference(case);
        eprintln!("{case}: max |fewstep - diffusers| = {diff:.3e} (largest output {scale:.3})");
        assert!(scale > 0.1, "{case}: a degenerate fixture");
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{case}: the imported network differs from UNet2DModel by {diff}"
        );
    }
}

/// Training an imported network back-propagates what torch does: the gradients of
/// sum(UNet2DModel(x) * probe) for the first convolution and the time embedding's first layer
/// (which every block's backward reaches: the scale_shift's halves, the resampling res blocks'
/// pooling and upsampling, the norm-less middle attention) equal torch's. Tolerance: 1e-4 of the
/// largest gradient (f32 sums over every pixel of every block).
#[test]
fn imported_networks_backpropagate_what_torch_does() {
    let g = gpu();
    for case in ["resnet-scale-shift", "no-mid-attention"] {
        let (net, e, z, t) = imported_with_inputs(&g, case);
        let probe = e.get("probe").unwrap();
        let tape = Tape::new();
        let vars = net.vars(&tape, true);
        let out = net.forward(&tape, &vars, &z, &t, &NetCond::NONE, None);
        let seed = Tensor::from_slice(&g, &probe.shape, &probe.data);
        let (grads, _) = tape.backward(&out, Some(seed));
        for (ours, theirs) in [
            ("conv_in.w", "conv_in.weight"),
            ("temb.0.w", "time_embedding.linear_1.weight"),
        ] {
            let i = net
                .layout
                .specs
                .iter()
                .position(|s| s.name == ours)
                .unwrap();
            let got = grads.get(i).unwrap().to_vec_blocking().unwrap();
            let want = &e.get(&format!("grad:{theirs}")).unwrap().data;
            assert_eq!(got.len(), want.len());
            let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!(
                "{case}: d/d {theirs}: max |fewstep - torch| {diff:.3e} (largest {scale:.3})"
            );
            assert!(scale > 1e-3, "{case}: a degenerate gradient");
            assert!(
                diff <= 1e-4 * scale,
                "{case}: the gradient of {theirs} differs from torch's by {diff}"
            );
        }
    }
}

/// The discrete schedule (betas in f32, cumulative products) equals DDIMScheduler's
/// alphas_cumprod for linear, squaredcos_cap_v2 and scaled_linear betas, the last rescaled to
/// zero terminal SNR.
#[test]
fn the_discrete_schedule_equals_diffusers() {
    for case in ["tutorial-eps", "class-v", "ddpm-sample", "no-mid-attention"] {
        let text =
            std::fs::read_to_string(fixture(case).join("scheduler/scheduler_config.json")).unwrap();
        let s = fewstep::diffusers::SchedulerConfig::parse(&text).unwrap();
        let got = s.alphas_cumprod();
        let e = expected(case);
        let want = &e.get("alphas_cumprod").unwrap().data;
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{case}: {}: max |diff| {diff:.2e}", s.describe());
        assert!(diff <= 2e-6, "{case}: alphas_cumprod differs by {diff}");
    }
}

fn import_error(dir: &Path) -> String {
    match import_folder(dir) {
        Ok(_) => panic!("{} was imported", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Edits `case`'s unet/config.json in a copy and returns the import error.
fn refused_config(case: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(case, tmp.path());
    let path = dir.join("unet/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    import_error(&dir)
}

/// Whatever fewstep cannot compute exactly is refused, naming the field, its value and what is
/// supported: never a panic, never a silently different network.
#[test]
fn unsupported_configs_are_refused_with_the_field_named() {
    let e = refused_config("ddpm-sample", |v| v["downsample_padding"] = 2.into());
    assert!(e.contains("`downsample_padding` is 2"), "{e}");
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "cross-attention block",
            Box::new(|v| v["down_block_types"][1] = "CrossAttnDownBlock2D".into()),
            "`down_block_types` is \"CrossAttnDownBlock2D\"",
        ),
        (
            "text-conditioned model",
            Box::new(|v| v["_class_name"] = "UNet2DConditionModel".into()),
            "`_class_name` is \"UNet2DConditionModel\"",
        ),
        (
            "fourier time embedding",
            Box::new(|v| v["time_embedding_type"] = "fourier".into()),
            "`time_embedding_type` is \"fourier\"",
        ),
        (
            "the spatial norm of VQ models",
            Box::new(|v| v["resnet_time_scale_shift"] = "spatial".into()),
            "`resnet_time_scale_shift` is \"spatial\"",
        ),
        (
            "FIR resampling",
            Box::new(|v| v["upsample_type"] = "fir".into()),
            "`upsample_type` is \"fir\"",
        ),
        (
            "asymmetric attention",
            Box::new(|v| v["up_block_types"][0] = "UpBlock2D".into()),
            "`up_block_types` is \"UpBlock2D\"",
        ),
        (
            "a field fewstep does not know",
            Box::new(|v| v["new_option"] = 3.into()),
            "`new_option` is 3",
        ),
        (
            "heads that do not divide",
            Box::new(|v| v["attention_head_dim"] = 5.into()),
            "attn_head_dim",
        ),
        (
            "no sample size",
            Box::new(|v| v["sample_size"] = serde_json::Value::Null),
            "`sample_size` is missing",
        ),
    ];
    for (what, edit, needle) in cases {
        let e = refused_config("tutorial-eps", edit);
        assert!(e.contains(needle), "{what}: {e}");
    }
}

/// Weights that do not match the config name the tensor; a folder without a scheduler config
/// says what is missing; a bare unet/ folder with scheduler/ beside it is read.
#[test]
fn weights_and_layouts_that_do_not_fit_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("tutorial-eps", tmp.path());
    // A bare unet/ folder, scheduler/ beside it.
    import_folder(&dir.join("unet")).unwrap();
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let original = tensor_file::read(&weights).unwrap();
    let write = |tensors: Vec<tensor_file::HostTensor>| {
        tensor_file::write(
            &weights,
            &tensors,
            Default::default(),
            tensor_file::StoreAs::F32,
        )
        .unwrap();
    };
    let mut missing = original.tensors.clone();
    missing.retain(|t| t.name != "mid_block.attentions.0.to_k.weight");
    write(missing);
    let e = import_error(&dir);
    assert!(
        e.contains("`mid_block.attentions.0.to_k.weight` is missing"),
        "{e}"
    );
    let mut extra = original.tensors.clone();
    extra.push(tensor_file::HostTensor {
        name: "down_blocks.0.attentions.7.to_q.weight".into(),
        shape: vec![1],
        data: vec![0.0],
    });
    write(extra);
    let e = import_error(&dir);
    assert!(
        e.contains("`down_blocks.0.attentions.7.to_q.weight` is not part of"),
        "{e}"
    );
    let mut shape = original.tensors.clone();
    let t = shape
        .iter_mut()
        .find(|t| t.name == "conv_in.weight")
        .unwrap();
    t.data.truncate(t.data.len() / 2);
    t.shape[0] /= 2;
    write(shape);
    let e = import_error(&dir);
    assert!(e.contains("`conv_in.weight` has shape [8, 3, 3, 3]"), "{e}");
    write(original.tensors.clone());
    import_folder(&dir).unwrap();
    std::fs::remove_dir_all(dir.join("scheduler")).unwrap();
    let e = import_error(&dir);
    assert!(e.contains("scheduler_config.json is missing"), "{e}");
    let e = import_error(tmp.path());
    assert!(e.contains("not a diffusers folder"), "{e}");
}

/// fewstep's DDIM on an imported model's discrete schedule equals diffusers'
/// `DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True)`, eta 0, step for step
/// (the 4-step trajectory) and at 1, 2, 4 and 8 steps: eps with clipping to ±1, v without
/// clipping, x with clipping to ±2 on a zero-terminal-SNR schedule. From the same noise.
/// Tolerance: 1e-5 of the largest value for v and x (measured at most 1.7e-6 on 2026-12-06); 1e-3
/// for eps, whose x̂ = (z - sigma eps) / alpha multiplies the networks' f32 differences (1.4e-6)
/// by 1 / alpha = 157 at T = 999 (measured at most 1.7e-4).
#[test]
fn ddim_on_an_imported_model_equals_diffusers_step_for_step() {
    use fewstep::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
    let g = gpu();
    for case in [
        "tutorial-eps",
        "class-v",
        "zero-snr-x",
        "ddpm-sample",
        "resnet-scale-shift",
        "no-mid-attention",
    ] {
        let eps = matches!(case, "tutorial-eps" | "resnet-scale-shift");
        let (model, _) = load_model(&g, &fixture(case)).unwrap();
        let e = expected(case);
        let noise = e.get("noise").unwrap();
        let cond = match e.get("class_labels") {
            Some(l) => NetCond {
                labels: l.data.iter().map(|&c| Some(c as u32)).collect(),
                w: vec![],
            },
            None => NetCond::NONE,
        };
        for steps in [1, 2, 4, 8] {
            let opts = SampleOptions {
                steps,
                count: noise.shape[0],
                seed: 0,
                kind: SamplerKind::Ddim,
                clip: true,
            };
            let z = Tensor::from_slice(&g, &noise.shape, &noise.data);
            let mut s = Sampler::from_start(opts, z).with_cond(cond.clone());
            let mut worst = 0f32;
            let mut scale = 0f32;
            let traj = e.get("ddim_4_traj").unwrap();
            let per_step = traj.data.len() / 4;
            while !s.is_done() {
                s.step(&model);
                if steps == 4 {
                    let got = s.z().to_vec_blocking().unwrap();
                    let k = s.steps_done() - 1;
                    let want = &traj.data[k * per_step..(k + 1) * per_step];
                    for (a, b) in got.iter().zip(want) {
                        worst = worst.max((a - b).abs());
                        scale = scale.max(b.abs());
                    }
                }
            }
            let got = s.z().to_vec_blocking().unwrap();
            let want = &e.get(&format!("ddim_{steps}")).unwrap().data;
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs());
                scale = scale.max(b.abs());
            }
            eprintln!(
                "{case}, {steps} steps: max |fewstep - diffusers| {worst:.3e} (largest {scale:.3})"
            );
            let tol = if eps { 1e-3 } else { 1e-5 };
            assert!(
                worst <= tol * scale.max(1.0),
                "{case} at {steps} steps differs from DDIMScheduler by {worst}"
            );
        }
    }
}

/// The same from the command line: `fewstep sample --model DIR --start noise.npy` draws what
/// diffusers' DDIM draws from that noise; `fewstep info --model DIR` describes the folder.
#[test]
fn sample_and_info_take_a_diffusers_folder() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("tutorial-eps");
    let values = tmp.path().join("v.json");
    let o = fewstep(&[
        "sample",
        "--model",
        dir.to_str().unwrap(),
        "--start",
        dir.join("noise.npy").to_str().unwrap(),
        "--steps",
        "4",
        "--out",
        tmp.path().join("g.png").to_str().unwrap(),
        "--values",
        values.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
    let got: Vec<f32> = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let e = expected("tutorial-eps");
    let want = &e.get("ddim_4").unwrap().data;
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(got.len(), want.len());
    assert!(
        worst <= 1e-3,
        "fewstep sample differs from diffusers by {worst}"
    );
    let o = fewstep(&["info", "--model", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1000 timesteps of linear betas") && out.contains("eps parameterization"),
        "{out}"
    );
    // A noise file of the wrong shape is refused, naming both shapes.
    let bad = tmp.path().join("bad.npy");
    std::fs::write(&bad, fewstep::npy::encode(&[1, 1, 16, 16], &[0.0; 256])).unwrap();
    let o = fewstep(&[
        "sample",
        "--model",
        dir.to_str().unwrap(),
        "--start",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("g.png").to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("--start holds images of 1x16x16; the model makes 3x16x16"));
}

/// diffusers' `downsample_padding = 0` (google/ddpm-*) pads one row and column at the bottom and
/// right only: `Conv2d { pad: 0, pad_end: 1 }`. Forward, input and weight gradients equal the f64
/// reference on an explicitly padded input (tolerance 1e-5: sums of 27 to 96 products of values
/// in [-1, 1]); the input gradient also equals finite differences of <conv(x), dy> (the
/// convolution is linear in x, so a central difference is exact but for f32 rounding).
#[test]
fn a_convolution_padded_only_at_the_end_equals_the_reference() {
    use fewstep::reference::ConvShape;
    use fewstep::tensor::Conv2d;
    use rand::{Rng, SeedableRng};
    let g = gpu();
    let mut r = rand::rngs::StdRng::seed_from_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let mut uniform =
        |n: usize| -> Vec<f32> { (0..n).map(|_| r.random_range(-1.0..1.0)).collect() };
    let (n, cin, h, w, cout) = (2, 3, 8, 6, 4);
    let conv = Conv2d {
        stride: 2,
        pad: 0,
        pad_end: 1,
    };
    // The reference: the same input with a zero row and column appended, no padding.
    let cs = ConvShape {
        n,
        cin,
        h: h + 1,
        w: w + 1,
        cout,
        ks: 3,
        stride: 2,
        pad: 0,
    };
    let x = uniform(n * cin * h * w);
    let wt = uniform(cout * cin * 9);
    let b = uniform(cout);
    let mut xp = vec![0f32; cs.x_len()];
    for i in 0..n * cin {
        for y in 0..h {
            for xx in 0..w {
                xp[(i * (h + 1) + y) * (w + 1) + xx] = x[(i * h + y) * w + xx];
            }
        }
    }
    let xs = [n, cin, h, w];
    let ws = [cout, cin, 3, 3];
    let xt = Tensor::from_slice(&g, &xs, &x);
    let wt_t = Tensor::from_slice(&g, &ws, &wt);
    let y = conv.forward(&xt, &wt_t, Some(&Tensor::from_slice(&g, &[cout], &b)));
    assert_eq!(
        y.shape(),
        [n, cout, h / 2, w / 2],
        "the output halves the input"
    );
    let close = |what: &str, got: &[f32], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-5, "{what}: max |diff| {worst}");
    };
    close(
        "forward",
        &y.to_vec_blocking().unwrap(),
        &cs.forward_ref(&xp, &wt, Some(&b)),
    );
    let dy = uniform(cs.y_len());
    let dyt = Tensor::from_slice(&g, y.shape(), &dy);
    let dx = conv.input_grad(&dyt, &wt_t, &xs).to_vec_blocking().unwrap();
    let dxp = cs.input_grad_ref(&dy, &wt);
    let mut want_dx = Vec::with_capacity(dx.len());
    for i in 0..n * cin {
        for yy in 0..h {
            for xx in 0..w {
                want_dx.push(dxp[(i * (h + 1) + yy) * (w + 1) + xx]);
            }
        }
    }
    close("input gradient", &dx, &want_dx);
    let dw = conv.weight_grad(&dyt, &xt, &ws).to_vec_blocking().unwrap();
    close("weight gradient", &dw, &cs.weight_grad_ref(&dy, &xp));
    let loss = |xv: &[f32]| -> f64 {
        conv.forward(&Tensor::from_slice(&g, &xs, xv), &wt_t, None)
            .to_vec_blocking()
            .unwrap()
            .iter()
            .zip(&dy)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    for i in [0, 7, x.len() / 2, x.len() - 1] {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus[i] += 0.25;
        minus[i] -= 0.25;
        let fd = (loss(&plus) - loss(&minus)) / 0.5;
        assert!(
            (fd - dx[i] as f64).abs() <= 1e-4,
            "x[{i}]: fd {fd}, gradient {}",
            dx[i]
        );
    }
}

/// `fewstep convert --model DIFFUSERS_DIR --out M.safetensors [--f16]` makes one fewstep file
/// (format 2: a fewstep that predates imported networks refuses it instead of running another
/// network) that samples what the folder samples: the f32 file exactly as the folder, the f16 file
/// within f16 rounding.
#[test]
fn a_diffusers_folder_converts_to_one_fewstep_file() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("class-v");
    let sample = |model: &Path, name: &str| -> Vec<f32> {
        let values = tmp.path().join(format!("{name}.json"));
        let o = fewstep(&[
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--start",
            dir.join("noise.npy").to_str().unwrap(),
            "--class",
            "3",
            "--steps",
            "2",
            "--out",
            tmp.path().join(format!("{name}.png")).to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let from_folder = sample(&dir, "folder");
    for (name, extra) in [("f32", None), ("f16", Some("--f16"))] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        let mut args = vec![
            "convert",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = fewstep(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let file = tensor_file::read(&out).unwrap();
        let meta: serde_json::Value = serde_json::from_str(&file.metadata["fewstep"]).unwrap();
        assert_eq!(meta["format_version"], 2, "{meta}");
        assert_eq!(meta["schedule"], "discrete");
        let got = sample(&out, name);
        let worst = got
            .iter()
            .zip(&from_folder)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name} file vs folder: max |diff| {worst:.3e}");
        let tol = if name == "f32" { 0.0 } else { 0.01 };
        assert!(
            worst <= tol,
            "{name}: the file samples {worst} away from the folder"
        );
    }
}

/// The desktop app opens a diffusers folder like a model file (`fewstep app --model DIR`, the
/// open field, a dropped folder): the folder becomes the bytes of a fewstep model file in memory,
/// which the app's engine loads as it loads any model.
#[test]
fn the_app_opens_a_diffusers_folder_as_a_model() {
    let dir = fixture("class-v");
    let bytes = fewstep::app::model_bytes_at(&dir).unwrap();
    let (meta, tensors) = fewstep::diffusion::parse_model(&dir, &bytes).unwrap();
    let imported = import_folder(&dir).unwrap();
    assert_eq!(meta.arch, imported.arch);
    assert_eq!(meta.arch.classes, 10, "its classes are listed");
    // Unnamed classes are shown as `class N` and taken back by that name (the page's link).
    use fewstep::diffusion::guidance::{class_name, parse_class};
    assert_eq!(class_name(&meta.arch, 3), "class 3");
    assert_eq!(parse_class(&meta.arch, "class 3"), Ok(3));
    assert_eq!(parse_class(&meta.arch, "Class 7"), Ok(7));
    assert!(parse_class(&meta.arch, "class 10").is_err());
    assert_eq!(tensors, imported.tensors);
    let e = fewstep::app::model_bytes_at(&dir.join("nonexistent")).unwrap_err();
    assert!(e.contains("nonexistent"), "{e}");
}

/// `fewstep convert --format diffusers` writes a pipeline folder the real diffusers loads
/// (`DDIMPipeline.from_pretrained`) and samples as fewstep does: the committed folders in
/// exported/ are what today's fewstep writes, byte for byte; `diffusers_samples.safetensors`
/// beside each is what diffusers' DDIMScheduler sampled from it (make_fixtures.py
/// --check-export; on 2026-12-06 it equalled the original pipeline's samples exactly), and
/// fewstep's samples of the folder equal it. A class model survives the round trip; fewstep's
/// own continuous-time models are refused with the reason.
#[test]
fn exported_pipelines_load_and_sample_in_diffusers_as_in_fewstep() {
    use crate::common::bin::{fewstep, stderr};
    let tmp = tempfile::tempdir().unwrap();
    for case in [
        "tutorial-eps",
        "ddpm-sample",
        "resnet-scale-shift",
        "no-mid-attention",
    ] {
        let e = expected(case);
        let tol = if case.ends_with("eps") || case == "resnet-scale-shift" {
            1e-3
        } else {
            1e-5
        };
        export_matches_diffusers(
            &fixture(case),
            case,
            &tmp.path().join(case),
            e.get("noise").unwrap(),
            tol,
        );
    }
    // A class model: exported and imported again, the same network.
    let out = tmp.path().join("class-v");
    let o = fewstep(&[
        "convert",
        "--model",
        fixture("class-v").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (
        import_folder(&fixture("class-v")).unwrap(),
        import_folder(&out).unwrap(),
    );
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(a.arch.classes, b.arch.classes);
    assert_eq!(a.scheduler.schedule, b.scheduler.schedule);
    // fewstep's own models have no diffusers equivalent; an existing folder is not written into.
    let o = fewstep(&[
        "convert",
        "--model",
        "fmnist-4step",
        "--out",
        tmp.path().join("own").to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(
        stderr(&o).contains("continuous cosine schedule"),
        "{}",
        stderr(&o)
    );
    let o = fewstep(&[
        "convert",
        "--model",
        fixture("class-v").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(stderr(&o).contains("already holds files"), "{}", stderr(&o));
}

/// Exports `model` with `convert --format diffusers` into `out`, checks the folder equals the
/// committed `exported/CASE` byte for byte, and that fewstep's DDIM samples of that folder from
/// `noise` at 1, 2 and 4 steps equal what the stock `DDIMPipeline` sampled from it
/// (diffusers_samples.safetensors, made by make_fixtures.py --check-export) within `tol`.
pub(crate) fn export_matches_diffusers(
    model: &Path,
    case: &str,
    out: &Path,
    noise: &fewstep::nn::HostTensor,
    tol: f32,
) {
    use crate::common::bin::{fewstep, stderr};
    use fewstep::diffusion::{load_model, SampleOptions, Sampler, SamplerKind};
    let o = fewstep(&[
        "convert",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "diffusers",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = fixture("exported").join(case);
    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(committed.join(f)).unwrap(),
            "{case}: {f} differs from the export diffusers was checked with"
        );
    }
    let g = gpu();
    let (model, _) = load_model(&g, &committed).unwrap();
    let want = tensor_file::read(&committed.join("diffusers_samples.safetensors")).unwrap();
    for steps in [1, 2, 4] {
        let opts = SampleOptions {
            steps,
            count: noise.shape[0],
            seed: 0,
            kind: SamplerKind::Ddim,
            clip: true,
        };
        let mut s = Sampler::from_start(opts, Tensor::from_slice(&g, &noise.shape, &noise.data));
        while !s.is_done() {
            s.step(&model);
        }
        let got = s.z().to_vec_blocking().unwrap();
        let w = &want.get(&format!("ddim_{steps}")).unwrap().data;
        let worst = got
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{case} exported, {steps} steps: max |diff| {worst:e} from diffusers");
        assert!(
            worst <= tol,
            "{case} at {steps} steps: {worst} from diffusers' samples"
        );
    }
}

/// The web page builds a model from a pipeline's files (dropped one by one, or fetched from a
/// folder hosted beside it) exactly as `--model DIR` builds it from the folder; natively one of
/// the pipeline's files opens the pipeline it belongs to.
#[test]
fn a_pipelines_files_make_the_model_its_folder_makes() {
    use fewstep::diffusers::PipelineFiles;
    use fewstep::diffusion::model_file::{import_diffusers, parse_model, pipeline_model_bytes};
    let dir = fixture("resnet-scale-shift");
    let mut files = PipelineFiles::default();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
    ] {
        assert!(files.take_complete().is_none(), "complete before {f}");
        files.add(f, std::fs::read(dir.join(f)).unwrap()).unwrap();
    }
    let parts = files.take_complete().expect("all parts");
    let bytes = pipeline_model_bytes(&parts, "dropped").unwrap();
    let (meta, tensors) = parse_model(Path::new("dropped"), &bytes).unwrap();
    let (want_meta, want) = import_diffusers(&dir).unwrap();
    assert_eq!(meta.arch, want_meta.arch);
    assert_eq!(meta.parameterization, want_meta.parameterization);
    assert_eq!(tensors, want);
    // Natively: a pipeline's file stands for its pipeline.
    for f in [
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ] {
        let bytes = fewstep::app::model_bytes_at(&dir.join(f)).unwrap();
        let (m, t) = parse_model(Path::new(f), &bytes).unwrap();
        assert_eq!((m.arch, t), (want_meta.arch.clone(), want.clone()), "{f}");
    }
}
