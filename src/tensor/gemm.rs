//! Matrix products and convolutions, all on one GEMM core (gemm_blocked.wgsl on real GPUs,
//! gemm_subgroup.wgsl on CPU adapters with subgroups, gemm_tiled.wgsl as the portable fallback)
//! with a small loader file per operand layout: plain matmul, and the three passes of a
//! convolution as implicit GEMMs (no im2col buffer is ever materialised).

use super::gemm_core::GemmCore;
use super::gemm_kernels::{
    abs_max_def, gemm_def_faulty, split_sum_def, AbsMaxParams, GemmParams, Loader, SplitSumParams,
};
use super::params::WgslParams;
use super::tuner::{self, Choice, Problem};
use super::{stand_in, Tensor};
use crate::gpu::{Dispatch, Gpu};

/// What the epilogue adds to alpha * A B besides beta * C: a bias (per row, or per column for
/// matmul) and a residual; and which operands are gradients (A, B), whose values mostly sit
/// below f16's normal range: the cooperative-matrix core scales those by a power of 2 before
/// rounding them (gemm_coop.wgsl), the f32 cores ignore it.
#[derive(Clone, Copy, Default)]
struct Adds<'a> {
    bias: Option<&'a Tensor>,
    residual: Option<Residual<'a>>,
    gradients: (bool, bool),
    /// The coop core's SCALE_BITS for these operands, taken already ([`Conv2d::backward`]
    /// takes dy's once for both passes); `None`: taken by the launch.
    scale: Option<&'a Tensor>,
}

