//! Deferred tuning, the browser's way (tensor/tuner `set_deferred`, `tune_pending`): a launch
//! that meets a new bucket takes the rule, the problem waits with its operands, and the pass
//! awaited between steps times the candidates and plans the bucket, so the next step launches
//! the fastest kernel. Checked natively on lavapipe: the page runs the same code with the
//! browser's clock.

use fewstep::gpu::{Gpu, KernelVariant};
use fewstep::reference::{matmul_ref, ConvShape};
use fewstep::tensor::{tuner, Conv2d, Tensor};

use crate::common;
use crate::tuner::tuning_gpu;

fn deferred_gpu() -> Gpu {
    let gpu = tuning_gpu();
    tuner::set_deferred(&gpu, true);
    gpu
}

/// A matmul of odd sizes, its tensor and values, and its f64 CPU product.
fn matmul(
    gpu: &Gpu,
    (m, k, n): (usize, usize, usize),
    rng: &mut rand::rngs::StdRng,
) -> (Tensor, Vec<f64>) {
    let a = common::uniform(rng, m * k, 1.0);
    let b = common::uniform(rng, k * n, 1.0);
    let c = Tensor::from_slice(gpu, &[m, k], &a).matmul(&Tensor::from_slice(gpu, &[k, n], &b));
    (c, matmul_ref(&a, &b, 1, m, n, k, false, false))
}

#[test]
fn a_deferred_bucket_runs_the_rule_then_the_planned_kernel_after_the_pass() {
    let test = "a_deferred_bucket_runs_the_rule_then_the_planned_kernel_after_the_pass";
    let gpu = deferred_gpu();
    let mut rng = common::rng(test);
    let calls = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let c2 = calls.clone();
    // Made-up times: the tiled core is the fastest, the rule's is never it on lavapipe.
    tuner::set_clock(
        &gpu,
        Some(Box::new(move |_: &str, c: &str| {
            c2.set(c2.get() + 1);
            if c == "tiled" {
                1e-3
            } else {
                3e-3
            }
        })),
    );
    let rule_family = gpu.variant();
    assert_ne!(
        rule_family,
        KernelVariant::Tiled,
        "the test needs a rule other than tiled"
    );

    // The first launch: the rule, nothing timed, the problem waits.
    let (c, want) = matmul(&gpu, (20, 37, 70), &mut rng);
    assert_eq!(gpu.last_gemm().unwrap().0, rule_family);
    assert_eq!(calls.get(), 0, "nothing is timed inside the step");
    assert!(tuner::has_pending(&gpu));
    assert!(tuner::plan(&gpu).is_empty());
    let before = c.to_vec_blocking().unwrap();
    common::assert_close(test, &before, &want, 1e-5 * 37.0, 0.0);

    // The pass between steps: timed, planned; the step's own output is untouched (the
    // candidates write a scratch tensor).
    let done = pollster::block_on(tuner::tune_pending(&gpu));
    assert_eq!(done.problems, 1);
    assert!(
        calls.get() >= 3,
        "every candidate was timed ({})",
        calls.get()
    );
    assert!(!tuner::has_pending(&gpu));
    assert_eq!(
        tuner::plan(&gpu),
        vec![("matmul m32 n128 k64 b1".to_string(), "tiled".to_string())]
    );
    assert_eq!(
        c.to_vec_blocking().unwrap(),
        before,
        "the pass wrote into the step's output"
    );
    assert!(tuner::tuned_so_far().problems >= 1);
    // A checkpoint taken now records the kernel the next step runs, not the rule this one ran.
    let recorded = tuner::recorded(&gpu).expect("a tuning device records its plan");
    assert_eq!(
        recorded.get("matmul m32 n128 k64 b1").map(String::as_str),
        Some("tiled"),
        "{recorded:?}"
    );

    // The next step: the planned kernel, the right product, nothing timed again.
    let timed = calls.get();
    let (c, want) = matmul(&gpu, (17, 33, 100), &mut rng);
    assert_eq!(gpu.last_gemm().unwrap().0, KernelVariant::Tiled);
    common::assert_close(test, &c.to_vec_blocking().unwrap(), &want, 1e-5 * 33.0, 0.0);
    assert_eq!(calls.get(), timed);
    assert!(!tuner::has_pending(&gpu), "a planned bucket does not wait");
    assert_eq!(
        pollster::block_on(tuner::tune_pending(&gpu)).problems,
        0,
        "an empty pass times nothing"
    );
}

