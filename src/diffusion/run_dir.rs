//! A run folder belongs to one run. `fewstep-run.json` records its kind (a training, a
//! distillation, a recipe) and an identity made when it was created; `.fewstep-lock` is held
//! (an exclusive advisory lock, released by the OS when the process ends, even on kill -9) while
//! a run writes the folder. So a distillation never writes into a training folder, two runs never
//! share one, and a recipe can tell its own stage folders from copies of another's.
//! Folders made before `fewstep-run.json` existed are recognised by the files each kind writes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A diffusers teacher's import (`--teacher DIR`), the run's teacher.
pub const IMPORTED_FILE: &str = "diffusers-teacher.safetensors";

pub const RUN_FILE: &str = "fewstep-run.json";
pub const LOCK_FILE: &str = ".fewstep-lock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Train,
    Distill,
    Recipe,
}

impl RunKind {
    /// The kind in words, as an error names it.
    pub fn what(self) -> &'static str {
        match self {
            RunKind::Train => "a training run (fewstep train)",
            RunKind::Distill => "a distillation (fewstep distill)",
            RunKind::Recipe => "a recipe (fewstep recipe)",
        }
    }

    /// Whether a file of this name is one only this kind writes (how folders made before
    /// `fewstep-run.json` are recognised).
    fn writes(self, name: &str) -> bool {
        match self {
            RunKind::Train => name == "state.safetensors" || name == "model.safetensors",
            RunKind::Distill => {
                name == "distill-state.safetensors"
                    || name == super::distill_plan::GUIDED_FILE
                    || name == super::distill_plan::REPARAM_FILE
                    || name == IMPORTED_FILE
                    || (name.starts_with("steps-") && name.ends_with(".safetensors"))
            }
            RunKind::Recipe => name == "recipe.json",
        }
    }
}

/// What `fewstep-run.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub kind: RunKind,
    /// Made once, when the folder was created; a copy of the folder carries it along.
    pub id: String,
    /// When the folder was created (RFC 3339).
    pub created: String,
}

/// The identity a run folder records; None where it records none (no folder, or one made before
/// identities were recorded). An unreadable record is an error.
pub fn identity(dir: &Path) -> Result<Option<RunIdentity>> {
    let path = dir.join(RUN_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let text = crate::input_file::read_text(&path, crate::input_file::TEXT_MAX)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let id = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged (it records which run the folder belongs to); restore it, or choose \
             another --out",
            path.display()
        )
    })?;
    Ok(Some(id))
}

/// The kind of run `dir` holds: the one recorded, else the one whose files it holds; None for a
/// folder that is new, empty or holds no run.
pub fn kind_of(dir: &Path) -> Result<Option<RunKind>> {
    if let Some(id) = identity(dir)? {
        return Ok(Some(id.kind));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // A recipe folder holds its stages' folders, not their files: its own file decides.
    for kind in [RunKind::Recipe, RunKind::Distill, RunKind::Train] {
        if names.iter().any(|n| kind.writes(n)) {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

/// Refuses `dir` for a run of `kind` when it is not a folder, or when it holds a run of another
/// kind (cheap: commands check before loading data or opening the GPU).
pub fn check_kind(dir: &Path, kind: RunKind) -> Result<()> {
    crate::output_path::check_dir("--out", dir)?;
    if let Some(found) = kind_of(dir)? {
        if found != kind {
            bail!(
                "{} holds {}; {} never writes into it (its files would be replaced): choose \
                 another --out",
                dir.display(),
                found.what(),
                kind.what()
            );
        }
    }
    Ok(())
}

/// A run folder claimed by this process: locked, its kind and identity recorded. Dropping it
/// releases the lock; a claim whose run wrote nothing takes its own files back (and the folder,
/// when it made it), so a start that fails leaves the folder as it found it.
pub struct RunDir {
    dir: PathBuf,
    identity: RunIdentity,
    /// Held for the lock; closing it releases the lock.
    _lock: File,
    made_folder: bool,
    wrote_identity: bool,
    found: BTreeSet<String>,
}

impl std::fmt::Debug for RunDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunDir")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .finish()
    }
}

impl RunDir {
    /// Claims `dir` (made if missing) for a run of `kind` started by `command`.
    pub fn claim(dir: &Path, kind: RunKind, command: &str) -> Result<RunDir> {
        check_kind(dir, kind)?;
        let made_folder = !dir.exists();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let found = entries(dir);
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "{} is in use by another fewstep run{}; wait for it to finish, or choose \
                     another --out",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    }
                );
            }
            // A file system without locks (some network mounts): the run goes on unguarded.
            Err(std::fs::TryLockError::Error(e)) => {
                log::warn!("cannot lock {}: {e}", lock_path.display());
            }
        }
        let who = format!(
            "pid {}, `{command}`, since {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let _ = lock
            .set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| lock.write_all(who.as_bytes()));
        // Read again under the lock: another process may have made the folder's identity.
        let (identity, wrote_identity) = match identity(dir)? {
            Some(id) if id.kind != kind => bail!(
                "{} holds {}; {} never writes into it: choose another --out",
                dir.display(),
                id.kind.what(),
                kind.what()
            ),
            Some(id) => (id, false),
            None => {
                let id = RunIdentity {
                    kind,
                    id: new_id(dir),
                    created: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                };
                let text = serde_json::to_string_pretty(&id)? + "\n";
                crate::atomic_file::write(&dir.join(RUN_FILE), text.as_bytes())
                    .with_context(|| format!("cannot write {}", dir.join(RUN_FILE).display()))?;
                (id, true)
            }
        };
        Ok(RunDir {
            dir: dir.to_path_buf(),
            identity,
            _lock: lock,
            made_folder,
            wrote_identity,
            found,
        })
    }

    pub fn identity(&self) -> &RunIdentity {
        &self.identity
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let mut ours = BTreeSet::from([LOCK_FILE.to_string()]);
        if self.wrote_identity {
            ours.insert(RUN_FILE.to_string());
        }
        let now = entries(&self.dir);
        let wrote_nothing = now
            .iter()
            .all(|n| self.found.contains(n) || ours.contains(n));
        if !wrote_nothing {
            return;
        }
        for name in &ours {
            if !self.found.contains(name) {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
        }
        if self.made_folder {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A new identity: unique enough to tell two runs apart (the process, the time, the folder).
fn new_id(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{}:{nanos}:{}", std::process::id(), dir.display());
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
