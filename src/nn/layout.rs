//! The layout of a U-Net configuration: [`Layout::new`] walks the architecture once and
//! produces both the parameter list (names, shapes, initialisers: what model files store) and
//! the block structure that `UNet::forward` runs (`unet.rs`), so the two can never disagree.

use rand::Rng;
use rand_pcg::Pcg64;

use super::config::{ConfigError, MidAttention, UNetConfig};
use crate::tensor::Conv2d;

// The last check builds the layout.
impl UNetConfig {
    /// Checks that every shape works out: sizes in range, sizes divide, widths split into
    /// groups.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_sizes()?;
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
        Layout::new(self).map(|_| ())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Uniform with variance 1 / fan_avg (DDPM's default initialiser).
    FanAvg {
        fan_in: usize,
        fan_out: usize,
    },
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub(crate) fn initial_values(&self, rng: &mut Pcg64) -> Vec<f32> {
        let n = self.numel();
        match self.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::FanAvg { fan_in, fan_out } => {
                let limit = (3.0 / ((fan_in + fan_out) as f64 / 2.0)).sqrt() as f32;
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ConvP {
    pub(super) w: usize,
    pub(super) b: usize,
    pub(super) conv: Conv2d,
}
#[derive(Clone, Copy, Debug)]
pub(super) struct DenseP {
    pub(super) w: usize,
    pub(super) b: usize,
}
#[derive(Clone, Copy, Debug)]
pub(super) struct NormP {
    pub(super) g: usize,
    pub(super) b: usize,
}
#[derive(Clone, Debug)]
pub(super) struct ResP {
    pub(super) norm1: NormP,
    pub(super) conv1: ConvP,
    /// The time embedding's projection: [cout] added after conv1, or [2 cout] that scale and
    /// shift norm2's output (`scale_shift`).
    pub(super) emb: DenseP,
    pub(super) scale_shift: bool,
    pub(super) norm2: NormP,
    pub(super) conv2: ConvP,
    pub(super) skip: Option<ConvP>,
    /// A resampling res block: both paths are resized after norm1's activation.
    pub(super) resize: Resize,
}
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Resize {
    Keep,
    /// 2x2 average pooling.
    Down,
    /// Nearest-neighbour x2.
    Up,
}
#[derive(Clone, Debug)]
pub(super) struct AttnP {
    /// None: attention on the block's input itself (diffusers' scale_shift middle block).
    pub(super) norm: Option<NormP>,
    pub(super) qkv: ConvP,
    pub(super) proj: ConvP,
    pub(super) ch: usize,
}
#[derive(Clone, Debug)]
pub(super) enum Resample {
    /// Down path: the stride-2 conv; up path: the conv after nearest x2.
    Conv(ConvP),
    /// A res block that resizes inside (see [`Resize`]).
    Res(ResP),
}
#[derive(Clone, Debug)]
pub(super) struct Level {
    pub(super) blocks: Vec<(ResP, Option<AttnP>)>,
    pub(super) resample: Option<Resample>,
}

/// The parameter list and the block structure of one configuration.
#[derive(Clone, Debug)]
pub struct Layout {
    pub specs: Vec<ParamSpec>,
    pub(super) conv_in: ConvP,
    pub(super) temb: [DenseP; 2],
    /// The class embedding: a dense layer on a one-hot of classes + 1 entries (the last one is
    /// "no class"), so the lookup and its gradient are the GEMMs every layer already uses.
    pub(super) class_emb: Option<DenseP>,
    /// The guidance weight's embedding (w-conditioned students): like the time embedding's
    /// two layers, the second zero-initialised so a student made from its teacher starts equal
    /// to the teacher's conditional model.
    pub(super) wemb: Option<[DenseP; 2]>,
    pub(super) down: Vec<Level>,
    pub(super) mid: (ResP, Option<AttnP>, ResP),
    pub(super) up: Vec<Level>,
    pub(super) out_norm: NormP,
    pub(super) out_conv: ConvP,
}

struct Builder {
    specs: Vec<ParamSpec>,
    groups: usize,
    temb_ch: usize,
    scale_shift: bool,
}

impl Builder {
    fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        self.specs.push(ParamSpec { name, shape, init });
        self.specs.len() - 1
    }
    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        zero: bool,
    ) -> ConvP {
        let init = if zero {
            Init::Zeros
        } else {
            Init::FanAvg {
                fan_in: cin * k * k,
                fan_out: cout * k * k,
            }
        };
        ConvP {
            w: self.param(format!("{name}.w"), vec![cout, cin, k, k], init),
            b: self.param(format!("{name}.b"), vec![cout], Init::Zeros),
            conv: Conv2d {
                stride,
                pad: k / 2,
                pad_end: 0,
            },
        }
    }
    fn dense(&mut self, name: &str, fin: usize, fout: usize) -> DenseP {
        let init = Init::FanAvg {
            fan_in: fin,
            fan_out: fout,
        };
        self.dense_init(name, fin, fout, init)
    }
    fn dense_init(&mut self, name: &str, fin: usize, fout: usize, init: Init) -> DenseP {
        DenseP {
            w: self.param(format!("{name}.w"), vec![fout, fin], init),
            b: self.param(format!("{name}.b"), vec![fout], Init::Zeros),
        }
    }
    fn norm(&mut self, name: &str, width: usize, what: &'static str) -> Result<NormP, ConfigError> {
        if !width.is_multiple_of(self.groups) {
            return Err(ConfigError::Groups {
                what,
                width,
                groups: self.groups,
            });
        }
        Ok(NormP {
            g: self.param(format!("{name}.g"), vec![width], Init::Ones),
            b: self.param(format!("{name}.b"), vec![width], Init::Zeros),
        })
    }
    fn res(&mut self, name: &str, cin: usize, cout: usize) -> Result<ResP, ConfigError> {
        self.res_resize(name, cin, cout, Resize::Keep)
    }
    fn res_resize(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        resize: Resize,
    ) -> Result<ResP, ConfigError> {
        let emb_out = if self.scale_shift { 2 * cout } else { cout };
        Ok(ResP {
            norm1: self.norm(&format!("{name}.norm1"), cin, "a res block's input")?,
            conv1: self.conv(&format!("{name}.conv1"), cin, cout, 3, 1, false),
            emb: self.dense(&format!("{name}.emb"), self.temb_ch, emb_out),
            scale_shift: self.scale_shift,
            norm2: self.norm(&format!("{name}.norm2"), cout, "a res block's width")?,
            conv2: self.conv(&format!("{name}.conv2"), cout, cout, 3, 1, true),
            skip: (cin != cout).then(|| self.conv(&format!("{name}.skip"), cin, cout, 1, 1, false)),
            resize,
        })
    }
    fn attn(&mut self, name: &str, ch: usize) -> Result<AttnP, ConfigError> {
        self.attn_normed(name, ch, true)
    }
    fn attn_normed(&mut self, name: &str, ch: usize, normed: bool) -> Result<AttnP, ConfigError> {
        Ok(AttnP {
            norm: if normed {
                Some(self.norm(&format!("{name}.norm"), ch, "an attention block's width")?)
            } else {
                None
            },
            qkv: self.conv(&format!("{name}.qkv"), ch, 3 * ch, 1, 1, false),
            proj: self.conv(&format!("{name}.proj"), ch, ch, 1, 1, true),
            ch,
        })
    }
}

impl Layout {
    pub fn new(c: &UNetConfig) -> Result<Layout, ConfigError> {
        c.check_sizes()?;
        let mut b = Builder {
            specs: Vec::new(),
            groups: c.groups,
            temb_ch: 4 * c.ch,
            scale_shift: c.time_scale_shift,
        };
        let temb = [
            b.dense("temb.0", c.ch, 4 * c.ch),
            b.dense("temb.1", 4 * c.ch, 4 * c.ch),
        ];
        let class_emb = (c.classes > 0).then(|| b.dense("class_emb", c.classes + 1, 4 * c.ch));
        let wemb = c.guidance.map(|_| {
            [
                b.dense("wemb.0", c.ch, 4 * c.ch),
                b.dense_init("wemb.1", 4 * c.ch, 4 * c.ch, Init::Zeros),
            ]
        });
        let conv_in = b.conv("conv_in", c.in_channels, c.ch, 3, 1, false);
        // Widths of the activations the down path keeps for the up path's skips.
        let mut skips = vec![c.ch];
        let mut width = c.ch;
        let mut res = c.height;
        let mut down = Vec::new();
        for (i, &m) in c.mult.iter().enumerate() {
            let mut blocks = Vec::new();
            for j in 0..c.res_blocks {
                let r = b.res(&format!("down.{i}.{j}.res"), width, c.ch * m)?;
                width = c.ch * m;
                let a = if c.attn_res.contains(&res) {
                    Some(b.attn(&format!("down.{i}.{j}.attn"), width)?)
                } else {
                    None
                };
                blocks.push((r, a));
                skips.push(width);
            }
            let resample = if i + 1 < c.levels() {
                res /= 2;
                skips.push(width);
                let name = format!("down.{i}.down");
                Some(if c.resnet_down_at(i) {
                    Resample::Res(b.res_resize(&name, width, width, Resize::Down)?)
                } else {
                    let mut down = b.conv(&name, width, width, 3, 2, false);
                    if c.downsample_pad_end {
                        down.conv = Conv2d {
                            stride: 2,
                            pad: 0,
                            pad_end: 1,
                        };
                    }
                    Resample::Conv(down)
                })
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        let mid_res1 = b.res("mid.res1", width, width)?;
        let mid_attn = match c.mid_attention {
            MidAttention::Normed => Some(b.attn("mid.attn", width)?),
            MidAttention::Unnormed => Some(b.attn_normed("mid.attn", width, false)?),
            MidAttention::None => None,
        };
        let mid = (mid_res1, mid_attn, b.res("mid.res2", width, width)?);
        let mut up = Vec::new();
        for (i, &m) in c.mult.iter().enumerate().rev() {
            let mut blocks = Vec::new();
            for j in 0..=c.res_blocks {
                let skip = skips.pop().expect("one skip per down-path activation");
                let r = b.res(&format!("up.{i}.{j}.res"), width + skip, c.ch * m)?;
                width = c.ch * m;
                let a = if c.attn_res.contains(&res) {
                    Some(b.attn(&format!("up.{i}.{j}.attn"), width)?)
                } else {
                    None
                };
                blocks.push((r, a));
            }
            let resample = if i > 0 {
                res *= 2;
                let name = format!("up.{i}.up");
                Some(if c.resnet_up_at(i) {
                    Resample::Res(b.res_resize(&name, width, width, Resize::Up)?)
                } else {
                    Resample::Conv(b.conv(&name, width, width, 3, 1, false))
                })
            } else {
                None
            };
            up.push(Level { blocks, resample });
        }
        debug_assert!(skips.is_empty());
        let out_norm = b.norm("out.norm", width, "the output width")?;
        let out_conv = b.conv("out.conv", width, c.out_channels, 3, 1, true);
        // In u64 with checks: a 32-bit usize (wasm) must not wrap on a large description.
        let params = b
            .specs
            .iter()
            .try_fold(0u64, |sum, s| {
                s.shape
                    .iter()
                    .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
                    .and_then(|n| sum.checked_add(n))
            })
            .unwrap_or(u64::MAX);
        let max = super::config::limits::PARAMS;
        if params > max {
            return Err(ConfigError::TooManyParams { params, max });
        }
        Ok(Layout {
            specs: b.specs,
            conv_in,
            temb,
            class_emb,
            wemb,
            down,
            mid,
            up,
            out_norm,
            out_conv,
        })
    }

    pub fn param_count(&self) -> usize {
        self.specs.iter().map(|s| s.numel()).sum()
    }
}
