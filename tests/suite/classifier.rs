//! The evaluation classifier learns (on synthetic patterns) with cross-entropy through the tape,
//! saves and loads, and its features separate real patterns from noise in Fréchet distance.

use crate::common;

use common::*;
use fewstep::data::Dataset;
use fewstep::eval::classifier::{
    accuracy, all_images, features_and_predictions, load, save, train, ClassifierMeta,
};
use fewstep::eval::frechet::{frechet_distance, mean_cov};
use fewstep::nn::classifier::FEATURES;

#[test]
fn classifier_learns_patterns_and_features_separate_noise() {
    let g = gpu();
    let data = Dataset::synthetic_patterns(8, 1, 8, 8);
    let mut losses = vec![];
    let clf = train(&g, &data, 150, 16, 3e-3, 1, |_, l| losses.push(l)).unwrap();
    eprintln!("losses per 50 updates: {losses:?}");
    assert!(
        losses[losses.len() - 1] < 0.5 * losses[0],
        "loss fell from {} to {}",
        losses[0],
        losses[losses.len() - 1]
    );
    let acc = accuracy(&clf, &data).unwrap();
    assert!(acc >= 0.99, "accuracy {acc} on the 8 training patterns");
    // Round trip through a file: identical predictions.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clf.safetensors");
    let meta = ClassifierMeta {
        dataset: "synthetic".into(),
        channels: 1,
        height: 8,
        width: 8,
        classes: 8,
        test_accuracy: acc,
        updates: 150,
        command: "test".into(),
    };
    save(&path, &clf, &meta).unwrap();
    let (back, _) = load(&g, &path).unwrap();
    let imgs = all_images(&data, 8);
    let (f1, p1) = features_and_predictions(&clf, &imgs, [1, 8, 8]).unwrap();
    let (f2, p2) = features_and_predictions(&back, &imgs, [1, 8, 8]).unwrap();
    assert_eq!((f1.clone(), p1), (f2, p2));
    // The patterns (repeated with flips off) against themselves and against noise.
    let many: Vec<f32> = (0..40).flat_map(|_| imgs.clone()).collect();
    let (fa, _) = features_and_predictions(&clf, &many, [1, 8, 8]).unwrap();
    let noise = fewstep::tensor::philox_normal_cpu(3, 0, many.len());
    let (fb, _) = features_and_predictions(&clf, &noise, [1, 8, 8]).unwrap();
    let (ma, ca) = mean_cov(&fa, FEATURES);
    let (mb, cb) = mean_cov(&fb, FEATURES);
    let same = frechet_distance(&ma, &ca, &ma, &ca);
    let apart = frechet_distance(&ma, &ca, &mb, &cb);
    eprintln!("distance: patterns vs themselves {same:.4}, vs noise {apart:.4}");
    assert!(same < 1e-6 && apart > 0.1, "same {same}, apart {apart}");
}