/// What a convolution adds to its output in the same launch, besides its bias.
#[derive(Clone, Copy, Debug)]
pub enum Residual<'a> {
    /// A tensor of the output's shape (a U-Net block's skip connection).
    Full(&'a Tensor),
    /// One value per image and output channel, [N, Cout] (the time embedding).
    PerImageChannel(&'a Tensor),
}

fn launch(
    gpu: &Gpu,
    loader: Loader,
    p: GemmParams,
    operands: (&Tensor, &Tensor, &Tensor),
    adds: Adds,
) {
    let problem = Problem {
        loader,
        m: p.m,
        n: p.n,
        k: p.k,
        batch: p.batch,
    };
    let choice = tuner::choose(
        gpu,
        problem,
        &mut |c| launch_on(gpu, c.core, false, loader, p, operands, adds),
        &|| replay(gpu, loader, p, operands, adds),
    );
    gpu.note_gemm(choice.core.family(), choice.core.tile());
    census::note(loader, operands.0, operands.1, adds.gradients);
    launch_on(gpu, choice.core, false, loader, p, operands, adds);
}

/// The launch again for deferred tuning (`tuner::tune_pending`): the operands and adds held
/// (cheap clones of their buffers), the output a scratch tensor of its shape, so the run's own
/// output keeps what its launch wrote.
fn replay(
    gpu: &Gpu,
    loader: Loader,
    p: GemmParams,
    (a, b, c): (&Tensor, &Tensor, &Tensor),
    adds: Adds,
) -> tuner::Replay {
    let (gpu, a, b) = (gpu.clone(), a.clone(), b.clone());
    let out = Tensor::empty(&gpu, c.shape());
    let bias = adds.bias.cloned();
    let residual = adds.residual.map(|r| match r {
        Residual::Full(t) => (true, t.clone()),
        Residual::PerImageChannel(t) => (false, t.clone()),
    });
    let scale = adds.scale.cloned();
    let gradients = adds.gradients;
    Box::new(move |choice: Choice| {
        let residual = residual.as_ref().map(|(full, t)| match full {
            true => Residual::Full(t),
            false => Residual::PerImageChannel(t),
        });
        let adds = Adds {
            bias: bias.as_ref(),
            residual,
            gradients,
            scale: scale.as_ref(),
        };
        launch_on(&gpu, choice.core, false, loader, p, (&a, &b, &out), adds);
    })
}

/// [`launch`] on a given core (the cooperative-matrix self-check runs each tile itself);
/// `fault` is that core's deliberate fault (gemm_coop.rs).
fn launch_on(
    gpu: &Gpu,
    core: GemmCore,
    fault: bool,
    loader: Loader,
    mut p: GemmParams,
    (a, b, c): (&Tensor, &Tensor, &Tensor),
    Adds {
        bias,
        residual,
        gradients,
        scale,
    }: Adds,
) {
    let (bm, bn, ..) = core.tile();
    let workgroups = [p.n.div_ceil(bn), p.m.div_ceil(bm), p.batch];
    let pipeline = super::pipeline_of(gpu, gemm_def_faulty(core, loader, fault));
    let bias_bind = match bias {
        Some(t) => {
            p.bias_scale = 1.0;
            t.bind()
        }
        None => stand_in(gpu),
    };
    // Shapes are checked by the caller (Conv2d::forward_add, the only one with a residual).
    let res_bind = match residual {
        Some(Residual::Full(t)) => {
            p.residual = 1;
            t.bind()
        }
        Some(Residual::PerImageChannel(t)) => {
            assert_eq!(
                loader,
                Loader::ConvForward,
                "per-channel residuals: conv forward only"
            );
            p.residual = 2;
            t.bind()
        }
        None => stand_in(gpu),
    };
    let workgroups = fold_grid(gpu, &mut p, workgroups);
    let mut buffers = vec![a.bind(), b.bind(), c.bind(), bias_bind, res_bind];
    if matches!(core, GemmCore::Coop(_)) {
        buffers.push(match scale {
            Some(bits) => bits.bind(),
            None => scale_bits(gpu, [(gradients.0, a), (gradients.1, b)]),
        });
    }
    gpu.dispatch(Dispatch {
        pipeline,
        params: p.bytes(),
        buffers,
        workgroups,
    });
}

/// The cooperative-matrix core's SCALE_BITS: the largest |value| of each marked operand (as f32
/// bits; 0 for an unmarked one, which is not scaled). A zero-filled stand-in when none is
/// marked.
fn scale_bits(gpu: &Gpu, operands: [(bool, &Tensor); 2]) -> crate::gpu::Binding {
    if !operands.iter().any(|(marked, _)| *marked) {
        return stand_in(gpu);
    }
    let bits = Tensor::zeros(gpu, &[2]);
    for (slot, (marked, t)) in operands.iter().enumerate() {
        if *marked {
            abs_max_into(gpu, t, &bits, slot as u32);
        }
    }
    bits.bind()
}

/// Writes the largest |value| of `t` (as f32 bits) into element `slot` of `bits`.
fn abs_max_into(gpu: &Gpu, t: &Tensor, bits: &Tensor, slot: u32) {
    let len = t.numel() as u32;
    gpu.dispatch(Dispatch {
        pipeline: super::pipeline_of(gpu, abs_max_def()),
        params: AbsMaxParams {
            len,
            slot,
            ..Default::default()
        }
        .bytes(),
        buffers: vec![t.bind(), bits.bind()],
        // Up to 8 values per invocation before the grid-stride loop wraps, at most 1024
        // workgroups.
        workgroups: [len.div_ceil(256 * 8).clamp(1, 1024), 1, 1],
    });
}

/// Options of [`Tensor::matmul_with`].
#[derive(Clone, Copy, Debug)]
pub struct MatmulOpts {
    /// Use A^T (A stored as [K, M]).
    pub trans_a: bool,
    /// Use B^T (B stored as [N, K]).
    pub trans_b: bool,
    pub alpha: f32,
    /// Which operands (A, B) are gradients: the cooperative-matrix family scales them by a
    /// power of 2 before rounding to f16 (their values sit mostly below f16's normal range).
    pub gradients: (bool, bool),
}

impl Default for MatmulOpts {
    fn default() -> Self {
        MatmulOpts {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            gradients: (false, false),
        }
    }
}

/// Fits the grid [column tiles, row tiles, batch] into the per-dimension limit. Tiles beyond it
/// are folded into z: z = batch index + batch x (column fold + column folds x row fold), and the
/// kernels (gemm_common.wgsl `grid_*`) recover the tile and skip tiles past M or N. A `tiny`
/// convolution over 4.2M pixels (N / 64 > 65535 column tiles) is the case this exists for.
fn fold_grid(gpu: &Gpu, p: &mut GemmParams, [x, y, z]: [u32; 3]) -> [u32; 3] {
    let max = gpu.grid_limit();
    let (fx, fy) = (x.div_ceil(max), y.div_ceil(max));
    let (cols, rows) = (x.div_ceil(fx), y.div_ceil(fy));
    let slices = z as u64 * fx as u64 * fy as u64;
    assert!(
        slices <= max as u64,
        "GEMM {}x{}x{} (batch {}) needs [{x}, {y}, {z}] workgroups: over the device limit {max} \
         even folded",
        p.m,
        p.n,
        p.k,
        p.batch
    );
    p.row_groups = rows;
    p.col_groups = cols;
    p.col_folds = fx;
    [cols, rows, slices as u32]
}

fn split_batch(t: &Tensor) -> (usize, usize, usize) {
    let s = t.shape();
    match s.len() {
        2 => (1, s[0], s[1]),
        3 => (s[0], s[1], s[2]),
        _ => panic!("matmul operands are [rows, cols] or [batch, rows, cols], got {s:?}"),
    }
}

impl Tensor {
    pub fn matmul(&self, b: &Tensor) -> Tensor {
        self.matmul_with(b, MatmulOpts::default(), None)
    }

    /// Batched C = alpha * op(A) op(B) (+ bias per column of C). A 2-D operand is shared across
    /// the batch of the other.
    pub fn matmul_with(&self, b: &Tensor, o: MatmulOpts, bias_per_col: Option<&Tensor>) -> Tensor {
        self.matmul_impl(b, o, bias_per_col, None)
    }

    /// [`Self::matmul_with`] on one GEMM core, whatever the device's family (the
    /// cooperative-matrix self-check); `fault` is that core's deliberate fault.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn matmul_on(
        &self,
        b: &Tensor,
        o: MatmulOpts,
        bias_per_col: Option<&Tensor>,
        core: GemmCore,
        fault: bool,
    ) -> Tensor {
        self.matmul_impl(b, o, bias_per_col, Some((core, fault)))
    }

    fn matmul_impl(
        &self,
        b: &Tensor,
        o: MatmulOpts,
        bias_per_col: Option<&Tensor>,
        on: Option<(GemmCore, bool)>,
    ) -> Tensor {
        let (ba, ra, ca) = split_batch(self);
        let (bb, rb, cb) = split_batch(b);
        let (m, k) = if o.trans_a { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if o.trans_b { (cb, rb) } else { (rb, cb) };
        assert_eq!(
            k,
            k2,
            "matmul inner dimensions differ: {:?} x {:?} ({o:?})",
            self.shape(),
            b.shape()
        );
        assert!(
            ba == bb || ba == 1 || bb == 1,
            "matmul batch sizes differ: {ba} vs {bb}"
        );
        let batch = ba.max(bb);
        let out_shape: Vec<usize> = if self.shape().len() == 3 || b.shape().len() == 3 {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        let c = Tensor::empty(self.gpu(), &out_shape);
        if let Some(bias) = bias_per_col {
            assert_eq!(
                bias.numel(),
                n,
                "bias must have one value per output column"
            );
        }
        let p = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: batch as u32,
            sa: if ba == 1 { 0 } else { (m * k) as u32 },
            sb: if bb == 1 { 0 } else { (k * n) as u32 },
            sc: (m * n) as u32,
            alpha: o.alpha,
            bias_per_col: 1,
            ..Default::default()
        };
        let loader = Loader::Matmul {
            trans_a: o.trans_a,
            trans_b: o.trans_b,
        };
        let adds = Adds {
            bias: bias_per_col,
            residual: None,
            gradients: o.gradients,
            scale: None,
        };
        match on {
            None => launch(self.gpu(), loader, p, (self, b, &c), adds),
            Some((core, fault)) => {
                launch_on(self.gpu(), core, fault, loader, p, (self, b, &c), adds)
            }
        }
        c
    }
}

/// Geometry of a 2-D convolution with square kernels, zero padding: `pad` on every side, plus
/// `pad_end` more at the bottom and the right (diffusers' `downsample_padding = 0` pads only
/// there). The kernels read zeros outside the input, so only the output size depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: usize,
    pub pad_end: usize,
}

