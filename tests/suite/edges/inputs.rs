//! What fewstep reads and is told: every flag used or refused, numbers bounded, class and
//! bundled names found, only regular files read, errors that name the value and the file.

use super::*;

/// `train --resume --out u --steps 3 --classes --preset small --lr 1` on an unconditional run
/// dropped every changed flag; `--steps` applies.
#[test]
fn a_resumed_training_refuses_every_flag_it_would_ignore() {
    let tmp = tempfile::tempdir().unwrap();
    let u = tmp.path().join("u");
    train_plain(tmp.path(), &u);
    let e = fails_with(
        &[
            "train",
            "--resume",
            "--out",
            s(&u),
            "--steps",
            "3",
            "--classes",
            "--preset",
            "small",
            "--lr",
            "1",
        ],
        "--preset small (the run started with --preset tiny)",
    );
    assert!(e.contains("--lr 1 (the run started with --lr"), "{e}");
    assert!(e.contains("--classes"), "{e}");
    let e = fails_with(
        &[
            "train",
            "--resume",
            "--out",
            s(&u),
            "--steps",
            "3",
            "--batch",
            "8",
            "--seed",
            "9",
        ],
        "--batch 8 (the run started with --batch 4)",
    );
    assert!(
        e.contains("--seed 9 (the run started with --seed 0)"),
        "{e}"
    );
    // The same values again, and --steps, are fine.
    ok(&[
        "train",
        "--resume",
        "--out",
        s(&u),
        "--steps",
        "3",
        "--batch",
        "4",
        "--preset",
        "tiny",
    ]);
}

/// `distill --guidance-range 0,2 --guidance-updates 5` without `--guided` ran plain distillation.
#[test]
fn guidance_flags_without_guided_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    train_classes(tmp.path(), &c, &["--classes"]);
    let teacher = c.join("model.safetensors");
    for (flag, value) in [("--guidance-range", "0,2"), ("--guidance-updates", "5")] {
        fails_with(
            &[
                "distill",
                "--teacher",
                s(&teacher),
                "--from-steps",
                "2",
                "--to-steps",
                "1",
                flag,
                value,
                "--out",
                s(&tmp.path().join("d")),
            ],
            &format!("{flag} applies to guided distillation only: add --guided"),
        );
    }
    assert!(!tmp.path().join("d").exists());
}

/// `--classes 12` on 10-class data dropped the class names; `--classes 0` built a model with the
/// data's count. With class folders named 1, 2, 10, `--class 1` drew class "10" (numbers were
/// parsed before names); `--class ünïcödé` did not match `Ünïcödé`.
#[test]
fn classes_keep_their_names_and_are_found_by_name_first() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    train_classes(tmp.path(), &c, &["--classes", "6"]);
    let file = fewstep::nn::tensor_file::read(&c.join("model.safetensors")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&file.metadata["fewstep"]).unwrap();
    let names: Vec<&str> = meta["arch"]["class_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ["1", "10", "2", "Ünïcödé", "class 4", "class 5"]);
    fails_with(
        &[
            "train",
            "--classes",
            "0",
            "--data",
            "fashion-mnist",
            "--out",
            s(&tmp.path().join("z")),
        ],
        "--classes 0",
    );
    let m = c.join("model.safetensors");
    for (asked, want) in [
        ("1", "1"),
        ("ünïcödé", "Ünïcödé"),
        ("10", "10"),
        ("5", "class 5"),
    ] {
        let values = tmp.path().join("v.json");
        ok(&[
            "sample",
            "--model",
            s(&m),
            "--class",
            asked,
            "--steps",
            "1",
            "--count",
            "1",
            "--out",
            s(&tmp.path().join("g.png")),
            "--values",
            s(&values),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&values).unwrap()).unwrap();
        assert_eq!(v["class_name"], want, "--class {asked}");
    }
    // A negative class or count names its flag (clap once said "unexpected argument '-1'").
    fails_with(&["sample", "--model", s(&m), "--class", "-1"], "--class -1");
    fails_with(&["sample", "--model", s(&m), "--count", "-5"], "--count");
    // A guidance weight that is finite in f64 but not in f32 made every value NaN.
    let g = tmp.path().join("g.png");
    fails_with(
        &[
            "sample",
            "--model",
            s(&m),
            "--class",
            "1",
            "--guidance",
            "1e39",
            "--no-clip",
            "--out",
            s(&g),
        ],
        "is not usable: give a weight from 0 to 100",
    );
    fails_with(
        &[
            "compare",
            "--model",
            s(&m),
            "--class",
            "1",
            "--guidance",
            "1e39",
            "--out",
            s(&g),
        ],
        "is not usable",
    );
    fails_with(
        &["eval", "--model", s(&m), "--guidance", "0,1e39"],
        "is not usable",
    );
}

