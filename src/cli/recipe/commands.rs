//! Each stage's command as `fewstep` words: the train and distill stages run exactly them, and the
//! manifest records them.

use super::*;

/// The word list of each stage's command, as `fewstep` would take it (the manifest records
/// these; the train and distill stages run exactly them).
pub struct Commands {
    pub train: Vec<String>,
    pub distill: Vec<String>,
    pub eval: Vec<String>,
}

pub(super) fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Commands {
    pub fn new(s: &RecipeSettings, dir: &Path) -> Commands {
        let teacher_dir = dir.join("teacher");
        let distill_dir = dir.join("distill");
        let teacher = teacher_dir.join(MODEL_FILE);
        let mut train = words(&[
            "train",
            "--data",
            &s.data,
            "--preset",
            &s.model_preset,
            "--steps",
            &s.train_steps.to_string(),
            "--batch",
            &s.train_batch.to_string(),
            "--lr",
            &s.train_lr.to_string(),
            "--warmup",
            &s.warmup.to_string(),
            "--ema",
            &s.train_ema.to_string(),
            "--seed",
            &s.seed.to_string(),
            "--checkpoint-every",
            &s.checkpoint_every.to_string(),
            "--sample-every",
            "0",
        ]);
        if let Some(n) = s.image_size {
            train.extend(words(&["--image-size", &n.to_string()]));
        }
        if s.guided {
            train.extend(words(&["--classes", "--uncond-prob", "0.1"]));
        }
        train.extend(words(&["--out", &teacher_dir.display().to_string()]));
        let mut distill = words(&[
            "distill",
            "--teacher",
            &teacher.display().to_string(),
            "--from-steps",
            &s.from_steps.to_string(),
            "--to-steps",
            "1",
            "--updates",
            &s.updates.to_string(),
            "--final-updates",
            &s.final_updates.to_string(),
            "--batch",
            &s.distill_batch.to_string(),
            "--lr",
            &s.distill_lr.to_string(),
            "--seed",
            &s.seed.to_string(),
            "--checkpoint-every",
            &s.checkpoint_every.to_string(),
            "--log-every",
            "10",
        ]);
        if let Some(e) = s.distill_ema {
            distill.extend(words(&["--ema", &e.to_string()]));
        }
        if s.guided {
            distill.push("--guided".into());
        }
        distill.extend(words(&["--out", &distill_dir.display().to_string()]));
        let mut eval = words(&["eval", "--model"]);
        for n in s.student_steps() {
            eval.push(distill_dir.join(model_file_name(n)).display().to_string());
        }
        eval.push(teacher.display().to_string());
        let e = s.eval_settings();
        eval.extend(words(&[
            "--steps",
            &e.steps
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "--samples",
            &s.eval_samples.to_string(),
            "--psnr-samples",
            &s.psnr_samples.to_string(),
            "--teacher-steps",
            &s.from_steps.to_string(),
            "--teacher-distance-steps",
            &s.teacher_distance_steps.to_string(),
            "--seed",
            &s.seed.to_string(),
        ]));
        // Without a classifier the recorded command names none (eval then uses the bundled
        // one where it exists and fits the models).
        if let Some(c) = &s.classifier {
            eval.extend(words(&["--classifier", c]));
        }
        if s.guided {
            let w: Vec<String> = settings::GUIDED_EVAL_W
                .iter()
                .map(|w| w.to_string())
                .collect();
            eval.extend(words(&["--guidance", &w.join(",")]));
        }
        Commands {
            train,
            distill,
            eval,
        }
    }
}

/// "fewstep w1 w2 ..." without `--out DIR` (as model files record commands).
pub(super) fn shown(words: &[String]) -> String {
    super::super::train::recorded_command(
        std::iter::once("fewstep".to_string()).chain(words.iter().cloned()),
    )
}

/// "fewstep w1 w2 ..." in full.
pub(super) fn full(words: &[String]) -> String {
    std::iter::once("fewstep")
        .chain(words.iter().map(|s| s.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}
