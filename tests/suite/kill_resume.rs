//! Issue 13: whatever stops a run (kill -9 at any moment, a full disk), resuming it gives files
//! byte-identical to an uninterrupted run's, and nothing half-written is left behind.
//!
//! The kill moments are random (a fixed-seed generator draws delays, scaled to how long the
//! uninterrupted run took on this machine), so they land in start-up, in updates and in the
//! middle of checkpoint writes.

use crate::common;
use common::bin::{fewstep, fewstep_in, write_images};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills per command: the issue asks for at least 10.
const KILLS: usize = 10;

/// splitmix64: a fixed-seed source of kill delays.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The tiny teacher training the tests interrupt: 8x8 images, batch 4, a checkpoint per update.
fn train_args(imgs: &Path, out: &Path, resume: bool) -> Vec<String> {
    let steps = "30";
    if resume {
        return strings(&[
            "train",
            "--resume",
            "--steps",
            steps,
            "--out",
            out.to_str().unwrap(),
        ]);
    }
    let data = format!("images:{}", imgs.display());
    strings(&[
        "train",
        "--steps",
        steps,
        "--data",
        &data,
        "--preset",
        "tiny",
        "--image-size",
        "8",
        "--batch",
        "4",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--sample-every",
        "0",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// The distillation the tests interrupt: 8 -> 1 steps, 6 updates per halving (12 for the last
/// two), a checkpoint per update.
fn distill_args(teacher: &Path, out: &Path, resume: bool) -> Vec<String> {
    if resume {
        return strings(&["distill", "--resume", "--out", out.to_str().unwrap()]);
    }
    strings(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--from-steps",
        "8",
        "--to-steps",
        "1",
        "--updates",
        "6",
        "--batch",
        "4",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A run directory and how its command line is built (fresh or resumed).
struct Job<'a> {
    state_file: &'static str,
    finished: &'a [&'static str],
    args: &'a dyn Fn(&Path, bool) -> Vec<String>,
}

impl<'a> Job<'a> {
    fn train(args: &'a dyn Fn(&Path, bool) -> Vec<String>) -> Self {
        Job {
            state_file: "state.safetensors",
            finished: TRAIN_FILES,
            args,
        }
    }

    fn distill(args: &'a dyn Fn(&Path, bool) -> Vec<String>) -> Self {
        Job {
            state_file: "distill-state.safetensors",
            finished: DISTILL_FILES,
            args,
        }
    }

    /// Runs to the end, resuming when the directory holds a state; returns how long it took.
    fn run_to_end(&self, out: &Path) -> Duration {
        let start = Instant::now();
        let resume = out.join(self.state_file).exists();
        let args = (self.args)(out, resume);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = fewstep(&refs);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        start.elapsed()
    }

    /// Starts the command (fresh or resumed, as the directory says) and SIGKILLs it `delay`
    /// after its start, or with `after_updates` = n > 0, `delay` after metrics.jsonl has n more
    /// lines than before.
    /// Returns None when it ended by itself first (its exit must be a success), else whether it
    /// had been a resumed one.
    fn kill_after(
        &self,
        out: &Path,
        after_updates: usize,
        delay: Duration,
        log: &Path,
    ) -> Option<bool> {
        let resume = out.join(self.state_file).exists();
        let metrics = out.join("metrics.jsonl");
        let lines = || std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count());
        let target = lines() + after_updates;
        let args = (self.args)(out, resume);
        let mut child = crate::common::bin::command()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut start = Instant::now();
        let mut waiting_for_update = after_updates > 0;
        while waiting_for_update || start.elapsed() < delay {
            // A resumed run first rewrites metrics.jsonl without the lines it will log again.
            if waiting_for_update && lines() >= target {
                waiting_for_update = false;
                start = Instant::now();
            }
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                assert!(
                    status.success(),
                    "`fewstep {}` failed:\n{text}",
                    args.join(" ")
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        Some(resume)
    }

    /// Kills the command at random moments `KILLS` times (a directory that finishes before
    /// that is checked and a new one started), then lets each directory finish; every finished
    /// file must equal `reference`'s, byte for byte, and no temporary file may be left.
    fn kill_cycles(&self, root: &Path, reference: &Path, took: Duration, seed: u64) {
        let mut rng = Rng(seed);
        let per_update = took / logged_updates(reference).len() as u32;
        let (mut kills, mut resumed, mut dirs) = (0, 0, vec![]);
        while kills < KILLS {
            let out = root.join(format!("killed-{}", dirs.len()));
            dirs.push((out.clone(), false));
            loop {
                // A quarter of the kills anywhere in the first tenth of the uninterrupted time
                // (mostly start-up); the others within two updates after 1 to 4 new updates
                // were logged (in updates and in the middle of checkpoint writes).
                let anywhere = rng.unit() < 0.25;
                let (after, delay) = if anywhere {
                    (0, took.mul_f64(0.1 * rng.unit()))
                } else {
                    (
                        1 + (4.0 * rng.unit()) as usize,
                        per_update.mul_f64(2.0 * rng.unit()),
                    )
                };
                let log = root.join("killed.log");
                match self.kill_after(&out, after, delay, &log) {
                    Some(was_resumed) => {
                        kills += 1;
                        resumed += was_resumed as usize;
                        eprintln!(
                            "kill {kills} {:.0} ms after {} ({})",
                            delay.as_secs_f64() * 1e3,
                            if anywhere {
                                "the start".to_string()
                            } else {
                                format!("{after} new updates")
                            },
                            if was_resumed {
                                "resumed run"
                            } else {
                                "fresh start"
                            }
                        );
                    }
                    None => {
                        dirs.last_mut().unwrap().1 = true;
                        break;
                    }
                }
                if kills == KILLS {
                    break;
                }
            }
        }
        assert!(
            resumed >= 3,
            "only {resumed} kills landed after a checkpoint"
        );
        for (out, finished) in &dirs {
            if !finished {
                self.run_to_end(out);
            }
            assert_same_files(self.finished, out, reference);
            assert_no_temporaries(out);
        }
    }
}

/// Each of `files` in `out` equals the one in `reference`, byte for byte.
fn assert_same_files(files: &[&str], out: &Path, reference: &Path) {
    for f in files {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(reference.join(f)).unwrap(),
            "{f} in {} differs from the uninterrupted run's in {}",
            out.display(),
            reference.display()
        );
    }
}

fn assert_no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "{name} left in {}", dir.display());
    }
}

