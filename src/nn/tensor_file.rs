//! Named f32 tensors in a safetensors file, written atomically (temporary file, fsync, rename),
//! read with every failure turned into an error that names the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// One named host tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The OS error is part of the message and deliberately not a `source()`: a report that prints
/// the chain (`{:#}`) would otherwise say it twice.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error(
        "{path} is not a valid safetensors file ({detail}); it may be truncated or corrupt: \
         re-create it or copy it again"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Content { path: PathBuf, detail: String },
}

/// How tensors are stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAs {
    F32,
    /// Half precision, for small shipped models (read back as f32).
    F16,
}

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn write(
    path: &Path,
    tensors: &[HostTensor],
    metadata: HashMap<String, String>,
    store: StoreAs,
) -> Result<(), FileError> {
    write_atomic(path, &encode(path, tensors, metadata, store)?)
}

/// The safetensors bytes of `tensors` and `metadata` (header keys sorted); `path` only names
/// the file in errors.
pub fn encode(
    path: &Path,
    tensors: &[HostTensor],
    metadata: HashMap<String, String>,
    store: StoreAs,
) -> Result<Vec<u8>, FileError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| match store {
            StoreAs::F32 => bytemuck::cast_slice(&t.data).to_vec(),
            StoreAs::F16 => t
                .data
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        })
        .collect();
    let dtype = match store {
        StoreAs::F32 => Dtype::F32,
        StoreAs::F16 => Dtype::F16,
    };
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view =
                TensorView::new(dtype, t.shape.clone(), b).map_err(|e| FileError::Content {
                    path: path.to_path_buf(),
                    detail: format!("tensor {}: {e}", t.name),
                })?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<_, FileError>>()?;
    let data = safetensors::serialize(views, Some(metadata)).map_err(|e| FileError::Content {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    sorted_header(&data).map_err(|detail| FileError::Content {
        path: path.to_path_buf(),
        detail,
    })
}

/// The same safetensors bytes with every key of the JSON header sorted. The library writes the
/// metadata in a hash map's order, which changes from process to process; sorted, the same
/// tensors and metadata always give the same bytes (resumed and uninterrupted runs agree).
fn sorted_header(file: &[u8]) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let n = file
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("no header length")?;
    let header = file.get(8..8 + n).ok_or("header past the end")?;
    let value: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let sorted: BTreeMap<String, serde_json::Value> = value
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Object(m) if k == "__metadata__" => {
                    let m: BTreeMap<String, serde_json::Value> = m.into_iter().collect();
                    serde_json::to_value(m).map_err(|e| e.to_string())?
                }
                other => other,
            };
            Ok((k, v))
        })
        .collect::<Result<_, String>>()?;
    let mut json = serde_json::to_vec(&sorted).map_err(|e| e.to_string())?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + file.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&file[8 + n..]);
    Ok(out)
}

/// Writes bytes to `path` atomically ([`crate::atomic_file::write`]); errors name the path.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    crate::atomic_file::write(path, data).map_err(|err| FileError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// A file read into memory: metadata and named f32 tensors, in the file's order.
pub struct LoadedFile {
    pub path: PathBuf,
    pub metadata: HashMap<String, String>,
    pub tensors: Vec<HostTensor>,
}

impl LoadedFile {
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Reads a safetensors file (a model, a state, a classifier) by the one reading rule
/// ([`crate::input_file`]): a regular file within the size bound, or a bundled file's name.
pub fn read(path: &Path) -> Result<LoadedFile, FileError> {
    let bytes =
        crate::input_file::read_or_bundled(path, crate::input_file::STATE_MAX).map_err(|err| {
            FileError::Read {
                path: path.to_path_buf(),
                err,
            }
        })?;
    parse(path, &bytes)
}

/// Parses file contents already in memory (the browser gets models as bytes).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<LoadedFile, FileError> {
    let corrupt = |detail: String| FileError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    // Keep the file's own order (offsets), which is the writer's order.
    let mut names: Vec<(usize, String)> = header
        .tensors()
        .iter()
        .map(|(name, info)| (info.data_offsets.0, name.clone()))
        .collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for (_, name) in names {
        let view = st.tensor(&name).map_err(|e| corrupt(e.to_string()))?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // Read (diffusers checkpoints come in bf16 too), never written.
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(FileError::Content {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor {name} has dtype {other:?}; fewstep reads F32, F16 and BF16"
                    ),
                })
            }
        };
        tensors.push(HostTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok(LoadedFile {
        path: path.to_path_buf(),
        metadata,
        tensors,
    })
}
