//! diffusers' `UNet2DModel` config (`unet/config.json`) as a fewstep [`UNetConfig`]: every field
//! read and checked, anything fewstep does not compute exactly refused with the field, its value
//! and what is supported, never a silently different network.

use serde_json::{Map, Value};

use super::ImportError;
use crate::nn::config::TimeEmbedding;
use crate::nn::{MidAttention, UNetConfig};

/// What `unet/config.json` may hold beyond the fields read below: diffusers' bookkeeping.
const IGNORED: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "_use_default_values",
];

struct Fields<'a> {
    map: &'a Map<String, Value>,
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn refuse(key: &str, value: &Value, supported: &str) -> ImportError {
        ImportError::Unsupported {
            field: key.to_string(),
            value: value.to_string(),
            supported: supported.to_string(),
        }
    }
    fn uint(&mut self, key: &'static str, default: Option<usize>) -> Result<usize, ImportError> {
        match self.get(key) {
            None => default.ok_or_else(|| ImportError::Missing(key.to_string())),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= 1 << 20)
                .map(|n| n as usize)
                .ok_or_else(|| Self::refuse(key, v, "a whole number")),
        }
    }
    fn number(&mut self, key: &'static str, default: f64) -> Result<f64, ImportError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Self::refuse(key, v, "a number")),
        }
    }
    fn boolean(&mut self, key: &'static str, default: bool) -> Result<bool, ImportError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| Self::refuse(key, v, "true or false")),
        }
    }
    /// A string field that must be one of `allowed` (`default` when absent).
    fn choice(
        &mut self,
        key: &'static str,
        default: &'static str,
        allowed: &[&str],
        supported: &str,
    ) -> Result<String, ImportError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => match v.as_str() {
                Some(s) if allowed.contains(&s) => Ok(s.to_string()),
                _ => Err(Self::refuse(key, v, supported)),
            },
        }
    }
    fn strings(&mut self, key: &'static str) -> Result<Vec<String>, ImportError> {
        let v = self
            .get(key)
            .ok_or_else(|| ImportError::Missing(key.to_string()))?;
        v.as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
            .ok_or_else(|| Self::refuse(key, v, "a list of block names"))
    }
}