/// Updates logged in metrics.jsonl, in order (the `step` or `student_steps`/`update` fields).
fn logged_updates(dir: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v.get("step") {
                Some(s) => (0, s.as_u64().unwrap()),
                None => (
                    v["student_steps"].as_u64().unwrap(),
                    v["update"].as_u64().unwrap(),
                ),
            }
        })
        .collect()
}

fn train_job(imgs: &Path) -> impl Fn(&Path, bool) -> Vec<String> + '_ {
    move |out, resume| train_args(imgs, out, resume)
}

const TRAIN_FILES: &[&str] = &["model.safetensors"];
const DISTILL_FILES: &[&str] = &[
    "steps-4.safetensors",
    "steps-2.safetensors",
    "steps-1.safetensors",
];

#[test]
fn train_killed_at_random_moments_resumes_to_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let make = train_job(&imgs);
    let job = Job::train(&make);
    let reference = tmp.path().join("reference");
    let took = job.run_to_end(&reference);
    job.kill_cycles(tmp.path(), &reference, took, 13);
    let dir = tmp.path().join("killed-0");
    assert_eq!(logged_updates(&dir), logged_updates(&reference));
}

#[test]
fn distill_killed_at_random_moments_resumes_to_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let teacher_run = tmp.path().join("teacher");
    Job::train(&train_job(&imgs)).run_to_end(&teacher_run);
    let teacher = teacher_run.join("model.safetensors");
    let make = |out: &Path, resume: bool| distill_args(&teacher, out, resume);
    let job = Job::distill(&make);
    let reference = tmp.path().join("reference");
    let took = job.run_to_end(&reference);
    job.kill_cycles(tmp.path(), &reference, took, 17);
    let dir = tmp.path().join("killed-0");
    assert_eq!(logged_updates(&dir), logged_updates(&reference));
    assert!(!dir.join("distill-state.safetensors").exists());
}

