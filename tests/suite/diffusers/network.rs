//! An imported `UNet2DModel` against diffusers' fixtures: forward, backward, the discrete
//! schedule, a convolution padded only at the end; configs and weights that do not fit, refused.

use super::*;

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
