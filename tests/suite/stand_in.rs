//! Kernels with an optional input that is absent get a stand-in buffer bound in its place (their
//! bind group layouts are explicit, gpu/pipelines.rs) and must not read it. The old design read
//! it times 0 to keep the automatic layout's binding: a NaN there made every later matmul, sum
//! and softmax of the process NaN. Here the stand-in is filled with NaN and every kernel with an
//! optional input runs without it, on every GEMM family, against f64 references.

use crate::common;

use common::*;
use fewstep::gpu::KernelVariant;
use fewstep::reference::{matmul_ref, softmax_ref, ConvShape};
use fewstep::tensor::{Conv2d, Tensor};

/// f32 results of short sums and products vs f64 references.
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-5;

#[test]
fn no_kernel_reads_the_stand_in_for_an_absent_input() {
    let g = gpu();
    g.fill_stand_in(f32::NAN);
    let mut r = rng("stand_in");

    let mut families = variants(&g);
    families.push(KernelVariant::Blocked);
    let (m, n, k) = (5, 7, 3);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let want = matmul_ref(&a, &b, 1, m, n, k, false, false);
    let cs = ConvShape {
        n: 2,
        cin: 3,
        h: 5,
        w: 6,
        cout: 4,
        ks: 3,
        stride: 1,
        pad: 1,
    };
    let x = uniform(&mut r, cs.x_len(), 1.0);
    let w = uniform(&mut r, cs.w_len(), 1.0);
    let dy = uniform(&mut r, cs.y_len(), 1.0);
    let conv = Conv2d::same(3);
    for v in families {
        g.set_variant(v);
        let c = Tensor::from_slice(&g, &[m, k], &a)
            .matmul(&Tensor::from_slice(&g, &[k, n], &b))
            .to_vec_blocking()
            .unwrap();
        assert_close(&format!("{v:?} matmul without bias"), &c, &want, ATOL, RTOL);
        let xt = Tensor::from_slice(&g, &[cs.n, cs.cin, cs.h, cs.w], &x);
        let wt = Tensor::from_slice(&g, &[cs.cout, cs.cin, 3, 3], &w);
        let dyt = Tensor::from_slice(&g, &[cs.n, cs.cout, cs.h, cs.w], &dy);
        let y = conv.forward(&xt, &wt, None).to_vec_blocking().unwrap();
        assert_close(
            &format!("{v:?} conv without bias"),
            &y,
            &cs.forward_ref(&x, &w, None),
            ATOL,
            RTOL,
        );
        let dx = conv
            .input_grad(&dyt, &wt, xt.shape())
            .to_vec_blocking()
            .unwrap();
        let dx_want = cs.input_grad_ref(&dy, &w);
        assert_close(&format!("{v:?} conv input grad"), &dx, &dx_want, ATOL, RTOL);
        let dw = conv
            .weight_grad(&dyt, &xt, wt.shape())
            .to_vec_blocking()
            .unwrap();
        let dw_want = cs.weight_grad_ref(&dy, &x);
        assert_close(
            &format!("{v:?} conv weight grad"),
            &dw,
            &dw_want,
            1e-4,
            1e-5,
        );
    }

    // Sums: 16-byte (inner a multiple of 4) and 4-byte loads; plain sums and sums of squares.
    for inner in [8usize, 5] {
        let x = uniform(&mut r, 3 * 4 * inner, 1.0);
        let t = Tensor::from_slice(&g, &[3, 4, inner], &x);
        let total: f64 = x.iter().map(|&v| v as f64).sum();
        let got = t.sum_all(1.0).to_vec_blocking().unwrap();
        assert_close(
            &format!("sum_all inner {inner}"),
            &got,
            &[total],
            ATOL,
            RTOL,
        );
        let mut per_channel = vec![0f64; 4];
        for (i, &v) in x.iter().enumerate() {
            per_channel[(i / inner) % 4] += v as f64;
        }
        let got = t.sum_per_channel().to_vec_blocking().unwrap();
        assert_close(
            &format!("sum_per_channel inner {inner}"),
            &got,
            &per_channel,
            ATOL,
            RTOL,
        );
        let squares: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        let out = Tensor::zeros(&g, &[2]);
        t.sum_squares_into(&out, 1);
        let got = out.to_vec_blocking().unwrap();
        assert_close(
            &format!("sum of squares inner {inner}"),
            &got,
            &[0.0, squares],
            ATOL,
            RTOL,
        );
    }

    // Softmax forward (no Y) in both layouts.
    let len = 10;
    let x = uniform(&mut r, 4 * len, 2.0);
    for alone in [false, true] {
        g.set_softmax_row_per_invocation(Some(alone));
        let got = Tensor::from_slice(&g, &[4, len], &x)
            .softmax(0.5)
            .to_vec_blocking()
            .unwrap();
        let what = format!("softmax, row per invocation {alone}");
        assert_close(&what, &got, &softmax_ref(&x, len, 0.5), ATOL, RTOL);
    }
    g.set_softmax_row_per_invocation(None);

    // Per-sample scaling without the second term.
    let x = uniform(&mut r, 3 * 6, 1.0);
    let sa = uniform(&mut r, 3, 1.0);
    let got = Tensor::from_slice(&g, &[3, 6], &x)
        .per_sample_axpby(&Tensor::from_slice(&g, &[3], &sa), None)
        .to_vec_blocking()
        .unwrap();
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * sa[i / 6] as f64)
        .collect();
    assert_close("per_sample_axpby without y", &got, &want, ATOL, RTOL);

    // Elementwise maps of one input (the second binding is the stand-in).
    let x = uniform(&mut r, 9, 1.0);
    let t = Tensor::from_slice(&g, &[9], &x);
    let xd = to_f64(&x);
    let check = |what: &str, got: Tensor, f: &dyn Fn(f64) -> f64| {
        let want: Vec<f64> = xd.iter().map(|&v| f(v)).collect();
        assert_close(what, &got.to_vec_blocking().unwrap(), &want, ATOL, RTOL);
    };
    check("scale", t.scale(2.5), &|v| 2.5 * v);
    check("silu", t.silu(), &|v| v / (1.0 + (-v).exp()));
    check("square", t.square(), &|v| v * v);
    check("add_scalar", t.add_scalar(0.75), &|v| v + 0.75);
    check("sqrt", t.square().sqrt(), &|v| v.abs());
    check("clamp", t.clamp(-0.5, 0.25), &|v| v.clamp(-0.5, 0.25));
    check("fill", Tensor::full(&g, &[9], 1.5), &|_| 1.5);
    g.fill_stand_in(0.0);
}

