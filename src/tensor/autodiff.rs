//! Reverse-mode automatic differentiation with a tape.
//!
//! Design: every differentiable op runs its forward kernel immediately (recording launches into the
//! current batch) and, when an input needs a gradient, pushes one [`Node`] onto the [`Tape`]: the
//! ids of its inputs and a small struct implementing [`Backward`] that owns exactly the tensors the
//! backward pass needs (its typed saved state). `Tape::backward` walks the nodes in reverse and
//! launches each op's backward kernels, summing gradients per variable.
//!
//! An op's arity is part of its backward unit's type: a unit implements `Backward<N>` for an op of
//! `N` inputs, taking `[bool; N]` (which inputs need a gradient) and returning `[Option<Tensor>; N]`,
//! so a unit cannot return the wrong number of gradients, and `Tape::record` takes exactly `N`
//! inputs for it. On the tape a unit sits behind the object-safe `Propagate` adapter together
//! with its `N` input ids; the adapter turns the ids into `needs` and adds the gradients back into
//! the tape's per-variable list.
//!
//! Why a tape rather than a hand-written backward per layer: the U-Net composes the same dozen ops
//! in many arrangements (res blocks with and without skip convs, attention at some levels, skip
//! concatenations), and distillation differentiates only the student while the teacher's forward
//! passes run without recording. A tape gets every arrangement right once the ops are right, and
//! each op's backward is tested on its own against finite differences. Nothing is read back: the
//! forward, the backward and the optimizer of one step are all recorded into one submit.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Conv2d, GroupNormStats, MatmulOpts, Residual, Tensor};

/// The backward of an op with `N` inputs: maps the gradient of its output to gradients of its
/// inputs, in input order. `needs[i]` says whether input `i` wants a gradient; the unit may return
/// `None` there (and may skip the work), and a gradient returned where none is needed is dropped.
///
/// A unit that returns the wrong number of gradients does not compile:
///
/// ```compile_fail,E0308
/// use fewstep::tensor::{autodiff::Backward, Tensor};
/// struct TwoInputs;
/// impl Backward<2> for TwoInputs {
///     fn backward(&self, g: &Tensor, _needs: [bool; 2]) -> [Option<Tensor>; 2] {
///         [Some(g.clone())]
///     }
/// }
/// ```
pub trait Backward<const N: usize> {
    fn backward(&self, grad: &Tensor, needs: [bool; N]) -> [Option<Tensor>; N];
}

/// The object-safe face of a recorded op: given the gradient of its output, adds the gradients of
/// its inputs into `grads` (indexed by variable id).
trait Propagate {
    fn propagate(&self, grad: &Tensor, grads: &mut [Option<Tensor>]);
}

/// A backward unit with the ids of its `N` inputs (`None` for constants).
struct Recorded<B, const N: usize> {
    inputs: [Option<usize>; N],
    op: B,
}

impl<B: Backward<N>, const N: usize> Propagate for Recorded<B, N> {
    fn propagate(&self, grad: &Tensor, grads: &mut [Option<Tensor>]) {
        let needs = self.inputs.map(|i| i.is_some());
        let gin = self.op.backward(grad, needs);
        for (slot, gi) in self.inputs.iter().zip(gin) {
            if let (Some(id), Some(gi)) = (slot, gi) {
                grads[*id] = Some(match grads[*id].take() {
                    Some(prev) => prev.add(&gi),
                    None => gi,
                });
            }
        }
    }
}

struct Node {
    output: usize,
    op: Box<dyn Propagate>,
}

struct TapeInner {
    nodes: Vec<Node>,
    vars: usize,
    /// var id -> index of the parameter it stands for
    params: Vec<(usize, usize)>,
    /// Which recording this is (unique across tapes, new after each backward): a var's id means
    /// something only within the recording that made it.
    pass: u64,
}

