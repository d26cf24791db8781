//! Matrix products and convolutions, all on one GEMM core (gemm_tiled.wgsl, or gemm_subgroup.wgsl
//! where subgroups are available) with a small loader file per operand layout: plain matmul, and
//! the three passes of a convolution as implicit GEMMs (no im2col buffer is ever materialised).

use std::borrow::Cow;

use bytemuck::{Pod, Zeroable};

use super::{dummy, Tensor};
use crate::gpu::{Dispatch, Gpu, KernelKey, KernelSource, KernelVariant};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    sa: u32,
    sb: u32,
    sc: u32,
    alpha: f32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad: u32,
    ks: u32,
    beta: f32,
    bias_scale: f32,
    bias_per_col: u32,
    k_total: u32,
    _pad: [u32; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loader {
    Matmul { trans_a: bool, trans_b: bool },
    ConvForward,
    ConvInputGrad,
    ConvWeightGrad,
}

impl Loader {
    fn name(self) -> &'static str {
        match self {
            Loader::Matmul { .. } => "matmul",
            Loader::ConvForward => "conv_forward",
            Loader::ConvInputGrad => "conv_input_grad",
            Loader::ConvWeightGrad => "conv_weight_grad",
        }
    }
    fn text(self) -> &'static str {
        match self {
            Loader::Matmul { .. } => include_str!("../../shaders/gemm_load_matmul.wgsl"),
            Loader::ConvForward => include_str!("../../shaders/gemm_load_conv_forward.wgsl"),
            Loader::ConvInputGrad => include_str!("../../shaders/gemm_load_conv_input_grad.wgsl"),
            Loader::ConvWeightGrad => include_str!("../../shaders/gemm_load_conv_weight_grad.wgsl"),
        }
    }
}

/// Rows per subgroup workgroup: a multiple of the subgroup size, at least 32.
fn subgroup_rows(sg: u32) -> u32 {
    sg.max(32)
}

/// Expands the marked lines of gemm_subgroup.wgsl: `subgroupBroadcast` takes a constant lane.
fn subgroup_core(sg: u32) -> String {
    let tm = subgroup_rows(sg);
    let mut declare = String::new();
    let mut load_a = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for r in 0..tm {
        declare += &format!("    var acc{r} = vec4<f32>(0.0);\n");
        fma += &format!(
            "        acc{r} = fma(vec4<f32>(subgroupBroadcast(a{j}, {l}u)), bv, acc{r});\n",
            j = r / sg,
            l = r % sg
        );
        store += &format!(
            "    if (row0 + {r}u < P.m) {{ for (var j = 0u; j < 4u; j++) {{ if (col + j < P.n) {{ store_c(b, row0 + {r}u, col + j, acc{r}[j]); }} }} }}\n"
        );
    }
    for j in 0..tm / sg {
        load_a += &format!(
            "        var a{j} = 0.0;\n        let r{j} = row0 + {j}u * SG + lane;\n        if (r{j} < P.m) {{ a{j} = load_ak(b, ks, r{j}); }}\n"
        );
    }
    include_str!("../../shaders/gemm_subgroup.wgsl")
        .replace("//@DECLARE\n", &declare)
        .replace("//@LOAD_A\n", &load_a)
        .replace("//@FMA\n", &fma)
        .replace("//@STORE\n", &store)
}

fn launch(
    gpu: &Gpu,
    loader: Loader,
    mut p: GemmParams,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
) {
    let variant = gpu.variant();
    let (ta, tb) = match loader {
        Loader::Matmul { trans_a, trans_b } => (trans_a, trans_b),
        _ => (false, false),
    };
    let mut key = KernelKey::new(loader.name())
        .flag("TRANS_A", ta)
        .flag("TRANS_B", tb);
    let sg = gpu.subgroup_size();
    let workgroups = match variant {
        KernelVariant::Tiled => [p.n.div_ceil(64), p.m.div_ceil(64), p.batch],
        KernelVariant::Subgroup => {
            key = key.u32("SG", sg).u32("TM", subgroup_rows(sg));
            [
                p.n.div_ceil(sg * 4),
                p.m.div_ceil(subgroup_rows(sg)),
                p.batch,
            ]
        }
    };
    let pipeline = gpu.pipeline(&key, || {
        let core: Cow<'static, str> = match variant {
            KernelVariant::Tiled => include_str!("../../shaders/gemm_tiled.wgsl").into(),
            KernelVariant::Subgroup => subgroup_core(sg).into(),
        };
        KernelSource {
            parts: vec![
                include_str!("../../shaders/gemm_common.wgsl").into(),
                loader.text().into(),
                core,
            ],
        }
    });
    let bias_bind = match bias {
        Some(t) => {
            p.bias_scale = 1.0;
            t.bind()
        }
        None => dummy(gpu),
    };
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    assert!(
        workgroups[0] <= max && workgroups[1] <= max && workgroups[2] <= max,
        "GEMM {}x{}x{} (batch {}) needs {:?} workgroups, over the device limit {max}",
        p.m,
        p.n,
        p.k,
        p.batch,
        workgroups
    );
    gpu.dispatch(Dispatch {
        pipeline,
        params: bytemuck::bytes_of(&p).to_vec(),
        buffers: vec![a.bind(), b.bind(), c.bind(), bias_bind],
        workgroups,
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
}

impl Default for MatmulOpts {
    fn default() -> Self {
        MatmulOpts {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
        }
    }
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
        launch(
            self.gpu(),
            Loader::Matmul {
                trans_a: o.trans_a,
                trans_b: o.trans_b,
            },
            p,
            self,
            b,
            &c,
            bias_per_col,
        );
        c
    }
}

