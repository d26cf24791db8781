//! metrics.jsonl of training and distillation runs: appending a line, and dropping the lines a
//! resumed run will log again.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};

use crate::nn::tensor_file;

pub fn append_jsonl(path: &Path, line: &impl Serialize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot append to {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?)?;
    Ok(())
}

/// Keeps the lines that parse as `T` and pass `keep` (rewritten atomically); no file, no change.
pub fn keep_jsonl<T: DeserializeOwned>(path: &Path, keep: impl Fn(&T) -> bool) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<T>(l)
                .map(|m| keep(&m))
                .unwrap_or(false)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    tensor_file::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

/// Removes the temporary files ([`tensor_file::write_atomic`]'s `.NAME.tmp-PID`) that a process
/// killed mid-write left in a run directory, so that a resumed run ends with only its own files.
/// Another live process writing into the same directory is not expected (a run has one owner).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let own = format!(".tmp-{}", std::process::id());
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") && !name.ends_with(&own) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