impl Default for TapeInner {
    fn default() -> Self {
        TapeInner {
            nodes: Vec::new(),
            vars: 0,
            params: Vec::new(),
            pass: next_pass(),
        }
    }
}

fn next_pass() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Records differentiable ops. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Tape(Rc<RefCell<TapeInner>>);

/// A tensor in a computation: `id` is set when a gradient flows to it.
#[derive(Clone, Debug)]
pub struct Var {
    pub value: Tensor,
    id: Option<usize>,
    /// The tape recording `id` belongs to (see `TapeInner::pass`).
    pass: u64,
}

impl Var {
    /// A constant: no gradient flows to it.
    pub fn constant(value: Tensor) -> Var {
        Var {
            value,
            id: None,
            pass: 0,
        }
    }
    pub fn needs_grad(&self) -> bool {
        self.id.is_some()
    }
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
}

/// Gradients of the parameters after [`Tape::backward`], by parameter index.
pub struct Grads {
    by_param: Vec<Option<Tensor>>,
}

impl Grads {
    pub fn get(&self, param: usize) -> Option<&Tensor> {
        self.by_param.get(param).and_then(|g| g.as_ref())
    }
    /// One gradient per parameter (zeros where none flowed), in parameter order.
    pub fn dense(&self, params: &[Tensor]) -> Vec<Tensor> {
        params
            .iter()
            .enumerate()
            .map(|(i, p)| self.get(i).cloned().unwrap_or_else(|| p.zeros_like()))
            .collect()
    }
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// A leaf standing for parameter `index` (its gradient is reported under that index).
    pub fn param(&self, index: usize, value: &Tensor) -> Var {
        let mut t = self.0.borrow_mut();
        let id = t.vars;
        t.vars += 1;
        t.params.push((id, index));
        Var {
            value: value.clone(),
            id: Some(id),
            pass: t.pass,
        }
    }

    /// A leaf whose gradient is wanted but which is no parameter (tests, input gradients).
    pub fn leaf(&self, value: &Tensor) -> Var {
        let mut t = self.0.borrow_mut();
        let id = t.vars;
        t.vars += 1;
        Var {
            value: value.clone(),
            id: Some(id),
            pass: t.pass,
        }
    }

    /// Pushes an op of `N` inputs whose backward is `op`, unless no input needs a gradient.
    fn record<const N: usize>(
        &self,
        value: Tensor,
        inputs: [&Var; N],
        op: impl Backward<N> + 'static,
    ) -> Var {
        if inputs.iter().all(|v| v.id.is_none()) {
            return Var {
                value,
                id: None,
                pass: 0,
            };
        }
        let mut t = self.0.borrow_mut();
        for v in inputs.iter().filter(|v| v.id.is_some()) {
            assert!(
                v.pass == t.pass,
                "a Var from another recording was used on this tape (one made before \
                 Tape::backward, or on another tape): its gradient would go to the wrong \
                 place. Make the tape's variables again (e.g. UNet::vars) after each backward."
            );
        }
        let id = t.vars;
        t.vars += 1;
        t.nodes.push(Node {
            output: id,
            op: Box::new(Recorded {
                inputs: inputs.map(|v| v.id),
                op,
            }),
        });
        Var {
            value,
            id: Some(id),
            pass: t.pass,
        }
    }

