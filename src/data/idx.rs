//! MNIST and Fashion-MNIST: the IDX format (big-endian header, then raw unsigned bytes), read
//! plain or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Split};

const IMAGES_MAGIC: u32 = 2051; // 0x00000803: unsigned bytes, 3 dimensions
const LABELS_MAGIC: u32 = 2049; // 0x00000801: unsigned bytes, 1 dimension

/// The two base file names (without `.gz`) for a split: images, labels.
pub fn file_names(split: Split) -> [&'static str; 2] {
    match split {
        Split::Train => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        Split::Test => ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }
}

/// All four expected files, for messages.
fn all_file_names() -> String {
    let [a, b] = file_names(Split::Train);
    let [c, d] = file_names(Split::Test);
    format!("{a}, {b}, {c} and {d} (each plain or with .gz)")
}

/// How to get the files, for a missing directory or file.
fn hint(name: &str) -> String {
    if name == "fashion-mnist" {
        format!(
            "Install Debian's package with `apt-get install dataset-fashion-mnist` (it puts the files in {}), \
             or pass `--data fashion-mnist:DIR` with DIR holding the four IDX files {}.",
            super::FASHION_MNIST_DIR,
            all_file_names()
        )
    } else {
        format!(
            "There is no default package for {name}: download the IDX files and pass `--data {name}:DIR` \
             with DIR holding {}.",
            all_file_names()
        )
    }
}

/// Reads a whole file (a regular file within [`crate::input_file::DATA_MAX`]), decompressing it
/// when its name ends in `.gz`; the decompressed bytes are bounded the same way.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    use crate::input_file::{read, DATA_MAX};
    let raw = read(path, DATA_MAX).map_err(|e| DataError::io(path, e))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if !gz {
        return Ok(raw);
    }
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .take(DATA_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    if bytes.len() as u64 > DATA_MAX {
        return Err(DataError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it decompresses to more than {} MB", DATA_MAX >> 20),
            ),
        ));
    }
    Ok(bytes)
}

/// Finds `base` in `dir`: plain, gzipped, or in the dotted spelling some mirrors use
/// (`train-images.idx3-ubyte`).
fn find(dir: &Path, base: &str, name: &str) -> Result<PathBuf, DataError> {
    let dotted = base.replacen("-idx", ".idx", 1);
    for candidate in [
        base.to_string(),
        format!("{base}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ] {
        // Anything by that name is taken, so that a FIFO or a folder there is named as such by
        // the reading rule instead of reported missing.
        let p = dir.join(&candidate);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(DataError::NotFound {
        what: format!("{name} file {base} (or {base}.gz)"),
        path: dir.join(base),
        hint: hint(name),
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn too_short(path: &Path, need: u64, actual: u64, kind: &str) -> DataError {
    DataError::WrongSize {
        path: path.to_path_buf(),
        expected: need,
        actual,
        layout: format!("at least the {need}-byte header of an IDX {kind} file"),
    }
}

/// Describes the byte count as decompressed when the file was gzipped.
fn size_note(path: &Path) -> &'static str {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        ", counted after decompression"
    } else {
        ""
    }
}

/// Parses an IDX image file: returns (count, rows, cols, pixels).
pub fn parse_images(
    path: &Path,
    bytes: &[u8],
) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let actual = bytes.len() as u64;
    if bytes.len() < 4 {
        return Err(too_short(path, 16, actual, "images"));
    }
    let magic = be_u32(bytes, 0);
    if magic != IMAGES_MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            kind: "images",
            found: magic,
            expected: IMAGES_MAGIC,
        });
    }
    if bytes.len() < 16 {
        return Err(too_short(path, 16, actual, "images"));
    }
    let (n, rows, cols) = (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12));
    if rows == 0 || cols == 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            detail: format!(
                "the header gives images of {rows}x{cols} pixels; both must be at least 1"
            ),
        });
    }
    if n == 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            detail: "the header gives 0 images; the file is damaged or empty, download it again"
                .to_string(),
        });
    }
    // Checked: three u32 header fields can multiply past u64 (and wrap onto the real size).
    let expected = u64::from(n)
        .checked_mul(u64::from(rows))
        .and_then(|v| v.checked_mul(u64::from(cols)))
        .and_then(|v| v.checked_add(16))
        .ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            detail: format!(
                "the header gives {n} images of {rows}x{cols} pixels, more bytes than any file \
                 holds; the file is damaged, download it again"
            ),
        })?;
    if actual != expected {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected,
            actual,
            layout: format!(
                "16-byte header + {n} images of {rows}x{cols} bytes{}",
                size_note(path)
            ),
        });
    }
    Ok((
        n as usize,
        rows as usize,
        cols as usize,
        bytes[16..].to_vec(),
    ))
}