/// Geometry of a 2-D convolution with square kernels, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    pub fn same(ks: usize) -> Conv2d {
        Conv2d {
            stride: 1,
            pad: ks / 2,
        }
    }
    pub fn out_size(&self, input: usize, ks: usize) -> usize {
        (input + 2 * self.pad - ks) / self.stride + 1
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
            x_shape[2] + 2 * self.pad >= ks && x_shape[3] + 2 * self.pad >= ks,
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

    /// y = conv(x, w) + bias; x [N, Cin, H, W], w [Cout, Cin, ks, ks], bias [Cout].
    pub fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let mut p = self.params(x.shape(), w.shape());
        let n_img = x.shape()[0];
        p.m = p.cout;
        p.n = n_img as u32 * p.oh * p.ow;
        p.k = p.cin * p.ks * p.ks;
        let y = Tensor::empty(
            x.gpu(),
            &[n_img, p.cout as usize, p.oh as usize, p.ow as usize],
        );
        launch(x.gpu(), Loader::ConvForward, p, w, x, &y, bias);
        y
    }

    /// dL/dx given dL/dy.
    pub fn input_grad(&self, dy: &Tensor, w: &Tensor, x_shape: &[usize]) -> Tensor {
        let mut p = self.params(x_shape, w.shape());
        assert_eq!(
            dy.shape(),
            [x_shape[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cin;
        p.n = (x_shape[0] * x_shape[2] * x_shape[3]) as u32;
        p.k = p.cout * p.ks * p.ks;
        let dx = Tensor::empty(dy.gpu(), x_shape);
        launch(dy.gpu(), Loader::ConvInputGrad, p, w, dy, &dx, None);
        dx
    }

    /// dL/dw given dL/dy and the forward input x.
    pub fn weight_grad(&self, dy: &Tensor, x: &Tensor, w_shape: &[usize]) -> Tensor {
        let mut p = self.params(x.shape(), w_shape);
        assert_eq!(
            dy.shape(),
            [x.shape()[0], p.cout as usize, p.oh as usize, p.ow as usize]
        );
        p.m = p.cout;
        p.n = p.cin * p.ks * p.ks;
        p.k_total = x.shape()[0] as u32 * p.oh * p.ow;
        let gpu = dy.gpu();
        let parts = split_k_parts(gpu, p.m, p.n, p.k_total);
        p.k = p.k_total.div_ceil(parts);
        p.batch = parts;
        p.sc = p.m * p.n;
        if parts == 1 {
            let dw = Tensor::empty(gpu, w_shape);
            launch(gpu, Loader::ConvWeightGrad, p, dy, x, &dw, None);
            return dw;
        }
        let partial = Tensor::empty(gpu, &[parts as usize, p.sc as usize]);
        launch(gpu, Loader::ConvWeightGrad, p, dy, x, &partial, None);
        split_sum(&partial, w_shape)
    }
}

/// How many K chunks a GEMM with a small M x N and a long K is split into: enough workgroups to
/// fill a large GPU (~512), chunks of at least 1024 along K.
fn split_k_parts(gpu: &Gpu, m: u32, n: u32, k: u32) -> u32 {
    let (tm, tn) = match gpu.variant() {
        KernelVariant::Tiled => (64, 64),
        KernelVariant::Subgroup => {
            let sg = gpu.subgroup_size();
            (subgroup_rows(sg), sg * 4)
        }
    };
    let tiles = m.div_ceil(tm) * n.div_ceil(tn);
    k.div_ceil(1024).min(512u32.div_ceil(tiles)).max(1)
}

/// Sums the slices of `partial` [parts, len] into one tensor of `shape` (len values).
fn split_sum(partial: &Tensor, shape: &[usize]) -> Tensor {
    let gpu = partial.gpu();
    let (parts, len) = (partial.shape()[0], partial.shape()[1]);
    let out = Tensor::empty(gpu, shape);
    assert_eq!(out.numel(), len);
    let pipeline = gpu.pipeline(&KernelKey::new("split_sum"), || {
        KernelSource::one(include_str!("../../shaders/split_sum.wgsl"))
    });
    gpu.dispatch(Dispatch {
        pipeline,
        params: bytemuck::cast_slice(&[len as u32, parts as u32, 0, 0]).to_vec(),
        buffers: vec![partial.bind(), out.bind()],
        workgroups: super::groups_for(gpu, len),
    });
    out
}
