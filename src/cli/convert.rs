//! `fewstep convert`: rewrite a model file in half precision (for the web) or back to f32.
//! The description (architecture, steps, lineage) is kept as it is: an f16 copy is the same model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::diffusion::{parse_model, save_model};
use crate::nn::StoreAs;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model file to convert.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the copy (never the input itself).
    #[arg(long)]
    out: PathBuf,
    /// Store the weights as f16 (half the size; what the bundled web models use).
    #[arg(long)]
    f16: bool,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let same = match (
        std::fs::canonicalize(&args.model),
        std::fs::canonicalize(&args.out),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    anyhow::ensure!(
        !same,
        "--out is the input file; write the copy somewhere else"
    );
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let (meta, tensors) = parse_model(&args.model, &bytes)?;
    let store = if args.f16 { StoreAs::F16 } else { StoreAs::F32 };
    let worst = if args.f16 {
        tensors
            .iter()
            .flat_map(|t| t.data.iter())
            .map(|&v| (half::f16::from_f32(v).to_f32() - v).abs())
            .fold(0.0f32, f32::max)
    } else {
        0.0
    };
    save_model(&args.out, &meta, &tensors, store)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{} ({}) -> {} ({:.2} MB, {}; largest rounding change {worst:.2e})",
        args.model.display(),
        meta.describe(),
        args.out.display(),
        size as f64 / 1e6,
        if args.f16 { "f16" } else { "f32" }
    );
    Ok(())
}
