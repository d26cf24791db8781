//! Files written atomically: a crash or a kill leaves either the old file or the new one, never
//! half of one. A leaf module (std, tempfile and `input_file`'s file kinds), used by model files, run files, PNGs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `data` to `path` through a temporary file in the same directory: the file is fsynced,
/// renamed into place (tempfile's `persist`), and the directory fsynced so that the rename
/// itself survives a power cut. The temporary is `.NAME.tmp-PID` (what
/// `diffusion::run_files::remove_stale_temps` clears after a kill). Creates the directory.
/// Refuses to replace anything but a regular file: the rename would put a file in place of a
/// device node, a FIFO or a socket (as root, `/dev/null` itself).
pub fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if let Some(kind) = crate::input_file::not_regular(&meta) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is {kind}, not a file; fewstep replaces only regular files",
                    path.display()
                ),
            ));
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let prefix = format!(".{name}.tmp-{}", std::process::id());
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Removed again if anything below fails (NamedTempFile's drop).
        let mut f = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(0)
            .tempfile_in(&dir)?;
        f.write_all(data)?;
        f.as_file().sync_all()?;
        f.persist(path).map_err(|e| e.error)?;
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }
    #[cfg(target_arch = "wasm32")]
    {
        // No file system on the web (files are handed over from memory); kept for the API.
        let tmp = dir.join(prefix);
        std::fs::File::create(&tmp)?.write_all(data)?;
        std::fs::rename(&tmp, path)
    }
}
