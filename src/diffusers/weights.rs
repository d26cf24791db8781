//! `UNet2DModel`'s tensors (`diffusion_pytorch_model.safetensors`) under fewstep's names, in the
//! order of fewstep's [`Layout`]: q, k and v joined into one 1x1 convolution, linear layers of
//! attention read as 1x1 convolutions, the class embedding as a dense layer with a "no class"
//! column of zeros. Every tensor of the file is used once; a missing, unused or misshapen one is
//! named.

use std::collections::HashMap;

use super::ImportError;
use crate::nn::tensor_file::HostTensor;
use crate::nn::{Layout, UNetConfig};

/// The diffusers path of the block a fewstep parameter belongs to, and that parameter's name
/// within it (`down.1.0.res.conv1.w` -> `down_blocks.1.resnets.0`, `conv1.w`).
fn block_path(name: &str, levels: usize) -> Option<(String, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let rest = |from: usize| parts[from..].join(".");
    Some(match parts.as_slice() {
        ["temb", i, _] => (
            format!("time_embedding.linear_{}", i.parse::<usize>().ok()? + 1),
            rest(2),
        ),
        ["class_emb", _] => ("class_embedding".into(), rest(1)),
        ["conv_in", _] => ("conv_in".into(), rest(1)),
        ["out", "norm", _] => ("conv_norm_out".into(), rest(2)),
        ["out", "conv", _] => ("conv_out".into(), rest(2)),
        ["mid", "res1", ..] => ("mid_block.resnets.0".into(), rest(2)),
        ["mid", "res2", ..] => ("mid_block.resnets.1".into(), rest(2)),
        ["mid", "attn", ..] => ("mid_block.attentions.0".into(), rest(2)),
        ["down", i, "down", _] => (format!("down_blocks.{i}.downsamplers.0.conv"), rest(3)),
        ["up", i, "up", _] => (
            format!(
                "up_blocks.{}.upsamplers.0.conv",
                levels - 1 - i.parse::<usize>().ok()?
            ),
            rest(3),
        ),
        // A resampling res block (`down.0.down.conv1.w`): the block's one resampler.
        ["down", i, "down", ..] => (format!("down_blocks.{i}.downsamplers.0"), rest(3)),
        ["up", i, "up", ..] => (
            format!(
                "up_blocks.{}.upsamplers.0",
                levels - 1 - i.parse::<usize>().ok()?
            ),
            rest(3),
        ),
        [dir @ ("down" | "up"), i, j, kind @ ("res" | "attn"), ..] => {
            let i: usize = i.parse().ok()?;
            let (blocks, i) = if *dir == "down" {
                ("down_blocks", i)
            } else {
                ("up_blocks", levels - 1 - i)
            };
            let kind = if *kind == "res" {
                "resnets"
            } else {
                "attentions"
            };
            (format!("{blocks}.{i}.{kind}.{j}"), rest(4))
        }
        _ => return None,
    })
}

/// The diffusers tensor names a fewstep parameter is made of (inside `block`).
fn sources(block: &str, param: &str) -> Option<Vec<String>> {
    let (layer, wb) = param.rsplit_once('.')?;
    let suffix = match wb {
        "w" | "g" => "weight",
        "b" => "bias",
        _ => return None,
    };
    let one = |l: &str| Some(vec![format!("{block}.{l}.{suffix}")]);
    match layer {
        // A block that is one layer (conv_in, the time embedding's linears, the resamplers).
        "" => None,
        "norm1" | "conv1" | "norm2" | "conv2" => one(layer),
        "emb" => one("time_emb_proj"),
        "skip" => one("conv_shortcut"),
        "norm" => one("group_norm"),
        "qkv" => Some(
            ["to_q", "to_k", "to_v"]
                .iter()
                .map(|l| format!("{block}.{l}.{suffix}"))
                .collect(),
        ),
        "proj" => one("to_out.0"),
        _ => None,
    }
}

/// The diffusers tensor names a fewstep parameter is made of (one, or q, k and v for `qkv`).
pub(super) fn diffusers_names(name: &str, levels: usize) -> Vec<String> {
    let (block, param) =
        block_path(name, levels).unwrap_or_else(|| panic!("every fewstep parameter maps: {name}"));
    if param.contains('.') {
        sources(&block, &param).unwrap_or_else(|| panic!("every fewstep parameter maps: {name}"))
    } else {
        // A one-layer block: its own weight and bias.
        let suffix = if param == "b" { "bias" } else { "weight" };
        vec![format!("{block}.{suffix}")]
    }
}

/// The fewstep parameters of `arch` from a diffusers state dict.
pub fn map_weights(
    arch: &UNetConfig,
    tensors: Vec<HostTensor>,
) -> Result<Vec<HostTensor>, ImportError> {
    let layout = Layout::new(arch).map_err(|e| ImportError::Network(e.to_string()))?;
    let levels = arch.levels();
    let mut by_name: HashMap<String, HostTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut out = Vec::with_capacity(layout.specs.len());
    for spec in &layout.specs {
        let names = diffusers_names(&spec.name, levels);
        let want: usize = spec.shape.iter().product();
        // The class embedding: no bias in diffusers (fewstep's is zero), and its table
        // transposed with a zero "no class" column.
        let data = if spec.name.starts_with("class_emb.") {
            let k = arch.classes;
            let dim = spec.shape[0];
            if spec.name == "class_emb.b" {
                vec![0.0; dim]
            } else {
                let t = take(&mut by_name, &names[0], k * dim, &[k, dim])?;
                let mut d = vec![0.0f32; dim * (k + 1)];
                for row in 0..k {
                    for c in 0..dim {
                        d[c * (k + 1) + row] = t.data[row * dim + c];
                    }
                }
                d
            }
        } else {
            let mut d = Vec::with_capacity(want);
            let each = want / names.len();
            for n in &names {
                d.extend(take(&mut by_name, n, each, &spec.shape)?.data);
            }
            d
        };
        out.push(HostTensor {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            data,
        });
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(ImportError::Weights(format!(
            "tensor `{extra}` is not part of the network unet/config.json describes ({} such \
             tensors); the weights and the config do not belong together",
            by_name.len()
        )));
    }
    if let Some(t) = out.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
        return Err(ImportError::Weights(format!(
            "the weights of `{}` hold NaN or infinite values",
            t.name
        )));
    }
    Ok(out)
}

fn take(
    by_name: &mut HashMap<String, HostTensor>,
    name: &str,
    numel: usize,
    fewstep_shape: &[usize],
) -> Result<HostTensor, ImportError> {
    let t = by_name.remove(name).ok_or_else(|| {
        ImportError::Weights(format!(
            "tensor `{name}` is missing: unet/config.json describes a network that has it"
        ))
    })?;
    if t.data.len() != numel {
        return Err(ImportError::Weights(format!(
            "tensor `{name}` has shape {:?}, but the network unet/config.json describes needs \
             {numel} values there (fewstep's shape {fewstep_shape:?})",
            t.shape
        )));
    }
    Ok(t)
}
