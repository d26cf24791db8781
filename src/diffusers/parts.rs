//! A pipeline's files as bytes, wherever they come from: read from a folder, fetched from beside
//! the web page, or dropped on it one by one (a browser gives a page the files of a drop, not the
//! folders they were in). [`PipelineFiles`] collects them by file name until the network, its
//! weights and the scheduler are all there.

use std::path::Path;

use super::ImportError;

/// `unet/config.json`.
pub const UNET_CONFIG: &str = "config.json";
/// `scheduler/scheduler_config.json`.
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";
/// The pipeline's index; it names the parts' classes and is not needed to build the model.
pub const MODEL_INDEX: &str = "model_index.json";
/// The pickled weights older diffusers wrote, which fewstep does not read.
pub const PICKLED_WEIGHTS: &str = "diffusion_pytorch_model.bin";

/// What a diffusers model is made of.
#[derive(Clone, Debug)]
pub struct PipelineParts {
    pub unet_config: String,
    pub scheduler_config: String,
    pub weights: Vec<u8>,
}

/// A pipeline's files arriving one at a time, matched by file name.
#[derive(Debug, Default)]
pub struct PipelineFiles {
    unet_config: Option<String>,
    scheduler_config: Option<String>,
    weights: Option<Vec<u8>>,
}

/// The file name of `name` (a path, or a plain name).
fn file_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

impl PipelineFiles {
    /// Whether a file called `name` belongs to a diffusers pipeline (and not to fewstep's own
    /// model files).
    pub fn is_part(name: &str) -> bool {
        matches!(
            file_name(name),
            UNET_CONFIG | SCHEDULER_CONFIG | MODEL_INDEX | super::WEIGHTS_FILE | PICKLED_WEIGHTS
        )
    }

    /// Takes one file. A second file of the same kind replaces the first (the newer drop wins).
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), ImportError> {
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| ImportError::Json {
                file: name.to_string(),
                detail: "not UTF-8 text".into(),
            })
        };
        match file_name(name) {
            UNET_CONFIG => self.unet_config = Some(text(bytes)?),
            SCHEDULER_CONFIG => self.scheduler_config = Some(text(bytes)?),
            MODEL_INDEX => {}
            super::WEIGHTS_FILE => self.weights = Some(bytes),
            PICKLED_WEIGHTS => return Err(pickled()),
            other => {
                return Err(ImportError::Layout(format!(
                    "{other} is not a file of a diffusers pipeline"
                )))
            }
        }
        Ok(())
    }

    /// The files still needed, as paths inside a pipeline folder.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.unet_config.is_none() {
            m.push("unet/config.json");
        }
        if self.weights.is_none() {
            m.push("unet/diffusion_pytorch_model.safetensors");
        }
        if self.scheduler_config.is_none() {
            m.push("scheduler/scheduler_config.json");
        }
        m
    }

    /// The parts once all have arrived (and the collection starts over), else None.
    pub fn take_complete(&mut self) -> Option<PipelineParts> {
        if !self.missing().is_empty() {
            return None;
        }
        let s = std::mem::take(self);
        Some(PipelineParts {
            unet_config: s.unet_config?,
            scheduler_config: s.scheduler_config?,
            weights: s.weights?,
        })
    }

    /// What to tell someone who dropped some of the files.
    pub fn waiting_note(&self) -> String {
        format!(
            "part of a diffusers pipeline, kept until the rest arrives: drop {} too",
            self.missing().join(" and ")
        )
    }
}

pub(super) fn pickled() -> ImportError {
    ImportError::Layout(
        "the pipeline has PyTorch pickle weights (diffusion_pytorch_model.bin), which fewstep \
         does not read: save the pipeline again with diffusers' save_pretrained(DIR, \
         safe_serialization=True)"
            .into(),
    )
}

/// A model's display name from its unet config (`_name_or_path`, what diffusers recorded it was
/// loaded from), else `fallback`.
pub fn model_name(unet_config: &str, fallback: &str) -> String {
    serde_json::from_str::<serde_json::Value>(unet_config)
        .ok()
        .and_then(|v| v.get("_name_or_path")?.as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
        .map(|n| {
            let n = n.trim_end_matches(['/', '\\']);
            let n = n.strip_suffix("/unet").unwrap_or(n);
            format!(
                "{} (diffusers)",
                Path::new(n)
                    .file_name()
                    .map_or(n.into(), |f| f.to_string_lossy())
            )
        })
        .unwrap_or_else(|| fallback.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_collected_by_name_until_all_have_arrived() {
        let mut p = PipelineFiles::default();
        assert!(PipelineFiles::is_part("unet/config.json"));
        assert!(PipelineFiles::is_part("scheduler_config.json"));
        assert!(!PipelineFiles::is_part("steps-4.safetensors"));
        assert_eq!(p.missing().len(), 3);
        p.add("model_index.json", b"{}".to_vec()).unwrap();
        p.add("scheduler_config.json", b"{\"a\": 1}".to_vec())
            .unwrap();
        assert!(p.take_complete().is_none());
        assert_eq!(
            p.missing(),
            [
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
        assert!(p
            .waiting_note()
            .contains("drop unet/config.json and unet/diffusion_pytorch_model.safetensors too"));
        p.add("C:\\pipe\\unet\\config.json", b"{}".to_vec())
            .unwrap();
        p.add(super::super::WEIGHTS_FILE, vec![1, 2]).unwrap();
        let parts = p.take_complete().expect("complete");
        assert_eq!(parts.scheduler_config, "{\"a\": 1}");
        assert_eq!(parts.weights, [1, 2]);
        // The collection starts over.
        assert_eq!(p.missing().len(), 3);
        let e = p.add(PICKLED_WEIGHTS, vec![]).unwrap_err().to_string();
        assert!(e.contains("safe_serialization=True"), "{e}");
        let e = p.add("config.json", vec![0xff]).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_model_is_named_after_what_diffusers_loaded_it_from() {
        let c = r#"{"_name_or_path": "/home/me/ddpm-ema-church-256/unet"}"#;
        assert_eq!(model_name(c, "x"), "ddpm-ema-church-256 (diffusers)");
        assert_eq!(model_name(r#"{"_name_or_path": ""}"#, "x"), "x");
        assert_eq!(model_name("{}", "dropped"), "dropped");
    }
}
