//! CIFAR-10, binary version: records of 1 label byte + 3072 pixel bytes (3x32x32, CHW).

use std::path::{Path, PathBuf};

use super::idx::read_maybe_gz;
use super::{DataError, Dataset, Split};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + PIXELS;

const LAYOUT: &str =
    "records of 1 label byte (0-9) + 3072 pixel bytes (3x32x32: all red, then green, \
     then blue)";

/// The batch file names for a split.
pub fn file_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

fn hint() -> String {
    format!(
        "Pass `--data cifar10:DIR` with DIR (or DIR/cifar-10-batches-bin) holding data_batch_1.bin .. \
         data_batch_5.bin and test_batch.bin, unpacked from the binary version (cifar-10-binary.tar.gz); \
         {LAYOUT}."
    )
}

/// The folder that holds the batches: `dir` itself, or its `cifar-10-batches-bin` subfolder.
fn batches_dir(dir: &Path) -> Result<PathBuf, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NotFound {
            what: "CIFAR-10 directory".to_string(),
            path: dir.to_path_buf(),
            hint: hint(),
        });
    }
    let sub = dir.join("cifar-10-batches-bin");
    let direct = ["data_batch_1.bin", "test_batch.bin"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if !direct && sub.is_dir() {
        Ok(sub)
    } else {
        Ok(dir.to_path_buf())
    }
}

/// Loads one split of CIFAR-10 from `dir`.
pub fn load(dir: &Path, split: Split, image_size: Option<usize>) -> Result<Dataset, DataError> {
    if let Some(s) = image_size {
        if s != SIDE {
            return Err(DataError::FixedSize {
                name: "cifar10".to_string(),
                native: SIDE,
                requested: s,
            });
        }
    }
    let dir = batches_dir(dir)?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in file_names(split) {
        let path = dir.join(&name);
        if !path.is_file() {
            return Err(DataError::NotFound {
                what: format!("CIFAR-10 batch {name}"),
                path,
                hint: hint(),
            });
        }
        let bytes = read_maybe_gz(&path)?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(DataError::Format {
                detail: format!(
                    "holds {} bytes, not a positive multiple of {RECORD}; expected {LAYOUT}. \
                     The file is truncated or not a batch from the binary version (cifar-10-binary.tar.gz)",
                    bytes.len()
                ),
                path,
            });
        }
        pixels.reserve(bytes.len() / RECORD * PIXELS);
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            if record[0] > 9 {
                return Err(DataError::Format {
                    detail: format!(
                        "record {i} has label {}, but CIFAR-10 labels are 0-9; expected {LAYOUT}",
                        record[0]
                    ),
                    path,
                });
            }
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
    }
    Ok(Dataset::from_pixels(
        "cifar10",
        3,
        SIDE,
        SIDE,
        pixels,
        Some(labels),
        true,
    ))
}
