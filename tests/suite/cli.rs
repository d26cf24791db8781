//! The `fewstep` binary end to end: train on a folder of images, resume, sample a grid and a
//! trajectory; bad input ends with a message and a failure code, never a panic.

use crate::common;
use common::bin::{fewstep, stderr, write_images};
use std::path::Path;

fn fails_with(args: &[&str], needle: &str) {
    let o = fewstep(args);
    assert!(!o.status.success(), "`{}` should fail", args.join(" "));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "a panic instead of a message: {e}");
    assert!(e.contains(needle), "message lacks `{needle}`: {e}");
}

/// Trains a `tiny` teacher for `steps` updates on synthetic 8x8 images in `dir`; returns the run
/// directory.
fn train_tiny_on_images(dir: &Path, steps: u32) -> std::path::PathBuf {
    let imgs = dir.join("imgs");
    write_images(&imgs);
    let run = dir.join("run");
    let data = format!("images:{}", imgs.display());
    let steps = steps.to_string();
    let out = fewstep(&[
        "train",
        "--data",
        &data,
        "--preset",
        "tiny",
        "--image-size",
        "8",
        "--batch",
        "4",
        "--steps",
        &steps,
        "--sample-every",
        "0",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "training the tiny teacher failed");
    run
}

#[test]
fn train_resume_sample_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let run = tmp.path().join("run");
    let data = format!("images:{}", imgs.display());
    let run_s = run.to_str().unwrap();
    let common = [
        "--data",
        &data,
        "--preset",
        "tiny",
        "--image-size",
        "8",
        "--batch",
        "4",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--sample-every",
        "2",
        "--sample-steps",
        "2",
        "--out",
        run_s,
    ];
    let mut args = vec!["train", "--steps", "2"];
    args.extend(common);
    assert!(fewstep(&args).status.success());
    assert!(run.join("model.safetensors").exists());
    assert!(run.join("samples/step_00000002.png").exists());
    // Starting again over an existing run is refused; --resume continues it.
    fails_with(&args, "--resume");
    assert!(
        fewstep(&["train", "--resume", "--steps", "3", "--out", run_s])
            .status
            .success()
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        3,
        "one line per logged update: {metrics}"
    );
    for l in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for k in ["step", "loss", "lr", "images_per_s", "wall_s"] {
            assert!(v[k].is_number(), "metrics line lacks {k}: {l}");
        }
    }
    let model = run.join("model.safetensors");
    let grid = tmp.path().join("grid.png");
    let traj = tmp.path().join("traj.png");
    let o = fewstep(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "3",
        "--count",
        "5",
        "--out",
        grid.to_str().unwrap(),
        "--trajectory",
        traj.to_str().unwrap(),
        "--trajectory-count",
        "2",
        "--scale",
        "1",
    ]);
    assert!(o.status.success());
    // 5 images of 8x8 in 3 columns, 2 px gaps: 3 * 8 + 4 * 2 wide, 2 rows high.
    let g = image::open(&grid).unwrap();
    assert_eq!((g.width(), g.height()), (32, 22));
    let t = image::open(&traj).unwrap();
    assert!(
        t.width() > 4 * 8 && t.height() > 4 * 8,
        "trajectory: 4 columns, 4 rows"
    );
    let o = fewstep(&["info", "--model", model.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("parameters"));
}

#[test]
fn bad_input_gives_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let out_s = out.to_str().unwrap();
    fails_with(
        &[
            "train",
            "--data",
            "fashion-mnist:/nonexistent/dir",
            "--out",
            out_s,
        ],
        "/nonexistent/dir",
    );
    fails_with(&["train", "--data", "svhn", "--out", out_s], "cifar10:DIR");
    fails_with(
        &[
            "train",
            "--data",
            "fashion-mnist",
            "--preset",
            "huge",
            "--out",
            out_s,
        ],
        "tiny, small, cifar",
    );
    fails_with(&["train", "--resume", "--out", out_s], "without --resume");
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    fails_with(&["sample", "--model", junk.to_str().unwrap()], "corrupt");
    fails_with(
        &["sample", "--model", "/nonexistent.safetensors"],
        "/nonexistent.safetensors",
    );
}