    /// Number of recorded ops.
    pub fn len(&self) -> usize {
        self.0.borrow().nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Back-propagates from `out` with seed gradient `seed` (ones of out's shape when `None`),
    /// consuming the tape. Returns parameter gradients, and every leaf's gradient by var.
    pub fn backward(&self, out: &Var, seed: Option<Tensor>) -> (Grads, LeafGrads) {
        // The tape starts a new recording (a new `pass`): vars of this one are refused by it.
        let TapeInner {
            nodes,
            vars,
            params,
            pass,
        } = std::mem::take(&mut *self.0.borrow_mut());
        let mut grads: Vec<Option<Tensor>> = vec![None; vars];
        let Some(out_id) = out.id else {
            panic!("backward from a value that depends on no parameter");
        };
        assert!(
            out.pass == pass,
            "backward from a Var of another recording (made before the last Tape::backward, \
             or on another tape)"
        );
        grads[out_id] =
            Some(seed.unwrap_or_else(|| Tensor::full(out.value.gpu(), out.value.shape(), 1.0)));
        // Each node (with the tensors it saved) and its incoming gradient are dropped as soon as
        // they are consumed: their buffers go back to the pool, where the later launches of the
        // same batch reuse them (gpu/pool.rs).
        for node in nodes.into_iter().rev() {
            let Some(g) = grads[node.output].take() else {
                continue;
            };
            node.op.propagate(&g, &mut grads);
        }
        let n_params = params.iter().map(|&(_, p)| p + 1).max().unwrap_or(0);
        let mut by_param = vec![None; n_params];
        for &(var, p) in &params {
            if let Some(g) = grads[var].take() {
                by_param[p] = Some(match by_param[p].take() {
                    Some(prev) => g.add(&prev),
                    None => g,
                });
            }
        }
        (Grads { by_param }, LeafGrads { grads, pass })
    }

    // ---------------- differentiable ops ----------------

    pub fn matmul(&self, a: &Var, b: &Var, o: MatmulOpts) -> Var {
        let y = a.value.matmul_with(&b.value, o, None);
        self.record(
            y,
            [a, b],
            MatmulBack {
                a: a.value.clone(),
                b: b.value.clone(),
                o,
            },
        )
    }

    /// x [N, in] W^T + b with W [out, in], b [out].
    pub fn linear(&self, x: &Var, w: &Var, b: &Var) -> Var {
        let o = MatmulOpts {
            trans_b: true,
            ..Default::default()
        };
        let y = x.value.matmul_with(&w.value, o, Some(&b.value));
        self.record(
            y,
            [x, w, b],
            LinearBack {
                x: x.value.clone(),
                w: w.value.clone(),
            },
        )
    }

    pub fn conv2d(&self, x: &Var, w: &Var, b: Option<&Var>, conv: Conv2d) -> Var {
        let y = conv.forward(&x.value, &w.value, b.map(|b| &b.value));
        let back = ConvBack {
            x: x.value.clone(),
            w: w.value.clone(),
            conv,
        };
        match b {
            Some(b) => self.record(y, [x, w, b], back),
            None => self.record(y, [x, w], back),
        }
    }

    /// conv2d(x, w, b) + r with the add in the convolution's epilogue: one launch, the same
    /// gradients as `add(r, conv2d(x, w, b))` (r gets the incoming gradient unchanged).
    pub fn conv2d_add(&self, x: &Var, w: &Var, b: Option<&Var>, conv: Conv2d, r: &Var) -> Var {
        self.conv2d_with(x, w, b, conv, r, false)
    }

    /// conv2d(x, w, b) + v[image, channel] broadcast over pixels (v [N, Cout]: the time
    /// embedding), one launch; the same gradients as `add_channel_vector(conv2d(x, w, b), v)`.
    pub fn conv2d_add_channels(
        &self,
        x: &Var,
        w: &Var,
        b: Option<&Var>,
        conv: Conv2d,
        v: &Var,
    ) -> Var {
        self.conv2d_with(x, w, b, conv, v, true)
    }

    fn conv2d_with(
        &self,
        x: &Var,
        w: &Var,
        b: Option<&Var>,
        conv: Conv2d,
        r: &Var,
        per_channel: bool,
    ) -> Var {
        let res = if per_channel {
            Residual::PerImageChannel(&r.value)
        } else {
            Residual::Full(&r.value)
        };
        let y = conv.forward_add(&x.value, &w.value, b.map(|b| &b.value), Some(res));
        let back = ConvAddBack {
            conv: ConvBack {
                x: x.value.clone(),
                w: w.value.clone(),
                conv,
            },
            per_channel: per_channel.then(|| r.shape().to_vec()),
        };
        match b {
            Some(b) => self.record(y, [x, w, b, r], back),
            None => self.record(y, [x, w, r], back),
        }
    }

    pub fn group_norm(&self, x: &Var, gamma: &Var, beta: &Var, groups: usize, eps: f32) -> Var {
        let (y, saved) = x.value.group_norm(&gamma.value, &beta.value, groups, eps);
        self.record(
            y,
            [x, gamma, beta],
            GroupNormBack {
                x: x.value.clone(),
                gamma: gamma.value.clone(),
                saved,
            },
        )
    }

    /// SiLU of the group norm of x, one forward launch and two backward launches (the same as
    /// `silu(group_norm(..))` up to float rounding, with two launches fewer).
    pub fn group_norm_silu(
        &self,
        x: &Var,
        gamma: &Var,
        beta: &Var,
        groups: usize,
        eps: f32,
    ) -> Var {
        let (y, saved) = x
            .value
            .group_norm_silu(&gamma.value, &beta.value, groups, eps);
        self.record(
            y,
            [x, gamma, beta],
            GroupNormSiluBack {
                x: x.value.clone(),
                gamma: gamma.value.clone(),
                beta: beta.value.clone(),
                saved,
            },
        )
    }

    pub fn silu(&self, x: &Var) -> Var {
        self.record(x.value.silu(), [x], SiluBack { x: x.value.clone() })
    }

    /// Dropout with a given Gaussian `noise` tensor: keeps x * scale where noise > threshold.
    pub fn dropout(&self, x: &Var, noise: &Tensor, threshold: f32, scale: f32) -> Var {
        self.record(
            x.value.mask_where_above(noise, threshold, scale),
            [x],
            DropoutBack {
                noise: noise.clone(),
                threshold,
                scale,
            },
        )
    }

    pub fn add(&self, a: &Var, b: &Var) -> Var {
        self.record(a.value.add(&b.value), [a, b], Linear2 { ca: 1.0, cb: 1.0 })
    }
    pub fn sub(&self, a: &Var, b: &Var) -> Var {
        self.record(a.value.sub(&b.value), [a, b], Linear2 { ca: 1.0, cb: -1.0 })
    }
    pub fn scale(&self, a: &Var, s: f32) -> Var {
        self.record(a.value.scale(s), [a], ScaleBack { s })
    }
    pub fn mul(&self, a: &Var, b: &Var) -> Var {
        self.record(
            a.value.mul(&b.value),
            [a, b],
            MulBack {
                a: a.value.clone(),
                b: b.value.clone(),
            },
        )
    }

    /// x[s, c, ..] + v[s, c] (per sample) or + v[c].
    pub fn add_channel_vector(&self, x: &Var, v: &Var) -> Var {
        let per_sample = v.value.numel() != x.value.shape()[1];
        self.record(
            x.value.add_channel_vector(&v.value),
            [x, v],
            ChannelVecBack {
                per_sample,
                v_shape: v.shape().to_vec(),
            },
        )
    }

    /// x[s, ..] * sa[s] with constant per-sample scalars.
    pub fn per_sample_scale(&self, x: &Var, sa: &Tensor) -> Var {
        self.record(
            x.value.per_sample_axpby(sa, None),
            [x],
            PerSampleBack { sa: sa.clone() },
        )
    }

    pub fn upsample2x(&self, x: &Var) -> Var {
        self.record(x.value.upsample2x(), [x], UpsampleBack)
    }

    pub fn concat_channels(&self, a: &Var, b: &Var) -> Var {
        let y = Tensor::concat_channels(&[&a.value, &b.value]);
        self.record(
            y,
            [a, b],
            ConcatBack {
                ca: a.shape()[1],
                cb: b.shape()[1],
            },
        )
    }

    /// Channels `offset .. offset + count` of [N, C, ...].
    pub fn slice_channels(&self, x: &Var, offset: usize, count: usize) -> Var {
        let y = x.value.slice_channels(offset, count);
        self.record(
            y,
            [x],
            SliceBack {
                offset,
                count,
                channels: x.shape()[1],
            },
        )
    }

    pub fn reshape(&self, x: &Var, shape: &[usize]) -> Var {
        self.record(
            x.value.reshape(shape),
            [x],
            ReshapeBack {
                shape: x.shape().to_vec(),
            },
        )
    }

    /// Single-head attention over pixels: q, k, v [N, C, HW] -> softmax(Q^T K / sqrt(C)) applied to V.
    pub fn attention(&self, q: &Var, k: &Var, v: &Var) -> Var {
        let (out, p) = attention_forward(&q.value, &k.value, &v.value);
        let scale = 1.0 / (q.shape()[1] as f32).sqrt();
        self.record(
            out,
            [q, k, v],
            AttentionBack {
                q: q.value.clone(),
                k: k.value.clone(),
                v: v.value.clone(),
                p,
                scale,
            },
        )
    }

    /// Per-sample w[s] * mean((x - target)^2) -> [N]; target and w are constants.
    pub fn weighted_mse(&self, x: &Var, target: &Tensor, w: &Tensor) -> Var {
        let y = x.value.weighted_mse_per_sample(target, w);
        self.record(
            y,
            [x],
            MseBack {
                x: x.value.clone(),
                target: target.clone(),
                w: w.clone(),
            },
        )
    }

    /// Mean softmax cross-entropy of logits [N, K] against constant labels [N] -> [1].
    pub fn cross_entropy_mean(&self, logits: &Var, labels: &Tensor) -> Var {
        let (per_row, grad) = logits.value.cross_entropy(labels);
        self.record(
            per_row.mean_all(),
            [logits],
            CrossEntropyBack {
                grad,
                shape: logits.shape().to_vec(),
            },
        )
    }

    /// Mean of all elements -> [1].
    pub fn mean_all(&self, x: &Var) -> Var {
        self.record(
            x.value.mean_all(),
            [x],
            MeanBack {
                shape: x.shape().to_vec(),
            },
        )
    }
}

/// Gradients of every variable after backward (for tests of leaves).
pub struct LeafGrads {
    grads: Vec<Option<Tensor>>,
    pass: u64,
}

impl LeafGrads {
    /// The gradient of `v` (None for a constant, or a var no gradient reached); panics for a
    /// var of another recording, whose id would name some other var's gradient here.
    pub fn of(&self, v: &Var) -> Option<&Tensor> {
        assert!(
            v.id.is_none() || v.pass == self.pass,
            "LeafGrads::of a Var of another recording than the one back-propagated"
        );
        v.id.and_then(|i| self.grads.get(i))
            .and_then(|g| g.as_ref())
    }
}

/// Attention forward without a tape: (output, softmax probabilities).
pub fn attention_forward(q: &Tensor, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
    let c = q.shape()[1];
    let scale = 1.0 / (c as f32).sqrt();
    let s = q.matmul_with(
        k,
        MatmulOpts {
            trans_a: true,
            ..Default::default()
        },
        None,
    ); // [N, HW, HW]
    let p = s.softmax(scale);
    let out = v.matmul_with(
        &p,
        MatmulOpts {
            trans_b: true,
            ..Default::default()
        },
        None,
    ); // [N, C, HW]
    (out, p)
}

/// softmax(Q^T K / sqrt(C)) V^T over pixels, q/k/v [N, C, HW] -> [N, C, HW].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    attention_forward(q, k, v).0
}

// ---------------- backward units ----------------

struct MatmulBack {
    a: Tensor,
    b: Tensor,
    o: MatmulOpts,
}

impl Backward<2> for MatmulBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        let MatmulOpts {
            trans_a,
            trans_b,
            alpha,
        } = self.o;
        let mm = |x: &Tensor, y: &Tensor, ta, tb| {
            x.matmul_with(
                y,
                MatmulOpts {
                    trans_a: ta,
                    trans_b: tb,
                    alpha,
                },
                None,
            )
        };
        // C = op(A) op(B): d op(A) = G op(B)^T, d op(B) = op(A)^T G; transpose back where stored transposed.
        let da = need_a.then(|| {
            let d = if trans_a {
                mm(&self.b, g, trans_b, true)
            } else {
                mm(g, &self.b, false, !trans_b)
            };
            reduce_broadcast(d, self.a.shape())
        });
        let db = need_b.then(|| {
            let d = if trans_b {
                mm(g, &self.a, true, trans_a)
            } else {
                mm(&self.a, g, !trans_a, false)
            };
            reduce_broadcast(d, self.b.shape())
        });
        [da, db]
    }
}