/// A convolution with a bias and a weight gradient wait with what their launches add (the bias,
/// the coop scale) and their operands; after the pass both run on the plan and stay right.
#[test]
fn deferred_convolutions_keep_their_operands_and_stay_right() {
    let test = "deferred_convolutions_keep_their_operands_and_stay_right";
    let gpu = deferred_gpu();
    tuner::set_clock(&gpu, Some(tuner::made_up_clock(7)));
    let mut rng = common::rng(test);
    let s = ConvShape {
        n: 2,
        cin: 5,
        h: 9,
        w: 11,
        cout: 6,
        ks: 3,
        stride: 1,
        pad: 1,
    };
    let x = common::uniform(&mut rng, s.x_len(), 1.0);
    let w = common::uniform(&mut rng, s.w_len(), 1.0);
    let bias = common::uniform(&mut rng, s.cout, 1.0);
    let dy = common::uniform(&mut rng, s.y_len(), 1.0);
    let conv = Conv2d::same(3);
    let (xt, wt, bt) = (
        Tensor::from_slice(&gpu, &[s.n, s.cin, s.h, s.w], &x),
        Tensor::from_slice(&gpu, &[s.cout, s.cin, 3, 3], &w),
        Tensor::from_slice(&gpu, &[s.cout], &bias),
    );
    let dyt = Tensor::from_slice(&gpu, &[s.n, s.cout, s.h, s.w], &dy);
    let y_want = s.forward_ref(&x, &w, Some(&bias));
    let dw_want = s.weight_grad_ref(&dy, &x);
    let tol = 1e-5 * (s.cin * 9) as f64;
    let dw_tol = 1e-5 * (s.n * s.h * s.w) as f64;
    for round in ["the rule", "the plan"] {
        let y = conv.forward(&xt, &wt, Some(&bt)).to_vec_blocking().unwrap();
        common::assert_close(&format!("{test}: forward, {round}"), &y, &y_want, tol, 0.0);
        let dw = conv
            .weight_grad(&dyt, &xt, &[s.cout, s.cin, 3, 3])
            .to_vec_blocking()
            .unwrap();
        common::assert_close(
            &format!("{test}: weight grad, {round}"),
            &dw,
            &dw_want,
            dw_tol,
            0.0,
        );
        let done = pollster::block_on(tuner::tune_pending(&gpu));
        match round {
            "the rule" => assert_eq!(done.problems, 2, "forward and weight gradient wait"),
            _ => assert_eq!(done.problems, 0, "both were planned"),
        }
    }
    let plan = tuner::plan(&gpu);
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert!(
        plan.iter().any(|(b, _)| b.starts_with("conv-forward")),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(|(b, _)| b.starts_with("conv-weight-grad")),
        "{plan:?}"
    );
}

/// The browser's clock (submit and wait; timestamps natively) in the deferred pass: whatever
/// wins is a candidate, never slower than the rule, and computes the right product.
#[test]
fn a_measured_deferred_pass_keeps_a_kernel_no_slower_than_the_rule() {
    let test = "a_measured_deferred_pass_keeps_a_kernel_no_slower_than_the_rule";
    let gpu = deferred_gpu();
    let mut rng = common::rng(test);
    // The step goes on with its output in place (here: replaced by other values); the pass's
    // candidates, which do launch now, must leave it so.
    let (c, _) = matmul(&gpu, (24, 37, 90), &mut rng);
    let other = common::uniform(&mut rng, 24 * 90, 1.0);
    c.axpby_inplace(0.0, &Tensor::from_slice(&gpu, &[24, 90], &other), 1.0);
    let done = pollster::block_on(tuner::tune_pending(&gpu));
    assert_eq!(done.problems, 1);
    assert!(
        c.to_vec_blocking().unwrap() == other,
        "the pass wrote into the step's output"
    );
    assert!(done.seconds > 0.0 && done.seconds.is_finite(), "{done:?}");
    let log = tuner::tuned(&gpu);
    assert_eq!(log.len(), 1);
    let t = &log[0];
    assert!(t.candidates >= 3, "{t:?}");
    assert!(t.seconds <= t.rule_seconds, "{t:?}");
    let (c, want) = matmul(&gpu, (24, 37, 90), &mut rng);
    common::assert_close(test, &c.to_vec_blocking().unwrap(), &want, 1e-5 * 37.0, 0.0);
}