#[test]
fn distill_then_compare_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_tiny_on_images(tmp.path(), 2);
    let teacher = run.join("model.safetensors");
    let out = tmp.path().join("d");
    let out_s = out.to_str().unwrap();
    let t = teacher.to_str().unwrap();
    fails_with(
        &[
            "distill",
            "--teacher",
            t,
            "--from-steps",
            "6",
            "--out",
            out_s,
        ],
        "power of 2",
    );
    fails_with(
        &[
            "distill",
            "--teacher",
            t,
            "--from-steps",
            "4",
            "--to-steps",
            "8",
            "--out",
            out_s,
        ],
        "must be below",
    );
    assert!(fewstep(&[
        "distill",
        "--teacher",
        t,
        "--from-steps",
        "8",
        "--to-steps",
        "1",
        "--updates",
        "2",
        "--batch",
        "4",
        "--out",
        out_s,
    ])
    .status
    .success());
    let s1 = out.join("steps-1.safetensors");
    for s in [4, 2, 1] {
        assert!(out.join(format!("steps-{s}.safetensors")).exists());
    }
    fails_with(
        &[
            "distill",
            "--teacher",
            s1.to_str().unwrap(),
            "--from-steps",
            "8",
            "--out",
            out_s,
        ],
        "not a teacher",
    );
    // Issue 13, item 1: a new distillation into a folder holding finished students is refused
    // (it used to replace every steps-N file and metrics.jsonl and exit 0); the files stay as
    // they were.
    let before = std::fs::read(&s1).unwrap();
    fails_with(
        &[
            "distill",
            "--teacher",
            t,
            "--from-steps",
            "8",
            "--to-steps",
            "1",
            "--updates",
            "2",
            "--batch",
            "4",
            "--out",
            out_s,
        ],
        "already holds finished students",
    );
    assert_eq!(std::fs::read(&s1).unwrap(), before, "steps-1 untouched");
    let o = fewstep(&["info", "--model", s1.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("8 -> 4 -> 2 -> 1"));
    let png = tmp.path().join("cmp.png");
    let s2 = out.join("steps-2.safetensors");
    assert!(fewstep(&[
        "compare",
        "--model",
        s1.to_str().unwrap(),
        s2.to_str().unwrap(),
        t,
        "--steps",
        "1,2,4",
        "--count",
        "3",
        "--out",
        png.to_str().unwrap(),
    ])
    .status
    .success());
    // Rows: 1 distilled, 1 DDIM, 2 distilled, 2 DDIM, 4 DDIM.
    let img = image::open(&png).unwrap();
    assert!(img.height() > 5 * 16, "five labelled rows");
}

#[test]
fn eval_reports_what_it_can_without_a_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_tiny_on_images(tmp.path(), 1);
    let t = run.join("model.safetensors");
    let o = fewstep(&[
        "eval",
        "--model",
        t.to_str().unwrap(),
        "--steps",
        "1,2",
        "--samples",
        "4",
        "--psnr-samples",
        "2",
        "--teacher-steps",
        "4",
        "--json",
    ]);
    // The default classifier (assets/, 28x28) does not fit these 8x8 models: a note, no
    // distance. A classifier named with --classifier that cannot be read is an error
    // (tests/suite/failures.rs).
    assert!(o.status.success());
    assert!(stderr(&o).contains("no Fréchet distance"));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // DDIM at 1 and 2 steps, and the teacher at its full 4.
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["frechet"].is_null() && rows[0]["psnr_vs_teacher"].is_number());
    assert_eq!(rows[2]["kind"], "teacher");
}

