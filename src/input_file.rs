//! One rule for every file fewstep reads as a model, a state, a classifier or data: it must be a
//! regular file (never a FIFO that blocks, a device that never ends, a folder), no larger than a
//! bound checked before a byte is read. A model may also be named by a bundled model's name where
//! no file of that name exists. A leaf module (std and `bundled` only).

use std::io::Read;
use std::path::Path;

/// The largest model file fewstep reads (DDPM's CIFAR-10 net is 143 MB in f32; 4 GiB leaves room
/// for every size the U-Net's limits allow).
pub const MODEL_MAX: u64 = 4 << 30;
/// The largest run state (weights, two Adam moments and the EMA: four copies of a model).
pub const STATE_MAX: u64 = 16 << 30;
/// The largest data file (an IDX archive, a CIFAR-10 batch, one image of a folder).
pub const DATA_MAX: u64 = 1 << 30;
/// The largest small text file (a recipe's state, a manifest, a run's metrics).
pub const TEXT_MAX: u64 = 256 << 20;

/// What a path is, in words, when it is not a regular file (None for a regular file).
pub fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

fn refuse(detail: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, detail)
}

/// Reads a regular file of at most `max` bytes. The type and size are checked on the path before
/// it is opened (opening a FIFO would block), then the read itself stops at `max + 1` bytes in
/// case the file grew.
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(refuse(format!(
            "it is {kind}; fewstep reads only regular files"
        )));
    }
    let too_big = |len: u64| {
        refuse(format!(
            "it holds {len} bytes, more than the {} MB fewstep reads from such a file",
            max >> 20
        ))
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| refuse("it is not UTF-8 text".to_string()))
}

/// Whether `name` stands for a bundled file: it names one and no file (or anything else) exists
/// at that path.
pub fn is_bundled_name(name: &Path) -> bool {
    bundled_bytes(name).is_some()
}

/// Refuses a model given as `flag` that is neither a path where something exists nor a bundled
/// model's name, with the bundled names in the message (every command that takes a model says
/// the same).
pub fn check_model_exists(flag: &str, path: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok() || is_bundled_name(path) {
        return Ok(());
    }
    let names: Vec<&str> = crate::bundled::BUNDLED.iter().map(|b| b.name).collect();
    Err(format!(
        "{flag} {}: no such file, and no bundled model has that name; the bundled models are {}, \
         or give the path of a .safetensors model file",
        path.display(),
        names.join(", ")
    ))
}

/// The bytes of a model: the file at `path`, or, where nothing exists there, the bundled model
/// (or the bundled classifier) of that name.
pub fn read_model(path: &Path) -> std::io::Result<Vec<u8>> {
    read_or_bundled(path, MODEL_MAX)
}

/// [`read`], or the bundled file that `path` names where nothing exists there.
pub fn read_or_bundled(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    if let Some(bytes) = bundled_bytes(path) {
        return Ok(bytes.to_vec());
    }
    read(path, max)
}

#[cfg(not(target_arch = "wasm32"))]
fn bundled_bytes(path: &Path) -> Option<&'static [u8]> {
    if std::fs::symlink_metadata(path).is_ok() {
        return None;
    }
    let name = path.to_str()?;
    if let Some(m) = crate::bundled::find(name) {
        return Some(m.bytes());
    }
    crate::bundled::CLASSIFIER
        .matches(name)
        .then(|| crate::bundled::CLASSIFIER.bytes())
}

#[cfg(target_arch = "wasm32")]
fn bundled_bytes(_: &Path) -> Option<&'static [u8]> {
    None
}
