//! `fewstep bench train|distill|sample --profile`: GPU time per kernel from timestamp queries
//! (gpu/profile.rs), per kernel family and per kernel, so the next bottleneck is visible.

use anyhow::Result;

use super::bench_print::emit;
use crate::gpu::Gpu;

/// Updates timed under profiling (after the un-profiled measurement, so it is not slowed down).
const PROFILED_UPDATES: usize = 5;
/// Kernels listed individually (the families above them cover the rest).
const TOP_KERNELS: usize = 15;

/// The family of a kernel label: its name without the constants (`matmul`, `conv_forward`, ...).
fn family(label: &str) -> &str {
    label.split(' ').next().unwrap_or(label)
}

/// Runs `update` under profiling and prints GPU time per family and per kernel, per update
/// (`unit` names one call of `update` in the text: "update", or "step" for sampling; the JSON
/// keys say `per_update` either way and carry the unit).
/// `wall_ms` is the un-profiled wall time per update, printed next to the GPU sum.
pub(super) fn profile_updates(
    gpu: &Gpu,
    (what, unit): (&str, &str),
    preset: &str,
    wall_ms: f64,
    json: bool,
    mut update: impl FnMut(),
) -> Result<()> {
    if let Err(why) = gpu.set_profiling(true) {
        emit(
            json,
            serde_json::json!({"bench": format!("{what}_profile"), "preset": preset, "skipped": why}),
            format!("  profile: skipped: {why}"),
        );
        return Ok(());
    }
    for _ in 0..PROFILED_UPDATES {
        update();
    }
    gpu.finish_blocking()?;
    let rows = gpu.profile();
    gpu.set_profiling(false).map_err(anyhow::Error::msg)?;
    let n = PROFILED_UPDATES as f64;
    let total_ms: f64 = rows.iter().map(|r| r.1).sum::<f64>() * 1e3 / n;
    let mut families: Vec<(String, f64, u64)> = Vec::new();
    for (label, s, count) in &rows {
        match families.iter_mut().find(|f| f.0 == family(label)) {
            Some(f) => {
                f.1 += s;
                f.2 += count;
            }
            None => families.push((family(label).to_string(), *s, *count)),
        }
    }
    families.sort_by(|a, b| b.1.total_cmp(&a.1));
    let row_json = |(k, s, c): &(String, f64, u64)| {
        serde_json::json!({
            "kernel": k, "ms_per_update": (s * 1e6 / n).round() / 1e3,
            "launches_per_update": (*c as f64 / n).round(),
            "share": (s * 1e3 / n / total_ms.max(1e-12) * 1e3).round() / 1e3,
        })
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": format!("{what}_profile"), "preset": preset, "adapter": gpu.info().name,
                "unit": unit,
                "gpu_ms_per_update": (total_ms * 1e3).round() / 1e3,
                "wall_ms_per_update": (wall_ms * 1e3).round() / 1e3,
                "families": families.iter().map(row_json).collect::<Vec<_>>(),
                "kernels": rows.iter().map(row_json).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    println!(
        "  profile ({PROFILED_UPDATES} {unit}s, a timed pass per launch): {total_ms:.2} ms of GPU time per {unit} (wall time un-profiled: {wall_ms:.2} ms)"
    );
    let line = |(k, s, c): &(String, f64, u64)| {
        let ms = s * 1e3 / n;
        let launches = *c as f64 / n;
        println!(
            "  {ms:>9.3} ms {:>5.1}%  {launches:>5.0} launches {:>8.1} us each  {k}",
            100.0 * ms / total_ms.max(1e-12),
            1e3 * ms / launches.max(1.0)
        );
    };
    println!("  by kernel family:");
    families.iter().for_each(line);
    println!("  the {TOP_KERNELS} kernels with the most GPU time:");
    rows.iter().take(TOP_KERNELS).for_each(line);
    Ok(())
}
