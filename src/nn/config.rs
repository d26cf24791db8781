//! The U-Net's architecture description and its presets (ARCHITECTURE.md, The U-Net).

use serde::{Deserialize, Serialize};

/// Everything that fixes the U-Net's parameter shapes. Stored in every model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Preset name this was made from ("tiny", "small", "cifar"), or "custom".
    pub preset: String,
    /// Base width.
    pub ch: usize,
    /// Width multiplier per resolution level.
    pub mult: Vec<usize>,
    pub res_blocks: usize,
    /// Resolutions (feature-map height) with self-attention after each res block; the middle
    /// block's attention is [`mid_attention`](Self::mid_attention).
    pub attn_res: Vec<usize>,
    pub groups: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub dropout: f32,
    /// Classes the model is conditioned on (a learned embedding per class plus one "no class"
    /// entry, added to the time embedding); 0: unconditional. Absent in unconditional files.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub classes: usize,
    /// The classes' names, in label order (empty: shown by number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// A w-conditioned student of guided distillation: the guidance weight w is an input,
    /// embedded like t and added to the time embedding. The range is what it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<GuidanceRange>,
    /// The options below describe networks imported from diffusers' `UNet2DModel`; their
    /// defaults are fewstep's own network, and a default is not written into model files (so
    /// files made before these options existed read and write back unchanged).
    ///
    /// The group norms' epsilon (`norm_eps`).
    #[serde(
        default = "default_norm_eps",
        skip_serializing_if = "is_default_norm_eps"
    )]
    pub norm_eps: f32,
    /// Channels per attention head (`attention_head_dim`); None: one head as wide as the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_head_dim: Option<usize>,
    /// How t becomes the sinusoidal embedding; None: fewstep's (1000 t, DDPM's frequencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_embedding: Option<TimeEmbedding>,
    /// The middle block's output scale (`mid_block_scale_factor`): its res blocks and its
    /// attention divide their residual sums by it.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub mid_scale: f32,
    /// The input is mapped to 2 z - 1 before the first convolution (`center_input_sample`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub center_input: bool,
    /// The stride-2 convolutions pad one row and column at the bottom and right only
    /// (diffusers' `downsample_padding = 0`, google/ddpm-*'s) instead of one on every side.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub downsample_pad_end: bool,
    /// A discrete noise schedule (an imported diffusers model and its students); None:
    /// fewstep's continuous cosine schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_schedule: Option<super::noise_schedule::DiscreteSchedule>,
    /// The res blocks' time embedding scales and shifts the second group norm's output,
    /// h * (1 + scale) + shift, instead of being added before it (diffusers'
    /// `resnet_time_scale_shift = "scale_shift"`, the improved-DDPM block).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time_scale_shift: bool,
    /// Per level (in `mult` order): the level's resampling is a res block that average-pools
    /// (down) or nearest-upsamples (up) inside it, diffusers' `ResnetDownsampleBlock2D` /
    /// `ResnetUpsampleBlock2D` or `downsample_type`/`upsample_type = "resnet"`, instead of a
    /// stride-2 or an upsample-then-convolution. Empty: none. The last down level and the first
    /// up level do not resample; their entry only names the block type an export writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resnet_down: Vec<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resnet_up: Vec<bool>,
    /// The middle block's attention.
    #[serde(default, skip_serializing_if = "MidAttention::is_default")]
    pub mid_attention: MidAttention,
}

/// The attention between the middle block's two res blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MidAttention {
    /// Attention after a group norm (fewstep's networks, and diffusers' by default).
    #[default]
    Normed,
    /// Attention without a norm before it (diffusers with `scale_shift` and no
    /// `attn_norm_num_groups`).
    Unnormed,
    /// No attention (`add_attention = false`).
    None,
}

impl MidAttention {
    fn is_default(&self) -> bool {
        *self == MidAttention::Normed
    }
}

/// The sinusoidal time embedding of a network imported from diffusers (`Timesteps`): the
/// timestep fed in is `round(scale t + offset)` when `integer`, else `scale t + offset`; its
/// frequencies exp(-ln(10000) j / (half - freq_shift)), computed in f32 as torch does, with
/// [sin, cos] halves swapped when `flip_sin_to_cos`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeEmbedding {
    pub scale: f64,
    pub offset: f64,
    pub integer: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
}

fn default_norm_eps() -> f32 {
    1e-6
}
fn is_default_norm_eps(v: &f32) -> bool {
    *v == default_norm_eps()
}
fn one() -> f32 {
    1.0
}
fn is_one(v: &f32) -> bool {
    *v == 1.0
}

/// The guidance weights a w-conditioned model was distilled for (Meng et al.: w ~ U[w_min, w_max]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuidanceRange {
    pub w_min: f32,
    pub w_max: f32,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The presets by name, for `--preset` and the help text.
