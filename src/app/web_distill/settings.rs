//! What the web Train tab's widgets edit, and the plans and native commands they stand for.

use super::*;
use crate::diffusion::distill_plan::GuidedPlan;

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
    /// Guided distillation (`--guided`) of a class-conditional teacher: stage 1 gives the
    /// student w as an input, drawn from `w_range`, in `guidance_updates` updates.
    pub guided: bool,
    pub w_range: [f32; 2],
    pub guidance_updates: u64,
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
            guided: false,
            w_range: [0.0, 4.0],
            guidance_updates: 200,
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
            guided: self.guided.then_some(GuidedPlan {
                w_min: self.w_range[0],
                w_max: self.w_range[1],
                updates: self.guidance_updates,
            }),
            reparam: None,
        }
    }

    /// The native command that makes the same students (same weights up to float rounding).
    pub fn command(&self, teacher_file: &str) -> String {
        let guided = if self.guided {
            format!(
                " --guided --guidance-range {},{} --guidance-updates {}",
                self.w_range[0], self.w_range[1], self.guidance_updates
            )
        } else {
            String::new()
        };
        format!(
            "fewstep distill --teacher {teacher_file} --from-steps {} --to-steps {} --updates {u} \
             --final-updates {u} --batch {} --lr {} --seed {}{guided} --data \
             fashion-mnist:{DATA_DIR} --out DIR",
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
    /// Class-conditional on the data's 10 classes (`--classes`), dropping labels with this
    /// probability (`--uncond-prob`) so that classifier-free guidance works.
    pub classes: bool,
    pub uncond_prob: f32,
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
            classes: false,
            uncond_prob: crate::diffusion::trainer::DEFAULT_UNCOND_PROB,
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
            classes: self.classes,
            uncond_prob: self.classes.then_some(self.uncond_prob),
        }
    }

    /// The native command that trains the same teacher.
    pub fn command(&self) -> String {
        let classes = if self.classes {
            format!(" --classes --uncond-prob {}", self.uncond_prob)
        } else {
            String::new()
        };
        format!(
            "fewstep train --data fashion-mnist:{DATA_DIR} --preset {} --steps {} --batch {} \
             --lr {} --seed {}{classes} --out DIR",
            self.preset, self.updates, self.batch, self.lr, self.seed
        )
    }
}
