//! The GEMM tuner: which kernel a matrix product or convolution pass runs, chosen by measuring
//! on this adapter. The first time a run meets a problem bucket (layout, M, N, K, batch rounded
//! up to powers of 2: `Problem::bucket`) every candidate the adapter can run is timed on the
//! problem's own operands — the tiled, subgroup and blocked families with each tile, the
//! cooperative-matrix tiles where mixed precision was asked for and they passed their
//! self-check, and for the weight gradient the splits of K — and the fastest is kept: in this
//! device's plan, in the plan cache (per adapter, driver, precision, versions and the text of
//! every candidate kernel: `plan_cache`) and in the run's state, so a resumed run launches
//! the kernels the interrupted one did whatever the cache says by then.
//!
//! Off (the library's default, FEWSTEP_TUNE=off, or a family, tile or split forced) every
//! launch takes the fixed rule of `kernel_policy`. The command line, the app and the page tune
//! on GPUs (`GpuOptions::for_runs`).
//!
//! Timing: GPU timestamps where the adapter has them, else submit and wait; a test replaces
//! the clock with made-up times ([`set_clock`]).
//!
//! Natively a launch that meets a new bucket waits while its candidates are timed. A browser
//! tab cannot wait on the GPU in the middle of a step, so there tuning is *deferred*
//! ([`set_deferred`], always on in wasm32): the launch takes the rule, the problem is kept with
//! its operands (the output a scratch tensor), and [`tune_pending`], awaited by the page between
//! steps, times the candidates and plans the bucket for the next step. The plan is kept in the
//! browser's local storage there.

mod choice;
mod plan_cache;
mod tune;

use std::cell::RefMut;
use std::collections::BTreeMap;

pub(crate) use choice::{Choice, Problem};

use super::gemm_core::GemmCore;
use super::gemm_kernels::Loader;
use crate::gpu::{Gpu, KernelVariant};

/// Made-up times: seconds for (bucket, candidate), in place of measuring.
pub type Clock = Box<dyn FnMut(&str, &str) -> f64>;

/// Called with each bucket as it is tuned.
pub type OnTuned = Box<dyn FnMut(&Tuned)>;

/// Launches a problem again with another choice, on operands it owns and a scratch output (the
/// run's own output keeps the values its launch wrote): what deferred tuning times.
pub(crate) type Replay = Box<dyn Fn(Choice)>;

/// A problem met while tuning is deferred, waiting for [`tune_pending`].
struct Pending {
    problem: Problem,
    bucket: String,
    replay: Replay,
}

/// What one tuned bucket found (the table `fewstep tune` prints).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tuned {
    pub bucket: String,
    /// M x N x K (batch) of the problem that was timed.
    pub timed: String,
    pub chosen: String,
    pub seconds: f64,
    pub rule: String,
    pub rule_seconds: f64,
    pub candidates: usize,
    /// Wall time the tuning of this bucket took (compiles included).
    pub tuning_seconds: f64,
}

/// The selection state a device keeps (in its [`Gpu::selection_slot`]).
#[derive(Default)]
struct State {
    /// The plan: bucket -> choice, from the cache, from a run's recorded plan, or measured.
    plan: BTreeMap<String, Choice>,
    /// Entries installed from a run's recorded plan: used whatever else says.
    pinned: BTreeMap<String, Choice>,
    /// What this process's launches used from the plan (what a run records).
    used: BTreeMap<String, Choice>,
    /// Whether the plan cache was read (once per device).
    loaded: bool,
    /// Whether the cache is neither read nor written (`fewstep tune` measures afresh; tests).
    ignore_cache: bool,
    clock: Option<Clock>,
    log: Vec<Tuned>,
    on_tuned: Option<OnTuned>,
    /// Whether this process said it tunes (once).
    announced: bool,
    /// The cache key of this device (computed once).
    key: Option<String>,
    /// The kernels (core, layout, split or not) launched once already by the tuner.
    warm: std::collections::HashSet<String>,
    /// [`cores`] for the family the device ran when they were listed.
    cores: Option<(KernelVariant, Vec<GemmCore>)>,
    /// Tuning waits for [`tune_pending`] instead of blocking the launch (the browser).
    deferred: bool,
    /// Problems met while deferred, one per bucket, in the order met.
    pending: Vec<Pending>,
}