pub const PRESETS: [&str; 3] = ["tiny", "small", "cifar"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown preset `{0}`: choose one of tiny, small, cifar")]
    UnknownPreset(String),
    #[error(
        "image size {h}x{w} does not suit this U-Net: with {levels} levels both sides must be \
         divisible by {div} (28x28 and 32x32 work for every preset)"
    )]
    ImageSize {
        h: usize,
        w: usize,
        levels: usize,
        div: usize,
    },
    #[error("{what} ({width} channels) is not divisible into {groups} group-norm groups")]
    Groups {
        what: &'static str,
        width: usize,
        groups: usize,
    },
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f32),
    #[error(
        "architecture field `{field}` is {value}, outside the {min}..={max} fewstep builds; \
         the model description is damaged or was not written by fewstep"
    )]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "the architecture has {params} parameters, more than the {max} fewstep builds; \
         the model description is damaged or was not written by fewstep"
    )]
    TooManyParams { params: u64, max: u64 },
    #[error(
        "class name `{0}` is empty or longer than 200 bytes; the model description is damaged"
    )]
    ClassName(String),
    #[error("guidance range [{0}, {1}] is not 0 <= w_min <= w_max <= 100; the model description is damaged")]
    Guidance(f32, f32),
    #[error("the description says the model takes a guidance weight but has no classes; guidance needs a class-conditional model")]
    GuidanceWithoutClasses,
    #[error(
        "architecture field `{field}` is {value}: {expected}; the model description is damaged"
    )]
    BadValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Bounds on every size field of [`UNetConfig`], checked before anything is allocated from
/// them (a model file's description is untrusted input). The presets lie well inside.
pub mod limits {
    pub const CH: (usize, usize) = (1, 1024);
    pub const LEVELS: (usize, usize) = (1, 8);
    pub const MULT: (usize, usize) = (1, 16);
    pub const RES_BLOCKS: (usize, usize) = (1, 16);
    pub const ATTN_RES_ENTRIES: usize = 16;
    pub const GROUPS: (usize, usize) = (1, 1024);
    pub const IN_CHANNELS: (usize, usize) = (1, 16);
    pub const OUT_CHANNELS: (usize, usize) = (1, 64);
    pub const SIDE: (usize, usize) = (1, 4096);
    /// Labels are bytes: at most 256 classes (0: unconditional).
    pub const CLASSES: (usize, usize) = (0, 256);
    /// A class name's length in bytes.
    pub const CLASS_NAME: usize = 200;
    /// The largest guidance weight a model may be distilled for.
    pub const GUIDANCE: f32 = 100.0;
    /// 2^30 parameters (4 GiB of f32); the `cifar` preset has about 36M.
    pub const PARAMS: u64 = 1 << 30;
}

