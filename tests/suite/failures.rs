//! Nothing lost, nothing crashes (issue 13): each test protects one way a person could make
//! fewstep panic, eat memory, report success for nothing, or leave a run that no command can
//! continue. The tests that need no GPU come first; they must stay GPU-free (each refusal
//! happens before the GPU is opened).

use crate::common;
use common::bin::{fewstep, stderr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs `args`, expects a failure code, no panic, and `needle` in the message; returns stderr.
fn fails_with(args: &[&str], needle: &str) -> String {
    let o = fewstep(args);
    let e = stderr(&o);
    assert!(!o.status.success(), "`{}` should fail: {e}", args.join(" "));
    assert_eq!(o.status.code(), Some(1), "failures exit with 1: {e}");
    assert!(!e.contains("panicked"), "a panic instead of a message: {e}");
    assert!(e.contains(needle), "message lacks `{needle}`: {e}");
    e
}

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// A bundled model file, its `fewstep` description passed through `edit`, written to `out`.
fn edited_model(out: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(asset("fmnist-steps-4.f16.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta_text = header["__metadata__"]["fewstep"]
        .as_str()
        .unwrap()
        .to_string();
    let mut meta: serde_json::Value = serde_json::from_str(&meta_text).unwrap();
    edit(&mut meta);
    header["__metadata__"]["fewstep"] = serde_json::Value::String(meta.to_string());
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(out, file).unwrap();
}

// ---- item 3: size fields bounded before allocation ----

#[test]
fn model_file_size_fields_are_bounded_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = serde_json::json!(u64::MAX);
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("res_blocks", serde_json::json!(1_000_000), "res_blocks"),
        ("res_blocks", huge.clone(), "res_blocks"),
        ("ch", huge.clone(), "`ch`"),
        ("ch", serde_json::json!(0), "`ch`"),
        ("groups", serde_json::json!(0), "groups"),
        ("in_channels", huge.clone(), "in_channels"),
        ("out_channels", huge.clone(), "out_channels"),
        ("height", huge.clone(), "height"),
        ("mult", serde_json::json!([]), "mult"),
        ("mult", serde_json::json!(vec![1; 1000]), "mult"),
        ("mult", serde_json::json!([1, u64::MAX]), "mult"),
        ("attn_res", serde_json::json!(vec![7; 100_000]), "attn_res"),
    ];
    for (i, (field, value, needle)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("m{i}.safetensors"));
        edited_model(&path, |m| {
            m["arch"][field] = value.clone();
            if field == "in_channels" || field == "height" {
                m["image"] = serde_json::json!([value.clone(), 28, 28]);
            }
        });
        let start = Instant::now();
        let e = fails_with(&["info", "--model", path.to_str().unwrap()], needle);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{field} = {value}: refusing took {:?} (allocating first?)",
            start.elapsed()
        );
        assert!(e.contains("model"), "{e}");
    }
}

// ---- item 4: data readers give errors, never panics ----

fn write_idx(dir: &Path, images: &[u8], labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
}

fn idx_images(n: u32, rows: u32, cols: u32, data: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for x in [n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.resize(16 + data, 7);
    v
}

fn idx_labels(n: u32, data: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(8 + data, 1);
    v
}

fn load_idx(dir: &Path) -> Result<fewstep::data::Dataset, fewstep::data::DataError> {
    let spec: fewstep::data::DataSpec = format!("mnist:{}", dir.display()).parse().unwrap();
    fewstep::data::Dataset::load(&spec, fewstep::data::Split::Train, None)
}

#[test]
fn idx_reader_refuses_zero_counts_and_overflowing_headers() {
    let tmp = tempfile::tempdir().unwrap();
    // No images: an error now, not a data set that panics the batcher later.
    let d = tmp.path().join("empty");
    write_idx(&d, &idx_images(0, 28, 28, 0), &idx_labels(0, 0));
    let e = load_idx(&d)
        .expect_err("0 images must be refused")
        .to_string();
    assert!(e.contains("0 images"), "{e}");
    // Header sizes whose product passes 2^64: an error naming the header, not a wrapped size.
    let d = tmp.path().join("overflow");
    write_idx(
        &d,
        &idx_images(u32::MAX, u32::MAX, u32::MAX, 64),
        &idx_labels(1, 1),
    );
    let e = load_idx(&d).expect_err("overflowing header").to_string();
    assert!(e.contains("header"), "{e}");
    // The largest product that fits u64 is still just a wrong size.
    let d = tmp.path().join("big");
    write_idx(
        &d,
        &idx_images(u32::MAX, 65536, 65535, 64),
        &idx_labels(1, 1),
    );
    assert!(load_idx(&d).is_err());
    // Labels that say 0.
    let d = tmp.path().join("nolabels");
    write_idx(&d, &idx_images(1, 2, 2, 4), &idx_labels(0, 0));
    let e = load_idx(&d).expect_err("0 labels").to_string();
    assert!(e.contains("0 labels"), "{e}");
}

#[test]
fn cifar_reader_refuses_empty_and_misaligned_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let spec: fewstep::data::DataSpec =
        format!("cifar10:{}", tmp.path().display()).parse().unwrap();
    for bytes in [vec![], vec![3u8; 3072], vec![11u8; 3073]] {
        for i in 1..=5 {
            std::fs::write(tmp.path().join(format!("data_batch_{i}.bin")), &bytes).unwrap();
        }
        let r = fewstep::data::Dataset::load(&spec, fewstep::data::Split::Train, None);
        assert!(r.is_err(), "{} bytes accepted", bytes.len());
    }
}

