//! What the app remembers between launches (eframe's storage: a file natively, the browser's
//! local storage on the web): the last model, its step count, seed and sampler settings, and
//! the Train tab's settings. Start options (the address, `fewstep app --model …`) win over it;
//! a remembered model that is no longer there is skipped without a word.

use serde::{Deserialize, Serialize};

use super::state::AppState;
use crate::diffusion::SamplerKind;

/// The storage key (one value holds everything, so versions can add fields with defaults).
pub const KEY: &str = "fewstep";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Remembered {
    pub model: Option<String>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
    pub count: Option<usize>,
    pub sampler: Option<SamplerKind>,
    pub clip: Option<bool>,
    #[cfg(not(target_arch = "wasm32"))]
    pub train: super::train_settings::TrainSettings,
}

impl Remembered {
    /// What to remember of `state` (and, natively, of the Train tab's `train` settings).
    pub fn capture(
        state: &AppState,
        #[cfg(not(target_arch = "wasm32"))] train: &super::train_settings::TrainSettings,
    ) -> Remembered {
        let s = &state.settings;
        Remembered {
            model: state.selected_model().map(|m| m.name.clone()),
            steps: Some(s.steps),
            seed: Some(s.seed),
            count: Some(s.count),
            sampler: Some(s.kind),
            clip: Some(s.clip),
            #[cfg(not(target_arch = "wasm32"))]
            train: train.clone(),
        }
    }

    /// Selects the remembered model (when loaded) and restores the sample settings.
    pub fn restore(&self, state: &mut AppState) {
        if let Some(m) = &self.model {
            state.select_by_name(m);
        }
        let s = &mut state.settings;
        if let Some(v) = self.steps {
            s.steps = v.clamp(1, crate::diffusion::sampler::MAX_STEPS);
        }
        if let Some(v) = self.seed {
            s.seed = v;
        }
        if let Some(v) = self.count {
            s.count = v.clamp(1, super::state::MAX_COUNT);
        }
        if let Some(v) = self.sampler {
            s.kind = v;
        }
        if let Some(v) = self.clip {
            s.clip = v;
        }
    }

    pub fn load(storage: &dyn eframe::Storage) -> Option<Remembered> {
        eframe::get_value(storage, KEY)
    }

    pub fn save(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, KEY, self);
    }
}