/// A 2-D operand broadcast over a batch gets the batch-summed gradient.
fn reduce_broadcast(d: Tensor, shape: &[usize]) -> Tensor {
    if d.shape().len() == 3 && shape.len() == 2 {
        let (b, r, c) = (d.shape()[0], d.shape()[1], d.shape()[2]);
        let ones = Tensor::full(d.gpu(), &[1, b], 1.0);
        ones.matmul(&d.reshape(&[b, r * c])).reshape(shape)
    } else {
        d.reshape(shape)
    }
}

struct LinearBack {
    x: Tensor,
    w: Tensor,
}

impl Backward<3> for LinearBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_b]: [bool; 3]) -> [Option<Tensor>; 3] {
        let dx = need_x.then(|| g.matmul(&self.w));
        let dw = need_w.then(|| {
            g.matmul_with(
                &self.x,
                MatmulOpts {
                    trans_a: true,
                    ..Default::default()
                },
                None,
            )
        });
        let n = g.shape()[0];
        let db = need_b.then(|| g.reshape(&[n, g.numel() / n, 1]).sum_per_channel());
        [dx, dw, db]
    }
}

/// Convolution without bias (inputs x, w) and with bias (x, w, b): one unit, both arities.
struct ConvBack {
    x: Tensor,
    w: Tensor,
    conv: Conv2d,
}

