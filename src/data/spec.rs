//! The `--data` argument: which data set, and where its files live.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::DataError;

/// Where Debian's `dataset-fashion-mnist` package installs the four IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Where `mnist` (without a directory) looks; no Debian package installs it there.
pub const MNIST_DIR: &str = "/usr/share/datasets/mnist";

/// The accepted forms of `--data`, for error messages and help text.
pub const ACCEPTED_FORMS: &str =
    "fashion-mnist, fashion-mnist:DIR, mnist, mnist:DIR, cifar10:DIR, images:DIR";

/// Which half of a data set to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

/// Parsed from the --data argument: "fashion-mnist", "fashion-mnist:DIR", "mnist", "mnist:DIR",
/// "cifar10:DIR", "images:DIR".
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// IDX files; `None` means [`FASHION_MNIST_DIR`].
    FashionMnist(Option<PathBuf>),
    /// IDX files; `None` means [`MNIST_DIR`].
    Mnist(Option<PathBuf>),
    /// The CIFAR-10 binary batches (`data_batch_1.bin` .. `test_batch.bin`).
    Cifar10(PathBuf),
    /// A folder of PNG/JPEG files.
    Images(PathBuf),
}

impl DataSpec {
    /// The data set's short name, as stored in `Dataset::name` and in model metadata.
    pub fn name(&self) -> &'static str {
        match self {
            DataSpec::FashionMnist(_) => "fashion-mnist",
            DataSpec::Mnist(_) => "mnist",
            DataSpec::Cifar10(_) => "cifar10",
            DataSpec::Images(_) => "images",
        }
    }

    /// The directory the files are read from (the default one where the spec names none).
    pub fn dir(&self) -> PathBuf {
        match self {
            DataSpec::FashionMnist(d) => d.clone().unwrap_or_else(|| FASHION_MNIST_DIR.into()),
            DataSpec::Mnist(d) => d.clone().unwrap_or_else(|| MNIST_DIR.into()),
            DataSpec::Cifar10(d) | DataSpec::Images(d) => d.clone(),
        }
    }
}

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<DataSpec, DataError> {
        let given = s.trim();
        // Names never contain ':', so the first one separates the name from the directory
        // (a Windows path such as `images:C:\pics` keeps its own colon).
        let (name, dir) = match given.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (given, None),
        };
        let bad = |reason: &str| DataError::BadSpec {
            given: given.to_string(),
            reason: reason.to_string(),
        };
        if dir.is_some_and(str::is_empty) {
            return Err(bad("the directory after ':' is empty"));
        }
        let dir = dir.map(PathBuf::from);
        match (name, dir) {
            ("fashion-mnist", d) => Ok(DataSpec::FashionMnist(d)),
            ("mnist", d) => Ok(DataSpec::Mnist(d)),
            ("cifar10", Some(d)) => Ok(DataSpec::Cifar10(d)),
            ("images", Some(d)) => Ok(DataSpec::Images(d)),
            ("cifar10", None) => Err(bad(
                "cifar10 needs the folder of the binary batches: write cifar10:DIR",
            )),
            ("images", None) => Err(bad("images needs a folder: write images:DIR")),
            _ => Err(DataError::UnknownSpec {
                given: given.to_string(),
            }),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self {
            DataSpec::FashionMnist(d) | DataSpec::Mnist(d) => d.as_ref(),
            DataSpec::Cifar10(d) | DataSpec::Images(d) => Some(d),
        };
        match dir {
            Some(d) => write!(f, "{}:{}", self.name(), d.display()),
            None => f.write_str(self.name()),
        }
    }
}
