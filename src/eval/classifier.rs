//! Training, saving and using the evaluation classifier (`fewstep train-classifier`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Batcher, Dataset};
use crate::gpu::Gpu;
use crate::nn::classifier::{layout, Classifier, FEATURES};
use crate::nn::{self, tensor_file, StoreAs};
use crate::tensor::{Adam, AdamConfig, GradClip, LossMeter, Tape, Tensor};

const META_KEY: &str = "fewstep_classifier";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierMeta {
    pub dataset: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    pub test_accuracy: f64,
    pub updates: u64,
    pub command: String,
}

fn labels_of(data: &Dataset, idx: &[usize]) -> Result<Vec<f32>> {
    let labels = data.labels.as_ref().context(
        "this data set has no labels; a classifier needs Fashion-MNIST, MNIST or CIFAR-10",
    )?;
    Ok(idx.iter().map(|&i| labels[i] as f32).collect())
}

/// Trains for `updates` with Adam, learning rate decayed linearly to 0; `progress(update, loss)`
/// is called every 50 updates.
pub fn train(
    gpu: &Gpu,
    data: &Dataset,
    updates: u64,
    batch: usize,
    lr: f32,
    seed: u64,
    mut progress: impl FnMut(u64, f32),
) -> Result<Classifier> {
    let classes = 1 + *data
        .labels
        .as_ref()
        .context("no labels")?
        .iter()
        .max()
        .unwrap_or(&0) as usize;
    let clf = Classifier::new(gpu, data.channels, classes, seed);
    let mut opt = Adam::new(gpu, &clf.params, AdamConfig::default());
    let mut batcher = Batcher::new(seed, batch);
    let mut host = Vec::new();
    let mut meter = LossMeter::new(gpu);
    for u in 0..updates {
        let idx = batcher.fill(data, u, &mut host);
        let x = Tensor::from_slice(gpu, &[batch, data.channels, data.height, data.width], &host);
        let y = Tensor::from_slice(gpu, &[batch], &labels_of(data, &idx)?);
        let tape = Tape::new();
        let p = clf.vars(&tape, true);
        let (_, logits) = clf.forward(&tape, &p, &x);
        let loss = tape.cross_entropy_mean(&logits, &y);
        let (grads, _) = tape.backward(&loss, None);
        let rate = lr * (1.0 - u as f32 / updates as f32);
        opt.update(
            &clf.params,
            &grads.dense(&clf.params),
            rate,
            GradClip { max_norm: 1.0 },
        );
        meter.add(&loss.value);
        gpu.flush();
        if (u + 1) % 50 == 0 || u + 1 == updates {
            let l = pollster::block_on(meter.take_mean())?.unwrap_or(f32::NAN);
            if !l.is_finite() {
                bail!(
                    "the classifier's loss became {l} at update {}; lower --lr",
                    u + 1
                );
            }
            progress(u + 1, l);
        }
    }
    Ok(clf)
}

/// Pooled features [N, 128] and predicted classes of images (values in [-1, 1], N x C x H x W).
pub fn features_and_predictions(
    clf: &Classifier,
    images: &[f32],
    shape: [usize; 3],
) -> Result<(Vec<f32>, Vec<usize>)> {
    let gpu = clf.params[0].gpu();
    let len = shape.iter().product::<usize>();
    let n = images.len() / len;
    let mut feats = Vec::with_capacity(n * FEATURES);
    let mut preds = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let b = (n - start).min(256);
        let x = Tensor::from_slice(
            gpu,
            &[b, shape[0], shape[1], shape[2]],
            &images[start * len..(start + b) * len],
        );
        let tape = Tape::new();
        let p = clf.vars(&tape, false);
        let (f, logits) = clf.forward(&tape, &p, &x);
        feats.extend(f.value.to_vec_blocking()?);
        let l = logits.value.to_vec_blocking()?;
        for row in l.chunks(clf.classes) {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0);
            preds.push(best);
        }
    }
    Ok((feats, preds))
}

/// All images of a data set as floats in [-1, 1].
pub fn all_images(data: &Dataset, limit: usize) -> Vec<f32> {
    let n = data.len().min(limit);
    let len = data.image_len();
    let mut out = vec![0f32; n * len];
    for i in 0..n {
        data.write_image(i, false, &mut out[i * len..(i + 1) * len]);
    }
    out
}

pub fn accuracy(clf: &Classifier, data: &Dataset) -> Result<f64> {
    let images = all_images(data, usize::MAX);
    let (_, preds) =
        features_and_predictions(clf, &images, [data.channels, data.height, data.width])?;
    let labels = data.labels.as_ref().context("no labels")?;
    let right = preds
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    Ok(right as f64 / preds.len().max(1) as f64)
}

pub fn save(path: &Path, clf: &Classifier, meta: &ClassifierMeta) -> Result<()> {
    let tensors = pollster::block_on(nn::read_tensors(&clf.specs, &clf.params, ""))?;
    let mut md = HashMap::new();
    md.insert(META_KEY.to_string(), serde_json::to_string(meta)?);
    tensor_file::write(path, &tensors, md, StoreAs::F32)?;
    Ok(())
}

pub fn load(gpu: &Gpu, path: &Path) -> Result<(Classifier, ClassifierMeta)> {
    let file = tensor_file::read(path)?;
    let meta: ClassifierMeta = serde_json::from_str(
        file.metadata
            .get(META_KEY)
            .with_context(|| format!("{} is not a fewstep classifier", path.display()))?,
    )
    .with_context(|| format!("{}: unreadable classifier description", path.display()))?;
    // Bounded before the layout's shapes are multiplied out.
    if !(1..=16).contains(&meta.channels) || !(1..=1000).contains(&meta.classes) {
        bail!(
            "{}: the description says {} channels and {} classes, outside the 1-16 and 1-1000 \
             fewstep builds; the file is damaged or not a fewstep classifier",
            path.display(),
            meta.channels,
            meta.classes
        );
    }
    let specs = layout(meta.channels, meta.classes);
    let found = nn::check_tensors(&specs, "", |n| file.get(n))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let params = nn::upload_tensors(gpu, &found);
    Ok((
        Classifier {
            channels: meta.channels,
            classes: meta.classes,
            specs,
            params,
        },
        meta,
    ))
}
