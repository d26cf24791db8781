//! GPU failures become errors: a kernel that does not build names its variant, a device lost in
//! the middle of a run ends it with a clear message (exit 1, not a panic) and leaves its files
//! intact and resumable, and a job that fails half-way leaves nothing for the next one's submit.

use crate::common;
use common::*;
use fewstep::gpu::{GpuError, KernelKey, KernelSource};
use fewstep::tensor::Tensor;
use std::path::Path;
use std::process::Output;

#[test]
fn an_invalid_kernel_is_an_error_naming_its_variant() {
    let g = gpu();
    let key = KernelKey::new("broken_on_purpose").u32("MODE", 3);
    // A type error naga accepts in no back end: f32 assigned to a u32.
    let _ = g.pipeline(&key, || {
        KernelSource::one(
            "@group(0) @binding(0) var<storage, read_write> OUT: array<u32>;\n\
             @compute @workgroup_size(1) fn main() { let x: u32 = 1.5; OUT[0] = x; }",
        )
    });
    let e = g
        .finish_blocking()
        .expect_err("a kernel that does not build is an error");
    eprintln!("{e}");
    assert!(matches!(e, GpuError::Kernel { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("broken_on_purpose MODE=3u"), "{text}");
    assert!(text.contains("FEWSTEP_KERNELS=tiled"), "{text}");
    // Every later readback says the same instead of returning stale data.
    let t = Tensor::from_slice(&g, &[4], &[1.0, 2.0, 3.0, 4.0]);
    assert!(t.to_vec_blocking().is_err());
}

/// A job records work into a tensor the next job reads, then fails before submitting; with its
/// batch discarded, the next job sees the tensor as it was.
#[test]
fn a_failed_job_leaves_nothing_for_the_next() {
    let g = gpu();
    let kept = Tensor::from_slice(&g, &[8], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    g.flush();
    let nan = Tensor::full(&g, &[8], f32::NAN);
    let job = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kept.axpby_inplace(0.0, &nan, 1.0); // recorded, not submitted
        panic!("a bug half-way through a job");
    }));
    assert!(job.is_err());
    assert!(g.pending() > 0, "the failed job left launches recorded");
    assert!(g.discard_pending() > 0);
    assert_eq!(g.pending(), 0);
    let doubled = kept.scale(2.0).to_vec_blocking().unwrap();
    assert_eq!(doubled, vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
}

fn train(imgs: &Path, out: &Path, extra: &[&str], lose_at: Option<u64>) -> Output {
    let mut cmd = crate::common::bin::command();
    let mut words = vec!["--steps", "6"];
    words.extend_from_slice(extra);
    cmd.args(common::bin::tiny_train_args(imgs, out, &words));
    match lose_at {
        Some(n) => cmd.env("FEWSTEP_TEST_LOSE_DEVICE_AT", n.to_string()),
        None => cmd.env_remove("FEWSTEP_TEST_LOSE_DEVICE_AT"),
    };
    let out = cmd.output().expect("the fewstep binary runs");
    eprintln!(
        "$ fewstep train ... (lose the device at {lose_at:?})\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_lost_device_ends_a_run_clearly_and_its_files_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    common::bin::write_images(&imgs);
    let whole = tmp.path().join("whole");
    let lost = tmp.path().join("lost");
    assert!(train(&imgs, &whole, &[], None).status.success());

    // The device goes after update 3: the log of update 3 reads the loss back and finds it.
    let o = train(&imgs, &lost, &[], Some(3));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit 1 with a message, not a panic:\n{err}"
    );
    assert!(err.contains("was lost"), "{err}");
    assert!(err.contains("FEWSTEP_BACKEND"), "names what to try:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The checkpoint of update 2 is intact, and the run resumes from it to the same model.
    assert!(lost.join("model.safetensors").exists());
    assert!(train(&imgs, &lost, &["--resume"], None).status.success());
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(lost.join("model.safetensors")).unwrap(),
        "resumed after the lost device: the same model as the uninterrupted run"
    );
}