/// Issue 32: a diffusers teacher's distillation (the folder imported into the run, stage 1
/// re-parameterising eps to v, then the halvings on the discrete schedule) killed at random
/// moments resumes to the same files.
#[test]
fn distill_of_a_diffusers_teacher_killed_at_random_moments_resumes_to_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let data = format!("images:{}", imgs.display());
    let teacher =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers/tutorial-eps");
    let make = |out: &Path, resume: bool| {
        let mut a = distill_args(&teacher, out, resume);
        if !resume {
            a.extend(strings(&["--data", &data]));
        }
        a
    };
    let job = Job {
        state_file: "distill-state.safetensors",
        finished: &[
            "diffusers-teacher.safetensors",
            "reparam-teacher.safetensors",
            "steps-4.safetensors",
            "steps-2.safetensors",
            "steps-1.safetensors",
        ],
        args: &make,
    };
    let reference = tmp.path().join("reference");
    let took = job.run_to_end(&reference);
    job.kill_cycles(tmp.path(), &reference, took, 19);
    let dir = tmp.path().join("killed-0");
    assert_eq!(logged_updates(&dir), logged_updates(&reference));
    assert!(
        logged_updates(&dir).iter().any(|&(steps, _)| steps == 0),
        "stage 1 logged"
    );
}