thread_local! {
    /// What [`tune_pending`] did so far on this thread's devices (the page's two devices, the
    /// worker's and the Train tab's, share the page's one thread).
    static TUNED_SO_FAR: std::cell::Cell<PendingTuned> = Default::default();
}

fn state(gpu: &Gpu) -> RefMut<'_, State> {
    let mut slot = gpu.selection_slot().borrow_mut();
    if slot.as_ref().is_none_or(|s| !s.is::<State>()) {
        *slot = Some(Box::new(State {
            clock: test_clock(),
            deferred: cfg!(target_arch = "wasm32"),
            ..State::default()
        }));
    }
    RefMut::map(slot, |s| {
        s.as_mut()
            .and_then(|b| b.downcast_mut::<State>())
            .expect("the selection slot holds the tuner's state")
    })
}

/// The fixed rule's choice (`kernel_policy`): what runs with tuning off.
pub(crate) fn rule(gpu: &Gpu, p: Problem) -> Choice {
    use super::kernel_policy::{gemm_core, split_k_parts};
    if p.loader == Loader::ConvWeightGrad {
        let core = gemm_core(gpu, p.m, p.n, 1);
        return Choice {
            core,
            parts: split_k_parts(gpu, core, p.m, p.n, p.k),
        };
    }
    Choice::new(gemm_core(gpu, p.m, p.n, p.batch))
}

/// The kernel problem `p` runs on: the pinned or planned choice for its bucket, else (tuning
/// on) the fastest candidate, measured now by calling `run` with each (it must launch the
/// problem with that choice; its outputs are overwritten by the real launch after), else the
/// rule's. Deferred (the browser), a bucket not planned yet takes the rule and is kept, with
/// the launch `replay` makes, for [`tune_pending`].
pub(crate) fn choose(
    gpu: &Gpu,
    p: Problem,
    run: &mut dyn FnMut(Choice),
    replay: &dyn Fn() -> Replay,
) -> Choice {
    let on = gpu.tunes();
    if !on && state_is_empty(gpu) {
        return rule(gpu, p);
    }
    let bucket = p.bucket();
    let (known, deferred) = {
        let mut s = state(gpu);
        if on {
            load_cache(gpu, &mut s);
        }
        let c = s
            .pinned
            .get(&bucket)
            .or_else(|| on.then(|| s.plan.get(&bucket)).flatten())
            .copied();
        (c.filter(|c| fits(gpu, &mut s, p, *c)), s.deferred)
    };
    let choice = match known {
        Some(c) => c,
        None if !on => return rule(gpu, p),
        None if deferred => {
            let mut s = state(gpu);
            if !s.pending.iter().any(|q| q.bucket == bucket) {
                s.pending.push(Pending {
                    problem: p,
                    bucket: bucket.clone(),
                    replay: replay(),
                });
            }
            rule(gpu, p)
        }
        #[cfg(not(target_arch = "wasm32"))]
        None => pollster::block_on(tune::tune(gpu, p, &bucket, run)),
        #[cfg(target_arch = "wasm32")]
        None => {
            let _ = run;
            rule(gpu, p)
        }
    };
    state(gpu).used.insert(bucket, choice);
    choice
}

/// Whether tuning waits for [`tune_pending`] instead of blocking the launch that meets a new
/// bucket (always in the browser; natively for tests of the browser's way).
pub fn set_deferred(gpu: &Gpu, on: bool) {
    state(gpu).deferred = on;
}

/// What [`tune_pending`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PendingTuned {
    /// Buckets timed and planned.
    pub problems: usize,
    /// Wall time it took, compiles included.
    pub seconds: f64,
}

/// Times the problems kept while deferred and plans their buckets, so the next step launches
/// the fastest kernels; a no-op (and free) when nothing waits. Call between steps, with no
/// launches recorded that the step still needs to read back (the candidates are submitted and
/// waited for here). If the device faults, the rest are dropped and the rule stays.
pub async fn tune_pending(gpu: &Gpu) -> PendingTuned {
    let pending = std::mem::take(&mut state(gpu).pending);
    let started = web_time::Instant::now();
    let mut problems = 0;
    for q in pending {
        if gpu.fault().is_err() {
            break;
        }
        if state(gpu).plan.contains_key(&q.bucket) {
            continue;
        }
        let replay = q.replay;
        let best = tune::tune(gpu, q.problem, &q.bucket, &mut |c| replay(c)).await;
        // From the next step on the bucket runs `best`: what a checkpoint taken now must record
        // (not the rule this step ran), or a resumed run would launch other kernels than the
        // uninterrupted one.
        state(gpu).used.insert(q.bucket, best);
        problems += 1;
    }
    let done = PendingTuned {
        problems,
        seconds: if problems > 0 {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        },
    };
    if problems > 0 {
        TUNED_SO_FAR.with(|t| {
            let mut all = t.get();
            all.problems += done.problems;
            all.seconds += done.seconds;
            t.set(all);
        });
    }
    done
}

