//! Nothing you already have is overwritten, nothing you asked for is silently ignored (issue 37):
//! the edges of the command line. One output-path rule for every file fewstep writes, one reading
//! rule for every file it reads, run folders that belong to one run, every typed flag used or
//! refused, numbers bounded in the type they are used in, bundled names wherever a model is taken.
//! Each reproduction of the issue is a test here; `every_writer_refuses_every_bad_output_path`
//! is the table of every subcommand that writes against every class of bad output path.
//! Tests by side: `outputs.rs` (what fewstep writes and the folders it runs in), `inputs.rs`
//! (flags, numbers, names and files it reads).

use crate::common;
use common::bin::{fewstep, fewstep_in, stderr, write_images};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs `args`, expects a failure, no panic, and `needle` in the message; returns stderr.
fn fails_with(args: &[&str], needle: &str) -> String {
    fails_with_env(args, &[], needle)
}

fn fails_with_env(args: &[&str], env: &[(&str, &str)], needle: &str) -> String {
    let o = run_with_env(args, env);
    let e = stderr(&o);
    assert!(!o.status.success(), "`{}` should fail: {e}", args.join(" "));
    assert!(!e.contains("panicked"), "a panic instead of a message: {e}");
    assert!(e.contains(needle), "message lacks `{needle}`: {e}");
    e
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = crate::common::bin::command();
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    eprintln!(
        "$ fewstep {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = fewstep(args);
    assert!(
        o.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        stderr(&o)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// 8x8 images in class folders named `1`, `10`, `2` and `Ünïcödé` (sorted so: name order is not
/// number order, and one name is not ASCII).
fn class_images(dir: &Path) -> PathBuf {
    let root = dir.join("classes");
    for (k, class) in ["1", "2", "10", "Ünïcödé"].iter().enumerate() {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(10, 10, |x, y| {
                image::Rgb([(x * 20 + k as u32 * 50) as u8, (y * 20 + i * 30) as u8, 90])
            });
            img.save(d.join(format!("img{i}.png"))).unwrap();
        }
    }
    root
}

/// A class-conditional tiny run (2 updates) on [`class_images`] in `out`; `extra` flags first.
fn train_classes(dir: &Path, out: &Path, extra: &[&str]) {
    let data = format!("images:{}", class_images(dir).display());
    let mut args = vec!["train"];
    args.extend(extra);
    args.extend([
        "--data",
        &data,
        "--image-size",
        "8",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--batch",
        "4",
        "--sample-every",
        "0",
        "--out",
        s(out),
    ]);
    ok(&args);
}

/// An unconditional tiny run of 2 updates on 8x8 images.
fn train_plain(dir: &Path, out: &Path) {
    let imgs = dir.join("imgs");
    write_images(&imgs);
    let data = format!("images:{}", imgs.display());
    ok(&[
        "train",
        "--data",
        &data,
        "--image-size",
        "8",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--batch",
        "4",
        "--sample-every",
        "0",
        "--out",
        s(out),
    ]);
}

/// What a path is now, to compare before and after a refused command: its type and bytes.
fn snapshot(p: &Path) -> (String, Vec<u8>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return ("missing".into(), vec![]);
    };
    let t = m.file_type();
    let kind = if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "char device"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    };
    let bytes = if t.is_file() {
        std::fs::read(p).unwrap()
    } else if t.is_dir() {
        // The lock file's text names whoever held it last; what a run holds is the rest.
        let mut names: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".fewstep-lock")
            .collect();
        names.sort();
        let mut all = names.join("\n").into_bytes();
        for n in names {
            if let Ok(b) = std::fs::read(p.join(&n)) {
                all.extend(b);
            }
        }
        all
    } else {
        vec![]
    };
    (kind.into(), bytes)
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(s(p)).unwrap();
    // SAFETY: a valid C string; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
}

/// A character device node like /dev/null (1, 3), where this user may make one (root); else None.
fn mknod_null(p: &Path) -> Option<()> {
    let c = std::ffi::CString::new(s(p)).unwrap();
    // SAFETY: a valid C string; mknod only creates a node.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    (r == 0).then_some(())
}

/// Waits for `child` at most `limit`; kills it and fails when it runs longer (a hang).
fn finishes_within(mut child: std::process::Child, limit: Duration, what: &str) -> String {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut e = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            assert!(!status.success(), "{what} should fail: {e}");
            assert!(!e.contains("panicked"), "{what}: {e}");
            return e;
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            panic!("{what} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

mod inputs;
mod outputs;
