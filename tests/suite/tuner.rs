//! The GEMM tuner (tensor/tuner): it picks the fastest candidate by the clock it is given, keeps
//! the choice for the bucket, never picks what the adapter cannot run, and a run records its
//! plan so that a resume launches the same kernels whatever the plan cache says by then.

use fewstep::gpu::{Gpu, GpuOptions, KernelVariant};
use fewstep::tensor::{tuner, Tensor};

use crate::common;

/// A device that tunes, without the plan cache (nothing read or written).
pub(crate) fn tuning_gpu() -> Gpu {
    let mut opts = GpuOptions::from_env();
    opts.tune = Some(true);
    let gpu = Gpu::new_blocking(opts).expect("a GPU adapter");
    assert!(
        gpu.tunes(),
        "FEWSTEP_KERNELS/GEMM_TILE/SPLIT_K must be unset for these tests"
    );
    tuner::start_afresh(&gpu, false);
    gpu
}

/// Made-up times: `fast` takes 1 ms, every other candidate 2 ms and more. Counts the calls.
fn clock_preferring(
    fast: &'static str,
    calls: std::rc::Rc<std::cell::Cell<usize>>,
) -> tuner::Clock {
    Box::new(move |_bucket: &str, candidate: &str| {
        calls.set(calls.get() + 1);
        if candidate == fast {
            1e-3
        } else {
            2e-3 + candidate.len() as f64 * 1e-6
        }
    })
}

/// A matmul of odd sizes on `gpu`, checked against an f64 CPU product (tolerance 1e-5 relative
/// to the largest |value|, K = 37 f32 products).
fn checked_matmul(gpu: &Gpu, (m, k, n): (usize, usize, usize), test: &str) {
    let mut rng = common::rng(test);
    let a = common::uniform(&mut rng, m * k, 1.0);
    let b = common::uniform(&mut rng, k * n, 1.0);
    let got = Tensor::from_slice(gpu, &[m, k], &a)
        .matmul(&Tensor::from_slice(gpu, &[k, n], &b))
        .to_vec_blocking()
        .unwrap();
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k)
                .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                .sum();
        }
    }
    common::assert_close(test, &got, &want, 1e-5 * k as f64, 0.0);
}

#[test]
fn the_tuner_picks_the_fastest_candidate_and_keeps_it() {
    let test = "the_tuner_picks_the_fastest_candidate_and_keeps_it";
    let gpu = tuning_gpu();
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    tuner::set_clock(&gpu, Some(clock_preferring("tiled", calls.clone())));
    checked_matmul(&gpu, (20, 37, 70), test);
    let (family, _) = gpu.last_gemm().unwrap();
    assert_eq!(family, KernelVariant::Tiled, "the clock's fastest runs");
    let timed = calls.get();
    assert!(timed >= 3, "every candidate is timed ({timed} times)");
    let plan = tuner::plan(&gpu);
    assert_eq!(
        plan,
        vec![("matmul m32 n128 k64 b1".to_string(), "tiled".to_string())]
    );
    let log = tuner::tuned(&gpu);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].chosen, "tiled");
    assert_eq!(log[0].seconds, 1e-3);

    // Now the clock prefers another kernel: the bucket keeps what was measured, unmeasured
    // again (a problem of another size in it too); a new bucket gets the new favourite.
    let blocked = "blocked 16x64x16x4x4";
    tuner::set_clock(&gpu, Some(clock_preferring(blocked, calls.clone())));
    checked_matmul(&gpu, (17, 33, 100), test);
    assert_eq!(gpu.last_gemm().unwrap().0, KernelVariant::Tiled);
    assert_eq!(calls.get(), timed, "a kept bucket is not timed again");
    checked_matmul(&gpu, (9, 37, 50), test);
    let (family, tile) = gpu.last_gemm().unwrap();
    assert_eq!(
        (family, tile.to_string()),
        (KernelVariant::Blocked, "16x64x16x4x4".into())
    );
    assert!(tuner::plan(&gpu).contains(&("matmul m16 n64 k64 b1".into(), blocked.into())));
    // What a run records: each bucket it launched, with its choice.
    let recorded = tuner::recorded(&gpu).expect("a tuning device records its plan");
    assert_eq!(recorded.len(), 2, "{recorded:?}");
}

