//! What the tuner decides for one GEMM problem, and the problem's bucket: both written as text
//! (the plan cache, run states and model files keep them; `fewstep tune` prints them).

use super::super::gemm_coop::CoopTile;
use super::super::gemm_core::GemmCore;
use super::super::gemm_kernels::Loader;
use crate::gpu::{GemmTile, KernelVariant};

/// One GEMM as a launch meets it: the operand layout and its M x N x K (K summed in full: the
/// weight gradient's before any split), `batch` independent products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub loader: Loader,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
}

impl Problem {
    /// The plan's key: the layout and M, N, K and batch each rounded up to a power of 2, so
    /// that a batch of 48 and one of 64 share what was measured (a problem is timed at the
    /// size the run met first).
    pub fn bucket(&self) -> String {
        let p2 = |x: u32| x.max(1).next_power_of_two();
        format!(
            "{} m{} n{} k{} b{}",
            layout_name(self.loader),
            p2(self.m),
            p2(self.n),
            p2(self.k),
            p2(self.batch)
        )
    }
}

fn layout_name(l: Loader) -> &'static str {
    match l {
        Loader::Matmul {
            trans_a: false,
            trans_b: false,
        } => "matmul",
        Loader::Matmul {
            trans_a: true,
            trans_b: false,
        } => "matmul-at",
        Loader::Matmul {
            trans_a: false,
            trans_b: true,
        } => "matmul-bt",
        Loader::Matmul {
            trans_a: true,
            trans_b: true,
        } => "matmul-at-bt",
        Loader::ConvForward => "conv-forward",
        Loader::ConvInputGrad => "conv-input-grad",
        Loader::ConvWeightGrad => "conv-weight-grad",
    }
}

/// A kernel and, for the weight gradient, how many slices K is split into (1: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub core: GemmCore,
    pub parts: u32,
}

impl Choice {
    pub fn new(core: GemmCore) -> Choice {
        Choice { core, parts: 1 }
    }
}

impl GemmCore {
    /// The family this core belongs to.
    pub(crate) fn family(self) -> KernelVariant {
        match self {
            GemmCore::Tiled => KernelVariant::Tiled,
            GemmCore::Subgroup { .. } => KernelVariant::Subgroup,
            GemmCore::Blocked(_) => KernelVariant::Blocked,
            GemmCore::Coop(_) => KernelVariant::Coop,
        }
    }
}

/// `tiled`, `subgroup 8`, `blocked 64x128x16x4x8`, `coop 16/32 2x2x2x2x32` (matrix size /
/// subgroup size, warps x warps x fragments x fragments x BK), then ` split N` when K is split.
impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.core {
            GemmCore::Tiled => write!(f, "tiled")?,
            GemmCore::Subgroup { sg } => write!(f, "subgroup {sg}")?,
            GemmCore::Blocked(t) => write!(f, "blocked {t}")?,
            GemmCore::Coop(t) => write!(
                f,
                "coop {}/{} {}x{}x{}x{}x{}",
                t.s, t.sg, t.wm, t.wn, t.fm, t.fn_, t.bk
            )?,
        }
        if self.parts > 1 {
            write!(f, " split {}", self.parts)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(text: &str) -> Result<Choice, String> {
        let bad = || format!("'{text}' names no GEMM kernel");
        let words: Vec<&str> = text.split_whitespace().collect();
        let (core_words, parts) = match words.as_slice() {
            [head @ .., "split", n] => (head, n.parse::<u32>().map_err(|_| bad())?),
            all => (all, 1),
        };
        let nums = |s: &str| -> Result<Vec<u32>, String> {
            s.split(['x', '/'])
                .map(|n| n.parse::<u32>().map_err(|_| bad()))
                .collect()
        };
        let core = match core_words {
            ["tiled"] => GemmCore::Tiled,
            ["subgroup", sg] => GemmCore::Subgroup {
                sg: sg.parse().map_err(|_| bad())?,
            },
            ["blocked", t] => GemmCore::Blocked(t.parse::<GemmTile>().map_err(|_| bad())?),
            ["coop", sizes, t] => match (nums(sizes)?.as_slice(), nums(t)?.as_slice()) {
                (&[s, sg], &[wm, wn, fm, fn_, bk]) => GemmCore::Coop(CoopTile {
                    s,
                    sg,
                    wm,
                    wn,
                    fm,
                    fn_,
                    bk,
                }),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        if parts == 0 {
            return Err(bad());
        }
        Ok(Choice { core, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_read_back_as_written() {
        let coop = CoopTile {
            s: 16,
            sg: 32,
            wm: 2,
            wn: 2,
            fm: 2,
            fn_: 1,
            bk: 32,
        };
        for c in [
            Choice::new(GemmCore::Tiled),
            Choice::new(GemmCore::Subgroup { sg: 8 }),
            Choice {
                core: GemmCore::Blocked(GemmTile::new(64, 128, 16, 4, 8)),
                parts: 12,
            },
            Choice::new(GemmCore::Coop(coop)),
        ] {
            let text = c.to_string();
            assert_eq!(text.parse::<Choice>(), Ok(c), "{text}");
        }
        for bad in [
            "",
            "blocked",
            "blocked 3x3",
            "tiled split 0",
            "coop 16 2x2",
            "fast",
        ] {
            assert!(bad.parse::<Choice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_round_up_to_powers_of_two() {
        let p = Problem {
            loader: Loader::ConvWeightGrad,
            m: 48,
            n: 432,
            k: 25088,
            batch: 1,
        };
        assert_eq!(p.bucket(), "conv-weight-grad m64 n512 k32768 b1");
        let q = Problem { m: 64, ..p };
        assert_eq!(p.bucket(), q.bucket());
        let r = Problem { m: 65, ..p };
        assert_ne!(p.bucket(), r.bucket());
    }
}
