//! Moving a parameter list between the GPU and named host tensors, checked against a layout.

use super::layout::ParamSpec;
use super::tensor_file::HostTensor;
use crate::gpu::{Gpu, GpuError};
use crate::tensor::Tensor;

/// Reads GPU tensors back as named host tensors (`prefix` + layout name).
pub async fn read_tensors(
    specs: &[ParamSpec],
    tensors: &[Tensor],
    prefix: &str,
) -> Result<Vec<HostTensor>, GpuError> {
    let mut out = Vec::with_capacity(specs.len());
    for (s, t) in specs.iter().zip(tensors) {
        out.push(HostTensor {
            name: format!("{prefix}{}", s.name),
            shape: s.shape.clone(),
            data: t.to_vec().await?,
        });
    }
    Ok(out)
}

/// Checks that `find(prefix + name)` gives a tensor of the right shape for every parameter, and
/// names the first that is missing or differs.
pub fn check_tensors<'a>(
    specs: &[ParamSpec],
    prefix: &str,
    find: impl Fn(&str) -> Option<&'a HostTensor>,
) -> Result<Vec<&'a HostTensor>, String> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let name = format!("{prefix}{}", s.name);
        let t = find(&name).ok_or_else(|| format!("tensor `{name}` is missing"))?;
        if t.shape != s.shape {
            return Err(format!(
                "tensor `{name}` has shape {:?}, the architecture needs {:?}",
                t.shape, s.shape
            ));
        }
        if t.data.len() != s.numel() {
            return Err(format!("tensor `{name}` holds {} values", t.data.len()));
        }
        out.push(t);
    }
    Ok(out)
}

pub fn upload_tensors(gpu: &Gpu, tensors: &[&HostTensor]) -> Vec<Tensor> {
    tensors
        .iter()
        .map(|t| Tensor::from_slice(gpu, &t.shape, &t.data))
        .collect()
}
