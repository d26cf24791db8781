//! Classifier-free guidance: the guided x_hat from a conditional and an unconditional
//! evaluation (what the sampler and the distiller's teacher use), and asking a class-conditional
//! model for a class: parsing a class by name or number, naming it, and checking a guidance
//! weight against what the model can do (shared by the command line and the app so both refuse
//! the same things with the same words).

use super::model::{per_sample, Denoiser};
use crate::nn::{NetCond, UNetConfig};
use crate::tensor::Tensor;

/// Anything that gives one evaluation's x_hat(z, t, cond) without gradients: a model, or a
/// stand-in in tests. Guidance is formed on top of it by [`guided_x_hat`].
pub trait Teacher {
    /// One evaluation for the classes in `cond` (and its w, when [`takes_guidance`]).
    ///
    /// [`takes_guidance`]: Teacher::takes_guidance
    fn x_hat(&self, z: &Tensor, t: &[f64], cond: &NetCond) -> Tensor;
    /// Whether w is an input (a guided-distillation student): guidance in one evaluation.
    fn takes_guidance(&self) -> bool {
        false
    }
}

impl Teacher for Denoiser {
    fn x_hat(&self, z: &Tensor, t: &[f64], cond: &NetCond) -> Tensor {
        self.predict_cond(z, t, cond)
    }
    fn takes_guidance(&self) -> bool {
        Denoiser::takes_guidance(self)
    }
}

/// The classifier-free guided x_hat_w = (1 + w) x_hat(z, c) - w x_hat(z, none), per sample
/// (labels and w in `cond`), combined in x space; a teacher that takes w gives it in one
/// evaluation. Every parameterization's x_hat is cz z + c0 head0 (+ c1 head1) with
/// coefficients that depend on t only, and (1 + w) - w = 1, so combining x_hat equals
/// combining the raw outputs (v, eps, or both heads) before forming x_hat: one formula serves
/// all four. With every w = 0 it is one plain (conditional) evaluation.
pub fn guided_x_hat(teacher: &dyn Teacher, z: &Tensor, t: &[f64], cond: &NetCond) -> Tensor {
    if teacher.takes_guidance() || cond.w.iter().all(|&w| w == 0.0) {
        return teacher.x_hat(z, t, cond);
    }
    let plain = NetCond {
        labels: cond.labels.clone(),
        w: Vec::new(),
    };
    let x_c = teacher.x_hat(z, t, &plain);
    let x_u = teacher.x_hat(z, t, &NetCond::NONE);
    let gpu = z.gpu();
    let a: Vec<f64> = cond.w.iter().map(|&w| 1.0 + w as f64).collect();
    let b: Vec<f64> = cond.w.iter().map(|&w| -(w as f64)).collect();
    x_c.per_sample_axpby(&per_sample(gpu, &a), Some((&x_u, &per_sample(gpu, &b))))
}

impl Denoiser {
    /// The classifier-free guided x_hat_w = (1 + w) x_hat(z, c) - w x_hat(z, none) per sample
    /// ([`guided_x_hat`]); one evaluation for a model that
    /// takes w, or when every w is 0.
    pub fn guided(&self, z: &Tensor, t: &[f64], cond: &NetCond) -> Tensor {
        guided_x_hat(self, z, t, cond)
    }
}

/// The name shown for class `label` of a model: its stored name, else its number.
pub fn class_name(arch: &UNetConfig, label: u32) -> String {
    arch.class_names
        .get(label as usize)
        .cloned()
        .unwrap_or_else(|| format!("class {label}"))
}

/// The classes of a model, listed for an error message.
fn listed(arch: &UNetConfig) -> String {
    if arch.class_names.is_empty() {
        format!("0 to {}", arch.classes.saturating_sub(1))
    } else {
        arch.class_names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A class given by number or by name (case-insensitive), checked against the model.
pub fn parse_class(arch: &UNetConfig, given: &str) -> Result<u32, String> {
    if arch.classes == 0 {
        return Err(format!(
            "--class {given}: this model is unconditional (trained without --classes), so it \
             cannot be asked for a class; use a class-conditional model"
        ));
    }
    let given_t = given.trim();
    // Names first: with classes named by numbers (folders 1..10, listed in name order) `--class
    // 1` means the class named 1, not the one at index 1. Case-insensitive beyond ASCII.
    let wanted = given_t.to_lowercase();
    if let Some(i) = arch
        .class_names
        .iter()
        .position(|n| n.to_lowercase() == wanted)
    {
        return Ok(i as u32);
    }
    // A class without a name is shown as `class N` (class_name): that is taken back too.
    let number = wanted
        .strip_prefix("class ")
        .filter(|_| arch.class_names.is_empty())
        .unwrap_or(given_t);
    if let Ok(i) = number.trim().parse::<u32>() {
        if (i as usize) < arch.classes {
            return Ok(i);
        }
        return Err(format!(
            "--class {i} is out of range: this model has {} classes ({})",
            arch.classes,
            listed(arch)
        ));
    }
    Err(format!(
        "--class {given}: no class of this model has that name; its classes are {}",
        listed(arch)
    ))
}

/// The largest guidance weight taken: far past any useful w (1 to 4 is typical), and small
/// enough that (1 + w) x_hat stays finite in f32, the type the network computes in.
pub const MAX_GUIDANCE: f64 = 100.0;

/// Checks a guidance weight for a model: refused for an unconditional model or a negative or
/// non-finite w; for a w-conditioned student, a note when w lies outside the range it was
/// distilled for (it still runs: the student extrapolates).
pub fn check_guidance(arch: &UNetConfig, w: f64) -> Result<Option<String>, String> {
    if !w.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&w) {
        return Err(format!(
            "--guidance {w} is not usable: give a weight from 0 to {MAX_GUIDANCE} (0: the \
             conditional model alone; 1 to 4 is typical)"
        ));
    }
    if w > 0.0 && arch.classes == 0 {
        return Err(format!(
            "--guidance {w}: classifier-free guidance needs a class-conditional model trained \
             with --classes; this one is unconditional"
        ));
    }
    Ok(arch.guidance.and_then(|g| {
        (w < g.w_min as f64 || w > g.w_max as f64).then(|| {
            format!(
                "note: this student was distilled for guidance {} to {}; w = {w} lies outside, \
                 where it was never trained",
                g.w_min, g.w_max
            )
        })
    }))
}