impl Backward<2> for ConvBack {
    fn backward(&self, g: &Tensor, [need_x, need_w]: [bool; 2]) -> [Option<Tensor>; 2] {
        [
            need_x.then(|| self.conv.input_grad(g, &self.w, self.x.shape())),
            need_w.then(|| self.conv.weight_grad(g, &self.x, self.w.shape())),
        ]
    }
}

impl Backward<3> for ConvBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_b]: [bool; 3]) -> [Option<Tensor>; 3] {
        let [dx, dw] = Backward::<2>::backward(self, g, [need_x, need_w]);
        [dx, dw, need_b.then(|| g.sum_per_channel())]
    }
}

/// A convolution whose output has a residual added (inputs x, w, (b,) r): r of the output's
/// shape, or with `per_channel` (r's shape) one value per image and channel.
struct ConvAddBack {
    conv: ConvBack,
    per_channel: Option<Vec<usize>>,
}

impl ConvAddBack {
    /// (d residual, d bias). Per channel, the bias gradient is the residual's summed over
    /// images: a sum over N x C values instead of another pass over the whole gradient.
    fn adds(&self, g: &Tensor, need_b: bool, need_r: bool) -> (Option<Tensor>, Option<Tensor>) {
        match &self.per_channel {
            None => (
                need_r.then(|| g.clone()),
                need_b.then(|| g.sum_per_channel()),
            ),
            Some(shape) => {
                if !(need_b || need_r) {
                    return (None, None);
                }
                let dv = g.sum_per_sample_channel();
                let (n, c) = (dv.shape()[0], dv.shape()[1]);
                let db = need_b.then(|| dv.reshape(&[n, c, 1]).sum_per_channel());
                (need_r.then(|| dv.reshape(shape)), db)
            }
        }
    }
}

