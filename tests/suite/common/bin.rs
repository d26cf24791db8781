//! Running the `fewstep` binary from tests, and the small image folder the CLI tests train on.

use std::path::Path;
use std::process::{Command, Output};

/// The `fewstep` binary with the fixed kernel rule (FEWSTEP_TUNE=off): tests compare numbers
/// across processes, which a plan each measured for itself could make differ; the tuner's own
/// tests turn it on.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fewstep"));
    c.env("FEWSTEP_TUNE", "off");
    c
}

/// Runs `fewstep ARGS` from the package root and echoes what it printed (shown when a test fails).
pub fn fewstep(args: &[&str]) -> Output {
    fewstep_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Runs `fewstep ARGS` from `cwd` (relative paths in ARGS are relative to it), echoing its output.
pub fn fewstep_in(cwd: &Path, args: &[&str]) -> Output {
    let out = command()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the fewstep binary runs");
    eprintln!(
        "$ (cd {}; fewstep {})\n{}{}",
        cwd.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Six small RGB images of different sizes (an `images:DIR` data set).
pub fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..6u32 {
        let img = image::RgbImage::from_fn(24 + i * 3, 20, |x, y| {
            image::Rgb([(x * 9 + i * 40) as u8, (y * 11) as u8, ((x + y) * 5) as u8])
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
    }
}

/// `fewstep train` on the images in `imgs` (tiny, 8x8, batch 4, a checkpoint every 2 updates,
/// a log line every update, no sample grids) into `out`, `extra` first: the arguments.
pub fn tiny_train_args(imgs: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let data = format!("images:{}", imgs.display());
    args.extend(
        [
            "--data",
            &data,
            "--preset",
            "tiny",
            "--image-size",
            "8",
            "--batch",
            "4",
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
            "--sample-every",
            "0",
            "--out",
        ]
        .map(String::from),
    );
    args.push(out.to_str().unwrap().to_string());
    args
}

/// A run's model file as read, its command line left out (two runs that differ only in the
/// `--steps` they were given record different commands).
pub fn model_of_run(dir: &Path) -> (fewstep::diffusion::ModelMeta, Vec<fewstep::nn::HostTensor>) {
    let path = dir.join("model.safetensors");
    let (mut meta, tensors) =
        fewstep::diffusion::parse_model(&path, &std::fs::read(&path).unwrap()).unwrap();
    meta.command.clear();
    (meta, tensors)
}
