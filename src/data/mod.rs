//! Data sets: readers for IDX (MNIST, Fashion-MNIST), CIFAR-10 binary batches and folders of
//! images, all held in memory as bytes, and deterministic batching for training.

mod batcher;
mod cifar;
mod dataset;
mod error;
mod folder;
mod idx;
mod spec;

pub use batcher::{epoch_permutation, Batcher};
pub use dataset::{known_class_names, Dataset};
pub use error::DataError;
pub use spec::{DataSpec, Split, ACCEPTED_FORMS, FASHION_MNIST_DIR, MNIST_DIR};

/// The IDX file names (without `.gz`) of a split: images, then labels.
pub use idx::file_names as idx_file_names;
pub use idx::from_gz_bytes as idx_from_gz_bytes;
