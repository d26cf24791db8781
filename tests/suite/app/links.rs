//! What the app keeps and reproduces: settings across a restart, a run's link and its
//! `fewstep sample` command, the web page's query string.

use super::*;

/// Issue 14: the last model, step count, seed, sampler settings and the Train tab's settings
/// survive a restart; a remembered model that is gone is skipped.
#[test]
fn the_apps_settings_survive_a_restart() {
    use fewstep::app::remembered::Remembered;
    use fewstep::app::train_panel::{Mode, TrainSettings};
    let mut before = loaded_state();
    assert!(before.select_by_name("fmnist-2step"));
    before.settings.steps = 2;
    before.settings.seed = 1234;
    before.settings.count = 9;
    before.settings.kind = SamplerKind::Ancestral;
    before.settings.clip = false;
    let train = TrainSettings {
        mode: Mode::Distill,
        teacher: "my/teacher.safetensors".into(),
        distill_updates: 777,
        batch: 12,
        ..TrainSettings::default()
    };
    let mut storage = MemoryStorage::default();
    Remembered::capture(&before, &train).save(&mut storage);
    // A new launch: fresh state, the same models, what the storage holds.
    let read = Remembered::load(&storage).expect("a remembered value");
    assert_eq!(read.train, train);
    let mut after = loaded_state();
    read.restore(&mut after);
    assert_eq!(
        after.selected_model().map(|m| m.name.as_str()),
        Some("fmnist-2step")
    );
    assert_eq!(after.settings, before.settings);
    // A model that is no longer there: the rest still applies, nothing fails.
    let gone = Remembered {
        model: Some("deleted-model".into()),
        ..read
    };
    let mut other = loaded_state();
    gone.restore(&mut other);
    assert_eq!(other.settings.seed, 1234);
    // What an older version wrote (fewer fields) still reads, with defaults for the rest.
    storage.set_string(fewstep::app::remembered::KEY, "(seed: Some(5))".into());
    let old = Remembered::load(&storage).expect("an older value reads");
    assert_eq!(old.seed, Some(5));
    assert_eq!(old.train, TrainSettings::default());
}

/// The Sample tab's "Copy" link reads back as the run it came from; the command names the same
/// settings in `fewstep sample`'s words.
#[test]
fn a_runs_link_and_command_reproduce_its_settings() {
    for o in [
        StartOptions {
            model: Some("fmnist-4step".into()),
            steps: Some(4),
            seed: Some(7),
            count: Some(16),
            sampler: Some(SamplerKind::Ddim),
            clip: Some(true),
            run: true,
            ..Default::default()
        },
        StartOptions {
            model: Some("my model (v2)+ü.safetensors".into()),
            steps: Some(3),
            seed: Some(u64::MAX),
            count: Some(1),
            sampler: Some(SamplerKind::Ancestral),
            clip: Some(false),
            run: true,
            ..Default::default()
        },
    ] {
        let q = o.to_query();
        assert_eq!(StartOptions::from_query(&q).unwrap(), o, "{q}");
        let c = o.sample_command();
        for want in [
            format!("--steps {}", o.steps.unwrap()),
            format!("--seed {}", o.seed.unwrap()),
            format!("--count {}", o.count.unwrap()),
        ] {
            assert!(c.contains(&want), "{c} lacks {want}");
        }
        assert_eq!(
            c.contains("--sampler ancestral"),
            o.sampler == Some(SamplerKind::Ancestral)
        );
        assert_eq!(c.contains("--no-clip"), o.clip == Some(false));
    }
    // A strip from one seed to another: both seeds, no --seed (the two conflict).
    let strip = StartOptions {
        model: Some("fmnist-2step".into()),
        interpolate: Some((3, 9)),
        count: Some(8),
        run: true,
        ..Default::default()
    };
    let q = strip.to_query();
    assert!(q.contains("interpolate=3,9"), "{q}");
    assert_eq!(StartOptions::from_query(&q).unwrap(), strip);
    let c = strip.sample_command();
    assert!(
        c.contains("--interpolate 3,9 --count 8") && !c.contains("--seed"),
        "{c}"
    );
    assert!(StartOptions::from_query("?interpolate=3")
        .unwrap_err()
        .contains("A,B"));
    let mut s = loaded_state();
    s.settings.interpolate_to = Some(9);
    s.settings.seed = 3;
    s.settings.count = 1;
    assert!(s.start_sample().unwrap_err().contains("2 to 64 images"));
    s.settings.count = 8;
    let (_, rows, _) = s.start_sample().unwrap();
    assert_eq!(rows[0].strip, Some((3, 9)));
    let link = s.sample_view.as_ref().unwrap().reproduce.clone().unwrap();
    assert_eq!((link.interpolate, link.seed), (Some((3, 9)), None));
    let plain = StartOptions {
        model: Some("fmnist-4step".into()),
        ..Default::default()
    };
    assert!(plain
        .sample_command()
        .starts_with("fewstep sample --model fmnist-4step"));
    assert!(
        plain.to_query().starts_with("model=fmnist-4step&"),
        "{}",
        plain.to_query()
    );
}