/// A size-limited tmpfs mounted for a test, unmounted when dropped. None where the platform
/// does not allow mounting (not root, or no CAP_SYS_ADMIN in the container).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    /// The user frees space: the same files, a larger disk.
    fn grow(&self) {
        let s = Command::new("mount")
            .args(["-o", "remount,size=256m"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `args` on a disk sized `bytes`: it must fail with exit code 1 and a message that names
/// the full disk, leave no temporary file and no panic; after the disk grows, resuming (or
/// starting again, when no state was written) finishes with files identical to `reference`'s.
fn full_disk_case(job: &Job, root: &Path, reference: &Path, bytes: u64) -> bool {
    let Some(disk) = SmallDisk::mount(&root.join("disk"), bytes) else {
        eprintln!("skipped: this machine does not allow mounting a small tmpfs (needs root)");
        return false;
    };
    let out = disk.0.join("run");
    let args = (job.args)(&out, false);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = fewstep(&refs);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(
        e.matches("No space left on device").count(),
        1,
        "the OS error is printed once: {e}"
    );
    assert_no_temporaries(&out);
    disk.grow();
    job.run_to_end(&out);
    assert_same_files(job.finished, &out, reference);
    assert_no_temporaries(&out);
    true
}

#[test]
fn a_full_disk_stops_train_and_distill_cleanly_and_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let make = train_job(&imgs);
    let train = Job::train(&make);
    let reference = tmp.path().join("reference");
    train.run_to_end(&reference);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    // Room for one state and one model, and half of a second state: the first checkpoint
    // fits, the second (written beside the first, then renamed) does not.
    let state = size(&reference.join("state.safetensors"));
    let model = size(&reference.join("model.safetensors"));
    if !full_disk_case(&train, tmp.path(), &reference, state + model + state / 2) {
        return;
    }
    let teacher = reference.join("model.safetensors");
    let make = |out: &Path, resume: bool| distill_args(&teacher, out, resume);
    let distill = Job::distill(&make);
    let dref = tmp.path().join("distill-reference");
    distill.run_to_end(&dref);
    // A distillation state is three copies of the weights (student, Adam m and v): room for
    // one state and half of the next.
    let dstate = 3 * model;
    assert!(full_disk_case(
        &distill,
        tmp.path(),
        &dref,
        dstate + dstate / 2
    ));
}

fn fails_in(cwd: &Path, args: &[&str], needle: &str) {
    let o = fewstep_in(cwd, args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains(needle), "message lacks `{needle}`: {e}");
}

/// Item 8: a distillation started with a relative --teacher resumes from another directory,
/// finds a moved teacher given with --teacher (and refuses a different file), and refuses
/// settings that differ from the stored ones instead of ignoring them. The result equals an
/// uninterrupted run's, byte for byte.
#[test]
fn distill_resume_works_from_anywhere_and_refuses_changed_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    write_images(&imgs);
    let teacher_run = tmp.path().join("teacher");
    Job::train(&train_job(&imgs)).run_to_end(&teacher_run);
    // Two working directories, each with the teacher under the same relative name.
    let (work, plain) = (tmp.path().join("work"), tmp.path().join("plain"));
    for w in [&work, &plain] {
        std::fs::create_dir_all(w).unwrap();
        std::fs::copy(
            teacher_run.join("model.safetensors"),
            w.join("teacher.safetensors"),
        )
        .unwrap();
    }
    let start = distill_args(Path::new("teacher.safetensors"), Path::new("run"), false);
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    assert!(fewstep_in(&plain, &start).status.success());
    // Started with relative paths in `work`, killed once a checkpoint is on disk.
    let log = tmp.path().join("log");
    let state = work.join("run").join("distill-state.safetensors");
    while !state.exists() {
        let mut child = crate::common::bin::command()
            .args(&start)
            .current_dir(&work)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !state.exists() && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let run = work.join("run");
    let run_s = run.to_str().unwrap();
    // Settings typed again with other values are refused, naming each.
    fails_in(
        tmp.path(),
        &[
            "distill", "--resume", "--out", run_s, "--batch", "8", "--lr", "0.1",
        ],
        "--batch 8 (the run started with --batch 4), --lr 0.1 (the run started with --lr 0.0002)",
    );
    // Guided distillation's flags on an unguided run: refused, not ignored (issue 37).
    for (flag, value) in [("--guidance-updates", "5"), ("--guidance-range", "0,2")] {
        fails_in(
            tmp.path(),
            &["distill", "--resume", "--out", run_s, flag, value],
            &format!("resume it without {flag}"),
        );
    }
    // The same values are fine (checked below by the successful resume with --updates 6).
    // The teacher moves: without --teacher the message says what to do; another file is refused.
    let moved = tmp.path().join("moved.safetensors");
    std::fs::rename(work.join("teacher.safetensors"), &moved).unwrap();
    fails_in(
        tmp.path(),
        &["distill", "--resume", "--out", run_s],
        "pass --teacher",
    );
    let other =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-small-teacher.safetensors");
    fails_in(
        tmp.path(),
        &[
            "distill",
            "--resume",
            "--out",
            run_s,
            "--teacher",
            other.to_str().unwrap(),
        ],
        "is not the teacher this distillation started from",
    );
    let o = fewstep_in(
        tmp.path(),
        &[
            "distill",
            "--resume",
            "--out",
            run_s,
            "--teacher",
            moved.to_str().unwrap(),
            "--updates",
            "6",
        ],
    );
    assert!(o.status.success());
    assert_same_files(DISTILL_FILES, &run, &plain.join("run"));
    // The command line a model records names neither --out nor the run directory.
    let meta = fewstep::nn::tensor_file::read(&run.join("steps-1.safetensors")).unwrap();
    let text = &meta.metadata["fewstep"];
    assert!(!text.contains("--out") && !text.contains(run_s), "{text}");
}

const GUIDED_FILES: &[&str] = &[
    "guided-teacher.safetensors",
    "steps-4.safetensors",
    "steps-2.safetensors",
    "steps-1.safetensors",
];

/// Issue 24: a guided distillation (stage 1, then 8 -> 1 with w as an input) of a
/// class-conditional teacher trained with label dropout, killed at random moments.
#[test]
fn guided_distill_killed_at_random_moments_resumes_to_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("classes");
    crate::guided::write_class_images(&imgs);
    let teacher_run = tmp.path().join("teacher");
    let train = |out: &Path, resume: bool| {
        let mut a = train_args(&imgs, out, resume);
        if !resume {
            a.extend(strings(&["--classes", "--uncond-prob", "0.3"]));
        }
        a
    };
    Job::train(&train).run_to_end(&teacher_run);
    let teacher = teacher_run.join("model.safetensors");
    let make = |out: &Path, resume: bool| {
        let mut a = distill_args(&teacher, out, resume);
        if !resume {
            a.extend(strings(&["--guided", "--guidance-updates", "6"]));
        }
        a
    };
    let job = Job {
        state_file: "distill-state.safetensors",
        finished: GUIDED_FILES,
        args: &make,
    };
    let reference = tmp.path().join("reference");
    let took = job.run_to_end(&reference);
    job.kill_cycles(tmp.path(), &reference, took, 19);
    let dir = tmp.path().join("killed-0");
    assert_eq!(logged_updates(&dir), logged_updates(&reference));
    assert!(!dir.join("distill-state.safetensors").exists());
}
