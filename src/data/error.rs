//! Errors from reading data sets; each message names the file involved and how to fix it.

use std::path::PathBuf;

/// What went wrong while reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "unknown data set `{given}`: --data accepts {}",
        super::spec::ACCEPTED_FORMS
    )]
    UnknownSpec { given: String },

    #[error(
        "bad --data `{given}`: {reason} (accepted: {})",
        super::spec::ACCEPTED_FORMS
    )]
    BadSpec { given: String, reason: String },

    /// A directory or file that should be there is not. `hint` says how to get it.
    #[error("{what} not found: {} does not exist. {hint}", path.display())]
    NotFound {
        what: String,
        path: PathBuf,
        hint: String,
    },

    /// The OS error is in the message and not a `source()`, so a chain is not printed twice.
    #[error("cannot read {}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error(
        "{} is not an IDX {kind} file: its magic number is {found} (0x{found:08x}), expected {expected}; \
         the file is damaged or of another kind, download it again",
        path.display()
    )]
    BadMagic {
        path: PathBuf,
        kind: &'static str,
        found: u32,
        expected: u32,
    },

    #[error(
        "{} has the wrong size: its header implies {expected} bytes ({layout}) but it holds {actual}; \
         the file is truncated or damaged, download it again",
        path.display()
    )]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
        layout: String,
    },

    /// Anything else wrong with a file's contents.
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },

    #[error(
        "{name} images are {native}x{native} and cannot be resized: leave out the image size \
         (asked for {requested}); only images:DIR is resized"
    )]
    FixedSize {
        name: String,
        native: usize,
        requested: usize,
    },

    #[error("image size {0} is not usable: give a side length from 1 to 4096 pixels")]
    BadImageSize(usize),

    #[error(
        "no .png, .jpg or .jpeg files in {}: put the images directly in that folder (subfolders are not searched)",
        dir.display()
    )]
    NoImages { dir: PathBuf },

    #[error("cannot decode image {}: {err}; remove or replace that file", path.display())]
    Image {
        path: PathBuf,
        err: image::ImageError,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> DataError {
        DataError::Io {
            path: path.into(),
            err,
        }
    }
}
