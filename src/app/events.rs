//! How the app takes the engine's events: `AppState::apply`, a reducer that needs no window
//! (textures go through a [`TextureSink`]: the renderer's, or a stand-in in tests), so what a
//! run's events do to the state is tested without egui or a display (tests/suite/app/state.rs).

use eframe::egui;

use super::engine::Event;
use super::state::{AppState, Frame};
use super::texture::GridTexture;
use super::Loading;

/// Where event handling puts the textures a run draws into (and gives back the ones no view
/// holds any more).
pub trait TextureSink {
    fn register(&mut self, tex: &GridTexture) -> Option<egui::TextureId>;
    fn free(&mut self, ids: Vec<egui::TextureId>);
}

/// What the caller has to do after an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// A model file was loaded or refused (the start options wait for the last of them).
    pub model_handled: bool,
}

impl AppState {
    /// Applies one engine event to the state, the loading counters and the status line.
    /// `options_applied`: the start options were applied already, so a model that arrives now
    /// was opened by the user and is selected.
    pub fn apply(
        &mut self,
        ev: Event,
        loading: &mut Loading,
        status: &mut String,
        textures: &mut dyn TextureSink,
        options_applied: bool,
    ) -> Applied {
        let mut applied = Applied::default();
        match ev {
            Event::Loaded(info) => {
                loading.done += 1;
                loading.expected = loading.expected.max(loading.done);
                let name = info.name.clone();
                if std::mem::take(&mut loading.held) {
                    // The held files made this model: the note asking for more is done.
                    *status = format!("opened {name}");
                }
                self.add_model(*info);
                if options_applied {
                    // A model the user opened: show it.
                    self.select(self.models.len() - 1);
                } else if name == crate::bundled::DEFAULT_MODEL {
                    self.select_by_name(&name);
                }
                applied.model_handled = true;
            }
            Event::LoadFailed { name, error } => {
                loading.done += 1;
                loading.expected = loading.expected.max(loading.done);
                *status = format!("could not load {name}: {error}");
                applied.model_handled = true;
            }
            Event::Expect { more } => loading.expected += more,
            Event::Held { name, note } => {
                loading.done += 1;
                loading.expected = loading.expected.max(loading.done);
                loading.held = true;
                *status = format!("{name}: {note}");
            }
            Event::Progress {
                current,
                bytes,
                cached,
            } => {
                loading.current = current;
                loading.bytes = bytes.or(loading.bytes);
                loading.cached = cached;
            }
            Event::Start { run, z, .. } => {
                let id = textures.register(&z);
                match (id, self.sample_view_for(run)) {
                    (Some(id), Some(v)) => {
                        v.texture_size = z.size;
                        let freed = v.push(Frame {
                            step: 0,
                            t: 1.0,
                            z: id,
                            x_hat: None,
                            ms: 0.0,
                            bytes: z.bytes(),
                        });
                        textures.free(freed);
                    }
                    (Some(id), None) => textures.free(vec![id]),
                    _ => {}
                }
            }
            Event::Step {
                run,
                step,
                t,
                z,
                x_hat,
                ms,
                ..
            } => {
                let ids = (textures.register(&z), textures.register(&x_hat));
                match (ids, self.sample_view_for(run)) {
                    ((Some(zid), Some(xid)), Some(v)) => {
                        let freed = v.push(Frame {
                            step,
                            t,
                            z: zid,
                            x_hat: Some(xid),
                            ms,
                            bytes: z.bytes() + x_hat.bytes(),
                        });
                        textures.free(freed);
                    }
                    ((a, b), _) => textures.free(a.into_iter().chain(b).collect()),
                }
            }
            Event::RowDone {
                run,
                row,
                image,
                ms,
                samples,
                shape,
            } => {
                if let Some(v) = self.sample_view_for(run) {
                    v.running = false;
                    v.total_ms = Some(ms);
                    #[cfg(not(target_arch = "wasm32"))]
                    eprintln!(
                        "{}: {} steps in {ms:.1} ms ({:.1} ms per step)",
                        v.label,
                        v.steps,
                        ms / v.steps as f64
                    );
                    #[cfg(target_arch = "wasm32")]
                    crate::app::web_status::publish_result(self, &samples, shape, ms);
                    if let Some(v) = self.sample_view_for(run) {
                        v.samples = Some((samples, shape));
                    }
                } else {
                    let id = textures.register(&image);
                    if let Some(v) = self.compare_view_for(run) {
                        if let Some(r) = v.rows.get_mut(row) {
                            r.image = id;
                            r.ms = Some(ms);
                            r.size = image.size;
                        }
                        if row + 1 == v.rows.len() {
                            v.running = false;
                        }
                    } else if let Some(id) = id {
                        textures.free(vec![id]);
                    }
                }
            }
            Event::Stopped { run } => self.end_run(run, None),
            Event::Failed { run, error } => {
                *status = error.clone();
                self.end_run(run, Some(error));
            }
        }
        applied
    }
}