// ---- item 5: success is never reported for nothing ----

#[test]
fn train_refuses_zero_steps_and_unusable_learning_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    fails_with(&["train", "--steps", "0", "--out", o], "--steps 0");
    for lr in ["--lr=nan", "--lr=inf", "--lr=-1", "--lr=0"] {
        fails_with(&["train", lr, "--out", o], "--lr");
    }
    fails_with(&["train", "--ema", "1.5", "--out", o], "--ema");
    fails_with(&["train", "--grad-clip", "nan", "--out", o], "--grad-clip");
    assert!(
        !out.exists(),
        "a refused start left {} behind",
        out.display()
    );
}

#[test]
fn distill_refuses_zero_updates_and_unusable_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let teacher = asset("fmnist-small-teacher.safetensors");
    let t = teacher.to_str().unwrap();
    let base = ["distill", "--teacher", t, "--from-steps", "8", "--out", o];
    for (flag, needle) in [
        ("--updates=0", "--updates 0"),
        ("--final-updates=0", "--final-updates 0"),
        ("--batch=0", "--batch"),
        ("--lr=nan", "--lr NaN"),
        ("--lr=0", "--lr 0"),
        ("--ema=1.5", "--ema 1.5"),
    ] {
        let mut args = base.to_vec();
        args.push(flag);
        fails_with(&args, needle);
    }
    assert!(
        !out.exists(),
        "a refused start left {} behind",
        out.display()
    );
}

// ---- item 6: exit codes and error text ----

#[test]
fn os_errors_are_printed_once() {
    // In-process: a file error formatted with its chain, as the CLI prints it.
    let Err(e) = fewstep::nn::tensor_file::read(Path::new("/nonexistent/m.safetensors")) else {
        panic!("a missing file was read");
    };
    let text = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(text.matches("os error").count(), 1, "{text}");
    // The CLI: writing under a path whose parent is a file is refused before any OS call
    // (issue 37's output rule), naming the file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("copy.safetensors");
    let e = fails_with(
        &[
            "convert",
            "--model",
            asset("fmnist-steps-4.f16.safetensors").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "is a file, not a folder",
    );
    assert!(e.matches("os error").count() <= 1, "{e}");
}

#[test]
fn eval_with_a_missing_classifier_fails() {
    fails_with(
        &[
            "eval",
            "--model",
            asset("fmnist-steps-4.f16.safetensors").to_str().unwrap(),
            "--classifier",
            "/nonexistent/classifier.safetensors",
        ],
        "--classifier /nonexistent/classifier.safetensors",
    );
}

// ---- item 2: a directory holding only a model file ----

#[test]
fn a_model_without_training_state_gets_one_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        asset("fmnist-steps-4.f16.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let fresh = fails_with(&["train", "--steps", "5", "--out", d], "state.safetensors");
    let resumed = fails_with(&["train", "--resume", "--out", d], "state.safetensors");
    for e in [&fresh, &resumed] {
        assert!(e.contains("move model.safetensors elsewhere"), "{e}");
        // Neither sends the user to the other command.
        assert!(!e.contains("pass --resume"), "{e}");
        assert!(!e.contains("without --resume"), "{e}");
    }
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(asset("fmnist-steps-4.f16.safetensors")).unwrap(),
        "the model file is untouched"
    );
}

// ---- item 7: files are a function of their contents ----

#[test]
fn tensor_files_are_byte_identical_whatever_the_map_order() {
    use fewstep::nn::tensor_file::{write, HostTensor};
    use fewstep::nn::StoreAs;
    let tmp = tempfile::tempdir().unwrap();
    let tensors = vec![
        HostTensor {
            name: "b".into(),
            shape: vec![2],
            data: vec![1.0, 2.0],
        },
        HostTensor {
            name: "a".into(),
            shape: vec![1, 3],
            data: vec![3.0, 4.0, 5.0],
        },
    ];
    let mut first: Option<Vec<u8>> = None;
    for i in 0..24 {
        // Each HashMap has its own random order.
        let md: std::collections::HashMap<String, String> = ["fewstep", "format", "zeta", "alpha"]
            .iter()
            .map(|k| (k.to_string(), format!("value of {k}")))
            .collect();
        let p = tmp.path().join(format!("f{i}.safetensors"));
        write(&p, &tensors, md, StoreAs::F32).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(f == &bytes, "write {i} differs from the first"),
        }
    }
    // And the files still read back.
    let back = fewstep::nn::tensor_file::read(&tmp.path().join("f0.safetensors")).unwrap();
    assert_eq!(back.metadata.len(), 4);
    assert_eq!(back.get("a").unwrap().data, vec![3.0, 4.0, 5.0]);
}