/// `fewstep recipe --preset quick` end to end (train, distill 8 -> 1, eval, bundle) on 8x8
/// images, interrupted after distilling and resumed; the bundle it writes is what the app loads:
/// its models go into the app's state as the bundled ones do (tests/suite/app/).
#[test]
fn recipe_quick_runs_end_to_end_and_its_bundle_loads_in_the_app() {
    use fewstep::app::engine::ModelInfo;
    use fewstep::app::state::AppState;
    use fewstep::bundled::Manifest;
    use fewstep::diffusion::model_file::sha256_hex;
    use fewstep::diffusion::parse_model;
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("recipe");
    let o = out.to_str().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let data = format!("images:{}", imgs.display());
    // The quick preset, on 8x8 images and shortened further: lavapipe is slow.
    let quick = [
        "recipe",
        "--preset",
        "quick",
        "--data",
        &data,
        "--image-size",
        "8",
        "--name",
        "fmnist",
        "--train-steps",
        "40",
        "--updates",
        "6",
        "--samples",
        "8",
        "--out",
        o,
    ];
    let mut stop = quick.to_vec();
    stop.extend(["--stop-after", "distill"]);
    let first = fewstep(&stop);
    assert!(first.status.success());
    let e = stderr(&first);
    assert!(
        e.contains("estimated") && e.contains("stopped after distill"),
        "{e}"
    );
    assert!(out.join("distill").join("steps-1.safetensors").exists());
    assert!(!out.join("bundle").exists(), "stopped before the bundle");
    fails_with(&quick, "--resume");
    let second = fewstep(&["recipe", "--resume", "--out", o]);
    assert!(second.status.success());
    assert!(
        stderr(&second).contains("done: train, distill)"),
        "resumed after the done stages"
    );
    let bundle = out.join("bundle");
    let manifest =
        Manifest::parse(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fmnist-4step",
            "fmnist-2step",
            "fmnist-1step",
            "fmnist-teacher"
        ]
    );
    assert!(!manifest.adapter.is_empty() && !manifest.date.is_empty());
    assert!(manifest
        .commands
        .iter()
        .any(|c| c.contains("fewstep distill")));
    assert!(manifest.seconds["total"] > 0.0);
    let mut state = AppState::default();
    let mut hashes = std::collections::HashMap::new();
    for entry in &manifest.models {
        let bytes = std::fs::read(bundle.join(&entry.file)).unwrap();
        assert_eq!(sha256_hex(&bytes), entry.sha256, "{}", entry.file);
        let (meta, tensors) = parse_model(&bundle.join(&entry.file), &bytes).unwrap();
        assert_eq!(meta.steps, entry.steps);
        let fig = entry.figures.as_ref().expect("eval figures");
        if entry.steps.is_some() {
            assert!(fig.psnr_vs_teacher.is_some(), "{}", entry.name);
            assert!(entry.ddim.as_ref().unwrap().psnr_vs_teacher.is_some());
        }
        hashes.insert(meta.steps, (sha256_hex(&bytes), meta.lineage.clone()));
        state.add_model(ModelInfo {
            name: entry.name.clone(),
            meta,
            params: tensors.iter().map(|t| t.data.len()).sum(),
            file_bytes: bytes.len(),
        });
    }
    // The f16 family chains file to file: each student's parent is the copy next to it.
    for (steps, parent) in [(Some(4), None), (Some(2), Some(4)), (Some(1), Some(2))] {
        let (_, lineage) = &hashes[&steps];
        assert_eq!(lineage.steps_path.first(), Some(&8));
        let want = &hashes[&parent].0;
        assert_eq!(lineage.parent_sha256.as_ref(), Some(want), "{steps:?}");
    }
    assert_eq!(state.selected_model().unwrap().name, "fmnist-4step");
    assert!(state.select_by_name("fmnist-1step"));
    assert_eq!(state.settings.steps, 1);
    assert_eq!(state.start_sample().unwrap().1.len(), 1);
    assert!(!state.compare_rows().unwrap().is_empty());
    let info = fewstep(&[
        "info",
        "--model",
        bundle
            .join("fmnist-steps-4.f16.safetensors")
            .to_str()
            .unwrap(),
    ]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("eval:") && text.contains("plain DDIM"),
        "{text}"
    );
    let again = fewstep(&["recipe", "--resume", "--out", o]);
    assert!(
        again.status.success(),
        "a finished recipe resumes to nothing"
    );
    eprintln!(
        "quick recipe, both runs and the checks: {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// `bench train` and `bench distill` print one JSON row per preset with a positive speed, and an
/// update is exactly one submit (the recorder's promise: no readback or flush inside an update);
/// with --profile, a second row gives GPU time per kernel covering every launch of an update.
#[test]
fn bench_train_and_distill_report_one_submit_per_update() {
    for what in ["train", "distill"] {
        let o = fewstep(&[
            "bench",
            what,
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--seconds",
            "0",
            "--json",
            "--profile",
        ]);
        assert!(o.status.success(), "bench {what} failed: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        let row: serde_json::Value = serde_json::from_str(text.lines().next().expect("a row"))
            .unwrap_or_else(|e| panic!("bench {what}: not JSON ({e}): {text}"));
        assert_eq!(row["bench"], what);
        assert_eq!(row["preset"], "tiny");
        assert!(row["images_per_s"].as_f64().unwrap() > 0.0, "{row}");
        let launches = row
            .get("launches_per_step")
            .or(row.get("launches_per_update"))
            .and_then(|v| v.as_u64())
            .unwrap();
        assert!(launches > 100, "{row}");
        let submits = row
            .get("submits_per_step")
            .or(row.get("submits_per_update"))
            .and_then(|v| v.as_f64())
            .unwrap();
        assert_eq!(submits, 1.0, "bench {what}: {row}");
        let profile: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).expect("a profile row"))
                .unwrap_or_else(|e| panic!("bench {what} --profile: not JSON ({e}): {text}"));
        assert_eq!(profile["bench"], format!("{what}_profile"));
        if profile.get("skipped").is_none() {
            let timed: f64 = profile["kernels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["launches_per_update"].as_f64().unwrap())
                .sum();
            assert_eq!(timed, launches as f64, "{profile}");
            assert!(
                profile["gpu_ms_per_update"].as_f64().unwrap() > 0.0,
                "{profile}"
            );
        }
    }
}

/// `bench sample --launches --profile`: the row counts a step's launches, the histogram adds up
/// to them, and the profile (1-step runs: a step plus the noise draw and the final clip) times
/// every launch of a step and at most those few more.
#[test]
fn bench_sample_lists_and_profiles_a_step() {
    let o = fewstep(&[
        "bench",
        "sample",
        "--preset",
        "tiny",
        "--count",
        "2",
        "--seconds",
        "0",
        "--json",
        "--launches",
        "--profile",
    ]);
    assert!(o.status.success(), "bench sample failed: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(rows.len(), 3, "row, launches, profile: {text}");
    assert_eq!(rows[0]["bench"], "sample");
    let launches = rows[0]["launches_per_step"].as_u64().unwrap();
    assert!(launches > 20, "{}", rows[0]);
    assert_eq!(rows[1]["bench"], "sample_launches");
    let listed: u64 = rows[1]["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["launches_per_step"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, launches, "{}", rows[1]);
    assert_eq!(rows[2]["bench"], "sample_profile");
    if rows[2].get("skipped").is_none() {
        assert_eq!(rows[2]["unit"], "step");
        let timed: f64 = rows[2]["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["launches_per_update"].as_f64().unwrap())
            .sum();
        assert!(
            timed >= launches as f64 && timed <= launches as f64 + 4.0,
            "profiled {timed} launches per step, counted {launches}: {}",
            rows[2]
        );
    }
}

/// A run made in mixed precision (its state says so) is not continued in f32 on a device whose
/// cooperative matrices are missing: `--resume` asks for mixed by itself, finds no family to run
/// it, and refuses with the reason instead of ending with different files. Here the state of an
/// f32 run is marked mixed (this adapter has no cooperative matrices; tests/suite/coop/runs.rs runs a
/// real mixed run on Mesa 26).
#[test]
fn a_mixed_run_is_not_resumed_in_f32() {
    use fewstep::nn::tensor_file;
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let run = tmp.path().join("run");
    let args = common::bin::tiny_train_args(&imgs, &run, &["--steps", "2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(fewstep(&args).status.success());
    let state = run.join("state.safetensors");
    let file = tensor_file::read(&state).unwrap();
    let mut md = file.metadata.clone();
    let mut json: serde_json::Value = serde_json::from_str(&md["fewstep_state"]).unwrap();
    assert!(
        json.get("precision").is_none(),
        "f32 is not written: {json}"
    );
    json["precision"] = "mixed".into();
    md.insert("fewstep_state".into(), json.to_string());
    tensor_file::write(&state, &file.tensors, md, tensor_file::StoreAs::F32).unwrap();
    let o = fewstep(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "4",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("resuming in mixed precision")
            && err.contains("was made in mixed precision, and this device computes in f32")
            && err.contains("the cooperative-matrix family does not run on this device"),
        "{err}"
    );
}

/// Every subcommand's `--help` ends with an example that names it, and the top-level help with
/// the two commands a newcomer needs.
#[test]
fn every_help_ends_with_an_example() {
    let top = fewstep(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout).to_string();
    let commands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .expect("the help lists the commands")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?}");
    assert!(
        text.trim_end().contains("Examples:\n  fewstep ")
            && text.contains("fewstep sample --model"),
        "{text}"
    );
    for c in commands {
        let out = fewstep(&[&c, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        let tail: Vec<&str> = help.trim_end().lines().rev().take(4).collect();
        assert!(
            tail.iter()
                .any(|l| l.trim_start().contains(&format!("fewstep {c}"))),
            "`fewstep {c} --help` does not end with an example of it:\n{}",
            help.trim_end()
                .lines()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
