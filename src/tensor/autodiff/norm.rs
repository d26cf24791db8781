//! Group normalisation, plain and fused with SiLU. Each op's constructor (a `Tape` method) sits
//! next to its backward unit.

use super::{Backward, Tape, Var};
use crate::tensor::{GroupNormStats, Tensor};

impl Tape {
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
