//! A fewstep model as a diffusers pipeline folder (`fewstep convert --format diffusers`): what
//! `DDIMPipeline.from_pretrained(DIR)` loads, `unet/` in `UNet2DModel`'s names and config,
//! `scheduler/` a `DDIMScheduler` config with the model's schedule, prediction type, trailing
//! timestep spacing and `set_alpha_to_one`, so the stock scheduler samples it as fewstep does.
//! The inverse of the import; only models whose network and schedule diffusers has are exported.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::weights::diffusers_names;
use super::Prediction;
use crate::nn::noise_schedule::BetaSchedule;
use crate::nn::tensor_file::{self, HostTensor, StoreAs};
use crate::nn::{MidAttention, UNetConfig};

/// A number as diffusers' configs write it: whole numbers without a fraction, and an f32 setting
/// by its shortest decimal (1e-5, not 9.999999747378752e-6).
fn short(v: f64, from_f32: bool) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return json!(v as i64);
    }
    let v = if from_f32 {
        (v as f32).to_string().parse::<f64>().unwrap_or(v)
    } else {
        v
    };
    json!(v)
}

/// Why a model cannot be exported, or the export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("this model cannot be written as a diffusers pipeline: {0}")]
    Unsupported(String),
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
}

/// Writes the pipeline folder `out` (which must not hold anything yet) for a model of `arch`
/// predicting `prediction`, with `tensors` in fewstep's layout order.
pub fn export_folder(
    arch: &UNetConfig,
    prediction: Prediction,
    tensors: &[HostTensor],
    out: &Path,
    store: StoreAs,
) -> Result<(), ExportError> {
    let unsupported = |s: &str| Err(ExportError::Unsupported(s.to_string()));
    let Some(schedule) = &arch.noise_schedule else {
        return unsupported(
            "fewstep's own models use the continuous cosine schedule and time embedding, which \
             diffusers' schedulers and UNet2DModel do not have (only models imported from \
             diffusers, and the students made from them, are exported)",
        );
    };
    let Some(te) = arch.time_embedding else {
        return unsupported("its time embedding is fewstep's continuous one");
    };
    if !(te.integer && te.offset == -1.0 && te.scale == schedule.timesteps as f64) {
        return unsupported("its time embedding does not take diffusers' integer timesteps");
    }
    if arch.guidance.is_some() {
        return unsupported(
            "a guided-distillation student takes the guidance weight w as an input, and \
             UNet2DModel has no such input",
        );
    }
    let write = |rel: &str, bytes: &[u8]| -> Result<(), ExportError> {
        let path = out.join(rel);
        crate::atomic_file::write(&path, bytes).map_err(|e| ExportError::Write {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    };
    let text = |v: Value| serde_json::to_string_pretty(&v).expect("JSON") + "\n";

    // The class table: UNet2DModel's embedding has no bias and no "no class" row; fewstep's dense
    // layer's bias is added to every row, and a trained "no class" column becomes one more class.
    let mut weights = Vec::with_capacity(tensors.len() + 4);
    let mut classes = arch.classes;
    for t in tensors {
        let names = diffusers_names(&t.name, arch.levels());
        if t.name == "class_emb.b" {
            continue;
        }
        if t.name == "class_emb.w" {
            let bias = tensors
                .iter()
                .find(|b| b.name == "class_emb.b")
                .map(|b| b.data.clone())
                .unwrap_or_default();
            let (dim, k1) = (t.shape[0], t.shape[1]);
            let no_class_used = (0..dim).any(|c| t.data[c * k1 + k1 - 1] != 0.0);
            let rows = if no_class_used { k1 } else { k1 - 1 };
            classes = rows;
            let mut table = Vec::with_capacity(rows * dim);
            for row in 0..rows {
                for c in 0..dim {
                    table.push(t.data[c * k1 + row] + bias.get(c).copied().unwrap_or(0.0));
                }
            }
            weights.push(HostTensor {
                name: "class_embedding.weight".into(),
                shape: vec![rows, dim],
                data: table,
            });
            continue;
        }
        let each = t.data.len() / names.len();
        for (i, n) in names.iter().enumerate() {
            // Attention's q, k, v and output projection are Linear layers in diffusers.
            let shape = if t.shape.len() == 4 && t.shape[2] == 1 && n.contains(".attentions.") {
                vec![t.shape[0] / names.len(), t.shape[1]]
            } else if names.len() > 1 {
                vec![t.shape[0] / names.len()]
            } else {
                t.shape.clone()
            };
            weights.push(HostTensor {
                name: n.clone(),
                shape,
                data: t.data[i * each..(i + 1) * each].to_vec(),
            });
        }
    }

    let levels = arch.levels();
    let widths: Vec<usize> = arch.widths().collect();
    let attn = |i: usize| arch.attn_res.contains(&(arch.height >> i));
    // Resampling by res blocks: its own block type without attention; with attention, the one
    // downsample_type/upsample_type of the whole network, which must then fit every level.
    let resampling = |flags: &dyn Fn(usize) -> bool, what: &str| {
        let attn_levels: Vec<bool> = (0..levels).filter(|&i| attn(i)).map(flags).collect();
        if attn_levels.windows(2).any(|w| w[0] != w[1]) {
            return Err(ExportError::Unsupported(format!(
                "its attention levels resample both ways, and UNet2DModel has one {what} for \
                 all of them"
            )));
        }
        Ok(if attn_levels.first() == Some(&true) {
            "resnet"
        } else {
            "conv"
        })
    };
    let down_type = resampling(&|i| arch.resnet_down_at(i), "downsample_type")?;
    let up_type = resampling(&|i| arch.resnet_up_at(i), "upsample_type")?;
    let down: Vec<&str> = (0..levels)
        .map(|i| match (attn(i), arch.resnet_down_at(i)) {
            (true, _) => "AttnDownBlock2D",
            (false, true) => "ResnetDownsampleBlock2D",
            (false, false) => "DownBlock2D",
        })
        .collect();
    let up: Vec<&str> = (0..levels)
        .rev()
        .map(|i| match (attn(i), arch.resnet_up_at(i)) {
            (true, _) => "AttnUpBlock2D",
            (false, true) => "ResnetUpsampleBlock2D",
            (false, false) => "UpBlock2D",
        })
        .collect();
    // diffusers' middle block: with scale_shift its attention has a norm only when
    // attn_norm_num_groups is given.
    let attn_norm_groups = match (arch.mid_attention, arch.time_scale_shift) {
        (MidAttention::Normed, true) => Some(arch.groups),
        (MidAttention::Unnormed, false) => {
            return unsupported(
                "its middle attention has no norm, which UNet2DModel has only with scale_shift",
            )
        }
        _ => None,
    };
    let unet: Map<String, Value> = json!({
        "_class_name": "UNet2DModel",
        "act_fn": "silu",
        "add_attention": arch.mid_attention != MidAttention::None,
        "attention_head_dim": arch.attn_head_dim,
        "attn_norm_num_groups": attn_norm_groups,
        "block_out_channels": widths,
        "center_input_sample": arch.center_input,
        "class_embed_type": null,
        "down_block_types": down,
        "downsample_padding": if arch.downsample_pad_end { 0 } else { 1 },
        "downsample_type": down_type,
        "dropout": short(arch.dropout as f64, true),
        "flip_sin_to_cos": te.flip_sin_to_cos,
        "freq_shift": short(te.freq_shift, false),
        "in_channels": arch.in_channels,
        "layers_per_block": arch.res_blocks,
        "mid_block_scale_factor": short(arch.mid_scale as f64, true),
        "mid_block_type": "UNetMidBlock2D",
        "norm_eps": short(arch.norm_eps as f64, true),
        "norm_num_groups": arch.groups,
        "num_class_embeds": if classes > 0 { Some(classes) } else { None },
        "num_train_timesteps": null,
        "out_channels": arch.out_channels,
        "resnet_time_scale_shift": if arch.time_scale_shift { "scale_shift" } else { "default" },
        "sample_size": if arch.height == arch.width { json!(arch.height) } else { json!([arch.height, arch.width]) },
        "time_embedding_dim": null,
        "time_embedding_type": "positional",
        "up_block_types": up,
        "upsample_type": up_type,
    })
    .as_object()
    .cloned()
    .expect("an object");
    let (beta_schedule, start, end, trained) = match &schedule.betas {
        BetaSchedule::Linear { start, end } => ("linear", *start, *end, None),
        BetaSchedule::ScaledLinear { start, end } => ("scaled_linear", *start, *end, None),
        BetaSchedule::SquaredcosCapV2 => ("squaredcos_cap_v2", 0.0001, 0.02, None),
        BetaSchedule::Trained { betas } => ("linear", 0.0001, 0.02, Some(betas.clone())),
    };
    let scheduler = json!({
        "_class_name": "DDIMScheduler",
        "beta_end": end,
        "beta_schedule": beta_schedule,
        "beta_start": start,
        "clip_sample": schedule.clip.is_some(),
        "clip_sample_range": schedule.clip.unwrap_or(1.0),
        "num_train_timesteps": schedule.timesteps,
        "prediction_type": match prediction {
            Prediction::Epsilon => "epsilon",
            Prediction::V => "v_prediction",
            Prediction::Sample => "sample",
        },
        "rescale_betas_zero_snr": schedule.rescale_zero_snr,
        "set_alpha_to_one": true,
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "trailing",
        "trained_betas": trained,
    });
    let index = json!({
        "_class_name": "DDIMPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    });
    let bytes = tensor_file::encode(
        &out.join("unet").join(super::WEIGHTS_FILE),
        &weights,
        [("format".to_string(), "pt".to_string())].into(),
        store,
    )
    .map_err(|e| ExportError::Write {
        path: out.display().to_string(),
        detail: e.to_string(),
    })?;
    write(&format!("unet/{}", super::WEIGHTS_FILE), &bytes)?;
    write("unet/config.json", text(Value::Object(unet)).as_bytes())?;
    write(
        "scheduler/scheduler_config.json",
        text(scheduler).as_bytes(),
    )?;
    write("model_index.json", text(index).as_bytes())?;
    Ok(())
}