impl UNetConfig {
    /// A preset for images of `channels` x `height` x `width`, with `out_mult` output heads
    /// (2 for the `both` parameterization).
    pub fn preset(
        name: &str,
        channels: usize,
        height: usize,
        width: usize,
        out_mult: usize,
    ) -> Result<UNetConfig, ConfigError> {
        let (ch, mult, res_blocks, attn_res, groups, dropout): (_, &[usize], _, &[usize], _, _) =
            match name {
                "tiny" => (16, &[1, 2], 1, &[], 4, 0.0),
                "small" => (32, &[1, 2, 2], 2, &[7], 8, 0.0),
                "cifar" => (128, &[1, 2, 2, 2], 2, &[16], 32, 0.1),
                _ => return Err(ConfigError::UnknownPreset(name.to_string())),
            };
        let c = UNetConfig {
            preset: name.to_string(),
            ch,
            mult: mult.to_vec(),
            res_blocks,
            attn_res: attn_res.to_vec(),
            groups,
            in_channels: channels,
            out_channels: channels * out_mult,
            height,
            width,
            dropout,
            classes: 0,
            class_names: Vec::new(),
            guidance: None,
            norm_eps: default_norm_eps(),
            attn_head_dim: None,
            time_embedding: None,
            mid_scale: 1.0,
            center_input: false,
            downsample_pad_end: false,
            noise_schedule: None,
            time_scale_shift: false,
            resnet_down: Vec::new(),
            resnet_up: Vec::new(),
            mid_attention: MidAttention::Normed,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn levels(&self) -> usize {
        self.mult.len()
    }

    /// Checks every size field against [`limits`] (no arithmetic on the raw values before
    /// that). [`validate`](Self::validate) and [`Layout::new`](super::Layout::new) start here.
    pub fn check_sizes(&self) -> Result<(), ConfigError> {
        use limits::*;
        let check = |field: &'static str, value: usize, (min, max): (usize, usize)| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        check("ch", self.ch, CH)?;
        check("mult (its length)", self.mult.len(), LEVELS)?;
        for &m in &self.mult {
            check("mult", m, MULT)?;
        }
        check("res_blocks", self.res_blocks, RES_BLOCKS)?;
        check(
            "attn_res (its length)",
            self.attn_res.len(),
            (0, ATTN_RES_ENTRIES),
        )?;
        check("groups", self.groups, GROUPS)?;
        check("in_channels", self.in_channels, IN_CHANNELS)?;
        check("out_channels", self.out_channels, OUT_CHANNELS)?;
        check("height", self.height, SIDE)?;
        check("width", self.width, SIDE)?;
        check("classes", self.classes, CLASSES)?;
        if !self.class_names.is_empty() {
            check(
                "class_names (its length)",
                self.class_names.len(),
                (self.classes, self.classes),
            )?;
        }
        if let Some(n) = self
            .class_names
            .iter()
            .find(|n| n.len() > CLASS_NAME || n.is_empty())
        {
            return Err(ConfigError::ClassName(n.chars().take(40).collect()));
        }
        if let Some(g) = self.guidance {
            if !(g.w_min.is_finite()
                && g.w_max.is_finite()
                && 0.0 <= g.w_min
                && g.w_min <= g.w_max
                && g.w_max <= GUIDANCE)
            {
                return Err(ConfigError::Guidance(g.w_min, g.w_max));
            }
            if self.classes == 0 {
                return Err(ConfigError::GuidanceWithoutClasses);
            }
        }
        let bad = |field: &'static str, value: String, expected: &'static str| {
            Err(ConfigError::BadValue {
                field,
                value,
                expected,
            })
        };
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps <= 1.0) {
            return bad("norm_eps", self.norm_eps.to_string(), "expected in (0, 1]");
        }
        if !(self.mid_scale.is_finite() && self.mid_scale > 0.0) {
            return bad(
                "mid_scale",
                self.mid_scale.to_string(),
                "expected a positive number",
            );
        }
        if let Some(d) = self.attn_head_dim {
            check("attn_head_dim", d, CH)?;
            if let Some(w) = self.widths().find(|w| !w.is_multiple_of(d)) {
                return bad(
                    "attn_head_dim",
                    format!("{d} (a block is {w} channels wide)"),
                    "expected to divide every block's width",
                );
            }
        }
        for (field, v) in [
            ("resnet_down", &self.resnet_down),
            ("resnet_up", &self.resnet_up),
        ] {
            if !v.is_empty() && v.len() != self.mult.len() {
                return bad(
                    field,
                    format!("{} entries for {} levels", v.len(), self.mult.len()),
                    "expected one entry per level, or none",
                );
            }
        }
        if let Some(sch) = &self.noise_schedule {
            if let Err(detail) = sch.check() {
                return bad(
                    "noise_schedule",
                    detail,
                    "expected a usable discrete schedule",
                );
            }
        }
        if let Some(e) = self.time_embedding {
            let ok = |v: f64| v.is_finite() && v.abs() <= 1e6;
            if !(ok(e.scale) && ok(e.offset) && ok(e.freq_shift)) {
                return bad(
                    "time_embedding",
                    format!("{e:?}"),
                    "expected finite numbers of at most 1e6",
                );
            }
            if (self.ch / 2) as f64 - e.freq_shift <= 0.0 {
                return bad(
                    "time_embedding.freq_shift",
                    e.freq_shift.to_string(),
                    "expected below half the base width",
                );
            }
        }
        Ok(())
    }

    /// Whether any option of imported diffusers networks is set (then model files are written
    /// in a format that fewstep versions without these options refuse).
    pub fn uses_diffusers_options(&self) -> bool {
        self.norm_eps != default_norm_eps()
            || self.attn_head_dim.is_some()
            || self.time_embedding.is_some()
            || self.mid_scale != 1.0
            || self.center_input
            || self.downsample_pad_end
            || self.noise_schedule.is_some()
            || self.time_scale_shift
            || !self.resnet_down.is_empty()
            || !self.resnet_up.is_empty()
            || self.mid_attention != MidAttention::Normed
    }

    /// Whether level `i`'s down resampling is a res block (see [`resnet_down`](Self::resnet_down)).
    pub fn resnet_down_at(&self, i: usize) -> bool {
        self.resnet_down.get(i).copied().unwrap_or(false)
    }
    /// Whether level `i`'s up resampling is a res block (see [`resnet_up`](Self::resnet_up)).
    pub fn resnet_up_at(&self, i: usize) -> bool {
        self.resnet_up.get(i).copied().unwrap_or(false)
    }

    /// The width of each level's blocks.
    pub fn widths(&self) -> impl Iterator<Item = usize> + '_ {
        self.mult.iter().map(|m| m * self.ch)
    }
}
