//! The U-Net's architecture description and its presets (DESIGN.md section 2).

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
    /// block always has attention.
    pub attn_res: Vec<usize>,
    pub groups: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub dropout: f32,
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
        };
        c.validate()?;
        Ok(c)
    }

    pub fn levels(&self) -> usize {
        self.mult.len()
    }

    /// Checks that every shape works out: sizes divide, widths split into groups.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let div = 1 << (self.levels() - 1);
        if !self.height.is_multiple_of(div)
            || !self.width.is_multiple_of(div)
            || self.height == 0
            || self.width == 0
        {
            return Err(ConfigError::ImageSize {
                h: self.height,
                w: self.width,
                levels: self.levels(),
                div,
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::Dropout(self.dropout));
        }
        // Every group norm's width must split into groups; the layout builder checks each.
        super::unet::Layout::new(self).map(|_| ())
    }
}