/// Everything [`tune_pending`] did on this thread so far.
pub fn tuned_so_far() -> PendingTuned {
    TUNED_SO_FAR.with(|t| t.get())
}

/// Whether problems wait for [`tune_pending`].
pub fn has_pending(gpu: &Gpu) -> bool {
    !state(gpu).pending.is_empty()
}

fn state_is_empty(gpu: &Gpu) -> bool {
    let slot = gpu.selection_slot().borrow();
    match slot.as_ref().and_then(|b| b.downcast_ref::<State>()) {
        None => true,
        Some(s) => s.pinned.is_empty(),
    }
}

/// Whether `c` can run `p` on this device: a plan made elsewhere, or for another precision, may
/// name a kernel this device does not have. A weight gradient's split, measured on another
/// problem of the bucket, need only be no longer than K.
fn fits(gpu: &Gpu, s: &mut State, p: Problem, c: Choice) -> bool {
    let v = gpu.variant();
    if s.cores.as_ref().is_none_or(|(family, _)| *family != v) {
        s.cores = Some((v, cores(gpu)));
    }
    let known = s.cores.as_ref().is_some_and(|(_, l)| l.contains(&c.core));
    known && (c.parts == 1 || (p.loader == Loader::ConvWeightGrad && c.parts <= p.k.max(1)))
}

/// The kernels this device can run a GEMM on: tiled; subgroup where subgroups have a fixed
/// size (not in a browser); every blocked tile the rule knows that fits the limits; and the
/// cooperative-matrix tiles where the device runs that family (mixed precision, self-check
/// passed).
pub(crate) fn cores(gpu: &Gpu) -> Vec<GemmCore> {
    let mut v = vec![GemmCore::Tiled];
    let info = gpu.info();
    let browser = cfg!(target_arch = "wasm32") || info.backend == wgpu::Backend::BrowserWebGpu;
    if gpu.has_subgroups() && !browser && info.subgroup_min_size == info.subgroup_max_size {
        v.push(GemmCore::Subgroup {
            sg: gpu.subgroup_size(),
        });
    }
    for t in super::kernel_policy::blocked_tile_rule() {
        if t.check(gpu.limits()).is_ok() {
            v.push(GemmCore::Blocked(t));
        }
    }
    if gpu.variant() == KernelVariant::Coop {
        if let Some((s, sg)) = gpu.coop_sizes() {
            for t in super::coop_check::checked_tiles(gpu, s, sg) {
                v.push(GemmCore::Coop(t));
            }
        }
    }
    v
}

/// The choices first timed for `p`: each core (of the blocked family the tiles worth timing
/// for its M), the weight gradient split as the rule would split it on that core.
pub(crate) fn candidates(gpu: &Gpu, p: Problem) -> Vec<Choice> {
    let tiles = super::kernel_policy::blocked_tile_candidates(p.m);
    cores(gpu)
        .into_iter()
        .filter(|core| match core {
            GemmCore::Blocked(t) => tiles.contains(t),
            _ => true,
        })
        .map(|core| match p.loader {
            Loader::ConvWeightGrad => Choice {
                core,
                parts: super::kernel_policy::split_k_parts(gpu, core, p.m, p.n, p.k),
            },
            _ => Choice::new(core),
        })
        .collect()
}

/// Adds the cached plan of this device to `s.plan` (once; what was measured here wins).
fn load_cache(gpu: &Gpu, s: &mut State) {
    if s.loaded {
        return;
    }
    s.loaded = true;
    if !s.ignore_cache {
        let key = device_key(gpu, s);
        for (b, c) in plan_cache::read(&key) {
            s.plan.entry(b).or_insert(c);
        }
    }
}

fn device_key(gpu: &Gpu, s: &mut State) -> String {
    s.key
        .get_or_insert_with(|| plan_cache::device_key(gpu))
        .clone()
}

