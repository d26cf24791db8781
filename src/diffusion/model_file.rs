//! Model files (ARCHITECTURE.md, Model files): weights in safetensors, a JSON description under
//! the metadata key `fewstep`. A reader rejects any file whose tensors do not match the
//! description and names the first mismatch.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::Denoiser;
use super::parameterization::Parameterization;
use crate::gpu::Gpu;
use crate::nn::{self, tensor_file, FileError, HostTensor, StoreAs, UNet, UNetConfig};

/// The format of fewstep's own models (what every fewstep reads).
pub const FORMAT_VERSION: u32 = 1;
/// The format of models whose architecture uses the options of imported diffusers networks
/// (`UNetConfig::uses_diffusers_options`): a fewstep made before them would ignore those fields
/// and run a different network, so it must refuse the file instead (it reads only format 1).
pub const DIFFUSERS_FORMAT_VERSION: u32 = 2;
/// The safetensors metadata key holding the JSON description.
pub const META_KEY: &str = "fewstep";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// SHA-256 of the file this model was distilled from (absent for a teacher).
    pub parent_sha256: Option<String>,
    /// Halvings of progressive distillation done since the teacher.
    pub halvings: u32,
    /// Step counts along the way, from the teacher's down to this model's.
    #[serde(default)]
    pub steps_path: Vec<u32>,
    /// SHA-256 of the file this one is a copy of in another precision (`fewstep convert`): the
    /// same model, so a student's `parent_sha256` may name either file. Absent in the files
    /// `train` and `distill` write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from_sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    pub arch: UNetConfig,
    /// [channels, height, width]
    pub image: [usize; 3],
    pub parameterization: Parameterization,
    pub schedule: String,
    /// The number of sampling steps the model was distilled for; None for a teacher.
    pub steps: Option<u32>,
    pub lineage: Lineage,
    pub dataset: String,
    pub training_steps: u64,
    pub command: String,
    /// What the run that made this file computed in (`--precision`); absent: f32, the default,
    /// and every file made before the option existed.
    #[serde(default, skip_serializing_if = "crate::gpu::Precision::is_default")]
    pub precision: crate::gpu::Precision,
    /// The GEMM kernel each problem bucket of the run that made this file ran on (tensor/tuner);
    /// absent: the fixed rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_plan: Option<std::collections::BTreeMap<String, String>>,
}

impl ModelMeta {
    pub fn describe(&self) -> String {
        let kind = match self.steps {
            Some(s) => format!("distilled {s}-step model"),
            None => "teacher".to_string(),
        };
        let a = &self.arch;
        let classes = match (a.classes, a.guidance) {
            (0, _) => String::new(),
            (n, None) => format!(", {n} classes"),
            (n, Some(g)) => format!(
                ", {n} classes, guidance w {}..{} as an input",
                g.w_min, g.w_max
            ),
        };
        let precision = if self.precision.is_default() {
            String::new()
        } else {
            format!(", computed in {} precision", self.precision.name())
        };
        format!(
            "{kind}: preset {}, {}x{}x{} images, {} parameterization{classes}, data {}, {} training updates{precision}",
            self.arch.preset,
            self.image[0],
            self.image[1],
            self.image[2],
            self.parameterization,
            self.dataset,
            self.training_steps
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{0} is a safetensors file but not a fewstep model (no `fewstep` metadata); \
         fewstep reads the files that `fewstep train` and `fewstep distill` write"
    )]
    NotFewstep(String),
    #[error("{path}: the model description is unreadable ({detail})")]
    BadMeta { path: String, detail: String },
    #[error(
        "{path}: written by a newer fewstep (format {found}, this one reads up to {DIFFUSERS_FORMAT_VERSION})"
    )]
    Version { path: String, found: u32 },
    #[error("{path} does not match the architecture it describes: {detail}")]
    Mismatch { path: String, detail: String },
    #[error(transparent)]
    Config(#[from] nn::ConfigError),
    #[error("{path}: {detail}")]
    Diffusers { path: String, detail: String },
}

