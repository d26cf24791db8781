//! The in-memory distillation the web page runs (diffusion/distill_memory.rs) makes the same
//! model files as `fewstep distill` (distill_run.rs), byte for byte, on the same device, also
//! when it is checkpointed and restored after every update (the tab's resumed runs); and the
//! Fashion-MNIST subset the page ships is the first 10,000 training images.
use crate::common;
use common::*;
use fewstep::data::Dataset;
use fewstep::diffusion::distill_memory::{Advanced, MemoryDistill};
use fewstep::diffusion::distill_run::{model_file_name, DistillPlan, DistillRun};
use fewstep::diffusion::model_file::{save_model, Lineage, ModelMeta};
use fewstep::diffusion::Parameterization;
use fewstep::nn::{UNet, UNetConfig};

#[test]
fn in_memory_distillation_writes_the_files_fewstep_distill_writes() {
    let g = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let patterns = Dataset::synthetic_patterns(6, 1, 8, 8);
    // The last case is a guided distillation (issue 24) of a 3-class teacher.
    for (ema, guided) in [(None, false), (Some(0.9f32), false), (None, true)] {
        let mut cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
        let data = if guided {
            cfg.classes = 3;
            let labels = (0..6u8).map(|i| i % 3).collect();
            Dataset::from_pixels(
                "synthetic",
                1,
                8,
                8,
                patterns.pixels.clone(),
                Some(labels),
                false,
            )
        } else {
            patterns.clone()
        };
        let teacher = tmp.path().join(format!("teacher-{guided}.safetensors"));
        let teacher_file = write_teacher(&g, cfg, 3, &teacher);
        {
            let plan = DistillPlan {
                teacher: teacher.clone(),
                from_steps: 8,
                to_steps: 1,
                updates: 3,
                final_updates: 2,
                batch: 3,
                lr: 1e-3,
                seed: 11,
                checkpoint_every: 0,
                log_every: 2,
                dataset: "synthetic".into(),
                command: "fewstep distill (test)".into(),
                ema,
                guided: guided.then_some(fewstep::diffusion::distill_plan::GuidedPlan {
                    w_min: 0.5,
                    w_max: 3.0,
                    updates: 2,
                }),
                reparam: None,
            };
            let dir = tmp.path().join(format!("files-{ema:?}-{guided}"));
            let restored = distill_restoring_after_every_update(&g, &plan, &teacher_file, &data);
            let mut on_disk = DistillRun::create(&g, &dir, plan.clone(), data.clone()).unwrap();
            while !on_disk.is_done() {
                on_disk.advance().unwrap();
            }
            let mut memory = MemoryDistill::new(&g, plan, &teacher_file, data.clone()).unwrap();
            let (mut students, mut updates, mut losses) = (Vec::new(), 0, 0);
            loop {
                match pollster::block_on(memory.advance()).unwrap() {
                    Advanced::Update { loss } => {
                        updates += 1;
                        losses += loss.is_some() as usize;
                    }
                    Advanced::Halving { student, done } => {
                        students.push(student);
                        if done {
                            break;
                        }
                    }
                }
            }
            // The 4-step student takes `updates`, the 2- and 1-step ones `final_updates`; a guided
            // run's stage 1 its own 2 first.
            let stage1 = if guided { 2 } else { 0 };
            assert_eq!(updates, stage1 + 3 + 2 + 2, "ema {ema:?}");
            // A loss every 2 updates and at each stage's end: (2), 2 and 3, then 2, then 2.
            assert_eq!(losses, 4 + guided as usize);
            assert_eq!(memory.progress(), (stage1 + 7, stage1 + 7));
            let steps: Vec<usize> = students.iter().map(|s| s.steps).collect();
            assert_eq!(
                steps,
                if guided {
                    vec![0, 4, 2, 1]
                } else {
                    vec![4, 2, 1]
                }
            );
            for s in &students {
                assert_eq!(s.steps == 0, s.name == "guided-teacher.safetensors");
                let file = std::fs::read(dir.join(&s.name)).unwrap();
                assert!(
                    file == s.file,
                    "{} differs from fewstep distill's file (ema {ema:?}, guided {guided})",
                    s.name
                );
                if s.steps > 0 {
                    assert_eq!(s.name, model_file_name(s.steps));
                }
            }
            // Checkpointed and restored on a fresh MemoryDistill after every update (in stage 1,
            // mid-halving, at a halving's last update and just after a halving).
            assert_eq!(restored.len(), students.len());
            for (r, s) in restored.iter().zip(&students) {
                assert_eq!(r.name, s.name);
                assert!(
                    r.file == s.file,
                    "{}: the run restored after every update differs from the uninterrupted one \
                     (ema {ema:?}, guided {guided})",
                    s.name
                );
            }
        }
    }
}