impl Backward<3> for ConvAddBack {
    fn backward(&self, g: &Tensor, [need_x, need_w, need_r]: [bool; 3]) -> [Option<Tensor>; 3] {
        let [dx, dw] = Backward::<2>::backward(&self.conv, g, [need_x, need_w]);
        [dx, dw, self.adds(g, false, need_r).0]
    }
}

impl Backward<4> for ConvAddBack {
    fn backward(&self, g: &Tensor, [nx, nw, nb, nr]: [bool; 4]) -> [Option<Tensor>; 4] {
        let [dx, dw] = Backward::<2>::backward(&self.conv, g, [nx, nw]);
        let (dr, db) = self.adds(g, nb, nr);
        [dx, dw, db, dr]
    }
}

struct GroupNormBack {
    x: Tensor,
    gamma: Tensor,
    saved: GroupNormStats,
}

impl Backward<3> for GroupNormBack {
    fn backward(&self, g: &Tensor, [nx, ng, nb]: [bool; 3]) -> [Option<Tensor>; 3] {
        // dx is one launch, dgamma and dbeta another: each only when needed.
        let (dx, p) =
            self.x
                .group_norm_grad_parts(&self.gamma, None, g, &self.saved, (nx, ng || nb));
        let (dg, db) = p.unzip();
        [dx, dg.filter(|_| ng), db.filter(|_| nb)]
    }
}

