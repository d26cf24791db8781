//! Reverse-mode automatic differentiation with a tape.
//!
//! Design: every differentiable op runs its forward kernel immediately (recording launches into the
//! current batch) and, when an input needs a gradient, pushes one `Node` onto the [`Tape`]: the
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

mod conv;
mod linear;
mod loss;
mod norm;
mod pointwise;
mod shape;

pub use linear::{attention, attention_forward};

use super::Tensor;

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