#[test]
fn a_weight_gradient_tries_splits_of_k_and_stays_correct() {
    let test = "a_weight_gradient_tries_splits_of_k_and_stays_correct";
    let gpu = tuning_gpu();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let s2 = seen.clone();
    // The fastest: the tiled core, and on it K whole.
    tuner::set_clock(
        &gpu,
        Some(Box::new(move |_: &str, c: &str| {
            s2.borrow_mut().push(c.to_string());
            match c {
                "tiled" => 1e-3,
                c if c.starts_with("tiled") => 2e-3,
                _ => 5e-3,
            }
        })),
    );
    let mut rng = common::rng(test);
    let conv = fewstep::tensor::Conv2d::same(3);
    let (n, cin, cout, h) = (3, 5, 7, 30);
    let x = common::uniform(&mut rng, n * cin * h * h, 1.0);
    let dy = common::uniform(&mut rng, n * cout * h * h, 1.0);
    let got = conv
        .weight_grad(
            &Tensor::from_slice(&gpu, &[n, cout, h, h], &dy),
            &Tensor::from_slice(&gpu, &[n, cin, h, h], &x),
            &[cout, cin, 3, 3],
        )
        .to_vec_blocking()
        .unwrap();
    let seen = seen.borrow().clone();
    assert!(
        seen.iter().any(|c| c.contains(" split ")),
        "splits are timed: {seen:?}"
    );
    assert!(seen.contains(&"tiled".to_string()), "{seen:?}");
    let plan = tuner::plan(&gpu);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].1, "tiled", "{plan:?}");
    // dW[o, i, ky, kx] = sum over images and pixels of dy[o] * x[i] shifted (padding 1).
    let mut want = vec![0f64; cout * cin * 9];
    for img in 0..n {
        for o in 0..cout {
            for i in 0..cin {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let mut acc = 0f64;
                        for y in 0..h {
                            for xx in 0..h {
                                let (sy, sx) = (y + ky, xx + kx);
                                if sy < 1 || sx < 1 || sy > h || sx > h {
                                    continue;
                                }
                                acc += dy[((img * cout + o) * h + y) * h + xx] as f64
                                    * x[((img * cin + i) * h + sy - 1) * h + sx - 1] as f64;
                            }
                        }
                        want[((o * cin + i) * 3 + ky) * 3 + kx] += acc;
                    }
                }
            }
        }
    }
    common::assert_close(test, &got, &want, 1e-4 * (n * h * h) as f64 / 100.0, 1e-5);
}

#[test]
fn measured_times_pick_a_kernel_that_computes_the_right_product() {
    // The real clock (timestamps or submit-and-wait) on a small problem: whatever wins, it is
    // one of the candidates and its product is right.
    let test = "measured_times_pick_a_kernel_that_computes_the_right_product";
    let gpu = tuning_gpu();
    checked_matmul(&gpu, (24, 37, 90), test);
    let log = tuner::tuned(&gpu);
    assert_eq!(log.len(), 1);
    let t = &log[0];
    assert!(t.candidates >= 3, "{t:?}");
    assert!(t.seconds > 0.0 && t.seconds.is_finite(), "{t:?}");
    assert!(
        t.seconds <= t.rule_seconds,
        "the chosen is never slower than the rule: {t:?}"
    );
}

#[test]
fn without_tuning_every_launch_takes_the_rule_and_records_nothing() {
    let gpu = common::gpu();
    assert!(!gpu.tunes(), "the library does not tune unless asked");
    checked_matmul(
        &gpu,
        (20, 37, 70),
        "without_tuning_every_launch_takes_the_rule",
    );
    assert!(tuner::tuned(&gpu).is_empty());
    assert_eq!(tuner::recorded(&gpu), None);
}

/// A run records its plan; resumed with the plan cache deleted and a clock that would choose
/// otherwise, it launches the recorded kernels and ends with the uninterrupted run's bytes.
#[test]
fn a_resume_with_the_plan_cache_deleted_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    common::bin::write_images(&imgs);
    let run = |args: &[String], clock: &str, cache: &std::path::Path| {
        let o = common::bin::command()
            .args(args)
            .env("FEWSTEP_TUNE", "on")
            .env("FEWSTEP_TEST_TUNE_CLOCK", clock)
            .env("FEWSTEP_CACHE_DIR", cache)
            .env_remove("FEWSTEP_KERNELS")
            .env_remove("FEWSTEP_GEMM_TILE")
            .env_remove("FEWSTEP_SPLIT_K")
            .output()
            .unwrap();
        eprintln!(
            "$ fewstep {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success());
    };
    let train = |out: &std::path::Path, steps: &str| {
        common::bin::tiny_train_args(&imgs, out, &["--steps", steps])
    };
    let state_plan = |dir: &std::path::Path| -> std::collections::BTreeMap<String, String> {
        let bytes = std::fs::read(dir.join("state.safetensors")).unwrap();
        let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let md = st.metadata().as_ref().unwrap();
        let state: serde_json::Value = serde_json::from_str(md.values().next().unwrap()).unwrap();
        serde_json::from_value(state["kernel_plan"].clone()).expect("the state records a plan")
    };
    let cache_a = tmp.path().join("cache-a");
    let straight = tmp.path().join("straight");
    run(&train(&straight, "4"), "1", &cache_a);
    let cache_b = tmp.path().join("cache-b");
    let part = tmp.path().join("part");
    run(&train(&part, "2"), "1", &cache_b);
    assert!(cache_b.join("kernel-plan.tsv").exists());
    std::fs::remove_dir_all(&cache_b).unwrap();
    let resume: Vec<String> = [
        "train",
        "--resume",
        "--out",
        part.to_str().unwrap(),
        "--steps",
        "4",
    ]
    .map(String::from)
    .to_vec();
    run(&resume, "2", &cache_b);
    let plan = state_plan(&straight);
    assert!(plan.len() >= 10, "{plan:?}");
    assert_eq!(
        plan,
        state_plan(&part),
        "the resumed run kept the recorded plan"
    );
    // The other clock would have chosen otherwise: the identity below is the recorded plan's.
    let other = tmp.path().join("other");
    run(&train(&other, "2"), "2", &tmp.path().join("cache-c"));
    assert_ne!(
        plan,
        state_plan(&other),
        "clocks 1 and 2 choose different plans"
    );
    let rule_choices = plan.values().filter(|c| c.starts_with("subgroup")).count();
    assert!(
        rule_choices < plan.len(),
        "the plan differs from the rule somewhere: {plan:?}"
    );
    let model = crate::common::bin::model_of_run;
    assert!(
        model(&straight) == model(&part),
        "a resumed tuned run differs from an uninterrupted one"
    );
}