struct GroupNormSiluBack {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    saved: GroupNormStats,
}

impl Backward<3> for GroupNormSiluBack {
    fn backward(&self, g: &Tensor, [nx, ng, nb]: [bool; 3]) -> [Option<Tensor>; 3] {
        let (dx, p) = self.x.group_norm_grad_parts(
            &self.gamma,
            Some(&self.beta),
            g,
            &self.saved,
            (nx, ng || nb),
        );
        let (dg, db) = p.unzip();
        [dx, dg.filter(|_| ng), db.filter(|_| nb)]
    }
}

struct SiluBack {
    x: Tensor,
}

impl Backward<1> for SiluBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(self.x.silu_grad(g))]
    }
}

struct CrossEntropyBack {
    /// d(mean loss)/d(logits), saved by the forward kernel.
    grad: Tensor,
    shape: Vec<usize>,
}

impl Backward<1> for CrossEntropyBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // g is the [1] gradient of the mean; scale the saved gradient by it on the GPU.
        let n: usize = self.shape.iter().product();
        let scaled = self.grad.reshape(&[1, n]).per_sample_axpby(g, None);
        [Some(scaled.reshape(&self.shape))]
    }
}

struct DropoutBack {
    noise: Tensor,
    threshold: f32,
    scale: f32,
}

impl Backward<1> for DropoutBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.mask_where_above(
            &self.noise,
            self.threshold,
            self.scale,
        ))]
    }
}

/// Multiplies by `c`, or passes the gradient on unchanged when `c` is 1.
fn scaled(g: &Tensor, c: f32) -> Tensor {
    if c == 1.0 {
        g.clone()
    } else {
        g.scale(c)
    }
}

/// y = ca * a + cb * b
struct Linear2 {
    ca: f32,
    cb: f32,
}

impl Backward<2> for Linear2 {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        [
            need_a.then(|| scaled(g, self.ca)),
            need_b.then(|| scaled(g, self.cb)),
        ]
    }
}

/// y = s * a
struct ScaleBack {
    s: f32,
}

impl Backward<1> for ScaleBack {
    fn backward(&self, g: &Tensor, [need_a]: [bool; 1]) -> [Option<Tensor>; 1] {
        [need_a.then(|| scaled(g, self.s))]
    }
}

struct MulBack {
    a: Tensor,
    b: Tensor,
}

