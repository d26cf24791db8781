//! The app's state without a window: which model and settings are chosen, what a run has drawn so
//! far, where the step slider is. The UI only reads it and calls these methods, so its logic is
//! tested without a display (tests/suite/app/).

use eframe::egui::TextureId;

use super::engine::{ModelInfo, RowSpec};
use crate::diffusion::{SampleOptions, SamplerKind};

/// Largest step count the teacher's plain DDIM may be asked for in the app.
pub const MAX_STEPS: usize = 1024;
/// Largest number of images per run.
pub const MAX_COUNT: usize = 64;
/// Playback speed of a finished run's steps.
pub const PLAY_FPS: f64 = 4.0;
/// The most GPU memory the steps kept for scrubbing may take (two RGBA8 textures a step, z_t
/// and x_hat). Every step of a run at the limits (1024 steps, 64 images of 28x28) would take
/// ~440 MB, more than an integrated GPU or a phone's browser gives. Past the cap only every
/// second kept step stays, then every fourth, …: the slider still spans the whole run in even,
/// coarser steps; the first (the noise) and the newest are always kept.
pub const SCRUB_CAP_BYTES: u64 = 64 << 20;

/// A run the state accepted: its id, the rows for the worker, and the textures of the run it
/// replaced (to free); or why it was refused.
pub type Started = Result<(u64, Vec<RowSpec>, Vec<TextureId>), String>;

#[derive(Clone, Debug, PartialEq)]
pub struct SampleSettings {
    pub steps: usize,
    pub seed: u64,
    pub count: usize,
    pub kind: SamplerKind,
    pub clip: bool,
    /// A class-conditional model's class (None: no class, its unconditional samples).
    pub class: Option<u32>,
    /// Classifier-free guidance weight w (class-conditional models).
    pub guidance: f32,
    /// Seed B of a strip from `seed`'s noise to B's (interpolate.rs); None: `seed`'s images.
    pub interpolate_to: Option<u64>,
}

/// The guidance weight a class-conditional model starts with in the app.
pub const DEFAULT_GUIDANCE: f32 = 1.0;

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings {
            steps: 4,
            seed: 1,
            count: 16,
            kind: SamplerKind::Ddim,
            clip: true,
            class: None,
            guidance: 0.0,
            interpolate_to: None,
        }
    }
}

/// One drawn step: z_t after it and the x_hat that produced it (none for the initial noise).
#[derive(Clone, Debug)]
pub struct Frame {
    pub step: usize,
    pub t: f64,
    pub z: TextureId,
    pub x_hat: Option<TextureId>,
    pub ms: f64,
    /// GPU memory of this frame's textures.
    pub bytes: u64,
}

impl Frame {
    fn textures(&self) -> impl Iterator<Item = TextureId> + '_ {
        std::iter::once(self.z).chain(self.x_hat)
    }
}

/// A sample run as the sample view shows it.
#[derive(Debug)]
pub struct SampleView {
    pub run: u64,
    pub label: String,
    pub steps: usize,
    pub frames: Vec<Frame>,
    /// Index into `frames` of the frame on screen.
    pub shown: usize,
    /// Whether the slider follows the newest frame while the run goes on.
    pub follow: bool,
    /// Steps kept for scrubbing: the multiples of this (1 until SCRUB_CAP_BYTES is reached),
    /// the noise and the newest step.
    pub stride: usize,
    /// The time of each step drawn so far, kept or not.
    ms_drawn: f64,
    /// The newest step drawn.
    pub newest_step: usize,
    /// The most GPU memory the kept steps took at any time (after each step's thinning).
    pub peak_bytes: u64,
    pub playing: bool,
    play_clock: f64,
    pub running: bool,
    pub stopped: bool,
    pub total_ms: Option<f64>,
    pub texture_size: [u32; 2],
    pub samples: Option<(Vec<f32>, [usize; 4])>,
    pub error: Option<String>,
    /// The settings of this run, as a link (web) or a command (native) reproduces it.
    pub reproduce: Option<crate::app::StartOptions>,
}

impl SampleView {
    pub fn new(run: u64, label: String, steps: usize) -> SampleView {
        SampleView {
            run,
            label,
            steps,
            frames: Vec::new(),
            shown: 0,
            follow: true,
            stride: 1,
            ms_drawn: 0.0,
            newest_step: 0,
            peak_bytes: 0,
            playing: false,
            play_clock: 0.0,
            running: true,
            stopped: false,
            total_ms: None,
            texture_size: [1, 1],
            samples: None,
            error: None,
            reproduce: None,
        }
    }

