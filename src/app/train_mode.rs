//! Which run the Train tab starts, natively (train_settings.rs: a teacher or a distillation in
//! a run directory) and on the web (web_distill/: in memory): one type for both.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Train a teacher from scratch.
    Teacher,
    /// Distill a teacher (or a student) into a student with half the steps.
    #[default]
    Distill,
}
