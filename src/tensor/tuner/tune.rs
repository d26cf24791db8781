//! Tuning one problem bucket: timing the candidates on the launch's own operands and keeping the
//! fastest. Async, since it waits on the GPU: natively a launch blocks on it, the browser awaits
//! it between steps (`tune_pending`).

use super::{candidates, device_key, plan_cache, rule, state, Choice, Problem, Tuned};
use crate::gpu::Gpu;
use crate::tensor::gemm_kernels::Loader;

/// The other splits of K tried on the fastest core for a weight gradient: none, and as each
/// split rule (real GPUs: ~2048 workgroups of chunks >= 256; CPU adapters: ~512 of >= 1024)
/// would split it.
fn other_splits(p: Problem, best: Choice) -> Vec<Choice> {
    if p.loader != Loader::ConvWeightGrad {
        return Vec::new();
    }
    let (bm, bn, ..) = best.core.tile();
    let tiles = p.m.div_ceil(bm) * p.n.div_ceil(bn);
    let mut out: Vec<Choice> = Vec::new();
    let mut add = |parts: u32| {
        let c = Choice {
            core: best.core,
            parts,
        };
        if c != best && !out.contains(&c) {
            out.push(c);
        }
    };
    add(1);
    for (workgroups, min_chunk) in [(2048u32, 256u32), (512, 1024)] {
        add(p
            .k
            .div_ceil(min_chunk)
            .min(workgroups.div_ceil(tiles))
            .max(1));
    }
    out
}

/// Times the candidates for `p` and keeps the fastest (in the plan, the cache and the log):
/// each core once (its kernel compiled first, untimed), the two fastest once more, then the
/// fastest core with K split otherwise. If the device faults, the rule's choice runs and
/// nothing is kept.
/// How much faster than the rule's kernel a candidate must be to replace it (its time at most
/// this fraction of the rule's).
const MARGIN: f64 = 0.9;