/// The fewstep network of a `UNet2DModel` config; `scale` and `offset` map fewstep's t in [0, 1]
/// to the model's integer timestep (see `super::schedule`).
pub fn unet_config(text: &str, timesteps: usize) -> Result<UNetConfig, ImportError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Json {
        file: "unet/config.json".into(),
        detail: e.to_string(),
    })?;
    let map = value.as_object().ok_or_else(|| ImportError::Json {
        file: "unet/config.json".into(),
        detail: "not a JSON object".into(),
    })?;
    let class = map.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if class != "UNet2DModel" {
        return Err(ImportError::Unsupported {
            field: "_class_name".into(),
            value: format!("\"{class}\""),
            supported: "\"UNet2DModel\" (unconditional or class-conditional image models; \
                        text-conditioned UNet2DConditionModel is not supported)"
                .into(),
        });
    }
    let mut f = Fields { map, read: vec![] };
    let (height, width) = match f.get("sample_size") {
        Some(Value::Number(n)) => {
            let s = n.as_u64().unwrap_or(0) as usize;
            (s, s)
        }
        Some(Value::Array(a)) if a.len() == 2 => (
            a[0].as_u64().unwrap_or(0) as usize,
            a[1].as_u64().unwrap_or(0) as usize,
        ),
        Some(v) => {
            return Err(Fields::refuse(
                "sample_size",
                v,
                "a size or [height, width]",
            ))
        }
        None => return Err(ImportError::Missing("sample_size".into())),
    };
    let in_channels = f.uint("in_channels", Some(3))?;
    let out_channels = f.uint("out_channels", Some(3))?;
    let center_input = f.boolean("center_input_sample", false)?;
    f.choice(
        "time_embedding_type",
        "positional",
        &["positional"],
        "\"positional\" (fourier and learned time embeddings are not supported)",
    )?;
    let flip = f.boolean("flip_sin_to_cos", true)?;
    let freq_shift = f.number("freq_shift", 0.0)?;
    let down = f.strings("down_block_types")?;
    let up = f.strings("up_block_types")?;
    f.choice(
        "mid_block_type",
        "UNetMidBlock2D",
        &["UNetMidBlock2D"],
        "\"UNetMidBlock2D\" (a network without a middle block is not supported)",
    )?;
    let widths: Vec<usize> = match f.get("block_out_channels") {
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|w| w.as_u64().filter(|&w| w >= 1).map(|w| w as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| Fields::refuse("block_out_channels", v, "a list of widths"))?,
        None => vec![224, 448, 672, 896],
    };
    let res_blocks = f.uint("layers_per_block", Some(2))?;
    let mid_scale = f.number("mid_block_scale_factor", 1.0)? as f32;
    let padding = f.uint("downsample_padding", Some(1))?;
    if padding > 1 {
        return Err(Fields::refuse(
            "downsample_padding",
            &Value::from(padding),
            "0 (google/ddpm-*: one row and column at the bottom and right) or 1",
        ));
    }
    let [down_type, up_type] = ["downsample_type", "upsample_type"]
        .map(|key| f.choice(key, "conv", &["conv", "resnet"], "\"conv\" or \"resnet\""));
    let (down_type, up_type) = (down_type?, up_type?);
    let dropout = f.number("dropout", 0.0)? as f32;
    f.choice("act_fn", "silu", &["silu", "swish"], "\"silu\"")?;
    let head_dim = match f.get("attention_head_dim") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&d| d >= 1)
                .map(|d| d as usize)
                .ok_or_else(|| Fields::refuse("attention_head_dim", v, "a whole number or null"))?,
        ),
    };
    let groups = f.uint("norm_num_groups", Some(32))?;
    let attn_groups = f.get("attn_norm_num_groups");
    if let Some(v) = attn_groups {
        if v.as_u64() != Some(groups as u64) {
            return Err(Fields::refuse(
                "attn_norm_num_groups",
                v,
                "null or equal to norm_num_groups",
            ));
        }
    }
    let norm_eps = f.number("norm_eps", 1e-5)? as f32;
    let scale_shift = f.choice(
        "resnet_time_scale_shift",
        "default",
        &["default", "scale_shift"],
        "\"default\" or \"scale_shift\" (the spatial norm of VQ models is not supported)",
    )? == "scale_shift";
    // diffusers' UNetMidBlock2D: without attn_norm_num_groups, its attention has a group norm
    // only when the res blocks add the time embedding ("default").
    let mid_attention = if !f.boolean("add_attention", true)? {
        MidAttention::None
    } else if scale_shift && attn_groups.is_none() {
        MidAttention::Unnormed
    } else {
        MidAttention::Normed
    };
    if let Some(v) = f.get("class_embed_type") {
        return Err(Fields::refuse(
            "class_embed_type",
            v,
            "null (classes as a learned embedding, num_class_embeds)",
        ));
    }
    let classes = match f.get("num_class_embeds") {
        None => 0,
        Some(v) => v
            .as_u64()
            .filter(|&k| (1..=256).contains(&k))
            .map(|k| k as usize)
            .ok_or_else(|| Fields::refuse("num_class_embeds", v, "1 to 256 classes, or null"))?,
    };
    if let Some(v) = f.get("time_embedding_dim") {
        if v.as_u64() != widths.first().map(|w| 4 * *w as u64) {
            return Err(Fields::refuse(
                "time_embedding_dim",
                v,
                "null (4 x block_out_channels[0])",
            ));
        }
    }
    f.get("num_train_timesteps");
    if let Some(k) = map
        .keys()
        .find(|k| !IGNORED.contains(&k.as_str()) && !f.read.contains(&k.as_str()))
    {
        return Err(ImportError::Unsupported {
            field: k.clone(),
            value: map[k].to_string(),
            supported: "no such field (fewstep knows UNet2DModel's fields as of diffusers 0.42)"
                .into(),
        });
    }

    // The blocks: as many as widths, up mirroring down, attention at the same levels.
    let levels = widths.len();
    if down.len() != levels || up.len() != levels {
        return Err(ImportError::Unsupported {
            field: "down_block_types".into(),
            value: format!(
                "{} down and {} up blocks for {levels} widths",
                down.len(),
                up.len()
            ),
            supported: "one down and one up block per entry of block_out_channels".into(),
        });
    }
    let mut attn_levels = Vec::new();
    let (mut resnet_down, mut resnet_up) = (vec![false; levels], vec![false; levels]);
    for (i, d) in down.iter().enumerate() {
        // diffusers reads "UNetResDownBlock2D" as "DownBlock2D", and downsample_type only in
        // attention blocks.
        let (attn, resnet) = match d.strip_prefix("UNetRes").unwrap_or(d) {
            "DownBlock2D" => (false, false),
            "ResnetDownsampleBlock2D" => (false, true),
            "AttnDownBlock2D" => (true, down_type == "resnet"),
            _ => {
                return Err(Fields::refuse(
                    "down_block_types",
                    &Value::from(d.as_str()),
                    "DownBlock2D, AttnDownBlock2D or ResnetDownsampleBlock2D (cross-attention \
                     blocks belong to text-conditioned models)",
                ))
            }
        };
        resnet_down[i] = resnet;
        let u = &up[levels - 1 - i];
        let (up_attn, resnet) = match u.strip_prefix("UNetRes").unwrap_or(u) {
            "UpBlock2D" => (false, false),
            "ResnetUpsampleBlock2D" => (false, true),
            "AttnUpBlock2D" => (true, up_type == "resnet"),
            _ => {
                return Err(Fields::refuse(
                    "up_block_types",
                    &Value::from(u.as_str()),
                    "UpBlock2D, AttnUpBlock2D or ResnetUpsampleBlock2D",
                ))
            }
        };
        resnet_up[i] = resnet;
        if attn != up_attn {
            return Err(Fields::refuse(
                "up_block_types",
                &Value::from(u.as_str()),
                "attention at the same levels as down_block_types (fewstep's network is symmetric)",
            ));
        }
        if attn {
            attn_levels.push(height >> i);
        }
    }
    let ch = widths[0];
    if let Some(&w) = widths.iter().find(|&&w| !w.is_multiple_of(ch)) {
        return Err(ImportError::Unsupported {
            field: "block_out_channels".into(),
            value: format!("{widths:?}"),
            supported: format!(
                "widths that are multiples of the first ({w} is not a multiple of {ch})"
            ),
        });
    }
    if levels > 1 && (height >> (levels - 1)) << (levels - 1) != height {
        return Err(Fields::refuse(
            "sample_size",
            &Value::from(height),
            "a size that halves evenly at every level",
        ));
    }
    let arch = UNetConfig {
        preset: "diffusers".into(),
        ch,
        mult: widths.iter().map(|w| w / ch).collect(),
        res_blocks,
        attn_res: attn_levels,
        groups,
        in_channels,
        out_channels,
        height,
        width,
        dropout,
        classes,
        class_names: Vec::new(),
        guidance: None,
        norm_eps,
        attn_head_dim: head_dim,
        time_embedding: Some(TimeEmbedding {
            scale: timesteps as f64,
            offset: -1.0,
            integer: true,
            flip_sin_to_cos: flip,
            freq_shift,
        }),
        mid_scale,
        center_input,
        downsample_pad_end: padding == 0,
        noise_schedule: None,
        time_scale_shift: scale_shift,
        resnet_down: if resnet_down.contains(&true) {
            resnet_down
        } else {
            Vec::new()
        },
        resnet_up: if resnet_up.contains(&true) {
            resnet_up
        } else {
            Vec::new()
        },
        mid_attention,
    };
    arch.validate()
        .map_err(|e| ImportError::Network(e.to_string()))?;
    Ok(arch)
}