/// Pooled buffers are recycled without being cleared: a NaN a 16-byte buffer held from earlier
/// work must not reach a kernel that does not read that buffer's new contents before writing.
#[test]
fn a_nan_left_in_small_pooled_buffers_poisons_no_later_kernel() {
    let g = gpu();
    let poison: Vec<Tensor> = (0..64)
        .map(|_| Tensor::from_slice(&g, &[4], &[f32::NAN; 4]))
        .collect();
    assert!(poison[0].to_vec_blocking().unwrap()[0].is_nan());
    drop(poison);
    // One more submit returns them to the pool.
    let _ = Tensor::from_slice(&g, &[4], &[1.0; 4])
        .to_vec_blocking()
        .unwrap();
    let mut r = rng("stand_in_pool");
    let x = uniform(&mut r, 40, 1.0);
    let xt = Tensor::from_slice(&g, &[4, 10], &x);
    let sum = xt.sum_all(1.0).to_vec_blocking().unwrap();
    let want: f64 = x.iter().map(|&v| v as f64).sum();
    assert_close("sum into a recycled buffer", &sum, &[want], ATOL, RTOL);
    let p = xt.softmax(1.0).to_vec_blocking().unwrap();
    assert_close(
        "softmax into recycled buffers",
        &p,
        &softmax_ref(&x, 10, 1.0),
        ATOL,
        RTOL,
    );
}

/// The layout comes from the binding declarations; what does not follow the one-line
/// convention is refused with the line named, never guessed.
#[test]
fn bindings_are_read_from_the_declarations() {
    use fewstep::gpu::{declared_bindings, BindingKind::*};
    let src = "// @group(0) @binding(9) var<uniform> Commented: P;\n\
               @group(0) @binding(2) var<storage, read_write> OUT: array<f32>;\n\
               @group(0) @binding(0) var<uniform> P: Params;\n\
               @group(0) @binding(1) var<storage,read> X: array<f32>; // input\n\
               @group(0) @binding(3) var<storage> Y: array<f32>;\n\
               var<workgroup> tile: array<f32, 64>;";
    assert_eq!(
        declared_bindings(src).unwrap(),
        vec![
            (0, Uniform),
            (1, StorageRead),
            (2, StorageReadWrite),
            (3, StorageRead)
        ]
    );
    for (bad, why) in [
        ("@group(1) @binding(0) var<uniform> P: Params;", "group 0"),
        (
            "@group(0) @binding(x) var<uniform> P: Params;",
            "not a number",
        ),
        ("@group(0) @binding(0) var<private> P: f32;", "`private`"),
        (
            "@group(0) @binding(0) var<uniform> P: A;\n@group(0) @binding(0) var<uniform> Q: A;",
            "twice",
        ),
    ] {
        let e = declared_bindings(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}
