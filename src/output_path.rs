//! One rule for every path fewstep writes to, checked before any work starts: an output file's
//! folder must exist, an existing output must be a regular file (a device node, a FIFO, a socket or
//! a folder is never replaced), and an output is never one of the command's inputs (compared as
//! files: after links and `..`, hard links included). Run folders have their own rule
//! (`diffusion::run_dir`). A leaf module (std, anyhow and `input_file` only).

use std::path::Path;

use anyhow::{bail, Result};

/// Checks an output file `path` given as `flag` against the rule above; `inputs` are the
/// command's input files with the flags that named them.
pub fn check_file(flag: &str, path: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty: give a file name");
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Some(meta) = std::fs::metadata(parent).ok().filter(|m| !m.is_dir()) {
            bail!(
                "{flag} {}: {} is {}, not a folder; choose another path",
                path.display(),
                parent.display(),
                crate::input_file::not_regular(&meta).unwrap_or("a file")
            );
        }
        if !parent.is_dir() {
            bail!(
                "{flag} {}: the folder {} does not exist; create it first or choose another path",
                path.display(),
                parent.display()
            );
        }
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if let Some(kind) = crate::input_file::not_regular(&meta) {
            bail!(
                "{flag} {} is {kind}, not a file: fewstep writes only regular files and never \
                 replaces anything else; choose another path",
                path.display()
            );
        }
    }
    for (input_flag, input) in inputs {
        if same_file(path, input) {
            bail!(
                "{flag} {} is the file given as {input_flag}: fewstep never writes over its \
                 input; choose another {flag}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Checks that no two of a command's output files are the same file (one would overwrite the
/// other).
pub fn check_distinct(outputs: &[(&str, &Path)]) -> Result<()> {
    for (i, (a_flag, a)) in outputs.iter().enumerate() {
        for (b_flag, b) in &outputs[i + 1..] {
            if a == b || same_file(a, b) {
                bail!(
                    "{a_flag} and {b_flag} are the same file ({}): one would overwrite the \
                     other; give each its own path",
                    a.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks an output folder: where it exists, it must be a folder.
pub fn check_dir(flag: &str, path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty: give a folder");
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_dir() {
            let kind = crate::input_file::not_regular(&meta).unwrap_or("a file");
            bail!(
                "{flag} {} is {kind}, not a folder: give a folder (new or a run's own) for \
                 {flag}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether `a` and `b` are the same file: the same device and inode where both exist (a hard
/// link, a symbolic link or `..` all count), else the same path once resolved.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                ma.dev() == mb.dev() && ma.ino() == mb.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (ma, mb);
                matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(x), Ok(y)) if x == y
                )
            }
        }
        // An output that does not exist yet is no existing input; two new outputs are compared
        // by their resolved folders and names.
        _ => match (resolved(a), resolved(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn resolved(p: &Path) -> Option<std::path::PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
}