#[test]
fn the_query_string_configures_a_run() {
    let o = StartOptions::from_query("?model=fmnist-4step&steps=4&seed=1&count=16").unwrap();
    assert_eq!(o.model.as_deref(), Some("fmnist-4step"));
    assert_eq!((o.steps, o.seed, o.count), (Some(4), Some(1), Some(16)));
    assert!(o.run, "a link with a model starts the run");
    let o = StartOptions::from_query("?steps=8&run=0&sampler=ancestral&clip=0").unwrap();
    assert!(!o.run);
    assert_eq!(o.sampler, Some(SamplerKind::Ancestral));
    assert_eq!(o.clip, Some(false));
    assert_eq!(
        StartOptions::from_query("").unwrap(),
        StartOptions::default()
    );
    // A distillation in the Train tab (web): its settings, and no sample run.
    let o =
        StartOptions::from_query("?distill=fmnist-4step&to=2&updates=2&batch=2&lr=0.0001&seed=3")
            .unwrap();
    assert!(!o.run);
    assert_eq!(
        o.distill,
        Some(fewstep::app::DistillStart {
            teacher: "fmnist-4step".into(),
            from_steps: None,
            to_steps: Some(2),
            updates: Some(2),
            batch: Some(2),
            lr: Some(1e-4),
            seed: Some(3),
            guided: false,
            w_range: None,
            guidance_updates: None,
        })
    );
    assert!(StartOptions::from_query("?distill=fmnist-teacher&updates=lots").is_err());
    // Issue 35: a guided distillation, and a class-conditional teacher, from the address.
    let o = StartOptions::from_query("?distill=cond&to=2&guided=1&wrange=0.5,3&stage1=7").unwrap();
    let d = o.distill.unwrap();
    assert!(d.guided);
    assert_eq!((d.w_range, d.guidance_updates), (Some([0.5, 3.0]), Some(7)));
    for bad in [
        "wrange=3,1",
        "wrange=-1,2",
        "wrange=2",
        "guided=maybe",
        "stage1=x",
    ] {
        assert!(
            StartOptions::from_query(&format!("?distill=cond&{bad}")).is_err(),
            "{bad} was taken"
        );
    }
    let t = StartOptions::from_query("?train=tiny&classes=1&uncond=0.2")
        .unwrap()
        .train
        .unwrap();
    assert!(t.classes && t.uncond_prob == Some(0.2));
    assert!(StartOptions::from_query("?train=tiny&classes=1&uncond=1").is_err());
    // A teacher trained in the tab (web).
    let o = StartOptions::from_query("?train=tiny&updates=2&batch=2&seed=3").unwrap();
    assert!(!o.run && o.distill.is_none());
    assert_eq!(
        o.train,
        Some(fewstep::app::TrainStart {
            preset: "tiny".into(),
            updates: Some(2),
            batch: Some(2),
            lr: None,
            seed: Some(3),
            classes: false,
            uncond_prob: None,
        })
    );
    assert!(StartOptions::from_query("?train=huge").is_err());
    let e = StartOptions::from_query("?steps=four").unwrap_err();
    assert!(e.contains("steps=four"), "{e}");
    assert!(StartOptions::from_query("?sampler=euler").is_err());
    // Issue 13, item 10: `run=false` (not only `run=0`) keeps a configured run from starting,
    // and keys and values are percent-decoded as browsers encode them.
    for off in ["run=false", "run=no", "run=0", "run=off"] {
        let o = StartOptions::from_query(&format!("?model=fmnist-4step&{off}")).unwrap();
        assert!(!o.run, "{off} still runs");
    }
    let o = StartOptions::from_query("?model=my%20model+v2&st%65ps=%32").unwrap();
    assert_eq!(o.model.as_deref(), Some("my model v2"));
    assert_eq!(o.steps, Some(2));
    assert!(o.run);
    let e = StartOptions::from_query("?run=maybe").unwrap_err();
    assert!(e.contains("run=maybe"), "{e}");
    assert!(StartOptions::from_query("?model=%FF").is_err());
}
