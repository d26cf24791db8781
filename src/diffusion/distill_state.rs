//! What a checkpoint of a halving in progress holds, and how a distiller is rebuilt from it: the
//! one rule for `fewstep distill --resume` (distill_run.rs, a state file) and the browser tab's
//! resumed runs (distill_memory.rs, bytes in the browser's storage), so both continue exactly as
//! if never stopped.

use anyhow::Result;

use super::distill_plan::{guidance_config, halving_config, DistillPlan};
use super::distiller::Distiller;
use super::model::Denoiser;
use crate::gpu::Gpu;
use crate::nn::{self, tensor_file::LoadedFile, HostTensor, UNet};

/// The student's weights, Adam's moments and (with `--ema`) the EMA: `param.`, `adam_m.`,
/// `adam_v.` and `ema.` tensors.
pub async fn halving_tensors(d: &Distiller) -> Result<Vec<HostTensor>> {
    let specs = &d.student.net.layout.specs;
    let mut tensors = nn::read_tensors(specs, &d.student.net.params, "param.").await?;
    tensors.extend(nn::read_tensors(specs, &d.opt.m, "adam_m.").await?);
    tensors.extend(nn::read_tensors(specs, &d.opt.v, "adam_v.").await?);
    if let Some(ema) = &d.ema {
        tensors.extend(nn::read_tensors(specs, ema, "ema.").await?);
    }
    Ok(tensors)
}

/// Where a checkpoint stood: the halving's teacher step count (in stage 1, the first halving's),
/// whether stage 1 was in progress, and the updates done in it.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    pub teacher_steps: usize,
    pub guidance_stage: bool,
    pub update: u64,
}

/// The distiller of the halving in progress, from `teacher` (that halving's teacher) and the
/// tensors [`halving_tensors`] wrote to `file`; errors name `file.path`.
pub fn restore_distiller(
    gpu: &Gpu,
    teacher: Denoiser,
    plan: &DistillPlan,
    at: Position,
    file: &LoadedFile,
) -> Result<Distiller> {
    let err = |e: String| anyhow::anyhow!("{}: {e}", file.path.display());
    let mut arch = teacher.net.config.clone();
    let mut param = teacher.param;
    let cfg = if at.guidance_stage {
        if let Some(g) = plan.guided {
            arch.guidance = Some(g.range());
        }
        if let Some(r) = plan.reparam {
            param = r.param;
        }
        guidance_config(plan)
    } else {
        halving_config(plan, at.teacher_steps)
    };
    let layout = nn::Layout::new(&arch)?;
    let part = |prefix: &str| -> Result<Vec<crate::tensor::Tensor>> {
        let found = nn::check_tensors(&layout.specs, prefix, |n| file.get(n)).map_err(err)?;
        Ok(nn::upload_tensors(gpu, &found))
    };
    let student = Denoiser {
        net: UNet::from_params(arch, part("param.")?)?,
        param,
    };
    let mut d = Distiller::with_student(gpu, teacher, student, cfg, at.update);
    d.opt.m = part("adam_m.")?;
    d.opt.v = part("adam_v.")?;
    d.opt.step = at.update;
    if d.ema.is_some() {
        d.ema = Some(part("ema.")?);
    }
    Ok(d)
}