    /// Adds a drawn step; returns the textures of steps no longer kept (for the caller to free).
    pub fn push(&mut self, frame: Frame) -> Vec<TextureId> {
        let mut freed = Vec::new();
        let shown_step = self.frames.get(self.shown).map(|f| f.step);
        // The newest step is kept even off the stride; the next one replaces it.
        if let Some(last) = self.frames.last() {
            if last.step % self.stride != 0 {
                freed.extend(last.textures());
                self.frames.pop();
            }
        }
        self.ms_drawn += frame.ms;
        self.newest_step = frame.step;
        self.frames.push(frame);
        while self.scrub_bytes() > SCRUB_CAP_BYTES && self.frames.len() > 2 {
            self.stride *= 2;
            let (last, stride) = (self.frames.len() - 1, self.stride);
            let mut i = 0;
            self.frames.retain(|f| {
                let keep = i == last || f.step % stride == 0;
                if !keep {
                    freed.extend(f.textures());
                }
                i += 1;
                keep
            });
        }
        self.peak_bytes = self.peak_bytes.max(self.scrub_bytes());
        self.shown = match shown_step {
            Some(step) if !self.follow => self
                .frames
                .iter()
                .position(|f| f.step >= step)
                .unwrap_or(self.frames.len() - 1),
            _ => self.frames.len() - 1,
        };
        freed
    }

    /// GPU memory the kept steps take.
    pub fn scrub_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.bytes).sum()
    }

    /// Moves the slider (stops following the run and stops playback).
    pub fn scrub(&mut self, index: usize) {
        if self.frames.is_empty() {
            return;
        }
        self.shown = index.min(self.frames.len() - 1);
        self.follow = self.shown + 1 == self.frames.len();
        self.playing = false;
    }

    /// Play from the start (or from where the slider is, if not at the end); pause if playing.
    pub fn toggle_play(&mut self) {
        if self.playing {
            self.playing = false;
            return;
        }
        if self.frames.len() < 2 {
            return;
        }
        if self.shown + 1 >= self.frames.len() {
            self.shown = 0;
        }
        self.playing = true;
        self.follow = false;
        self.play_clock = 0.0;
    }

    /// Advances playback by `dt` seconds; returns true while it still plays.
    pub fn tick(&mut self, dt: f64) -> bool {
        if !self.playing {
            return false;
        }
        self.play_clock += dt;
        while self.play_clock >= 1.0 / PLAY_FPS {
            self.play_clock -= 1.0 / PLAY_FPS;
            if self.shown + 1 < self.frames.len() {
                self.shown += 1;
            } else if !self.running {
                self.playing = false;
                self.follow = true;
                return false;
            }
        }
        true
    }

    pub fn frame(&self) -> Option<&Frame> {
        self.frames.get(self.shown)
    }

    /// Time of the steps drawn so far.
    pub fn steps_ms(&self) -> f64 {
        self.ms_drawn
    }

    pub fn textures(&self) -> Vec<TextureId> {
        self.frames.iter().flat_map(|f| f.textures()).collect()
    }
}

/// One row of a comparison.
#[derive(Clone, Debug)]
pub struct CompareRow {
    pub label: String,
    pub image: Option<TextureId>,
    pub ms: Option<f64>,
    pub size: [u32; 2],
}

#[derive(Debug)]
pub struct CompareView {
    pub run: u64,
    pub rows: Vec<CompareRow>,
    pub running: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompareSettings {
    /// Step counts offered, and whether each is chosen.
    pub counts: Vec<(usize, bool)>,
    pub seed: u64,
    pub count: usize,
    /// For a class-conditional model: every step count once per class (rows grouped by class).
    pub per_class: bool,
}

impl Default for CompareSettings {
    fn default() -> Self {
        CompareSettings {
            counts: [1, 2, 4, 8, 16, 32, 64]
                .iter()
                .map(|&k| (k, k <= 4))
                .collect(),
            seed: 1,
            count: 8,
            per_class: false,
        }
    }
}

#[derive(Default)]
pub struct AppState {
    pub models: Vec<ModelInfo>,
    pub selected: Option<usize>,
    pub settings: SampleSettings,
    pub compare: CompareSettings,
    pub sample_view: Option<SampleView>,
    pub compare_view: Option<CompareView>,
    next_run: u64,
}

impl AppState {
    pub fn add_model(&mut self, info: ModelInfo) {
        self.models.push(info);
        if self.selected.is_none() {
            self.select(self.models.len() - 1);
        }
    }

    /// Takes a model out of the list (the worker is told to drop it at the same index, so the
    /// lists stay aligned); refused while a run goes on, since its rows name models by index.
    /// Returns the removed model's name.
    pub fn remove_model(&mut self, index: usize) -> Result<String, String> {
        if index >= self.models.len() {
            return Err(format!("there is no model #{index}"));
        }
        let busy = self.sample_view.as_ref().is_some_and(|v| v.running)
            || self.compare_view.as_ref().is_some_and(|v| v.running);
        if busy {
            return Err("stop the run first: it uses the loaded models".into());
        }
        let gone = self.models.remove(index);
        self.selected = match self.selected {
            _ if self.models.is_empty() => None,
            Some(s) if s > index => Some(s - 1),
            Some(s) if s == index => Some(index.min(self.models.len() - 1)),
            other => other,
        };
        if let Some(s) = self.selected {
            self.select(s);
        }
        Ok(gone.name)
    }

