//! `fewstep convert`: rewrite a model file in half precision (for the web) or back to f32.
//! The description (architecture, steps, lineage) is kept: an f16 copy is the same model. The
//! copy records the hash of the file it was made from (`lineage.converted_from_sha256`), and
//! with `--parent` a student's parent hash is re-chained to the converted copy of its parent, so
//! a family of converted files (the bundled models) chains file to file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::diffusion::model_file::sha256_hex;
use crate::diffusion::{parse_model, save_model, ModelMeta};
use crate::nn::StoreAs;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model file to convert, a bundled model's name, or a diffusers model folder
    /// (pipeline or unet/ with scheduler/ beside it).
    #[arg(long)]
    model: PathBuf,
    /// Where to write the copy (never the input itself).
    #[arg(long)]
    out: PathBuf,
    /// Store the weights as f16 (half the size; what the bundled web models use).
    #[arg(long)]
    f16: bool,
    /// A converted copy of the student's parent: the copy's parent hash then names this file
    /// (checked: it must be the parent itself or a copy `fewstep convert` made of it).
    #[arg(long)]
    parent: Option<PathBuf>,
    /// fewstep: one model file (--out FILE); diffusers: a pipeline folder (--out DIR, new or
    /// empty) that `DDIMPipeline.from_pretrained(DIR)` loads and samples as fewstep does (for
    /// models imported from diffusers and their students: fewstep's own continuous-time models
    /// have no diffusers equivalent).
    #[arg(long, default_value = "fewstep", value_parser = ["fewstep", "diffusers"])]
    format: String,
}

/// What a conversion wrote.
pub struct Converted {
    pub meta: ModelMeta,
    pub bytes: u64,
    /// Largest change rounding to f16 made to a weight (0 for f32).
    pub worst: f32,
}

/// Converts `model` into `out` (see the module documentation); shared by `convert` and `recipe`.
pub fn convert_file(
    model: &Path,
    out: &Path,
    f16: bool,
    parent: Option<&Path>,
) -> Result<Converted> {
    super::sample::check_model_arg(model)?;
    let mut inputs = vec![("--model", model)];
    if let Some(p) = parent {
        super::sample::check_model_arg(p)?;
        inputs.push(("--parent", p));
    }
    crate::output_path::check_file("--out", out, &inputs)?;
    let (mut meta, tensors) = if model.is_dir() {
        // A diffusers folder: one fewstep file of its network, weights and schedule (what the
        // web page loads fastest), recording the hash of the weights file it came from.
        anyhow::ensure!(
            parent.is_none(),
            "--parent applies to distilled students; {} is a diffusers folder (a teacher)",
            model.display()
        );
        let (mut meta, tensors) = crate::diffusion::model_file::import_diffusers(model)?;
        let weights = [model.join("unet"), model.to_path_buf()]
            .iter()
            .map(|d| d.join(crate::diffusers::WEIGHTS_FILE))
            .find(|p| p.is_file());
        if let Some(w) = weights {
            let bytes = crate::input_file::read(&w, crate::input_file::MODEL_MAX)
                .with_context(|| format!("cannot read {}", w.display()))?;
            meta.lineage.converted_from_sha256 = Some(sha256_hex(&bytes));
        }
        (meta, tensors)
    } else {
        let bytes = crate::input_file::read_model(model)
            .with_context(|| format!("cannot read {}", model.display()))?;
        let (mut meta, tensors) = parse_model(model, &bytes)?;
        meta.lineage.converted_from_sha256 = Some(sha256_hex(&bytes));
        (meta, tensors)
    };
    if let Some(p) = parent {
        let pbytes = crate::input_file::read_model(p)
            .with_context(|| format!("cannot read {}", p.display()))?;
        let (pmeta, _) = parse_model(p, &pbytes)?;
        let phash = sha256_hex(&pbytes);
        let named = meta.lineage.parent_sha256.clone().with_context(|| {
            format!(
                "{} has no parent (a teacher): --parent does not apply",
                model.display()
            )
        })?;
        anyhow::ensure!(
            named == phash || pmeta.lineage.converted_from_sha256.as_deref() == Some(&named),
            "--parent {} is not the parent of {} (sha256 {named}), nor a converted copy of it",
            p.display(),
            model.display()
        );
        meta.lineage.parent_sha256 = Some(phash);
    }
    let store = if f16 { StoreAs::F16 } else { StoreAs::F32 };
    let worst = if f16 {
        tensors
            .iter()
            .flat_map(|t| t.data.iter())
            .map(|&v| (half::f16::from_f32(v).to_f32() - v).abs())
            .fold(0.0f32, f32::max)
    } else {
        0.0
    };
    save_model(out, &meta, &tensors, store)?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Converted {
        meta,
        bytes: size,
        worst,
    })
}

/// Writes `model` as a diffusers pipeline folder `out`.
fn export_diffusers(model: &Path, out: &Path, f16: bool) -> Result<()> {
    use crate::diffusers::Prediction;
    use crate::diffusion::Parameterization;
    super::sample::check_model_arg(model)?;
    crate::output_path::check_dir("--out", out)?;
    if let Ok(mut entries) = std::fs::read_dir(out) {
        anyhow::ensure!(
            entries.next().is_none(),
            "--out {} already holds files; fewstep writes a diffusers folder only into a new or \
             empty folder",
            out.display()
        );
    }
    let (meta, tensors) = if model.is_dir() {
        crate::diffusion::model_file::import_diffusers(model)?
    } else {
        let bytes = crate::input_file::read_model(model)
            .with_context(|| format!("cannot read {}", model.display()))?;
        parse_model(model, &bytes)?
    };
    let prediction = match meta.parameterization {
        Parameterization::Eps => Prediction::Epsilon,
        Parameterization::V => Prediction::V,
        Parameterization::X => Prediction::Sample,
        Parameterization::Both => anyhow::bail!(
            "{} predicts x and eps from two heads (`both`), which diffusers' schedulers do not \
             take: it cannot be written as a diffusers pipeline",
            model.display()
        ),
    };
    let store = if f16 { StoreAs::F16 } else { StoreAs::F32 };
    crate::diffusers::export_folder(&meta.arch, prediction, &tensors, out, store)
        .with_context(|| model.display().to_string())?;
    eprintln!(
        "{} ({}) -> {} (a DDIMPipeline folder: unet/, scheduler/ with trailing timesteps{})",
        model.display(),
        meta.describe(),
        out.display(),
        meta.steps
            .map(|s| format!("; sample it with num_inference_steps={s}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.format == "diffusers" {
        anyhow::ensure!(
            args.parent.is_none(),
            "--parent re-chains fewstep files; it does not apply to --format diffusers"
        );
        return export_diffusers(&args.model, &args.out, args.f16);
    }
    let c = convert_file(&args.model, &args.out, args.f16, args.parent.as_deref())?;
    eprintln!(
        "{} ({}) -> {} ({:.2} MB, {}; largest rounding change {:.2e}){}",
        args.model.display(),
        c.meta.describe(),
        args.out.display(),
        c.bytes as f64 / 1e6,
        if args.f16 { "f16" } else { "f32" },
        c.worst,
        match (&args.parent, &c.meta.lineage.parent_sha256) {
            (Some(p), Some(h)) => format!("; parent re-chained to {} ({h})", p.display()),
            _ => String::new(),
        }
    );
    Ok(())
}
