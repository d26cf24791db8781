//! The Train tab's settings: what the widgets edit, what the app remembers between launches, and
//! the library run spec (and equivalent command line) they stand for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::diffusion::run_spec::{DistillSpec, TrainSpec};

pub use super::train_mode::Mode;

/// A run the Train tab starts: a teacher training or a distillation.
#[derive(Clone, Debug, PartialEq)]
pub enum RunSpec {
    Train(TrainSpec),
    Distill(DistillSpec),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub mode: Mode,
    pub data: String,
    pub preset: String,
    pub out: String,
    pub updates: u64,
    pub batch: usize,
    pub sample_every: u64,
    pub teacher: String,
    pub from_steps: usize,
    pub to_steps: usize,
    pub distill_updates: u64,
    pub distill_out: String,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            mode: Mode::Teacher,
            data: "fashion-mnist".into(),
            preset: "tiny".into(),
            out: "runs/app-teacher".into(),
            updates: 2000,
            batch: 64,
            sample_every: 200,
            teacher: "assets/fmnist-small-teacher.safetensors".into(),
            from_steps: 64,
            to_steps: 4,
            distill_updates: 200,
            distill_out: "runs/app-distill".into(),
        }
    }
}

impl TrainSettings {
    /// The run these settings describe (`resume`: continue the one in the directory).
    pub fn spec(&self, resume: bool) -> RunSpec {
        match self.mode {
            Mode::Teacher => RunSpec::Train(TrainSpec {
                data: self.data.clone(),
                preset: self.preset.clone(),
                out: PathBuf::from(&self.out),
                steps: self.updates,
                batch: self.batch,
                sample_every: self.sample_every,
                resume,
                ..TrainSpec::default()
            }),
            Mode::Distill => RunSpec::Distill(DistillSpec {
                teacher: Some(PathBuf::from(&self.teacher)),
                from_steps: Some(self.from_steps),
                to_steps: Some(self.to_steps),
                updates: Some(self.distill_updates),
                batch: Some(self.batch),
                out: PathBuf::from(&self.distill_out),
                resume,
                ..DistillSpec::default()
            }),
        }
    }

    /// The `fewstep` command line that does the same (shown under the settings; without
    /// `--out`, it is what model files record, as the command line's runs do).
    pub fn command(&self, resume: bool, with_out: bool) -> String {
        let mut w: Vec<String> = match self.mode {
            Mode::Teacher => vec![
                "fewstep train --data".into(),
                self.data.clone(),
                "--preset".into(),
                self.preset.clone(),
                "--steps".into(),
                self.updates.to_string(),
                "--batch".into(),
                self.batch.to_string(),
                "--sample-every".into(),
                self.sample_every.to_string(),
            ],
            Mode::Distill => vec![
                "fewstep distill --teacher".into(),
                self.teacher.clone(),
                "--from-steps".into(),
                self.from_steps.to_string(),
                "--to-steps".into(),
                self.to_steps.to_string(),
                "--updates".into(),
                self.distill_updates.to_string(),
                "--batch".into(),
                self.batch.to_string(),
            ],
        };
        if with_out {
            w.push("--out".into());
            w.push(match self.mode {
                Mode::Teacher => self.out.clone(),
                Mode::Distill => self.distill_out.clone(),
            });
        }
        if resume {
            w.push("--resume".into());
        }
        w.join(" ")
    }
}