/// Writes the model (weights read from the GPU beforehand) atomically.
pub fn save_model(
    path: &Path,
    meta: &ModelMeta,
    weights: &[HostTensor],
    store: StoreAs,
) -> Result<(), ModelError> {
    tensor_file::write(path, weights, model_metadata(meta), store)?;
    Ok(())
}

/// The bytes `save_model` would write (for a model made where there are no files: the web page).
pub fn model_bytes(
    name: &str,
    meta: &ModelMeta,
    weights: &[HostTensor],
    store: StoreAs,
) -> Result<Vec<u8>, ModelError> {
    Ok(tensor_file::encode(
        Path::new(name),
        weights,
        model_metadata(meta),
        store,
    )?)
}

fn model_metadata(meta: &ModelMeta) -> HashMap<String, String> {
    let mut md = HashMap::new();
    let mut meta = meta.clone();
    if meta.arch.uses_diffusers_options() {
        meta.format_version = meta.format_version.max(DIFFUSERS_FORMAT_VERSION);
    }
    md.insert(
        META_KEY.to_string(),
        serde_json::to_string(&meta).expect("metadata serialises"),
    );
    md.insert("format".into(), "fewstep".into());
    md
}

/// Parses and checks a model file's description and tensors (no GPU needed).
pub fn parse_model(path: &Path, bytes: &[u8]) -> Result<(ModelMeta, Vec<HostTensor>), ModelError> {
    let file = tensor_file::parse(path, bytes)?;
    let shown = path.display().to_string();
    let json = file
        .metadata
        .get(META_KEY)
        .ok_or_else(|| ModelError::NotFewstep(shown.clone()))?;
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| ModelError::BadMeta {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found > DIFFUSERS_FORMAT_VERSION {
        return Err(ModelError::Version { path: shown, found });
    }
    let meta: ModelMeta = serde_json::from_value(value).map_err(|e| ModelError::BadMeta {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let mismatch = |detail: String| ModelError::Mismatch {
        path: shown.clone(),
        detail,
    };
    let a = &meta.arch;
    // Every size field bounded before any arithmetic or allocation that uses it.
    a.check_sizes()?;
    if meta.image != [a.in_channels, a.height, a.width] {
        return Err(mismatch(format!(
            "image shape {:?} but the network takes {}x{}x{}",
            meta.image, a.in_channels, a.height, a.width
        )));
    }
    if a.out_channels != a.in_channels * meta.parameterization.heads() {
        return Err(mismatch(format!(
            "{} output channels, but `{}` needs {}",
            a.out_channels,
            meta.parameterization,
            a.in_channels * meta.parameterization.heads()
        )));
    }
    if let Some(s) = meta.steps {
        if !s.is_power_of_two() || s as usize > super::sampler::MAX_STEPS {
            return Err(mismatch(format!(
                "it says it was distilled for {s} sampling steps, but distillation halves step \
                 counts, so a student's count is a power of 2 from 1 to {}; the description \
                 was edited or damaged",
                super::sampler::MAX_STEPS
            )));
        }
        if let Some(&last) = meta.lineage.steps_path.last() {
            if last != s {
                return Err(mismatch(format!(
                    "it says it was distilled for {s} sampling steps, but its lineage ends at \
                     {last}; the description was edited or damaged"
                )));
            }
        }
    }
    a.validate()?;
    let layout = nn::Layout::new(a)?;
    let ordered = nn::check_tensors(&layout.specs, "", |n| file.get(n)).map_err(mismatch)?;
    if file.tensors.len() != layout.specs.len() {
        let extra = file
            .tensors
            .iter()
            .find(|t| !layout.specs.iter().any(|s| s.name == t.name))
            .map(|t| t.name.clone())
            .unwrap_or_default();
        return Err(mismatch(format!(
            "{} tensors where the architecture has {} (first unexpected: `{extra}`)",
            file.tensors.len(),
            layout.specs.len()
        )));
    }
    if let Some(t) = ordered
        .iter()
        .find(|t| t.data.iter().any(|v| !v.is_finite()))
    {
        return Err(mismatch(format!(
            "tensor `{}` holds NaN or infinite values",
            t.name
        )));
    }
    let tensors = ordered.into_iter().cloned().collect();
    Ok((meta, tensors))
}

/// A model file loaded onto the GPU.
pub fn load_model_bytes(
    gpu: &Gpu,
    path: &Path,
    bytes: &[u8],
) -> Result<(Denoiser, ModelMeta), ModelError> {
    let (meta, tensors) = parse_model(path, bytes)?;
    let refs: Vec<&HostTensor> = tensors.iter().collect();
    let params = nn::upload_tensors(gpu, &refs);
    let net = UNet::from_params(meta.arch.clone(), params)?;
    Ok((
        Denoiser {
            net,
            param: meta.parameterization,
        },
        meta,
    ))
}

/// A diffusers model folder read as a fewstep teacher (see [`crate::diffusers`]): its
/// description as a model file of it would hold.
pub fn import_diffusers(path: &Path) -> Result<(ModelMeta, Vec<HostTensor>), ModelError> {
    let m = crate::diffusers::import_folder(path).map_err(|e| ModelError::Diffusers {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(imported_model(m, &path.display().to_string()))
}

/// A diffusers pipeline from its files' contents (dropped on the web page, or fetched from
/// beside it) as a fewstep model file in memory, what `import_diffusers` makes of a folder;
/// `source` says where the files came from.
pub fn pipeline_model_bytes(
    parts: &crate::diffusers::PipelineParts,
    source: &str,
) -> Result<Vec<u8>, ModelError> {
    let weights = Path::new(source)
        .join("unet")
        .join(crate::diffusers::WEIGHTS_FILE);
    let m = crate::diffusers::import_parts(parts, &weights, Path::new(source)).map_err(|e| {
        ModelError::Diffusers {
            path: source.to_string(),
            detail: e.to_string(),
        }
    })?;
    let (meta, tensors) = imported_model(m, source);
    model_bytes(source, &meta, &tensors, StoreAs::F32)
}

fn imported_model(m: crate::diffusers::Imported, source: &str) -> (ModelMeta, Vec<HostTensor>) {
    let parameterization = match m.scheduler.prediction {
        crate::diffusers::Prediction::Epsilon => Parameterization::Eps,
        crate::diffusers::Prediction::V => Parameterization::V,
        crate::diffusers::Prediction::Sample => Parameterization::X,
    };
    let meta = ModelMeta {
        format_version: DIFFUSERS_FORMAT_VERSION,
        image: [m.arch.in_channels, m.arch.height, m.arch.width],
        arch: m.arch,
        parameterization,
        schedule: "discrete".into(),
        steps: None,
        lineage: Lineage::default(),
        dataset: format!("diffusers:{source}"),
        training_steps: 0,
        command: format!("imported from the diffusers folder {source}"),
        precision: Default::default(),
        kernel_plan: None,
    };
    (meta, m.tensors)
}

/// Loads a model file, a bundled model by its name (see [`crate::input_file::read_model`]), or
/// a diffusers model folder.
pub fn load_model(gpu: &Gpu, path: &Path) -> Result<(Denoiser, ModelMeta), ModelError> {
    if path.is_dir() {
        let (meta, tensors) = import_diffusers(path)?;
        let refs: Vec<&HostTensor> = tensors.iter().collect();
        let net = UNet::from_params(meta.arch.clone(), nn::upload_tensors(gpu, &refs))?;
        return Ok((
            Denoiser {
                net,
                param: meta.parameterization,
            },
            meta,
        ));
    }
    let bytes = crate::input_file::read_model(path).map_err(|err| FileError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    load_model_bytes(gpu, path, &bytes)
}

/// SHA-256 of a file's bytes, hex (for lineage).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
