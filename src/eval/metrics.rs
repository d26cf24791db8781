//! What `fewstep eval` measures, as library code (the CLI, `fewstep recipe` and the bundled-model
//! quality test share it): per model and step count, the Fréchet distance on the evaluation
//! classifier's features (generated vs test images), the agreement (PSNR) with the teacher's
//! full-step samples from the same noise, and the time per image.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::data::{DataSpec, Dataset, Split};
use crate::diffusion::{Denoiser, ModelMeta, SampleOptions, Sampler, SamplerKind};
use crate::eval::classifier::{all_images, features_and_predictions, load};
use crate::eval::frechet::{frechet_distance, mean_cov};
use crate::gpu::Gpu;
use crate::nn::classifier::{Classifier, FEATURES};

/// How to evaluate (the CLI's `eval` arguments).
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// Step counts to evaluate.
    pub steps: Vec<usize>,
    /// Generated images per row for the Fréchet distance (and as many test images).
    pub samples: usize,
    /// Images per row for the agreement PSNR against the teacher's full step count.
    pub psnr_samples: usize,
    /// The teacher's full step count; None: the step count the students were distilled from.
    pub teacher_steps: Option<usize>,
    /// Step count of the teacher's own distance row; None: the full count.
    pub teacher_distance_steps: Option<usize>,
    /// The evaluation classifier; None: no distance.
    pub classifier: Option<PathBuf>,
    /// Test data; None: the data set named in the models' files.
    pub data: Option<String>,
    pub seed: u64,
    /// Class-conditional models: the guidance weights to evaluate at, each row's images asking
    /// for the classes in turn (image i: class i mod classes); empty: unconditional samples.
    pub guidance: Vec<f64>,
}

/// One model to evaluate: a distilled student (at its own step count) or a teacher.
pub struct EvalModel {
    pub model: Denoiser,
    pub meta: ModelMeta,
    pub name: String,
}

/// One row of the evaluation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalRow {
    pub model: String,
    /// "distilled", "ddim" (the teacher with plain DDIM at `steps`) or "teacher" (its own row).
    pub kind: String,
    pub steps: usize,
    pub frechet: Option<f64>,
    pub psnr_vs_teacher: Option<f64>,
    pub ms_per_image: f64,
    pub samples: usize,
    /// The guidance weight w of a class-conditional row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// The share of the row's images the evaluation classifier assigns to the class asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_accuracy: Option<f64>,
    /// The same per class (label order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class_accuracy: Vec<f64>,
}

/// `n` DDIM samples (clipped) in batches of 250, seeds `seed`, `seed + 1`, ... per batch (each in
/// as many passes as the adapter needs, the same images); and the milliseconds per image.
pub fn sample_all(m: &Denoiser, steps: usize, n: usize, seed: u64) -> Result<(Vec<f32>, f64)> {
    sample_asking(m, steps, n, seed, None)
}

/// The classes image i of a class-conditional evaluation asks for: i mod `classes`.
pub fn asked_classes(n: usize, classes: usize) -> Vec<usize> {
    (0..n).map(|i| i % classes.max(1)).collect()
}

/// As [`sample_all`]; with `ask = Some((classes, w))` image i asks for class i mod classes with
/// guidance weight w.
pub fn sample_asking(
    m: &Denoiser,
    steps: usize,
    n: usize,
    seed: u64,
    ask: Option<(usize, f64)>,
) -> Result<(Vec<f32>, f64)> {
    // A batch of 250 may not fit one pass (an imported network's multi-head attention scores
    // are [images x heads, hw, hw]): it then runs in passes that draw the same noise
    // (`Sampler::new_from`), so the samples do not depend on the adapter.
    let per_pass = crate::diffusion::images_per_pass(m).images;
    sample_in_passes_of(m, steps, n, seed, ask, per_pass)
}