impl Conv2d {
    pub fn same(ks: usize) -> Conv2d {
        Conv2d {
            stride: 1,
            pad: ks / 2,
            pad_end: 0,
        }
    }
    pub fn out_size(&self, input: usize, ks: usize) -> usize {
        (input + 2 * self.pad + self.pad_end - ks) / self.stride + 1
    }

    fn params(&self, x_shape: &[usize], w_shape: &[usize]) -> GemmParams {
        let (cout, cin, ks) = (w_shape[0], w_shape[1], w_shape[2]);
        assert_eq!(w_shape[2], w_shape[3], "square kernels only");
        assert_eq!(
            x_shape[1], cin,
            "conv input has {} channels, weights expect {cin}",
            x_shape[1]
        );
        assert!(
            x_shape[2] + 2 * self.pad + self.pad_end >= ks
                && x_shape[3] + 2 * self.pad + self.pad_end >= ks,
            "input smaller than kernel"
        );
        GemmParams {
            batch: 1,
            alpha: 1.0,
            cin: cin as u32,
            h: x_shape[2] as u32,
            w: x_shape[3] as u32,
            cout: cout as u32,
            oh: self.out_size(x_shape[2], ks) as u32,
            ow: self.out_size(x_shape[3], ks) as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            ks: ks as u32,
            ..Default::default()
        }
    }

