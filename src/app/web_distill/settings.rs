//! What the web Train tab's widgets edit, and the plans and native commands they stand for.

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub teacher: String,
    /// The teacher's sampling steps (a student's own count; a teacher's is chosen).
    pub from_steps: usize,
    pub to_steps: usize,
    pub updates: u64,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for Settings {
    /// Halve the bundled 4-step student once: short enough for a laptop GPU (about a minute),
    /// and the result can be put beside the bundled 2-step student in Compare.
    fn default() -> Self {
        Settings {
            teacher: crate::bundled::DEFAULT_MODEL.into(),
            from_steps: 4,
            to_steps: 2,
            updates: 200,
            batch: 16,
            lr: 1e-4,
            seed: 0,
        }
    }
}

impl Settings {
    /// The plan `fewstep distill` would follow with the equivalent command line.
    pub(super) fn plan(&self, teacher_file: &str) -> DistillPlan {
        DistillPlan {
            teacher: PathBuf::from(teacher_file),
            from_steps: self.from_steps,
            to_steps: self.to_steps,
            updates: self.updates,
            final_updates: self.updates,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            checkpoint_every: 0,
            log_every: loss_every(self.updates),
            dataset: "fashion-mnist".into(),
            command: self.command(teacher_file),
            ema: None,
            guided: None,
            reparam: None,
        }
    }

    /// The native command that makes the same students (same weights up to float rounding).
    pub fn command(&self, teacher_file: &str) -> String {
        format!(
            "fewstep distill --teacher {teacher_file} --from-steps {} --to-steps {} --updates {u} \
             --final-updates {u} --batch {} --lr {} --seed {} --data fashion-mnist:{DATA_DIR} \
             --out DIR",
            self.from_steps,
            self.to_steps,
            self.batch,
            self.lr,
            self.seed,
            u = self.updates
        )
    }
}

/// How often the tab reads a loss back: each read waits for the GPU to drain its queue, so a
/// long run reads one every few updates (the mean of those since the last), still a point per
/// at most 10 updates and about 100 points a run, so the plot keeps moving.
pub fn loss_every(updates: u64) -> u64 {
    (updates / 100).clamp(1, 10)
}

/// Training a teacher from scratch in the tab.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    pub preset: String,
    pub updates: u64,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for TrainSettings {
    /// A `tiny` teacher: a few thousand updates draw recognisable garments (docs/app-and-web.md); 2,000 of
    /// batch 32 take minutes on a laptop GPU.
    fn default() -> Self {
        TrainSettings {
            preset: "tiny".into(),
            updates: 2000,
            batch: 32,
            lr: crate::diffusion::trainer::default_lr("tiny"),
            seed: 0,
        }
    }
}

impl TrainSettings {
    pub(super) fn plan(&self) -> TrainPlan {
        TrainPlan {
            preset: self.preset.clone(),
            updates: self.updates,
            batch: self.batch,
            lr: Some(self.lr),
            warmup: None,
            seed: self.seed,
            log_every: loss_every(self.updates),
            dataset: format!("fashion-mnist:{DATA_DIR}"),
            command: self.command(),
            classes: false,
            uncond_prob: None,
        }
    }

    /// The native command that trains the same teacher.
    pub fn command(&self) -> String {
        format!(
            "fewstep train --data fashion-mnist:{DATA_DIR} --preset {} --steps {} --batch {} \
             --lr {} --seed {} --out DIR",
            self.preset, self.updates, self.batch, self.lr, self.seed
        )
    }
}