    /// Chooses a model; a distilled model brings its own step count.
    pub fn select(&mut self, index: usize) {
        if index >= self.models.len() {
            return;
        }
        self.selected = Some(index);
        let meta = &self.models[index].meta;
        if let Some(k) = meta.steps {
            self.settings.steps = k as usize;
        }
        // Class controls belong to class-conditional models: a class the new model lacks goes.
        let classes = meta.arch.classes;
        if classes == 0 {
            self.settings.class = None;
            self.settings.guidance = 0.0;
            self.compare.per_class = false;
        } else {
            if self.settings.class.is_some_and(|c| c as usize >= classes) {
                self.settings.class = None;
            }
            if self.settings.guidance == 0.0 {
                self.settings.guidance = DEFAULT_GUIDANCE;
            }
        }
    }

    pub fn select_by_name(&mut self, name: &str) -> bool {
        let hit = self.models.iter().position(|m| {
            m.name == name || crate::bundled::find(name).is_some_and(|b| b.name == m.name)
        });
        match hit {
            Some(i) => {
                self.select(i);
                true
            }
            None => false,
        }
    }

    pub fn selected_model(&self) -> Option<&ModelInfo> {
        self.selected.and_then(|i| self.models.get(i))
    }

    /// The teacher compare rows use: the first loaded model without a step count whose image
    /// shape matches the selected model's (or any teacher if none is selected).
    pub fn teacher(&self) -> Option<usize> {
        let shape = self.selected_model().map(|m| m.meta.image);
        let classes = self.selected_model().map(|m| m.meta.arch.classes);
        self.models.iter().position(|m| {
            m.meta.steps.is_none()
                && shape.is_none_or(|s| s == m.meta.image)
                && classes.is_none_or(|c| c == m.meta.arch.classes)
        })
    }

    /// The class and guidance weight a run of model `i` uses: the settings', checked.
    fn asked(&self, i: usize, class: Option<u32>) -> Result<(Option<u32>, f32), String> {
        let arch = &self.models[i].meta.arch;
        let w = if arch.classes == 0 {
            0.0
        } else {
            self.settings.guidance
        };
        if class.is_some_and(|c| c as usize >= arch.classes) {
            return Err(format!(
                "{} has no class {}",
                self.models[i].name,
                class.unwrap_or(0)
            ));
        }
        crate::diffusion::guidance::check_guidance(arch, w as f64)?;
        Ok((class.filter(|_| arch.classes > 0), w))
    }

    fn new_run(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run
    }

    fn options(&self, steps: usize, seed: u64, count: usize) -> SampleOptions {
        SampleOptions {
            steps,
            count,
            seed,
            kind: self.settings.kind,
            clip: self.settings.clip,
        }
    }

    /// Starts a sample run with the current settings: the rows to send, or why not.
    /// Returns the textures of the replaced run, for the caller to free.
    pub fn start_sample(&mut self) -> Started {
        let i = self.selected.ok_or("no model is loaded yet")?;
        let s = self.settings.clone();
        if !(1..=MAX_STEPS).contains(&s.steps) {
            return Err(format!("steps must be between 1 and {MAX_STEPS}"));
        }
        if !(1..=MAX_COUNT).contains(&s.count) {
            return Err(format!(
                "the number of images must be between 1 and {MAX_COUNT}"
            ));
        }
        let m = &self.models[i];
        let label = match m.meta.steps {
            Some(k) if k as usize == s.steps => format!("{} — distilled, {k} steps", m.name),
            Some(k) => format!(
                "{} — made for {k} steps, run with {} (plain DDIM on a student)",
                m.name, s.steps
            ),
            None => format!("{} — teacher, {} DDIM steps", m.name, s.steps),
        };
        let strip = s.interpolate_to.map(|b| (s.seed, b));
        let counts = crate::diffusion::interpolate::STRIP_COUNTS;
        if strip.is_some() && !counts.contains(&s.count) {
            return Err(format!(
                "a strip from one seed to another needs {} to {} images",
                counts.start(),
                counts.end()
            ));
        }
        let (class, guidance) = self.asked(i, s.class)?;
        let arch = &m.meta.arch;
        let label = match strip {
            Some((a, b)) => format!("{label} — from seed {a} to seed {b}"),
            None => label,
        };
        let label = match class {
            Some(c) if arch.classes > 0 => format!(
                "{label} — {} (guidance {guidance})",
                crate::diffusion::guidance::class_name(arch, c)
            ),
            _ => label,
        };
        let rows = vec![RowSpec {
            model: i,
            opts: self.options(s.steps, s.seed, s.count),
            label: label.clone(),
            class,
            guidance,
            strip,
        }];
        let reproduce = crate::app::StartOptions {
            class: class.map(|c| {
                arch.class_names
                    .get(c as usize)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            }),
            guidance: (arch.classes > 0 && class.is_some()).then_some(guidance),
            model: Some(m.name.clone()),
            steps: Some(s.steps),
            // A strip's link names both seeds (interpolate=A,B) and no seed of its own.
            seed: strip.is_none().then_some(s.seed),
            interpolate: strip,
            count: Some(s.count),
            sampler: Some(s.kind),
            clip: Some(s.clip),
            run: true,
            ..Default::default()
        };
        let run = self.new_run();
        let mut view = SampleView::new(run, label, s.steps);
        view.reproduce = Some(reproduce);
        let old = self
            .sample_view
            .replace(view)
            .map(|v| v.textures())
            .unwrap_or_default();
        Ok((run, rows, old))
    }