/// A teacher of random weights (`seed`) for 1x8x8 images, written as a v-prediction model
/// file at `path`; its bytes.
fn write_teacher(
    g: &fewstep::gpu::Gpu,
    cfg: UNetConfig,
    seed: u64,
    path: &std::path::Path,
) -> Vec<u8> {
    let net = UNet::new(g, cfg.clone(), seed).unwrap();
    let weights = pollster::block_on(fewstep::nn::read_tensors(
        &net.layout.specs,
        &net.params,
        "",
    ))
    .unwrap();
    let meta = ModelMeta {
        format_version: 1,
        arch: cfg,
        image: [1, 8, 8],
        parameterization: Parameterization::V,
        schedule: "cosine".into(),
        steps: None,
        lineage: Lineage::default(),
        dataset: "synthetic".into(),
        training_steps: 0,
        command: "test".into(),
        precision: Default::default(),
        kernel_plan: None,
    };
    save_model(path, &meta, &weights, fewstep::nn::StoreAs::F32).unwrap();
    std::fs::read(path).unwrap()
}

/// A distillation that checkpoints after every update and goes on from the checkpoint on a new
/// `MemoryDistill` (the old one dropped), as the tab does after a reload; its students.
fn distill_restoring_after_every_update(
    g: &fewstep::gpu::Gpu,
    plan: &DistillPlan,
    teacher_file: &[u8],
    data: &Dataset,
) -> Vec<fewstep::diffusion::distill_memory::Student> {
    let mut run = MemoryDistill::new(g, plan.clone(), teacher_file, data.clone()).unwrap();
    let mut students = Vec::new();
    loop {
        let checkpoint = pollster::block_on(run.checkpoint()).unwrap();
        let teacher = run.teacher_file().to_vec();
        assert_eq!(
            MemoryDistill::checkpoint_teacher(&checkpoint).unwrap(),
            run.teacher_sha256()
        );
        drop(run);
        run = MemoryDistill::restore(g, &checkpoint, &teacher, data.clone()).unwrap();
        if let Advanced::Halving { student, done } = pollster::block_on(run.advance()).unwrap() {
            students.push(student);
            if done {
                return students;
            }
        }
    }
}

#[test]
fn a_restore_refuses_another_teacher() {
    let g = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = Dataset::synthetic_patterns(4, 1, 8, 8);
    let cfg = UNetConfig::preset("tiny", 1, 8, 8, 1).unwrap();
    let files: Vec<Vec<u8>> = (0..2)
        .map(|seed| {
            let path = tmp.path().join(format!("t{seed}.safetensors"));
            write_teacher(&g, cfg.clone(), seed, &path)
        })
        .collect();
    let plan = DistillPlan {
        teacher: "t0.safetensors".into(),
        from_steps: 4,
        to_steps: 2,
        updates: 2,
        final_updates: 2,
        batch: 2,
        lr: 1e-3,
        seed: 1,
        checkpoint_every: 0,
        log_every: 1,
        dataset: "synthetic".into(),
        command: "test".into(),
        ema: None,
        guided: None,
        reparam: None,
    };
    let mut run = MemoryDistill::new(&g, plan, &files[0], data.clone()).unwrap();
    pollster::block_on(run.advance()).unwrap();
    let checkpoint = pollster::block_on(run.checkpoint()).unwrap();
    let err = MemoryDistill::restore(&g, &checkpoint, &files[1], data.clone())
        .err()
        .expect("another teacher must be refused")
        .to_string();
    assert!(err.contains("not the one it was made with"), "{err}");
    let err = MemoryDistill::restore(&g, b"not a checkpoint", &files[0], data)
        .err()
        .expect("garbage must be refused")
        .to_string();
    assert!(err.contains("checkpoint"), "{err}");
}

#[test]
fn the_shipped_fashion_mnist_subset_is_the_first_10000_training_images() {
    let subset = fewstep::diffusion::run_spec::load_data("fashion-mnist:assets/fmnist-10k", 28)
        .expect("assets/fmnist-10k loads as a Fashion-MNIST folder");
    assert_eq!(subset.len(), 10_000);
    assert_eq!([subset.channels, subset.height, subset.width], [1, 28, 28]);
    // The web page builds its data set from the fetched bytes: the same images, labels and flip.
    let read = |f: &str| std::fs::read(format!("assets/fmnist-10k/{f}")).unwrap();
    let web = fewstep::data::idx_from_gz_bytes(
        "fashion-mnist",
        &read("train-images-idx3-ubyte.gz"),
        &read("train-labels-idx1-ubyte.gz"),
        true,
    )
    .unwrap();
    assert_eq!(web.len(), subset.len());
    assert_eq!(web.flip, subset.flip);
    assert_eq!(web.labels, subset.labels);
    assert!((0..web.len()).all(|i| web.image(i) == subset.image(i)));
    match fewstep::diffusion::run_spec::load_data("fashion-mnist", 28) {
        Ok(full) => {
            for i in [0, 1, 4_321, 9_999] {
                assert_eq!(subset.image(i), full.image(i), "image {i}");
            }
        }
        Err(e) => eprintln!("skipped the comparison with the full set: {e:#}"),
    }
}

