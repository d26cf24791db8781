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
        // Removed again if anything below fails (NamedTempFile's drop). A temporary file is
        // made owner-only (0600), and the rename would carry that over: the file gets the
        // permissions a plain create gives (0666 less the umask), or keeps those of the file it
        // replaces, so a model hosted beside the web page or shared stays readable.
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).rand_bytes(0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut f = builder.tempfile_in(&dir)?;
        if let Ok(old) = std::fs::metadata(path) {
            f.as_file().set_permissions(old.permissions())?;
        }
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// A written file is as readable as one `File::create` makes (not the temporary's 0600),
    /// and a replaced file keeps its permissions.
    #[test]
    fn written_files_get_the_permissions_a_plain_create_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let written = tmp.path().join("written");
        super::write(&written, b"one").unwrap();
        assert_eq!(mode(&written), mode(&plain));
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o640)).unwrap();
        super::write(&written, b"two").unwrap();
        assert_eq!(mode(&written), 0o640);
        assert_eq!(std::fs::read(&written).unwrap(), b"two");
    }
}
