//! Models from diffusers (issue 32): a `UNet2DModel` pipeline folder read as a fewstep network
//! that computes what diffusers computes.
//!
//! Accepted layouts: a pipeline folder (`model_index.json`, `unet/`, `scheduler/`), or a bare
//! `unet/` folder (`config.json`, `diffusion_pytorch_model.safetensors`) with `scheduler/` beside
//! it. The network (`unet.rs`) becomes a [`UNetConfig`] whose diffusers options (norm epsilon,
//! heads, time embedding, middle-block scale, centred input) reproduce `UNet2DModel`; the weights
//! (`weights.rs`) are renamed and joined into fewstep's layout; the scheduler config
//! (`scheduler.rs`) gives the discrete noise schedule and the prediction type.

mod export;
mod parts;
mod scheduler;
mod unet;
mod weights;

use std::path::{Path, PathBuf};

pub use export::{export_folder, ExportError};
pub use parts::{model_name, PipelineFiles, PipelineParts};
pub use scheduler::{Prediction, SchedulerConfig};
pub use unet::unet_config;
pub use weights::map_weights;

use crate::nn::tensor_file::HostTensor;
use crate::nn::UNetConfig;

/// The weights file diffusers writes (`save_pretrained`, safetensors by default).
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{field}` is {value}; fewstep supports {supported}")]
    Unsupported {
        field: String,
        value: String,
        supported: String,
    },
    #[error("`{0}` is missing; fewstep needs it to build the network")]
    Missing(String),
    #[error("{file} is not valid JSON ({detail})")]
    Json { file: String, detail: String },
    #[error("{0}")]
    Weights(String),
    #[error("the network does not fit fewstep's limits: {0}")]
    Network(String),
    #[error("{0}")]
    Layout(String),
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
}

/// A diffusers model read into fewstep's terms.
#[derive(Debug)]
pub struct Imported {
    pub arch: UNetConfig,
    /// In fewstep's layout order, under fewstep's names.
    pub tensors: Vec<HostTensor>,
    pub scheduler: SchedulerConfig,
    /// The folder it was read from.
    pub folder: PathBuf,
}

/// Whether `path` is a folder diffusers wrote (a pipeline, or a `unet/` folder).
pub fn is_diffusers_folder(path: &Path) -> bool {
    path.is_dir()
        && (path.join("model_index.json").is_file()
            || path.join("unet").join("config.json").is_file()
            || path.join("config.json").is_file())
}

/// The `unet/` and `scheduler/` folders of a pipeline folder or of a bare `unet/` folder.
fn locate(path: &Path) -> Result<(PathBuf, PathBuf), ImportError> {
    let layout = |detail: String| ImportError::Layout(format!("{}: {detail}", path.display()));
    let (unet, scheduler) = if path.join("unet").is_dir() {
        (path.join("unet"), path.join("scheduler"))
    } else if path.join("config.json").is_file() {
        let parent = path.parent().unwrap_or(Path::new("."));
        (path.to_path_buf(), parent.join("scheduler"))
    } else {
        return Err(layout(
            "not a diffusers folder: expected a pipeline folder (model_index.json, unet/, \
             scheduler/) or a unet/ folder (config.json and its weights) with scheduler/ beside it"
                .into(),
        ));
    };
    if !unet.join("config.json").is_file() {
        return Err(layout(format!("{} has no config.json", unet.display())));
    }
    if !scheduler.join("scheduler_config.json").is_file() {
        return Err(layout(format!(
            "no scheduler config ({} is missing): fewstep needs the noise schedule and the \
             prediction type the model was trained with; copy the pipeline's scheduler/ folder \
             beside unet/",
            scheduler.join("scheduler_config.json").display()
        )));
    }
    Ok((unet, scheduler))
}

/// Reads a diffusers model folder (see the module documentation).
pub fn import_folder(path: &Path) -> Result<Imported, ImportError> {
    let (unet_dir, scheduler_dir) = locate(path)?;
    let read_text = |p: PathBuf| {
        crate::input_file::read_text(&p, crate::input_file::TEXT_MAX).map_err(|e| {
            ImportError::Read {
                path: p,
                detail: e.to_string(),
            }
        })
    };
    let scheduler_config = read_text(scheduler_dir.join("scheduler_config.json"))?;
    let unet_config = read_text(unet_dir.join("config.json"))?;
    let weights = unet_dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        let pickled = unet_dir.join(parts::PICKLED_WEIGHTS).exists();
        return Err(ImportError::Layout(format!(
            "{} is missing{}",
            weights.display(),
            if pickled {
                format!("; {}", parts::pickled())
            } else {
                String::new()
            }
        )));
    }
    let bytes = crate::input_file::read(&weights, crate::input_file::MODEL_MAX).map_err(|e| {
        ImportError::Read {
            path: weights.clone(),
            detail: e.to_string(),
        }
    })?;
    let parts = PipelineParts {
        unet_config,
        scheduler_config,
        weights: bytes,
    };
    import_parts(&parts, &weights, path)
}

/// A diffusers model from its files' contents; `weights_path` names the weights in messages,
/// `folder` is where the files came from.
pub fn import_parts(
    parts: &PipelineParts,
    weights_path: &Path,
    folder: &Path,
) -> Result<Imported, ImportError> {
    let scheduler = SchedulerConfig::parse(&parts.scheduler_config)?;
    let mut arch = unet_config(&parts.unet_config, scheduler.num_train_timesteps())?;
    arch.noise_schedule = Some(scheduler.schedule.clone());
    let file = crate::nn::tensor_file::parse(weights_path, &parts.weights).map_err(|e| {
        ImportError::Read {
            path: weights_path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    let tensors = map_weights(&arch, file.tensors).map_err(|e| match e {
        ImportError::Weights(d) => ImportError::Weights(format!("{}: {d}", weights_path.display())),
        other => other,
    })?;
    Ok(Imported {
        arch,
        tensors,
        scheduler,
        folder: folder.to_path_buf(),
    })
}
