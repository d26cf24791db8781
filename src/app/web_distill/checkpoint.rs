//! In-tab runs that survive a reload, a closed tab or a lost device: the run in progress is
//! checkpointed into the browser's storage (app/web_store.rs, space "runs"): the entry "run"
//! holds the checkpoint bytes (distill_memory.rs / train_memory.rs) with what the tab shows of
//! it, and a distillation's halving teacher is kept beside it as "teacher-SHA" (written before
//! the "run" that names it, so a tab closed between the two leaves the older pair whole). The
//! next page offers to resume; a finished, stopped or failed run leaves nothing behind.

use serde::{Deserialize, Serialize};

use super::*;
use crate::app::web_store::{self, RUNS};

const RUN: &str = "run";

/// What the tab shows of a checkpointed run, kept with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub mode: Mode,
    /// The model the students are named after (`BASE-to-2step`), or the teacher's name.
    pub base: String,
    pub done: u64,
    pub total: u64,
    /// The halving teacher's SHA-256 (distillation only).
    #[serde(default)]
    pub teacher_sha256: Option<String>,
    /// Checkpoint every this many updates (the address's `checkpoint=N`), else by time.
    #[serde(default)]
    pub every: Option<u64>,
}

/// What the running run's checkpoints have cost (for the tab and `fewstep_distilled()`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointCost {
    pub count: u32,
    /// Seconds in all: reading the state back from the GPU and writing it.
    pub seconds: f64,
    /// The last checkpoint's entry in storage.
    pub bytes: u64,
    /// The halving teacher kept beside it (written once per halving).
    pub teacher_bytes: u64,
    /// The update the last one was taken at.
    pub update: u64,
}

/// A run found in storage as the page started, offered in the Train tab.
#[derive(Clone, Debug)]
pub struct Interrupted {
    pub info: RunInfo,
    /// When it was checkpointed (ms since 1970).
    pub kept: f64,
}

/// What a resumed run starts from.
pub struct Resume {
    pub info: RunInfo,
    pub checkpoint: Vec<u8>,
    /// A distillation's halving teacher file.
    pub teacher: Option<Vec<u8>>,
}

thread_local! {
    static INTERRUPTED: RefCell<Option<Interrupted>> = const { RefCell::new(None) };
    /// Set when an offer was found, until the app has shown the Train tab for it.
    static APPEARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether an offer was found since the last call (the app then shows the Train tab).
pub fn offer_appeared() -> bool {
    APPEARED.with(|a| a.replace(false))
}

fn teacher_key(sha: &str) -> String {
    format!("teacher-{sha}")
}

/// Looks in storage for a run the last page left (once, as the page starts, before the models
/// load).
pub async fn look_for_interrupted(ctx: &egui::Context) {
    let Ok(Some(entry)) = web_store::get(RUNS, RUN).await else {
        return;
    };
    let Some(info) = entry
        .info
        .get("run")
        .and_then(|r| serde_json::from_value::<RunInfo>(r.clone()).ok())
    else {
        return;
    };
    let kept = entry
        .info
        .get("kept")
        .and_then(|k| k.as_f64())
        .unwrap_or(0.0);
    INTERRUPTED.with(|i| *i.borrow_mut() = Some(Interrupted { info, kept }));
    APPEARED.with(|a| a.set(true));
    ctx.request_repaint();
}

/// Whether a run the last page left waits to be resumed or discarded.
pub fn interrupted_run_waits() -> bool {
    INTERRUPTED.with(|i| i.borrow().is_some())
}

/// The run offered for resuming, if any.
pub fn interrupted() -> Option<Interrupted> {
    INTERRUPTED.with(|i| i.borrow().clone())
}

/// The offer goes (the run was resumed, discarded, or another one started).
pub fn withdraw_offer() {
    INTERRUPTED.with(|i| *i.borrow_mut() = None);
}

/// Reads the interrupted run's checkpoint (and teacher) back for resuming.
pub async fn load_resume() -> anyhow::Result<Resume> {
    let entry = web_store::get(RUNS, RUN)
        .await
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("the interrupted run's checkpoint is gone from storage"))?;
    let info: RunInfo = serde_json::from_value(entry.info.get("run").cloned().unwrap_or_default())?;
    let teacher = match &info.teacher_sha256 {
        Some(sha) => Some(
            web_store::get(RUNS, &teacher_key(sha))
                .await
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| {
                    anyhow::anyhow!("the teacher kept with the checkpoint is gone from storage")
                })?
                .bytes,
        ),
        None => None,
    };
    Ok(Resume {
        info,
        checkpoint: entry.bytes,
        teacher,
    })
}

