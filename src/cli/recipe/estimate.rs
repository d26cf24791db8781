//! The cost estimate: seconds per unit of work measured on this adapter, and the recipe's total.

use super::*;

/// Measured seconds per unit of work on this adapter.
pub struct Costs {
    pub train_update: f64,
    pub distill_update: f64,
    /// One denoiser evaluation of one image (sampling).
    pub image_step: f64,
}

impl Costs {
    /// Times two updates of each kind (after one that compiles the kernels) and a short sampler
    /// run, on the settings' model and batch sizes.
    pub fn measure(gpu: &Gpu, data: &Dataset, s: &RecipeSettings) -> Result<Costs> {
        let arch = UNetConfig::preset(&s.model_preset, data.channels, data.height, data.width, 1)?;
        let cfg = TrainConfig {
            param: Parameterization::V,
            weighting: Weighting::SnrTrunc,
            batch: s.train_batch,
            lr: s.train_lr,
            warmup: s.warmup,
            ema_decay: s.train_ema,
            grad_clip: 1.0,
            seed: s.seed,
            adam: AdamConfig::default(),
            uncond_prob: 0.0,
        };
        let mut tr = Trainer::new(gpu, arch, cfg)?;
        let timed = |n: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            f()?;
            let t = Instant::now();
            for _ in 0..n {
                f()?;
            }
            Ok(t.elapsed().as_secs_f64() / n as f64)
        };
        let train_update = timed(2, &mut || {
            tr.step(data);
            pollster::block_on(tr.take_mean_loss())?;
            Ok(())
        })?;
        let model = tr.ema_model();
        let count = s.eval_samples.clamp(1, 64);
        let image_step = timed(1, &mut || {
            let opts = SampleOptions {
                steps: 2,
                count,
                seed: 0,
                kind: SamplerKind::Ddim,
                clip: true,
            };
            Sampler::new(&model, opts).run(&model).to_vec_blocking()?;
            Ok(())
        })? / (2 * count) as f64;
        let mut d = Distiller::new(
            gpu,
            model,
            DistillConfig {
                teacher_steps: s.from_steps,
                updates: 10,
                batch: s.distill_batch,
                lr: s.distill_lr,
                grad_clip: 1.0,
                seed: s.seed,
                adam: AdamConfig::default(),
                ema_decay: s.distill_ema,
                guidance_stage: false,
            },
        );
        let distill_update = timed(2, &mut || {
            d.step(data);
            pollster::block_on(d.take_mean_loss())?;
            Ok(())
        })?;
        Ok(Costs {
            train_update,
            distill_update,
            image_step,
        })
    }

    /// Estimated seconds of each stage.
    pub fn stages(&self, s: &RecipeSettings) -> BTreeMap<&'static str, f64> {
        let mut m = BTreeMap::new();
        m.insert("train", s.train_steps as f64 * self.train_update);
        let halvings = s.student_steps();
        let updates: u64 = halvings
            .iter()
            .map(|&n| if n <= 2 { s.final_updates } else { s.updates })
            .sum();
        m.insert("distill", updates as f64 * self.distill_update);
        let e = s.eval_settings();
        let full = s.from_steps;
        let mut image_steps = e.psnr_samples * full;
        for &n in &e.steps {
            image_steps += 2 * (e.samples + e.psnr_samples) * n;
        }
        if !e.steps.contains(&s.teacher_distance_steps) {
            image_steps += e.samples * s.teacher_distance_steps;
            if s.teacher_distance_steps != full {
                image_steps += e.psnr_samples * s.teacher_distance_steps;
            }
        }
        m.insert("eval", image_steps as f64 * self.image_step);
        m.insert("bundle", 1.0);
        m
    }
}

/// A duration as people read it, to the second (`3m 20s`).
pub(super) fn human(secs: f64) -> String {
    crate::human::duration(secs)
}