impl Backward<2> for MulBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        [
            need_a.then(|| g.mul(&self.b)),
            need_b.then(|| g.mul(&self.a)),
        ]
    }
}

struct ChannelVecBack {
    per_sample: bool,
    v_shape: Vec<usize>,
}

impl Backward<2> for ChannelVecBack {
    fn backward(&self, g: &Tensor, [need_x, need_v]: [bool; 2]) -> [Option<Tensor>; 2] {
        let dv = need_v.then(|| {
            let s = if self.per_sample {
                g.sum_per_sample_channel()
            } else {
                g.sum_per_channel()
            };
            s.reshape(&self.v_shape)
        });
        [need_x.then(|| g.clone()), dv]
    }
}

struct PerSampleBack {
    sa: Tensor,
}

impl Backward<1> for PerSampleBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.per_sample_axpby(&self.sa, None))]
    }
}

struct UpsampleBack;

impl Backward<1> for UpsampleBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.upsample2x_grad())]
    }
}

struct ConcatBack {
    ca: usize,
    cb: usize,
}

impl Backward<2> for ConcatBack {
    fn backward(&self, g: &Tensor, [need_a, need_b]: [bool; 2]) -> [Option<Tensor>; 2] {
        if need_a && need_b {
            let (ga, gb) = g.split_channels(self.ca);
            return [Some(ga), Some(gb)];
        }
        [
            need_a.then(|| g.slice_channels(0, self.ca)),
            need_b.then(|| g.slice_channels(self.ca, self.cb)),
        ]
    }
}

struct SliceBack {
    offset: usize,
    count: usize,
    channels: usize,
}

impl Backward<1> for SliceBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(if self.count == self.channels {
            g.clone()
        } else {
            g.place_channels(self.offset, self.channels)
        })]
    }
}

struct ReshapeBack {
    shape: Vec<usize>,
}

impl Backward<1> for ReshapeBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        [Some(g.reshape(&self.shape))]
    }
}

struct AttentionBack {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
    scale: f32,
}

impl Backward<3> for AttentionBack {
    fn backward(&self, g: &Tensor, [need_q, need_k, need_v]: [bool; 3]) -> [Option<Tensor>; 3] {
        let o = |ta, tb| MatmulOpts {
            trans_a: ta,
            trans_b: tb,
            alpha: 1.0,
        };
        // out = V P^T: dV = G P, dP = G^T V; S = Q^T K: dQ = K dS^T, dK = Q dS.
        let dv = need_v.then(|| g.matmul(&self.p));
        let dp = g.matmul_with(&self.v, o(true, false), None);
        let ds = self.p.softmax_grad(&dp, self.scale);
        let dq = need_q.then(|| self.k.matmul_with(&ds, o(false, true), None));
        let dk = need_k.then(|| self.q.matmul(&ds));
        [dq, dk, dv]
    }
}

struct MseBack {
    x: Tensor,
    target: Tensor,
    w: Tensor,
}

impl Backward<1> for MseBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // d/dx of w[s] * mean((x - t)^2) = 2 w[s] (x - t) / len, times g[s].
        let len = self.x.numel() / self.x.shape()[0];
        let coef = self.w.mul(g).scale(2.0 / len as f32);
        let neg = coef.scale(-1.0);
        [Some(
            self.x.per_sample_axpby(&coef, Some((&self.target, &neg))),
        )]
    }
}

struct MeanBack {
    shape: Vec<usize>,
}

impl Backward<1> for MeanBack {
    fn backward(&self, g: &Tensor, _needs: [bool; 1]) -> [Option<Tensor>; 1] {
        // Broadcast the [1] gradient / numel over the input without a readback.
        let n: usize = self.shape.iter().product();
        let ones = Tensor::full(g.gpu(), &[n, 1], 1.0 / n as f32);
        [Some(ones.matmul(&g.reshape(&[1, 1])).reshape(&self.shape))]
    }
}