pub(super) async fn tune(
    gpu: &Gpu,
    p: Problem,
    bucket: &str,
    run: &mut dyn FnMut(Choice),
) -> Choice {
    let started = web_time::Instant::now();
    let rule_choice = rule(gpu, p);
    announce(gpu);
    // What was recorded before this launch is not the candidates' to pay for.
    gpu.flush();
    let mut clock = state(gpu).clock.take();
    let mut warm = std::mem::take(&mut state(gpu).warm);
    // Each candidate's time: made up by a test's clock, else measured (its first launch, which
    // builds the kernel on some drivers, untimed).
    async fn time(
        gpu: &Gpu,
        p: Problem,
        bucket: &str,
        clock: &mut Option<super::Clock>,
        warm: &mut std::collections::HashSet<String>,
        c: Choice,
        run: &mut dyn FnMut(Choice),
    ) -> f64 {
        if let Some(clock) = clock.as_mut() {
            return clock(bucket, &c.to_string());
        }
        if warm.insert(format!("{:?} {:?} {}", c.core, p.loader, c.parts > 1)) {
            run(c);
            if gpu.finish().await.is_err() {
                return f64::INFINITY;
            }
        }
        measure(gpu, &mut || run(c)).await
    }
    let mut times: Vec<(Choice, f64)> = Vec::new();
    let mut list = candidates(gpu, p);
    if !list.contains(&rule_choice) {
        list.insert(0, rule_choice);
    }
    for &c in &list {
        let t = time(gpu, p, bucket, &mut clock, &mut warm, c, run).await;
        times.push((c, t));
    }
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    // One launch's time is noisy: the two fastest and the rule's, twice more each.
    let again: Vec<Choice> = times
        .iter()
        .take(2)
        .map(|t| t.0)
        .chain([rule_choice])
        .collect();
    for (i, &c) in again.iter().enumerate() {
        if again[..i].contains(&c) {
            continue;
        }
        let t1 = time(gpu, p, bucket, &mut clock, &mut warm, c, run).await;
        let t = t1.min(time(gpu, p, bucket, &mut clock, &mut warm, c, run).await);
        if let Some(entry) = times.iter_mut().find(|e| e.0 == c) {
            entry.1 = entry.1.min(t);
        }
    }
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    for c in other_splits(p, times[0].0) {
        let t1 = time(gpu, p, bucket, &mut clock, &mut warm, c, run).await;
        let t = t1.min(time(gpu, p, bucket, &mut clock, &mut warm, c, run).await);
        times.push((c, t));
    }
    state(gpu).clock = clock;
    state(gpu).warm = warm;
    if gpu.fault().is_err() {
        return rule_choice;
    }
    let &(fastest, fastest_seconds) = times
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one candidate");
    let rule_seconds = times
        .iter()
        .filter(|(c, _)| *c == rule_choice)
        .map(|(_, t)| *t)
        .fold(f64::INFINITY, f64::min);
    // The rule stays unless a candidate is clearly faster: a win inside the timing noise
    // (a few percent on lavapipe, where every launch also shares the cores) is not one, and
    // operands that sit in caches while a problem is timed over and over flatter the fastest.
    let (best, seconds) = if fastest_seconds <= MARGIN * rule_seconds {
        (fastest, fastest_seconds)
    } else {
        (rule_choice, rule_seconds)
    };
    let record = Tuned {
        bucket: bucket.to_string(),
        timed: format!("{}x{}x{} ({})", p.m, p.n, p.k, p.batch),
        chosen: best.to_string(),
        seconds,
        rule: rule_choice.to_string(),
        rule_seconds,
        candidates: times.len(),
        tuning_seconds: started.elapsed().as_secs_f64(),
    };
    let mut s = state(gpu);
    s.plan.insert(bucket.to_string(), best);
    if !s.ignore_cache {
        let key = device_key(gpu, &mut s);
        plan_cache::store(&key, bucket, &best);
    }
    if let Some(f) = s.on_tuned.as_mut() {
        f(&record);
    }
    s.log.push(record);
    best
}

/// Seconds one launch of `run` takes: GPU timestamps where the adapter has them (natively, and
/// nothing else is profiling), else wall time from the launch to the end of the wait (the
/// browser: submit and await). Infinite if the device faulted.
async fn measure(gpu: &Gpu, run: &mut dyn FnMut()) -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    let stamps = gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY) && !gpu.profiling();
    #[cfg(not(target_arch = "wasm32"))]
    if stamps {
        let _ = gpu.set_profiling(true);
    }
    let t0 = web_time::Instant::now();
    run();
    let waited = gpu.finish().await;
    #[cfg_attr(target_arch = "wasm32", allow(unused_mut))]
    let mut seconds = t0.elapsed().as_secs_f64();
    #[cfg(not(target_arch = "wasm32"))]
    if stamps {
        let gpu_seconds: f64 = gpu.profile().iter().map(|r| r.1).sum();
        let _ = gpu.set_profiling(false);
        if gpu_seconds > 0.0 {
            seconds = gpu_seconds;
        }
    }
    if waited.is_err() {
        return f64::INFINITY;
    }
    seconds
}

/// Says once per process that this run tunes, and where the plan is kept.
fn announce(gpu: &Gpu) {
    let mut s = state(gpu);
    if s.announced || s.clock.is_some() || s.on_tuned.is_some() {
        return;
    }
    s.announced = true;
    if s.deferred {
        // The page says it in its status line (`tuner::tuned_so_far`).
        return;
    }
    let kept = match (s.ignore_cache, plan_cache::file()) {
        (false, Some(f)) => format!("kept in {}", f.display()),
        _ => "not kept".into(),
    };
    eprintln!(
        "tuning the GEMM kernels this run meets on {}, once ({kept}; FEWSTEP_TUNE=off keeps \
         the fixed rule; `fewstep tune` tunes up front)",
        gpu.info().name
    );
}