/// Parses an IDX label file.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let actual = bytes.len() as u64;
    if bytes.len() < 4 {
        return Err(too_short(path, 8, actual, "labels"));
    }
    let magic = be_u32(bytes, 0);
    if magic != LABELS_MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            kind: "labels",
            found: magic,
            expected: LABELS_MAGIC,
        });
    }
    if bytes.len() < 8 {
        return Err(too_short(path, 8, actual, "labels"));
    }
    let n = be_u32(bytes, 4);
    if n == 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            detail: "the header gives 0 labels; the file is damaged or empty, download it again"
                .to_string(),
        });
    }
    let expected = 8 + u64::from(n);
    if actual != expected {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected,
            actual,
            layout: format!("8-byte header + {n} one-byte labels{}", size_note(path)),
        });
    }
    Ok(bytes[8..].to_vec())
}

/// A Fashion-MNIST-style data set from the bytes of its gzip-compressed IDX image and label
/// files (what the web page fetches: assets/fmnist-10k); `name` and `flip` as in `load`, which
/// builds its data set the same way.
pub fn from_gz_bytes(
    name: &str,
    images_gz: &[u8],
    labels_gz: &[u8],
    flip: bool,
) -> Result<Dataset, DataError> {
    let gunzip = |what: &str, bytes: &[u8]| {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| DataError::io(what, e))
    };
    let images_path = Path::new("train-images-idx3-ubyte.gz");
    let labels_path = Path::new("train-labels-idx1-ubyte.gz");
    let (n, rows, cols, pixels) = parse_images(
        images_path,
        &gunzip("train-images-idx3-ubyte.gz", images_gz)?,
    )?;
    let labels = parse_labels(
        labels_path,
        &gunzip("train-labels-idx1-ubyte.gz", labels_gz)?,
    )?;
    assemble(
        name,
        (images_path, n, rows, cols, pixels),
        (labels_path, labels),
        None,
        flip,
    )
}

/// Loads one split of an IDX data set (`name` is "fashion-mnist" or "mnist") from `dir`.
pub fn load(
    name: &str,
    dir: &Path,
    split: Split,
    image_size: Option<usize>,
    flip: bool,
) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NotFound {
            what: format!("{name} directory"),
            path: dir.to_path_buf(),
            hint: hint(name),
        });
    }
    let [images_base, labels_base] = file_names(split);
    let images_path = find(dir, images_base, name)?;
    let labels_path = find(dir, labels_base, name)?;
    let (n, rows, cols, pixels) = parse_images(&images_path, &read_maybe_gz(&images_path)?)?;
    let labels = parse_labels(&labels_path, &read_maybe_gz(&labels_path)?)?;
    assemble(
        name,
        (&images_path, n, rows, cols, pixels),
        (&labels_path, labels),
        image_size,
        flip,
    )
}

/// The data set from parsed image and label files, once they agree with each other (and with
/// the image size asked for, if any).
fn assemble(
    name: &str,
    (images_path, n, rows, cols, pixels): (&Path, usize, usize, usize, Vec<u8>),
    (labels_path, labels): (&Path, Vec<u8>),
    image_size: Option<usize>,
    flip: bool,
) -> Result<Dataset, DataError> {
    if labels.len() != n {
        return Err(DataError::Format {
            path: labels_path.to_path_buf(),
            detail: format!(
                "holds {} labels but {} holds {n} images; the two files must come from the same split",
                labels.len(),
                images_path.display()
            ),
        });
    }
    let classes = super::dataset::known_class_names(name).len();
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| classes > 0 && l as usize >= classes)
    {
        return Err(DataError::Format {
            path: labels_path.to_path_buf(),
            detail: format!(
                "label {i} is {l}, but {name} has {classes} classes (labels 0-{}); the file is                  damaged or from another data set, download it again",
                classes - 1
            ),
        });
    }
    if let Some(s) = image_size {
        if s != rows || s != cols {
            return Err(DataError::FixedSize {
                name: name.to_string(),
                native: rows,
                requested: s,
            });
        }
    }
    Ok(Dataset::from_pixels(
        name,
        1,
        rows,
        cols,
        pixels,
        Some(labels),
        flip,
    ))
}
