//! diffusers models in fewstep (issue 32), checked against fixtures the real diffusers made
//! (tests/fixtures/diffusers/make_fixtures.py; CI reads the committed files): the imported
//! network's output equals `UNet2DModel`'s, the discrete schedule equals the scheduler's, and
//! every config fewstep cannot compute exactly is refused with its field named.
//! Tests by scope: `network.rs` (the imported network and schedule against diffusers, the
//! configs refused), `pipelines.rs` (sampling, converting, the app and exporting whole pipelines).

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

mod network;
mod pipelines;
