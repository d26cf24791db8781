//! The network: the U-Net's configuration and presets, its layers on the autodiff tape, and
//! named-tensor files.

pub mod classifier;
pub mod config;
pub mod layout;
pub mod noise_schedule;
pub mod tensor_file;
pub mod unet;
mod weights;

pub use config::{ConfigError, GuidanceRange, MidAttention, UNetConfig, PRESETS};
pub use layout::Layout;
pub use tensor_file::{FileError, HostTensor, LoadedFile, StoreAs};
pub use unet::{one_hot, DropoutNoise, NetCond, UNet};
pub use weights::{check_tensors, read_tensors, upload_tensors};

use crate::tensor::{Tape, Tensor, Var};

/// Parameters as tape variables: gradients flow to them when `train`, else constants.
pub fn param_vars(tape: &Tape, params: &[Tensor], train: bool) -> Vec<Var> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if train {
                tape.param(i, p)
            } else {
                Var::constant(p.clone())
            }
        })
        .collect()
}
