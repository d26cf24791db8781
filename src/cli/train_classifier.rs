//! `fewstep train-classifier`: the evaluation classifier, trained with fewstep's own engine.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{DataSpec, Dataset, Split};
use crate::eval::classifier::{accuracy, save, train, ClassifierMeta};

#[derive(Args, Debug)]
pub struct TrainClassifierArgs {
    /// Labelled data: fashion-mnist[:DIR], mnist[:DIR], cifar10:DIR, or images:DIR with one
    /// subfolder per class.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Updates (batch 128: 469 updates are one epoch of Fashion-MNIST).
    #[arg(long, default_value_t = 1000)]
    updates: u64,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Adam learning rate, decayed linearly to 0.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image size for images:DIR (one subfolder per class; other data sets have a fixed size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Output file.
    #[arg(long, default_value = "assets/fmnist-classifier.safetensors")]
    out: PathBuf,
}

pub fn run(args: TrainClassifierArgs) -> Result<()> {
    crate::output_path::check_file("--out", &args.out, &[])?;
    let gpu = super::open_gpu()?;
    let spec: DataSpec = args.data.parse()?;
    let size = args
        .image_size
        .filter(|_| matches!(spec, DataSpec::Images(_)));
    let train_set = Dataset::load(&spec, Split::Train, size)?;
    let test_set = Dataset::load(&spec, Split::Test, size)?;
    let bar = ProgressBar::new(args.updates).with_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} updates  loss {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("template"),
    );
    let clf = train(
        &gpu,
        &train_set,
        args.updates,
        args.batch,
        args.lr,
        args.seed,
        |u, l| {
            bar.set_position(u);
            bar.set_message(format!("{l:.4}"));
            super::log_when_not_a_terminal(&format!("update {u}  loss {l:.4}"));
        },
    )?;
    bar.finish();
    let acc = accuracy(&clf, &test_set)?;
    eprintln!(
        "test accuracy: {:.2}% on {} images",
        100.0 * acc,
        test_set.len()
    );
    let meta = ClassifierMeta {
        dataset: args.data.clone(),
        channels: train_set.channels,
        height: train_set.height,
        width: train_set.width,
        classes: clf.classes,
        test_accuracy: acc,
        updates: args.updates,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    save(&args.out, &clf, &meta)?;
    eprintln!("-> {}", args.out.display());
    Ok(())
}