    /// y = conv(x, w) + bias; x [N, Cin, H, W], w [Cout, Cin, ks, ks], bias \[Cout\].
    pub fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.forward_add(x, w, bias, None)
    }

    /// y = conv(x, w) + bias + residual in one launch (the add in the GEMM epilogue).
    pub fn forward_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<Residual>,
    ) -> Tensor {
        let mut p = self.params(x.shape(), w.shape());
        let n_img = x.shape()[0];
        p.m = p.cout;
        p.n = n_img as u32 * p.oh * p.ow;
        p.k = p.cin * p.ks * p.ks;
        let y = Tensor::empty(
            x.gpu(),
            &[n_img, p.cout as usize, p.oh as usize, p.ow as usize],
        );
        match residual {
            Some(Residual::Full(r)) => {
                assert_eq!(r.shape(), y.shape(), "the residual has the output's shape")
            }
            Some(Residual::PerImageChannel(r)) => assert_eq!(
                r.numel(),
                n_img * p.cout as usize,
                "a per-channel residual has one value per image and output channel"
            ),
            None => {}
        }
        launch(
            x.gpu(),
            Loader::ConvForward,
            p,
            (w, x, &y),
            Adds {
                bias,
                residual,
                gradients: (false, false),
                scale: None,
            },
        );
        y
    }

    /// dL/dx and dL/dw given dL/dy, each where asked for. On the cooperative-matrix family
    /// dy's largest |value| (its f16 scaling) is taken once for both passes.
    pub fn backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        (need_x, need_w): (bool, bool),
    ) -> (Option<Tensor>, Option<Tensor>) {
        let gpu = dy.gpu();
        let shared =
            (need_x && need_w && gpu.variant() == crate::gpu::KernelVariant::Coop).then(|| {
                // dy is the weight gradient's A (slot 0) and the input gradient's B (slot 1).
                let as_a = Tensor::zeros(gpu, &[2]);
                abs_max_into(gpu, dy, &as_a, 0);
                let as_b = Tensor::zeros(gpu, &[2]);
                gpu.copy(as_a.bind(), 0, as_b.bind(), 4, 4);
                (as_a, as_b)
            });
        let (for_w, for_x) = match &shared {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        (
            need_x.then(|| self.input_grad_scaled(dy, w, x.shape(), for_x)),
            need_w.then(|| self.weight_grad_scaled(dy, x, w.shape(), for_w)),
        )
    }

    /// dL/dx given dL/dy.
    pub fn input_grad(&self, dy: &Tensor, w: &Tensor, x_shape: &[usize]) -> Tensor {
        self.input_grad_scaled(dy, w, x_shape, None)
    }

    fn input_grad_scaled(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &[usize],
        scale: Option<&Tensor>,
    ) -> Tensor {
        let mut p = self.params(x_shape, w.shape());
        assert_eq!(
            dy.shape(),
            [x_shape[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cin;
        p.n = (x_shape[0] * x_shape[2] * x_shape[3]) as u32;
        p.k = p.cout * p.ks * p.ks;
        let dx = Tensor::empty(dy.gpu(), x_shape);
        launch(
            dy.gpu(),
            Loader::ConvInputGrad,
            p,
            (w, dy, &dx),
            Adds {
                gradients: (false, true),
                scale,
                ..Adds::default()
            },
        );
        dx
    }

    /// dL/dw given dL/dy and the forward input x.
    pub fn weight_grad(&self, dy: &Tensor, x: &Tensor, w_shape: &[usize]) -> Tensor {
        self.weight_grad_scaled(dy, x, w_shape, None)
    }

    fn weight_grad_scaled(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_shape: &[usize],
        scale: Option<&Tensor>,
    ) -> Tensor {
        let mut p = self.params(x.shape(), w_shape);
        assert_eq!(
            dy.shape(),
            [x.shape()[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cout;
        p.n = p.cin * p.ks * p.ks;
        p.k_total = x.shape()[0] as u32 * p.oh * p.ow;
        let problem = Problem {
            loader: Loader::ConvWeightGrad,
            m: p.m,
            n: p.n,
            k: p.k_total,
            batch: 1,
        };
        let choice = tuner::choose(
            dy.gpu(),
            problem,
            &mut |c| {
                weight_grad_on(c, p, dy, x, w_shape, scale);
            },
            &|| {
                let (dy, x, w_shape) = (dy.clone(), x.clone(), w_shape.to_vec());
                let scale = scale.cloned();
                Box::new(move |c| {
                    weight_grad_on(c, p, &dy, &x, &w_shape, scale.as_ref());
                })
            },
        );
        dy.gpu().note_gemm(choice.core.family(), choice.core.tile());
        census::note(Loader::ConvWeightGrad, dy, x, (true, false));
        weight_grad_on(choice, p, dy, x, w_shape, scale)
    }
}

/// The weight gradient on one kernel, K split into `choice.parts` slices (summed after).
fn weight_grad_on(
    choice: Choice,
    mut p: GemmParams,
    dy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    scale: Option<&Tensor>,
) -> Tensor {
    let gpu = dy.gpu();
    let parts = choice.parts.clamp(1, p.k_total.max(1));
    p.k = p.k_total.div_ceil(parts);
    p.batch = parts;
    p.sc = p.m * p.n;
    let adds = Adds {
        gradients: (true, false),
        scale,
        ..Adds::default()
    };
    if parts == 1 {
        let dw = Tensor::empty(gpu, w_shape);
        launch_on(
            gpu,
            choice.core,
            false,
            Loader::ConvWeightGrad,
            p,
            (dy, x, &dw),
            adds,
        );
        return dw;
    }
    let partial = Tensor::empty(gpu, &[parts as usize, p.sc as usize]);
    launch_on(
        gpu,
        choice.core,
        false,
        Loader::ConvWeightGrad,
        p,
        (dy, x, &partial),
        adds,
    );
    split_sum(&partial, w_shape)
}

/// Sums the slices of `partial` [parts, len] into one tensor of `shape` (len values).
fn split_sum(partial: &Tensor, shape: &[usize]) -> Tensor {
    let gpu = partial.gpu();
    let (parts, len) = (partial.shape()[0], partial.shape()[1]);
    let out = Tensor::empty(gpu, shape);
    assert_eq!(out.numel(), len);
    let vec4 = len % 4 == 0;
    let pipeline = super::pipeline_of(gpu, split_sum_def(vec4));
    // 16 columns (of 4 values with vec4) per workgroup.
    let columns = if vec4 { len / 4 } else { len };
    gpu.dispatch(Dispatch {
        pipeline,
        params: SplitSumParams {
            len: len as u32,
            parts: parts as u32,
            ..Default::default()
        }
        .bytes(),
        buffers: vec![partial.bind(), out.bind()],
        workgroups: gpu.grid_1d(columns.div_ceil(16) as u32),
    });
    out
}

/// The operands of the GEMMs launched on this thread while a census is on: what a measurement
/// of f16's range needs (how many values each kind of GEMM would round below f16's normal range,
/// tests/suite/coop/runs.rs). Off, it costs one thread-local read per launch.
pub mod census {
    use super::{Loader, Tensor};
    use std::cell::RefCell;

    thread_local! {
        static TAKEN: RefCell<Option<Vec<Taken>>> = const { RefCell::new(None) };
    }

    /// Starts recording (dropping anything recorded before).
    pub fn start() {
        TAKEN.with(|t| *t.borrow_mut() = Some(Vec::new()));
    }

    /// One GEMM's pass ("matmul", "conv forward", "conv input grad" or "conv weight grad") and
    /// its operands A and B, each with whether it is a gradient (scaled on the coop family).
    pub type Taken = (&'static str, [(Tensor, bool); 2]);

    /// Stops recording: each GEMM since [`start`].
    pub fn take() -> Vec<Taken> {
        TAKEN.with(|t| t.borrow_mut().take()).unwrap_or_default()
    }

    pub(super) fn note(loader: Loader, a: &Tensor, b: &Tensor, (ga, gb): (bool, bool)) {
        TAKEN.with(|t| {
            if let Some(v) = t.borrow_mut().as_mut() {
                let pass = match loader {
                    Loader::Matmul { .. } => "matmul",
                    Loader::ConvForward => "conv forward",
                    Loader::ConvInputGrad => "conv input grad",
                    Loader::ConvWeightGrad => "conv weight grad",
                };
                v.push((pass, [(a.clone(), ga), (b.clone(), gb)]));
            }
        });
    }
}
