//! The coop family's self-check: a wrong product fails it, its cache, the tuner never picks a
//! tile that failed, and a device lost during it is replaced.

use super::*;

/// The self-check passes on this driver (the tests above ran on its verdict), its verdict is
/// cached, and a kernel that reads B column-major (a wrong product, of the kind the wgpu example
/// had before gfx-rs/wgpu#9892) fails it: the device then runs the blocked family, says why,
/// and its products are right.
#[test]
fn the_self_check_fails_a_wrong_product_and_the_blocked_family_runs() {
    let test = "the_self_check_fails_a_wrong_product_and_the_blocked_family_runs";
    let Some(good) = coop_gpu_or_skip(test) else {
        return;
    };
    assert!(good.coop_verdict().unwrap().is_ok());
    eprintln!("{test}: {}", good.variant_reason());
    let cached = std::fs::read_to_string(fewstep::tensor::coop_check_cache_file().unwrap())
        .expect("the verdict is cached");
    assert!(
        cached
            .lines()
            .any(|l| l.starts_with(&good.info().name) && l.contains("\tok")),
        "no cached verdict for '{}' in:\n{cached}",
        good.info().name
    );

    let mut opts = GpuOptions::from_env();
    opts.variant = Some(KernelVariant::Coop);
    opts.coop_fault = true;
    let bad = Gpu::new_blocking(opts).unwrap();
    assert_eq!(bad.variant(), KernelVariant::Blocked);
    let why = bad.variant_reason();
    eprintln!("{test}: with the fault: {why}");
    assert!(
        why.contains("failed fewstep's self-check") && why.contains("the exact product is"),
        "{why}"
    );
    assert!(bad.coop_verdict().unwrap().is_err());
    // Asking again does not bring the family back.
    assert_eq!(bad.set_variant(KernelVariant::Coop), KernelVariant::Blocked);
    let mut r = rng(test);
    let (m, n, k) = (19, 23, 29);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let c = Tensor::from_slice(&bad, &[m, k], &a).matmul(&Tensor::from_slice(&bad, &[k, n], &b));
    assert_eq!(bad.last_gemm().unwrap().0, KernelVariant::Blocked);
    assert_close(
        "blocked fallback",
        &c.to_vec_blocking().unwrap(),
        &matmul_ref(&a, &b, 1, m, n, k, false, false),
        1e-5,
        1e-5,
    );
    // The fault is never cached: the good verdict stands.
    let again = std::fs::read_to_string(fewstep::tensor::coop_check_cache_file().unwrap()).unwrap();
    assert_eq!(again, cached);
}

/// A cached verdict stands until someone asks: with a failure planted under this adapter's key
/// (in a cache folder of its own, so the other tests keep theirs), `fewstep info` reports the
/// planted reason as the cached verdict, and `fewstep selftest` checks afresh, passes, and caches
/// the pass over it.
#[test]
fn selftest_checks_afresh_whatever_the_cache_says() {
    let test = "selftest_checks_afresh_whatever_the_cache_says";
    let Some(good) = coop_gpu_or_skip(test) else {
        return;
    };
    let key = fewstep::tensor::coop_check_key(&good).expect("a key");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coop-check.tsv");
    std::fs::write(&file, format!("{key}\tfail\tplanted by a test\n")).unwrap();
    let run = |args: &[&str]| {
        let o = crate::common::bin::command()
            .args(args)
            .env("FEWSTEP_CACHE_DIR", dir.path())
            .env("FEWSTEP_KERNELS", "coop")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("$ fewstep {}\n{text}", args.join(" "));
        text
    };
    let info = run(&["info"]);
    assert!(
        info.contains("planted by a test (cached verdict)"),
        "info did not use the cached verdict:\n{info}"
    );
    let report = run(&["selftest"]);
    assert!(
        report.contains("self-check run afresh, ignoring the cache: passed"),
        "{report}"
    );
    let cached = std::fs::read_to_string(&file).unwrap();
    assert_eq!(cached, format!("{key}\tok\n"));
}

