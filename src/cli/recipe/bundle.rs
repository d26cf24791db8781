//! The bundle folder: f16 model files and manifest.json (what `bundled.rs` and the page read).

use super::*;

pub(super) fn fill_seconds(m: &mut Manifest, state: &RecipeState) {
    m.seconds = state
        .done
        .iter()
        .map(|(k, v)| (k.clone(), (v * 10.0).round() / 10.0))
        .collect();
    let total: f64 = state.done.values().sum();
    m.seconds
        .insert("total".into(), (total * 10.0).round() / 10.0);
}

pub(super) fn write_manifest(bundle: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(m)? + "\n";
    crate::nn::tensor_file::write_atomic(&bundle.join(MANIFEST_FILE), text.as_bytes())?;
    Ok(())
}

pub(super) fn figures(row: &EvalRow) -> Figures {
    Figures {
        steps: row.steps,
        frechet: row.frechet,
        psnr_vs_teacher: row.psnr_vs_teacher,
        ms_per_image: row.ms_per_image,
    }
}

/// The f16 copies (each student's parent hash re-chained to its parent's copy) and the manifest.
pub(super) fn write_bundle(
    dir: &Path,
    state: &RecipeState,
    commands: &Commands,
    adapter: &str,
) -> Result<Manifest> {
    let s = &state.settings;
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle)
        .with_context(|| format!("cannot create {}", bundle.display()))?;
    let rows = &state.eval_rows;
    // A guided recipe evaluated at several w: the manifest shows GUIDED_FIGURES_W's rows.
    let row = |kind: &str, n: usize| {
        rows.iter().find(|r| {
            r.kind == kind
                && r.steps == n
                && r.guidance
                    .is_none_or(|w| w == super::settings::GUIDED_FIGURES_W)
        })
    };
    let mut models = vec![];
    let mut convert_cmds = vec![];
    let tfile = format!("{}-teacher.f16.safetensors", s.name);
    let tsrc = dir.join("teacher").join(MODEL_FILE);
    super::super::convert::convert_file(&tsrc, &bundle.join(&tfile), true, None)?;
    convert_cmds.push(format!(
        "fewstep convert --model {} --out {} --f16",
        tsrc.display(),
        bundle.join(&tfile).display()
    ));
    let mut parent = bundle.join(&tfile);
    let teacher_row =
        row("teacher", s.teacher_distance_steps).or_else(|| row("ddim", s.teacher_distance_steps));
    let mut entries = vec![(tfile, None::<u32>, teacher_row.map(figures), None)];
    // Each distilled file as f16 in the bundle, its parent re-chained to the previous one.
    let mut chain = |src: &Path, file: &str| -> Result<()> {
        super::super::convert::convert_file(src, &bundle.join(file), true, Some(&parent))?;
        convert_cmds.push(format!(
            "fewstep convert --model {} --out {} --f16 --parent {}",
            src.display(),
            bundle.join(file).display(),
            parent.display()
        ));
        parent = bundle.join(file);
        Ok(())
    };
    // A guided family: the w-conditioned model of stage 1 is the students' first parent.
    let mut guided_entry = None;
    if s.guided {
        let file = format!("{}-guided-teacher.f16.safetensors", s.name);
        let src = dir
            .join("distill")
            .join(crate::diffusion::distill_run::GUIDED_FILE);
        chain(&src, &file)?;
        guided_entry = Some((file, None::<u32>, None, None));
    }
    for &n in &s.student_steps() {
        let file = format!("{}-steps-{n}.f16.safetensors", s.name);
        chain(&dir.join("distill").join(model_file_name(n)), &file)?;
        entries.push((
            file,
            Some(n as u32),
            row("distilled", n).map(figures),
            row("ddim", n).map(figures),
        ));
    }
    // Students first (fewest steps last, as the bundled list), then the teacher (and a guided
    // family's w-conditioned teacher).
    entries.rotate_left(1);
    entries.extend(guided_entry);
    for (i, (file, steps, fig, ddim)) in entries.into_iter().enumerate() {
        let bytes = std::fs::read(bundle.join(&file))?;
        models.push(ManifestModel {
            name: match steps {
                Some(n) => format!("{}-{n}step", s.name),
                None if i > s.student_steps().len() => format!("{}-guided-teacher", s.name),
                None => format!("{}-teacher", s.name),
            },
            file,
            steps,
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            figures: fig,
            ddim,
        });
    }
    let mut all = vec![full(&commands.train), full(&commands.distill)];
    all.push(full(&commands.eval));
    all.extend(convert_cmds);
    let mut m = Manifest {
        format: "fewstep-bundle".into(),
        version: 1,
        note: format!(
            "Made by `fewstep recipe --preset {}` (the commands it ran below) on {}; eval: \
             {} images per row, agreement PSNR against the teacher's {} DDIM steps on {} images, \
             seed {}, with the f32 models before conversion.",
            s.preset, state.adapter, s.eval_samples, s.from_steps, s.psnr_samples, s.seed
        ),
        dataset: s.data.clone(),
        adapter: adapter.to_string(),
        date: utc_now(),
        commands: all,
        seconds: BTreeMap::new(),
        eval: ManifestEval {
            samples: s.eval_samples,
            psnr_samples: s.psnr_samples,
            reference_steps: s.from_steps,
            classifier: s.classifier.clone(),
        },
        models,
    };
    fill_seconds(&mut m, state);
    write_manifest(&bundle, &m)?;
    Ok(m)
}