    /// The rows of a comparison: for each chosen step count, the distilled model made for it
    /// (if one is loaded) and the teacher's plain DDIM with that many steps.
    pub fn compare_rows(&self) -> Result<Vec<RowSpec>, String> {
        let teacher = self.teacher();
        let shape = teacher
            .map(|t| self.models[t].meta.image)
            .or(self.selected_model().map(|m| m.meta.image));
        let mut rows = Vec::new();
        let c = &self.compare;
        let family = self
            .selected_model()
            .or(teacher.map(|t| &self.models[t]))
            .map(|m| m.meta.arch.clone());
        let classes = family.as_ref().map_or(0, |a| a.classes);
        // One group of rows per class, or the settings' class alone.
        let groups: Vec<Option<u32>> = if c.per_class && classes > 0 {
            (0..classes as u32).map(Some).collect()
        } else {
            vec![self.settings.class]
        };
        for &class in &groups {
            let prefix = match (class, &family) {
                (Some(l), Some(a)) if c.per_class => {
                    format!("{}: ", crate::diffusion::guidance::class_name(a, l))
                }
                _ => String::new(),
            };
            for &(k, on) in &c.counts {
                if !on {
                    continue;
                }
                let student = self.models.iter().position(|m| {
                    m.meta.steps == Some(k as u32)
                        && shape.is_none_or(|s| s == m.meta.image)
                        && m.meta.arch.classes == classes
                });
                for (i, what) in [(student, "distilled"), (teacher, "DDIM")] {
                    let Some(i) = i else { continue };
                    let (class, guidance) = self.asked(i, class)?;
                    rows.push(RowSpec {
                        model: i,
                        opts: self.options(k, c.seed, c.count),
                        label: format!("{prefix}{k} {what}"),
                        class,
                        guidance,
                        strip: None,
                    });
                }
            }
        }
        if rows.is_empty() {
            return Err(if self.models.is_empty() {
                "no model is loaded yet".into()
            } else {
                "choose at least one step count with a distilled model or a teacher".into()
            });
        }
        Ok(rows)
    }

    pub fn start_compare(&mut self) -> Started {
        if !(1..=MAX_COUNT).contains(&self.compare.count) {
            return Err(format!(
                "the number of images must be between 1 and {MAX_COUNT}"
            ));
        }
        let rows = self.compare_rows()?;
        let run = self.new_run();
        let view = CompareView {
            run,
            rows: rows
                .iter()
                .map(|r| CompareRow {
                    label: r.label.clone(),
                    image: None,
                    ms: None,
                    size: [1, 1],
                })
                .collect(),
            running: true,
            error: None,
        };
        let old = self
            .compare_view
            .replace(view)
            .map(|v| v.rows.iter().filter_map(|r| r.image).collect())
            .unwrap_or_default();
        Ok((run, rows, old))
    }

    /// A run was stopped or failed.
    pub fn end_run(&mut self, run: u64, error: Option<String>) {
        if let Some(v) = self.sample_view.as_mut().filter(|v| v.run == run) {
            v.running = false;
            v.stopped = error.is_none();
            v.error = error.clone();
        }
        if let Some(v) = self.compare_view.as_mut().filter(|v| v.run == run) {
            v.running = false;
            v.error = error;
        }
    }

    pub fn sample_view_for(&mut self, run: u64) -> Option<&mut SampleView> {
        self.sample_view.as_mut().filter(|v| v.run == run)
    }
    pub fn compare_view_for(&mut self, run: u64) -> Option<&mut CompareView> {
        self.compare_view.as_mut().filter(|v| v.run == run)
    }
}