/// FEWSTEP_TEST_TUNE_CLOCK=SEED: made-up times ([`made_up_clock`]) natively.
fn test_clock() -> Option<Clock> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let seed: u64 = std::env::var("FEWSTEP_TEST_TUNE_CLOCK")
            .ok()?
            .parse()
            .ok()?;
        Some(made_up_clock(seed))
    }
    #[cfg(target_arch = "wasm32")]
    None
}

/// Made-up times, a fixed pseudo-random function of the seed, bucket and candidate, in place of
/// measuring (the command line's tests through FEWSTEP_TEST_TUNE_CLOCK, the page's through
/// `?tune_clock=SEED`): a plan that differs from the rule, the same in every process, at no cost.
pub fn made_up_clock(seed: u64) -> Clock {
    Box::new(move |bucket: &str, candidate: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in bucket.bytes().chain([0]).chain(candidate.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        1e-3 * (1.0 + (h >> 11) as f64 / (1u64 << 53) as f64)
    })
}

/// Replaces measuring with made-up times (tests).
pub fn set_clock(gpu: &Gpu, clock: Option<Clock>) {
    state(gpu).clock = clock;
}

/// Forgets the plan (and the pinned entries) without reading the cache: the next problems are
/// timed afresh; what is measured is stored in the cache when `store` (`fewstep tune`), not
/// (`bench train --tuned`, tests).
pub fn start_afresh(gpu: &Gpu, store: bool) {
    let mut s = state(gpu);
    s.plan.clear();
    s.pinned.clear();
    s.used.clear();
    s.loaded = true;
    s.ignore_cache = !store;
    s.log.clear();
    s.pending.clear();
}

/// Called with each bucket as it is tuned (`fewstep tune`'s progress).
pub fn on_tuned(gpu: &Gpu, f: Option<OnTuned>) {
    state(gpu).on_tuned = f;
}

/// What this process tuned, in order.
pub fn tuned(gpu: &Gpu) -> Vec<Tuned> {
    state(gpu).log.clone()
}

/// Where the plan cache is, if anywhere.
pub fn cache_file() -> Option<std::path::PathBuf> {
    plan_cache::file()
}

/// Where the plan is kept, as people read it: the cache file natively, the browser's local
/// storage on the web.
pub fn kept_where() -> String {
    plan_cache::kept_where()
}

/// How many entries the plan cache keeps for this device now (read afresh: another device on
/// the same adapter, the page's worker, may have added some).
pub fn kept_entries(gpu: &Gpu) -> usize {
    let key = device_key(gpu, &mut state(gpu));
    plan_cache::read(&key).len()
}

/// This device's plan as text (bucket, choice), the cache's entries included once read.
pub fn plan(gpu: &Gpu) -> Vec<(String, String)> {
    let mut s = state(gpu);
    if gpu.tunes() {
        load_cache(gpu, &mut s);
    }
    let mut all = s.plan.clone();
    all.extend(s.pinned.clone());
    all.into_iter().map(|(b, c)| (b, c.to_string())).collect()
}

/// The plan a run records with its state: `None` where tuning is off (every launch took the
/// rule), else each bucket this process launched with the choice it used.
pub fn recorded(gpu: &Gpu) -> Option<BTreeMap<String, String>> {
    let s = state(gpu);
    if !gpu.tunes() && s.pinned.is_empty() {
        return None;
    }
    let mut all: BTreeMap<String, String> = s
        .pinned
        .iter()
        .map(|(b, c)| (b.clone(), c.to_string()))
        .collect();
    all.extend(s.used.iter().map(|(b, c)| (b.clone(), c.to_string())));
    Some(all)
}

/// Continues with the plan a run recorded: `None` (the run took the rule) turns tuning off;
/// entries are used for their buckets whatever the cache says. An entry that names no kernel
/// of this version is refused.
pub fn install(gpu: &Gpu, recorded: Option<&BTreeMap<String, String>>) -> Result<(), String> {
    let Some(entries) = recorded else {
        gpu.set_tuning(false);
        return Ok(());
    };
    let mut s = state(gpu);
    for (bucket, text) in entries {
        let c: Choice = text
            .parse()
            .map_err(|e| format!("the recorded kernel plan's entry for {bucket}: {e}"))?;
        s.pinned.insert(bucket.clone(), c);
    }
    Ok(())
}