/// The tuner times cooperative-matrix tiles only where they passed their self-check: with the
/// check's deliberate fault, a clock that calls them fastest still gets an f32 family's kernel;
/// without it, the clock's favourite coop tile runs, and computes the exact product (small
/// integers: exact in f16, their sums exact in f32).
#[test]
fn a_coop_tile_that_fails_its_self_check_is_never_tuned_in() {
    let test = "a_coop_tile_that_fails_its_self_check_is_never_tuned_in";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let mut rng = crate::common::rng(test);
    let (m, k, n) = (40, 70, 90);
    let ints = |rng: &mut rand::rngs::StdRng, len: usize| -> Vec<f32> {
        use rand::Rng;
        (0..len)
            .map(|_| rng.random_range(-3i32..=3) as f32)
            .collect()
    };
    let a = ints(&mut rng, m * k);
    let b = ints(&mut rng, k * n);
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|l| (a[i * k + l] * b[l * n + j]) as f64).sum();
        }
    }
    for fault in [false, true] {
        let mut opts = GpuOptions::from_env();
        opts.variant = None;
        opts.precision = Some(fewstep::gpu::Precision::Mixed);
        opts.tune = Some(true);
        opts.coop_fault = fault;
        let gpu = Gpu::new_blocking(opts).unwrap();
        assert_eq!(
            gpu.variant() == KernelVariant::Coop,
            !fault,
            "fault {fault}"
        );
        fewstep::tensor::tuner::start_afresh(&gpu, false);
        let timed = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
        let t2 = timed.clone();
        fewstep::tensor::tuner::set_clock(
            &gpu,
            Some(Box::new(move |_: &str, c: &str| {
                t2.borrow_mut().push(c.to_string());
                if c.starts_with("coop") {
                    1e-4
                } else {
                    1e-3
                }
            })),
        );
        let got = Tensor::from_slice(&gpu, &[m, k], &a)
            .matmul(&Tensor::from_slice(&gpu, &[k, n], &b))
            .to_vec_blocking()
            .unwrap();
        crate::common::assert_close(test, &got, &want, 0.0, 0.0);
        let family = gpu.last_gemm().unwrap().0;
        let coop_timed = timed.borrow().iter().any(|c| c.starts_with("coop"));
        if fault {
            assert_ne!(family, KernelVariant::Coop, "a failed coop tile was picked");
            assert!(!coop_timed, "coop tiles were timed: {:?}", timed.borrow());
        } else {
            assert_eq!(family, KernelVariant::Coop, "the clock's fastest runs");
        }
    }
}

/// A driver that loses the device during the coop self-check leaves a usable device: a fresh
/// one without cooperative matrices, computing in f32, with the reason where `fewstep info`
/// shows it.
#[test]
fn a_device_lost_during_the_self_check_is_replaced_by_a_fresh_one() {
    let test = "a_device_lost_during_the_self_check_is_replaced_by_a_fresh_one";
    if coop_gpu_or_skip(test).is_none() {
        return;
    }
    let mut opts = GpuOptions::from_env();
    opts.variant = None;
    opts.precision = Some(fewstep::gpu::Precision::Mixed);
    opts.coop_lose = true;
    let gpu = Gpu::new_blocking(opts).expect("a fresh device");
    assert!(gpu.fault().is_ok(), "the fresh device is not the lost one");
    assert_eq!(gpu.coop_sizes(), None);
    assert_ne!(gpu.variant(), KernelVariant::Coop);
    assert_eq!(gpu.precision(), fewstep::gpu::Precision::F32);
    let info = fewstep::tensor::kernel_policy::describe_precision(&gpu);
    assert!(
        info.contains("lost the device during their self-check"),
        "{info}"
    );
    let a = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = Tensor::from_slice(&gpu, &[3, 1], &[1., 1., 1.]);
    assert_eq!(a.matmul(&b).to_vec_blocking().unwrap(), vec![6., 15.]);
}
