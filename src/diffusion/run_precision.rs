//! The precision a run computes in and the GEMM kernels it ran (tensor/tuner's plan), kept with
//! its checkpoint: a run resumed in another precision, or on other kernels, would not end with
//! the files an uninterrupted run writes, so `--resume` continues in the recorded precision (the
//! command line applies it before opening the device; another is refused) and with the
//! recorded kernels.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};

use crate::gpu::{Gpu, Precision};

/// Refuses to continue the run whose checkpoint is `state` (made in `recorded`) on `gpu` when
/// the device computes in another precision, saying what to do.
pub fn check_resume(recorded: Precision, gpu: &Gpu, state: &Path) -> Result<()> {
    let now = gpu.precision();
    if now == recorded {
        return Ok(());
    }
    let fix = match recorded {
        Precision::Mixed if crate::gpu::asked_precision() == Some(Precision::F32) => {
            "resume it with --precision mixed".to_string()
        }
        Precision::Mixed => format!(
            "the cooperative-matrix family does not run on this device ({}); resume it where \
             it does, or start the run again",
            gpu.variant_reason()
        ),
        Precision::F32 => "resume it with --precision f32 (the default), without \
                           FEWSTEP_PRECISION=mixed or FEWSTEP_KERNELS=coop"
            .to_string(),
    };
    bail!(
        "{} was made in {} precision, and this device computes in {}: its files would differ \
         from an uninterrupted run's; {fix}",
        state.display(),
        recorded.name(),
        now.name()
    )
}

/// Before a resumed run's first launch: refuses another precision ([`check_resume`]) and
/// continues with the kernels the run recorded in `state` (`None`: the fixed rule, as every
/// run before the tuner).
pub fn continue_run(
    precision: Precision,
    kernel_plan: Option<&std::collections::BTreeMap<String, String>>,
    gpu: &Gpu,
    state: &Path,
) -> Result<()> {
    check_resume(precision, gpu, state)?;
    crate::tensor::tuner::install(gpu, kernel_plan)
        .map_err(|e| anyhow::anyhow!("{}: {e}", state.display()))
}

/// The precision recorded under `key` (a JSON object with a `precision` field) in the
/// metadata of the safetensors file `path`, read from its header alone (a checkpoint can be
/// gigabytes). None when the file or the field is absent or unreadable: the run's own resume
/// reports those.
pub fn recorded(path: &Path, key: &str) -> Option<Precision> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let state = header.get("__metadata__")?.get(key)?.as_str()?;
    let state: serde_json::Value = serde_json::from_str(state).ok()?;
    match state.get("precision") {
        None => Some(Precision::F32),
        Some(p) => serde_json::from_value(p.clone()).ok(),
    }
}

/// Before a resumed run opens its device: continues in the recorded precision unless the user
/// asked for one (a mismatch is then refused by [`check_resume`]).
pub fn apply_recorded(path: &Path, key: &str) {
    if crate::gpu::asked_precision().is_none() {
        if let Some(p) = recorded(path, key).filter(|p| !p.is_default()) {
            eprintln!(
                "resuming in {} precision, as {} was made",
                p.name(),
                path.display()
            );
            crate::gpu::set_precision_flag(p);
        }
    }
}