/// [`sample_asking`] with passes of at most `per_pass` images (a multiple of 4): the same images
/// for any `per_pass`.
pub fn sample_in_passes_of(
    m: &Denoiser,
    steps: usize,
    n: usize,
    seed: u64,
    ask: Option<(usize, f64)>,
    per_pass: usize,
) -> Result<(Vec<f32>, f64)> {
    assert!(
        per_pass >= 4 && per_pass.is_multiple_of(4),
        "passes of a multiple of 4 images"
    );
    let per_pass = per_pass.min(250);
    let mut out = vec![];
    let start = Instant::now();
    for (b, first) in (0..n).step_by(250).enumerate() {
        let count = (n - first).min(250);
        for part in (0..count).step_by(per_pass) {
            let k = (count - part).min(per_pass);
            let opts = SampleOptions {
                steps,
                count: k,
                seed: seed + b as u64,
                kind: SamplerKind::Ddim,
                clip: true,
            };
            let from = first + part;
            let cond = match ask {
                Some((classes, w)) => crate::nn::NetCond {
                    labels: (from..from + k)
                        .map(|i| Some((i % classes) as u32))
                        .collect(),
                    w: vec![w as f32; k],
                },
                None => crate::nn::NetCond::NONE,
            };
            out.extend(
                Sampler::new_from(m, opts, part)
                    .with_cond(cond)
                    .run(m)
                    .to_vec_blocking()?,
            );
        }
    }
    Ok((out, start.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64))
}

/// PSNR of `a` against `b`, pixels in [-1, 1] (peak-to-peak 2).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    10.0 * (4.0 / mse.max(1e-12)).log10()
}

/// The Fréchet distance to a data set's test images, on the classifier's pooled features.
pub struct Distance {
    clf: Classifier,
    mu: Vec<f64>,
    cov: Vec<f64>,
    shape: [usize; 3],
}

impl Distance {
    /// Loads the classifier and the features of `samples` test images of `dataset`.
    pub fn new(
        gpu: &Gpu,
        classifier: &std::path::Path,
        dataset: &str,
        shape: [usize; 3],
        samples: usize,
    ) -> Result<Distance> {
        let (clf, cmeta) = load(gpu, classifier)?;
        anyhow::ensure!(
            [cmeta.channels, cmeta.height, cmeta.width] == shape,
            "the classifier takes {}x{}x{} images, the models make {shape:?}",
            cmeta.channels,
            cmeta.height,
            cmeta.width
        );
        let spec: DataSpec = dataset.parse()?;
        // An image folder is read at the models' size; other sets have a fixed one.
        let size = matches!(spec, DataSpec::Images(_)).then_some(shape[1]);
        let test = Dataset::load(&spec, Split::Test, size)?;
        let (f, _) = features_and_predictions(&clf, &all_images(&test, samples), shape)?;
        let (mu, cov) = mean_cov(&f, FEATURES);
        eprintln!(
            "distance: classifier {} (test accuracy {:.2}%), {} test images of {dataset}",
            classifier.display(),
            100.0 * cmeta.test_accuracy,
            f.len() / FEATURES
        );
        Ok(Distance {
            clf,
            mu,
            cov,
            shape,
        })
    }

    /// The share of `images` the classifier assigns to the class each asked for, overall and
    /// per class (`classes` of them).
    pub fn accuracy(
        &self,
        images: &[f32],
        asked: &[usize],
        classes: usize,
    ) -> Result<(f64, Vec<f64>)> {
        let (_, pred) = features_and_predictions(&self.clf, images, self.shape)?;
        let mut hit = vec![0usize; classes];
        let mut all = vec![0usize; classes];
        for (&p, &a) in pred.iter().zip(asked) {
            all[a] += 1;
            hit[a] += (p == a) as usize;
        }
        let total = hit.iter().sum::<usize>() as f64 / pred.len().max(1) as f64;
        let per = hit
            .iter()
            .zip(&all)
            .map(|(&h, &n)| h as f64 / n.max(1) as f64)
            .collect();
        Ok((total, per))
    }

    pub fn of(&self, images: &[f32]) -> Result<f64> {
        let (f, _) = features_and_predictions(&self.clf, images, self.shape)?;
        let (mu, cov) = mean_cov(&f, FEATURES);
        Ok(frechet_distance(&mu, &cov, &self.mu, &self.cov))
    }
}