/// Counts and scales are bounded before arithmetic or allocation: an overflowing count panicked,
/// `--scale 3000` aborted on a 21 GB allocation.
#[test]
fn counts_and_scales_are_bounded_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("g.png");
    let gs = s(&g);
    fails_with(
        &["sample", "--count", "18446744073709551615", "--out", gs],
        "--count",
    );
    fails_with(
        &[
            "sample",
            "--model",
            s(&asset("fmnist-steps-1.f16.safetensors")),
            "--count",
            "18446744073709551615",
            "--class",
            "all",
            "--out",
            gs,
        ],
        "--count",
    );
    for scale in ["4294967295", "3000", "0"] {
        fails_with(&["sample", "--scale", scale, "--out", gs], "--scale");
        fails_with(
            &[
                "compare",
                "--model",
                "fmnist-1step",
                "--scale",
                scale,
                "--out",
                gs,
            ],
            "--scale",
        );
    }
    fails_with(
        &["sample", "--count", "1000000", "--scale", "16", "--out", gs],
        "megapixels",
    );
    fails_with(
        &[
            "eval",
            "--model",
            "fmnist-1step",
            "--samples",
            "18446744073709551615",
        ],
        "--samples 18446744073709551615: at most",
    );
    assert!(!g.exists());
}

/// `info --model FIFO` hung (also sample, distill --teacher, convert --parent); `info --model
/// /dev/zero` read until memory ran out. Only regular files are read.
#[test]
fn only_regular_files_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let f = s(&fifo);
    let out = tmp.path().join("o.safetensors");
    // Fashion-MNIST's files, FIFOs.
    let idx = tmp.path().join("idx");
    std::fs::create_dir(&idx).unwrap();
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        mkfifo(&idx.join(name));
    }
    let idx_data = format!("fashion-mnist:{}", idx.display());
    let (g, d, t) = (
        tmp.path().join("g.png"),
        tmp.path().join("d"),
        tmp.path().join("t"),
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["info", "--model", f],
        vec!["info", "--model", "/dev/zero"],
        vec!["sample", "--model", f, "--out", s(&g)],
        vec!["distill", "--teacher", f, "--out", s(&d)],
        vec![
            "convert",
            "--model",
            "fmnist-1step",
            "--parent",
            f,
            "--out",
            s(&out),
        ],
        vec!["train", "--data", &idx_data, "--out", s(&t)],
    ];
    for args in cases {
        let child = crate::common::bin::command()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let e = finishes_within(child, Duration::from_secs(60), &args.join(" "));
        assert!(
            e.contains("FIFO") || e.contains("character device") || e.contains("not a folder"),
            "`{}`: {e}",
            args.join(" ")
        );
    }
}

/// Bundled names wherever a model is taken (info, compare, eval, convert, distill --teacher),
/// and the bundled classifier wherever eval runs: from any folder.
#[test]
fn bundled_names_work_everywhere_and_eval_finds_its_classifier_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let anywhere = tmp.path();
    let o = fewstep_in(anywhere, &["info", "--model", "fmnist-4step"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("parameters"));
    let o = fewstep_in(
        anywhere,
        &[
            "convert",
            "--model",
            "fmnist-1step",
            "--out",
            "one.safetensors",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fewstep_in(
        anywhere,
        &[
            "compare",
            "--model",
            "fmnist-1step",
            "fmnist-teacher",
            "--steps",
            "1",
            "--count",
            "1",
            "--out",
            "c.png",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fewstep_in(
        anywhere,
        &[
            "eval",
            "--model",
            "fmnist-1step",
            "fmnist-teacher",
            "--steps",
            "1",
            "--teacher-steps",
            "2",
            "--samples",
            "4",
            "--psnr-samples",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = String::from_utf8_lossy(&o.stdout).into_owned();
    let first: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    assert!(
        first["frechet"].is_number(),
        "eval outside the repository has a distance: {rows} {}",
        stderr(&o)
    );
    let data = format!(
        "fashion-mnist:{}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/fmnist-10k")
            .display()
    );
    let o = fewstep_in(
        anywhere,
        &[
            "distill",
            "--teacher",
            "fmnist-teacher",
            "--from-steps",
            "2",
            "--to-steps",
            "1",
            "--updates",
            "1",
            "--batch",
            "1",
            "--data",
            &data,
            "--out",
            "d",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(anywhere.join("d/steps-1.safetensors").exists());
    for args in [
        vec!["info", "--model", "fmnist-5step"],
        vec!["compare", "--model", "fmnist-5step"],
        vec!["eval", "--model", "fmnist-5step"],
        vec![
            "convert",
            "--model",
            "fmnist-5step",
            "--out",
            "x.safetensors",
        ],
        vec!["distill", "--teacher", "fmnist-5step", "--out", "y"],
    ] {
        let o = fewstep_in(anywhere, &args);
        let e = stderr(&o);
        assert!(
            !o.status.success() && e.contains("fmnist-4step, fmnist-2step"),
            "{e}"
        );
    }
}

/// Errors name the value and the file they are about.
#[test]
fn errors_name_the_value_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let g = tmp.path().join("g.png");
    fails_with(
        &[
            "compare",
            "--model",
            "fmnist-1step",
            s(&bad),
            "--steps",
            "1",
            "--out",
            s(&g),
        ],
        s(&bad),
    );
    fails_with_env(
        &["info"],
        &[("FEWSTEP_BACKEND", "bogus")],
        "FEWSTEP_BACKEND='bogus'",
    );
    fails_with_env(
        &["info"],
        &[("FEWSTEP_ADAPTER", "nonexistent")],
        "FEWSTEP_ADAPTER='nonexistent' is part of no adapter's name",
    );
    // An existing file as a run folder is refused before any training.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"mine").unwrap();
    let e = fails_with(
        &[
            "train",
            "--data",
            "fashion-mnist:assets/fmnist-10k",
            "--out",
            s(&file),
        ],
        "not a folder",
    );
    assert!(!e.contains("training a"), "it trained first: {e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}