// ---- item 9: sample's arguments and model descriptions ----

#[test]
fn sample_refuses_unbounded_steps() {
    fails_with(&["sample", "--steps", "100000000"], "--steps 100000000");
    fails_with(&["sample", "--steps", "0"], "--steps 0");
}

#[test]
fn compare_and_eval_refuse_unbounded_steps() {
    let m = asset("fmnist-steps-4.f16.safetensors");
    let m = m.to_str().unwrap();
    fails_with(
        &[
            "compare",
            "--model",
            m,
            "--steps",
            "1,100000000",
            "--out",
            "c.png",
        ],
        "--steps 100000000",
    );
    fails_with(&["eval", "--model", m, "--steps", "4,0"], "--steps 0");
    fails_with(
        &["eval", "--model", m, "--teacher-steps", "100000000"],
        "--steps 100000000",
    );
}

#[test]
fn sample_refuses_a_missing_output_folder_instead_of_creating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("new").join("dir");
    for flag in ["--values", "--out", "--trajectory"] {
        let f = missing.join("v.out");
        fails_with(&["sample", flag, f.to_str().unwrap()], "does not exist");
    }
    assert!(!tmp.path().join("new").exists(), "a folder was created");
}

#[test]
fn model_files_claiming_a_step_count_distillation_cannot_make_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (steps, needle) in [
        (3u64, "power of 2"),
        (0, "power of 2"),
        (1 << 20, "power of 2"),
    ] {
        let p = tmp.path().join(format!("s{steps}.safetensors"));
        edited_model(&p, |m| m["steps"] = serde_json::json!(steps));
        fails_with(&["info", "--model", p.to_str().unwrap()], needle);
    }
    // A power of 2 that its own lineage contradicts.
    let p = tmp.path().join("lineage.safetensors");
    edited_model(&p, |m| m["steps"] = serde_json::json!(2));
    fails_with(
        &["info", "--model", p.to_str().unwrap()],
        "lineage ends at 4",
    );
    // The bundled files pass.
    for f in [
        "fmnist-steps-4.f16.safetensors",
        "fmnist-steps-2.f16.safetensors",
        "fmnist-steps-1.f16.safetensors",
        "fmnist-teacher.f16.safetensors",
    ] {
        assert!(fewstep(&["info", "--model", asset(f).to_str().unwrap()])
            .status
            .success());
    }
}

// ---- item 12: small things a new user meets ----

#[test]
fn a_mistyped_bundled_name_lists_the_bundled_names() {
    let e = fails_with(&["sample", "--model", "fmnist-4stp"], "fmnist-4step");
    assert!(e.contains("fmnist-teacher"), "{e}");
}

// ---- sizes past the adapter's limits (issue 22): refused or split, never a wgpu panic ----

#[test]
fn counts_of_zero_are_refused() {
    let m = asset("fmnist-steps-4.f16.safetensors");
    let m = m.to_str().unwrap();
    fails_with(
        &["eval", "--model", m, "--steps", "4", "--samples", "0"],
        "--samples 0",
    );
    fails_with(
        &["eval", "--model", m, "--steps", "4", "--psnr-samples", "0"],
        "--psnr-samples 0",
    );
    fails_with(&["sample", "--model", m, "--count", "0"], "--count");
    fails_with(
        &["compare", "--model", m, "--steps", "4", "--count", "0"],
        "--count 0",
    );
}

#[test]
fn a_batch_too_large_for_the_adapter_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    common::bin::write_images(&imgs);
    let data = format!("images:{}", imgs.display());
    let out = tmp.path().join("run");
    let start = Instant::now();
    let e = fails_with(
        &[
            "train",
            "--data",
            &data,
            "--image-size",
            "8",
            "--preset",
            "tiny",
            "--batch",
            "100000000",
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        "the largest batch that fits is",
    );
    eprintln!("{e}");
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "refused before the work"
    );
    assert!(!out.join("model.safetensors").exists(), "nothing written");
    let teacher = asset("fmnist-steps-4.f16.safetensors");
    fails_with(
        &[
            "distill",
            "--teacher",
            teacher.to_str().unwrap(),
            "--from-steps",
            "4",
            "--to-steps",
            "2",
            "--batch",
            "100000000",
            "--data",
            "fashion-mnist:assets/fmnist-10k",
            "--out",
            tmp.path().join("d").to_str().unwrap(),
        ],
        "the largest batch that fits is",
    );
}

#[test]
fn a_count_too_large_for_memory_is_refused_with_how_many_fit() {
    let m = asset("fmnist-steps-4.f16.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.png");
    fails_with(
        &[
            "sample",
            "--model",
            m.to_str().unwrap(),
            "--count",
            "100000000",
            "--out",
            out.to_str().unwrap(),
        ],
        "at most",
    );
}
