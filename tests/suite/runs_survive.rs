//! Training runs on the GPU (issue 13): the files a run writes depend only on what was trained,
//! not on the process, the --out directory or an interruption; a start that fails leaves
//! nothing behind; a run too short to learn says so.

use crate::common;
use common::bin::{fewstep, write_images};
use std::path::{Path, PathBuf};
use std::process::Output;

/// `fewstep train` on the images in `imgs` (tiny, 8x8, batch 4) into `out`; `extra` first.
fn train(imgs: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = common::bin::tiny_train_args(imgs, out, extra);
    fewstep(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn model(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

const STEPS: &str = "12";

/// Starts `train` like [`train`] with `--steps STEPS`, kills it (SIGKILL) once its first
/// checkpoint's state is on disk, optionally removes the model file too (a kill between the
/// state and the model), and resumes it to the end.
fn killed_and_resumed(imgs: &Path, out: &Path, drop_model: bool) {
    let mut child = crate::common::bin::command()
        .args(common::bin::tiny_train_args(imgs, out, &["--steps", STEPS]))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !out.join("state.safetensors").exists() {
        assert!(
            start.elapsed().as_secs() < 120,
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if drop_model {
        let _ = std::fs::remove_file(out.join("model.safetensors"));
    }
    let o = fewstep(&[
        "train",
        "--resume",
        "--steps",
        STEPS,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "resume failed");
}

#[test]
fn identical_runs_write_identical_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let dirs: Vec<PathBuf> = ["a", "elsewhere/b"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    for d in &dirs {
        let o = train(&imgs, d, &["--steps", STEPS]);
        assert!(o.status.success());
        // Item 12: 12 updates against a 200-update warm-up is far too short, and it says so.
        assert!(String::from_utf8_lossy(&o.stderr).contains("warm-up"));
    }
    let a = model(&dirs[0]);
    assert!(
        a == model(&dirs[1]),
        "two uninterrupted runs wrote different model files"
    );
    let meta = fewstep::nn::tensor_file::read(&dirs[0].join("model.safetensors")).unwrap();
    assert!(
        !meta.metadata["fewstep"].contains(dirs[0].to_str().unwrap()),
        "the --out path is stored in the model file"
    );
    // Killed after a checkpoint, then resumed: the same file.
    let c = tmp.path().join("c");
    killed_and_resumed(&imgs, &c, false);
    assert!(
        a == model(&c),
        "a killed and resumed run differs from an uninterrupted one"
    );
    // Killed between the state and the model of a checkpoint (the state is written first):
    // --resume continues from the state and the final file is the same.
    let d = tmp.path().join("d");
    killed_and_resumed(&imgs, &d, true);
    assert!(
        a == model(&d),
        "resuming from a state without its model differs"
    );
}

#[test]
fn a_failed_start_leaves_no_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // An IDX data set whose header says 0 images (it used to pass the reader and panic later).
    let data = tmp.path().join("idx");
    std::fs::create_dir_all(&data).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for v in [0u32, 28, 28] {
        images.extend_from_slice(&v.to_be_bytes());
    }
    std::fs::write(data.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(
        data.join("train-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let out = tmp.path().join("run");
    let spec = format!("mnist:{}", data.display());
    let o = fewstep(&[
        "train",
        "--data",
        &spec,
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains("0 images"), "{e}");
    assert!(
        !out.exists(),
        "a failed start left {} behind",
        out.display()
    );
}

#[test]
fn a_classifier_with_huge_sizes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("assets/fmnist-classifier.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let key = "fewstep_classifier";
    let mut meta: serde_json::Value =
        serde_json::from_str(header["__metadata__"][key].as_str().unwrap()).unwrap();
    meta["channels"] = serde_json::json!(u64::MAX);
    header["__metadata__"][key] = serde_json::Value::String(meta.to_string());
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&bytes[8 + n..]);
    let clf = tmp.path().join("clf.safetensors");
    std::fs::write(&clf, file).unwrap();
    let model = root.join("assets/fmnist-steps-4.f16.safetensors");
    let o = fewstep(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--classifier",
        clf.to_str().unwrap(),
        "--steps",
        "4",
        "--samples",
        "2",
        "--psnr-samples",
        "2",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains("channels"), "{e}");
}

/// Found by tests/suite/kill_resume.rs: a kill between the last checkpoint's state and its model left
/// a finished state with a model one checkpoint behind, and `--resume` (nothing left to train)
/// never wrote it again. Now a resumed finished run writes its model from the state.
#[test]
fn a_run_killed_after_its_last_state_gets_its_model_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let (full, short) = (tmp.path().join("full"), tmp.path().join("short"));
    assert!(train(&imgs, &full, &["--steps", STEPS]).status.success());
    assert!(train(&imgs, &short, &["--steps", "10"]).status.success());
    // The finished run's state with the model of an earlier checkpoint beside it.
    std::fs::copy(
        short.join("model.safetensors"),
        full.join("model.safetensors"),
    )
    .unwrap();
    let reference = tmp.path().join("reference");
    assert!(train(&imgs, &reference, &["--steps", STEPS])
        .status
        .success());
    let o = fewstep(&[
        "train",
        "--resume",
        "--steps",
        STEPS,
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        model(&full) == model(&reference),
        "the resumed finished run kept its stale model"
    );
}