/// Evaluates students and at most one teacher: for each step count, each student made for it,
/// then the teacher's plain DDIM; then the teacher's own row at `teacher_distance_steps` (if not
/// among the step counts). `on_row` sees each row as soon as it is measured.
pub fn evaluate(
    gpu: &Gpu,
    models: &[EvalModel],
    settings: &EvalSettings,
    mut on_row: impl FnMut(&EvalRow) -> Result<()>,
) -> Result<Vec<EvalRow>> {
    let mut teacher: Option<&EvalModel> = None;
    let mut students: Vec<&EvalModel> = vec![];
    for m in models {
        match m.meta.steps {
            Some(_) => students.push(m),
            None if teacher.is_none() => teacher = Some(m),
            None => anyhow::bail!("{} is a second teacher; eval takes at most one", m.name),
        }
    }
    let first_meta = match (teacher, students.first()) {
        (Some(t), _) => &t.meta,
        (None, Some(s)) => &s.meta,
        (None, None) => anyhow::bail!("no model to evaluate"),
    };
    let shape = first_meta.image;
    let dataset = settings
        .data
        .clone()
        .unwrap_or_else(|| first_meta.dataset.clone());
    // The distance needs the classifier and labelled test data of the same shape.
    let distance = match &settings.classifier {
        Some(c) => match Distance::new(gpu, c, &dataset, shape, settings.samples) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "note: no Fréchet distance: {e:#} (train one with `fewstep train-classifier`)"
                );
                None
            }
        },
        None => None,
    };
    let classes = first_meta.arch.classes;
    if !settings.guidance.is_empty() {
        anyhow::ensure!(
            classes > 0,
            "--guidance evaluates what class-conditional models draw for each class, but these \
             models are unconditional"
        );
        if let Some(m) = models.iter().find(|m| m.meta.arch.classes != classes) {
            anyhow::bail!(
                "{} has {} classes where {} has {classes}: evaluate one family at a time",
                m.name,
                m.meta.arch.classes,
                models[0].name
            );
        }
    }
    // The weights to evaluate at; None: unconditional samples (as before classes existed).
    let weights: Vec<Option<f64>> = if settings.guidance.is_empty() {
        vec![None]
    } else {
        settings.guidance.iter().map(|&w| Some(w)).collect()
    };
    let full = settings.teacher_steps.unwrap_or_else(|| {
        students
            .iter()
            .filter_map(|s| s.meta.lineage.steps_path.first().map(|&v| v as usize))
            .max()
            .unwrap_or(256)
    });
    let mut rows = vec![];
    for &w in &weights {
        let ask = w.map(|w| (classes, w));
        let reference = match teacher {
            Some(t) => {
                eprintln!(
                    "reference: the teacher with {full} DDIM steps on {} images{}",
                    settings.psnr_samples,
                    w.map(|w| format!(", guidance {w}")).unwrap_or_default()
                );
                Some(sample_asking(&t.model, full, settings.psnr_samples, settings.seed, ask)?.0)
            }
            None => {
                eprintln!("note: no teacher given, so no agreement PSNR");
                None
            }
        };
        let mut evaluate = |m: &Denoiser, name: &str, kind: &str, n: usize| -> Result<()> {
            let (imgs, ms) = sample_asking(m, n, settings.samples, settings.seed, ask)?;
            let frechet = distance.as_ref().map(|d| d.of(&imgs)).transpose()?;
            let accuracy = match (&distance, ask) {
                (Some(d), Some((classes, _))) => {
                    Some(d.accuracy(&imgs, &asked_classes(settings.samples, classes), classes)?)
                }
                _ => None,
            };
            let psnr_v = match &reference {
                // The teacher at its full count is the reference itself.
                Some(_) if kind == "teacher" && n == full => None,
                Some(r) => {
                    let (mine, _) = sample_asking(m, n, settings.psnr_samples, settings.seed, ask)?;
                    Some(psnr(&mine, r))
                }
                None => None,
            };
            let row = EvalRow {
                model: name.to_string(),
                kind: kind.to_string(),
                steps: n,
                frechet,
                psnr_vs_teacher: psnr_v,
                ms_per_image: ms,
                samples: settings.samples,
                guidance: w,
                class_accuracy: accuracy.as_ref().map(|a| a.0),
                per_class_accuracy: accuracy.map(|a| a.1).unwrap_or_default(),
            };
            on_row(&row)?;
            rows.push(row);
            Ok(())
        };
        for &n in &settings.steps {
            for s in &students {
                if s.meta.steps == Some(n as u32) {
                    evaluate(&s.model, &s.name, "distilled", n)?;
                }
            }
            if let Some(t) = teacher {
                evaluate(&t.model, &t.name, "ddim", n)?;
            }
        }
        if let Some(t) = teacher {
            let n = settings.teacher_distance_steps.unwrap_or(full);
            if !settings.steps.contains(&n) {
                evaluate(&t.model, &t.name, "teacher", n)?;
            }
        }
    }
    Ok(rows)
}