/// Deletes every checkpoint entry (a run ended, was stopped, or the visitor discarded it).
pub async fn discard() {
    if let Ok(entries) = web_store::names(RUNS).await {
        for name in entries {
            let _ = web_store::remove(RUNS, &name).await;
        }
    }
}

/// When the running run checkpoints, and what that has cost.
pub struct Checkpoints {
    every: Option<u64>,
    last_update: u64,
    last_end: web_time::Instant,
    /// The last checkpoint's seconds (the next waits 20 times as long, at least 10 s).
    last_cost: f64,
    teacher_stored: Option<String>,
}

impl Checkpoints {
    pub fn new(every: Option<u64>, done: u64) -> Checkpoints {
        Checkpoints {
            every,
            last_update: done,
            last_end: web_time::Instant::now(),
            last_cost: 0.0,
            teacher_stored: None,
        }
    }

    /// Whether a checkpoint is due after `done` updates: every `checkpoint=N` updates when the
    /// address says so; else once 10 s, and 20 times the last checkpoint's cost, have passed
    /// since the last, so checkpoints take at most 1/21 of the run's time.
    pub fn due(&self, done: u64) -> bool {
        if done <= self.last_update {
            return false;
        }
        match self.every {
            Some(0) => false,
            Some(n) => done - self.last_update >= n,
            None => self.last_end.elapsed().as_secs_f64() >= (20.0 * self.last_cost).max(10.0),
        }
    }

    /// Writes the checkpoint (and, when it changed, the halving's teacher); records its cost in
    /// `shared`. A refusal (a full quota) is reported there and the run goes on.
    pub async fn save(
        &mut self,
        checkpoint: anyhow::Result<Vec<u8>>,
        teacher: Option<(&str, &[u8])>,
        info: RunInfo,
        shared: &Rc<RefCell<Shared>>,
    ) -> anyhow::Result<()> {
        let t0 = web_time::Instant::now();
        let bytes = checkpoint?;
        let result = self.write(&bytes, teacher, &info).await;
        let cost = t0.elapsed().as_secs_f64();
        self.last_cost = cost;
        self.last_update = info.done;
        self.last_end = web_time::Instant::now();
        let mut s = shared.borrow_mut();
        match result {
            Ok((run, teacher)) => {
                let c = s.checkpoints.get_or_insert_with(CheckpointCost::default);
                c.count += 1;
                c.seconds += cost;
                c.bytes = run;
                if let Some(t) = teacher {
                    c.teacher_bytes = t;
                }
                c.update = info.done;
                s.checkpoint_error = None;
            }
            Err(e) => {
                s.checkpoint_error = Some(format!(
                    "could not checkpoint at update {} ({e}); the run goes on, but closing the \
                     tab would lose what it did since the last checkpoint",
                    info.done
                ))
            }
        }
        Ok(())
    }

    async fn write(
        &mut self,
        bytes: &[u8],
        teacher: Option<(&str, &[u8])>,
        info: &RunInfo,
    ) -> Result<(u64, Option<u64>), String> {
        let mut teacher_bytes = None;
        let old_teacher = self.teacher_stored.clone();
        if let Some((sha, file)) = teacher {
            let key = teacher_key(sha);
            if self.teacher_stored.as_deref() != Some(key.as_str()) {
                teacher_bytes =
                    Some(web_store::put(RUNS, &key, file, serde_json::json!({})).await?);
                self.teacher_stored = Some(key);
            }
        }
        let run = serde_json::json!({ "run": info });
        let stored = web_store::put(RUNS, RUN, bytes, run).await?;
        // The "run" now names the new teacher: the old one may go.
        if let Some(old) = old_teacher.filter(|o| Some(o) != self.teacher_stored.as_ref()) {
            let _ = web_store::remove(RUNS, &old).await;
        }
        Ok((stored, teacher_bytes))
    }
}