#[test]
fn in_memory_training_writes_the_model_file_fewstep_train_writes() {
    use fewstep::diffusion::train_memory::{MemoryTrain, TrainPlan};
    use fewstep::diffusion::train_run::{RunOptions, TrainRun, MODEL_FILE};
    let g = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data = Dataset::synthetic_patterns(6, 1, 8, 8);
    let plan = TrainPlan {
        preset: "tiny".into(),
        updates: 3,
        batch: 3,
        lr: Some(1e-3),
        warmup: Some(2),
        seed: 9,
        // Every second update and the last (3): the means of updates 1-2 and of 3, as the
        // run folder logs them.
        log_every: 2,
        dataset: "synthetic".into(),
        command: "fewstep train (test)".into(),
        classes: false,
        uncond_prob: None,
    };
    let mut memory = MemoryTrain::new(&g, plan.clone(), data.clone()).unwrap();
    let mut losses = Vec::new();
    while !memory.is_done() {
        losses.extend(pollster::block_on(memory.advance()).unwrap());
    }
    let file = pollster::block_on(memory.model_file()).unwrap();
    let dir = tmp.path().join("run");
    let options = RunOptions {
        total_steps: 3,
        checkpoint_every: 0,
        log_every: plan.log_every,
        sample_every: 0,
        sample_steps: 8,
        dataset: plan.dataset.clone(),
        command: plan.command.clone(),
    };
    let arch = memory.trainer.model.net.config.clone();
    let cfg = memory.trainer.cfg.clone();
    let mut run = TrainRun::create(&g, &dir, data, arch, cfg, options).unwrap();
    let mut native_losses = Vec::new();
    while !run.is_done() {
        if let Some(line) = run.advance().unwrap() {
            native_losses.push(line.loss);
        }
    }
    assert_eq!(losses.len(), 2, "losses after updates 2 and 3: {losses:?}");
    assert_eq!(losses, native_losses);
    assert!(
        std::fs::read(dir.join(MODEL_FILE)).unwrap() == file,
        "the in-memory model file differs from fewstep train's"
    );
}

/// The web Train tab's class-conditional teacher (issue 35): the in-memory training with
/// classes and a label dropout, checkpointed and restored after every update, writes the model
/// file `fewstep train --classes --uncond-prob` writes on the shipped subset.
#[test]
fn in_memory_class_conditional_training_restored_after_every_update_equals_fewstep_train() {
    use fewstep::diffusion::run_spec::{load_data, TrainSpec};
    use fewstep::diffusion::train_memory::{MemoryTrain, TrainPlan};
    use fewstep::diffusion::train_run::MODEL_FILE;
    let g = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let data_spec = format!(
        "fashion-mnist:{}/assets/fmnist-10k",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = TrainSpec {
        data: data_spec.clone(),
        preset: "tiny".into(),
        out: tmp.path().join("run"),
        steps: 3,
        batch: 2,
        lr: Some(1e-3),
        warmup: Some(2),
        classes: Some(0),
        uncond_prob: Some(0.3),
        seed: 4,
        log_every: 1,
        sample_every: 0,
        ..TrainSpec::default()
    };
    let command = "fewstep train (test)".to_string();
    let mut run = spec.open(&g, command.clone()).unwrap();
    while !run.is_done() {
        run.advance().unwrap();
    }
    drop(run);
    let native = std::fs::read(spec.out.join(MODEL_FILE)).unwrap();
    let plan = TrainPlan {
        preset: "tiny".into(),
        updates: 3,
        batch: 2,
        lr: Some(1e-3),
        warmup: Some(2),
        seed: 4,
        log_every: 1,
        dataset: data_spec.clone(),
        command,
        classes: true,
        uncond_prob: Some(0.3),
    };
    let data = load_data(&data_spec, 28).unwrap();
    let mut memory = MemoryTrain::new(&g, plan, data.clone()).unwrap();
    assert_eq!(memory.trainer.model.net.config.classes, 10);
    while !memory.is_done() {
        let checkpoint = pollster::block_on(memory.checkpoint()).unwrap();
        drop(memory);
        memory = MemoryTrain::restore(&g, &checkpoint, data.clone()).unwrap();
        pollster::block_on(memory.advance()).unwrap();
    }
    let file = pollster::block_on(memory.model_file()).unwrap();
    assert!(
        file == native,
        "the restored in-memory class-conditional model differs from fewstep train --classes's"
    );
}
