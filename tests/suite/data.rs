//! Data readers and batching: IDX (plain and gzipped), CIFAR-10 binary batches, image folders,
//! the --data syntax, and the deterministic batcher, all on small files made in a temp dir.

use std::io::Write;
use std::path::Path;

use fewstep::data::{Batcher, DataError, DataSpec, Dataset, Split, FASHION_MNIST_DIR};
use tempfile::TempDir;

fn write_file(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    } else {
        f.write_all(bytes).unwrap();
    }
}

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051, n, rows, cols] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2049, labels.len() as u32] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend_from_slice(labels);
    b
}

/// Three 4x5 images with distinct bytes, and their labels.
fn sample_idx() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
    (pixels, vec![3, 1, 4])
}

fn write_idx_set(dir: &Path, prefix: &str, ext: &str, pixels: &[u8], labels: &[u8]) {
    let n = labels.len() as u32;
    write_file(
        &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
        &idx_images(n, 4, 5, pixels),
    );
    write_file(
        &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        &idx_labels(labels),
    );
}

#[test]
fn idx_plain_and_gz_round_trip() {
    let (pixels, labels) = sample_idx();
    for ext in ["", ".gz"] {
        let tmp = TempDir::new().unwrap();
        write_idx_set(tmp.path(), "train", ext, &pixels, &labels);
        // The test split holds a different number of images.
        let test_pixels: Vec<u8> = pixels[..40].iter().map(|p| p ^ 0xff).collect();
        write_idx_set(tmp.path(), "t10k", ext, &test_pixels, &[9, 8]);

        let spec = DataSpec::FashionMnist(Some(tmp.path().to_path_buf()));
        let d = Dataset::load(&spec, Split::Train, None).unwrap();
        assert_eq!(d.name, "fashion-mnist");
        assert_eq!((d.channels, d.height, d.width, d.len()), (1, 4, 5, 3));
        assert_eq!(d.pixels, pixels, "{ext}");
        assert_eq!(d.labels.as_deref(), Some(&labels[..]));
        assert!(d.flip);

        let t = Dataset::load(&spec, Split::Test, Some(4)).err();
        assert!(matches!(t, Some(DataError::FixedSize { .. })), "{t:?}");
        let spec = DataSpec::Mnist(Some(tmp.path().to_path_buf()));
        let t = Dataset::load(&spec, Split::Test, None).unwrap();
        assert_eq!(t.name, "mnist");
        assert!(!t.flip);
        assert_eq!(t.pixels, test_pixels);
        assert_eq!(t.labels.as_deref(), Some(&[9u8, 8][..]));
    }
}

#[test]
fn idx_truncated_file_names_file_and_sizes() {
    let (pixels, labels) = sample_idx();
    let tmp = TempDir::new().unwrap();
    write_idx_set(tmp.path(), "train", "", &pixels, &labels);
    let path = tmp.path().join("train-images-idx3-ubyte");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 7]).unwrap();
    let err = Dataset::load(
        &DataSpec::Mnist(Some(tmp.path().into())),
        Split::Train,
        None,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&full.len().to_string()), "{msg}");
    assert!(msg.contains(&(full.len() - 7).to_string()), "{msg}");

    // Truncated inside a valid gzip stream: sizes are counted after decompression.
    std::fs::remove_file(&path).unwrap();
    let gz = tmp.path().join("train-images-idx3-ubyte.gz");
    write_file(&gz, &full[..full.len() - 1]);
    let msg = Dataset::load(
        &DataSpec::Mnist(Some(tmp.path().into())),
        Split::Train,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains(&gz.display().to_string()), "{msg}");
}

#[test]
fn idx_wrong_magic_names_file() {
    let (pixels, labels) = sample_idx();
    let tmp = TempDir::new().unwrap();
    write_idx_set(tmp.path(), "train", ".gz", &pixels, &labels);
    // Swap the labels file for an images file: magic 2051 where 2049 belongs.
    let path = tmp.path().join("train-labels-idx1-ubyte.gz");
    write_file(&path, &idx_images(3, 4, 5, &pixels));
    let err = Dataset::load(
        &DataSpec::FashionMnist(Some(tmp.path().into())),
        Split::Train,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("2049"), "{msg}");
}

#[test]
fn missing_dirs_explain_the_fix() {
    let tmp = TempDir::new().unwrap();
    let gone = tmp.path().join("nowhere");
    let msg = Dataset::load(
        &DataSpec::FashionMnist(Some(gone.clone())),
        Split::Train,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
    assert!(msg.contains("fashion-mnist:DIR"), "{msg}");
    assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    assert!(msg.contains(&gone.display().to_string()), "{msg}");

    let msg = Dataset::load(&DataSpec::Mnist(Some(gone.clone())), Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mnist:DIR"), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(!msg.contains("apt-get"), "{msg}");

    // The directory exists but a file is missing: the message names the file.
    let msg = Dataset::load(
        &DataSpec::FashionMnist(Some(tmp.path().into())),
        Split::Test,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
    assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
}

/// A CIFAR batch of two records whose bytes encode (record, channel, y, x).
fn cifar_batch(first_label: u8, salt: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for r in 0..2u8 {
        b.push(first_label + r);
        for c in 0..3usize {
            for y in 0..32usize {
                for x in 0..32usize {
                    b.push((c * 80 + y * 2 + x) as u8 ^ salt ^ r);
                }
            }
        }
    }
    b
}

#[test]
fn cifar_batches_load_chw() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    for i in 1..=5u8 {
        write_file(
            &dir.join(format!("data_batch_{i}.bin")),
            &cifar_batch(i, i * 16),
        );
    }
    write_file(&dir.join("test_batch.bin"), &cifar_batch(0, 99));

    // The parent folder works too: the loader looks in cifar-10-batches-bin.
    let spec: DataSpec = format!("cifar10:{}", tmp.path().display()).parse().unwrap();
    let d = Dataset::load(&spec, Split::Train, None).unwrap();
    assert_eq!(
        (d.name.as_str(), d.channels, d.height, d.width),
        ("cifar10", 3, 32, 32)
    );
    assert_eq!(d.len(), 10);
    assert!(d.flip);
    assert_eq!(
        d.labels.as_deref(),
        Some(&[1, 2, 2, 3, 3, 4, 4, 5, 5, 6][..])
    );
    // Image 3 is record 1 of batch 2 (salt 32): channel c, row y, column x at c*1024 + y*32 + x.
    let img = &d.pixels[3 * 3072..4 * 3072];
    for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 31), (2, 10, 3)] {
        assert_eq!(
            img[c * 1024 + y * 32 + x],
            (c * 80 + y * 2 + x) as u8 ^ 32 ^ 1
        );
    }

    let t = Dataset::load(&DataSpec::Cifar10(dir.clone()), Split::Test, Some(32)).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.labels.as_deref(), Some(&[0, 1][..]));

    // A batch that is not a whole number of records names the file and the layout.
    let bad = dir.join("test_batch.bin");
    let mut bytes = cifar_batch(0, 0);
    bytes.pop();
    write_file(&bad, &bytes);
    let msg = Dataset::load(&DataSpec::Cifar10(dir.clone()), Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("3073"), "{msg}");
    assert!(Dataset::load(&DataSpec::Cifar10(dir), Split::Test, Some(28)).is_err());
}

#[test]
fn image_folder_crops_and_resizes() {
    let tmp = TempDir::new().unwrap();
    // Wide image: red left third, green middle, blue right third; the centre crop is mostly green.
    let wide = image::RgbImage::from_fn(60, 20, |x, _| match x {
        0..20 => image::Rgb([255, 0, 0]),
        20..40 => image::Rgb([0, 255, 0]),
        _ => image::Rgb([0, 0, 255]),
    });
    // Tall gray image.
    let tall = image::RgbImage::from_fn(10, 40, |_, _| image::Rgb([100, 100, 100]));
    wide.save(tmp.path().join("b_wide.png")).unwrap();
    tall.save(tmp.path().join("a_tall.PNG")).unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "not an image").unwrap();

    let d = Dataset::load(&DataSpec::Images(tmp.path().into()), Split::Train, Some(16)).unwrap();
    assert_eq!(
        (d.name.as_str(), d.len(), d.channels, d.height, d.width),
        ("images", 2, 3, 16, 16)
    );
    assert!(d.flip && d.labels.is_none());
    // Sorted by name: the tall one first, uniformly gray.
    assert!(d.image(0).iter().all(|&p| p.abs_diff(100) <= 1));
    // The wide one's centre is green: G plane high, R and B low.
    let at = |c: usize| d.image(1)[c * 256 + 8 * 16 + 8];
    assert!(
        at(0) < 10 && at(1) > 245 && at(2) < 10,
        "{:?}",
        (at(0), at(1), at(2))
    );

    let t = Dataset::load(&DataSpec::Images(tmp.path().into()), Split::Test, None).unwrap();
    assert_eq!((t.len(), t.height, t.width), (2, 32, 32));

    // A broken image names itself; an empty folder says so.
    let broken = tmp.path().join("c_broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let msg = Dataset::load(&DataSpec::Images(tmp.path().into()), Split::Train, Some(16))
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&broken.display().to_string()), "{msg}");
    let empty = TempDir::new().unwrap();
    let err =
        Dataset::load(&DataSpec::Images(empty.path().into()), Split::Train, None).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains(&empty.path().display().to_string()));
}

#[test]
fn data_spec_parses_and_round_trips() {
    let cases = [
        ("fashion-mnist", DataSpec::FashionMnist(None)),
        (
            "fashion-mnist:/data/fm",
            DataSpec::FashionMnist(Some("/data/fm".into())),
        ),
        ("mnist", DataSpec::Mnist(None)),
        ("mnist:rel/dir", DataSpec::Mnist(Some("rel/dir".into()))),
        ("cifar10:/c10", DataSpec::Cifar10("/c10".into())),
        ("images:./pics", DataSpec::Images("./pics".into())),
    ];
    for (text, spec) in cases {
        let parsed: DataSpec = text.parse().unwrap();
        assert_eq!(parsed, spec);
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.to_string().parse::<DataSpec>().unwrap(), spec);
    }
    let msg = "foo".parse::<DataSpec>().unwrap_err().to_string();
    for form in ["fashion-mnist", "mnist:DIR", "cifar10:DIR", "images:DIR"] {
        assert!(msg.contains(form), "{msg}");
    }
    assert!(msg.contains("foo"), "{msg}");
    for bad in ["cifar10", "images", "mnist:", "foo:bar", ""] {
        assert!(bad.parse::<DataSpec>().is_err(), "{bad:?}");
    }
}

#[test]
fn synthetic_patterns_are_distinct() {
    for (c, h, w) in [(1, 8, 8), (3, 16, 16), (1, 28, 28)] {
        let d = Dataset::synthetic_patterns(24, c, h, w);
        assert_eq!((d.len(), d.channels, d.height, d.width), (24, c, h, w));
        assert!(!d.flip);
        assert_eq!(
            d.labels.as_deref().unwrap(),
            &(0..24).collect::<Vec<u8>>()[..]
        );
        for i in 0..24 {
            let img = d.image(i);
            let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
            assert!(
                hi - lo > 100,
                "pattern {i} at {c}x{h}x{w} has little contrast"
            );
            for j in 0..i {
                assert_ne!(img, d.image(j), "patterns {j} and {i} at {c}x{h}x{w}");
            }
        }
    }
}

#[test]
fn write_image_scales_and_mirrors() {
    // One 2-channel 2x3 image with bytes 0, 51, 255, ...
    let pixels = vec![0, 51, 255, 102, 153, 204, 10, 20, 30, 40, 50, 60];
    let d = Dataset::from_pixels("t", 2, 2, 3, pixels.clone(), None, true);
    let mut plain = vec![0.0; 12];
    let mut mirrored = vec![0.0; 12];
    d.write_image(0, false, &mut plain);
    d.write_image(0, true, &mut mirrored);
    for (v, &p) in plain.iter().zip(&pixels) {
        assert!((v - (p as f32 / 127.5 - 1.0)).abs() < 1e-6);
    }
    assert_eq!(plain[0], -1.0);
    assert_eq!(plain[2], 1.0);
    for c in 0..2 {
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(mirrored[c * 6 + y * 3 + x], plain[c * 6 + y * 3 + 2 - x]);
            }
        }
    }
}

#[test]
fn batcher_is_deterministic_and_covers_each_epoch() {
    let mut d = Dataset::synthetic_patterns(12, 1, 6, 6);
    d.flip = true;
    let mut a = Batcher::new(7, 4);
    let mut b = Batcher::new(7, 4);
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());

    // Same (seed, step) -> same batch, whatever was asked before (b jumps around).
    b.fill(&d, 40, &mut out_b);
    let ia = a.fill(&d, 5, &mut out_a);
    let ib = b.fill(&d, 5, &mut out_b);
    assert_eq!(ia, ib);
    assert_eq!(out_a, out_b);
    assert_eq!(out_a.len(), 4 * 36);
    assert!(out_a.iter().all(|v| (-1.0..=1.0).contains(v)));

    let mut other = Vec::new();
    a.fill(&d, 6, &mut other);
    assert_ne!(out_a, other, "steps 5 and 6 gave the same batch");
    let mut other_seed = Batcher::new(8, 4);
    let mut out_c = Vec::new();
    let ic = other_seed.fill(&d, 5, &mut out_c);
    assert!(
        ic != ia || out_c != out_a,
        "seeds 7 and 8 gave the same batch"
    );

    // Each epoch (3 steps of 4 out of 12) uses every index exactly once, in a fresh order.
    let mut orders = Vec::new();
    let mut flips = 0;
    for epoch in 0..4u64 {
        let mut seen = Vec::new();
        for s in 0..3 {
            let step = epoch * 3 + s;
            let idx = a.fill(&d, step, &mut out_a);
            for (j, &i) in idx.iter().enumerate() {
                let got = &out_a[j * 36..(j + 1) * 36];
                let mut plain = vec![0.0; 36];
                let mut mirrored = vec![0.0; 36];
                d.write_image(i, false, &mut plain);
                d.write_image(i, true, &mut mirrored);
                assert!(got == &plain[..] || got == &mirrored[..]);
                if got != &plain[..] {
                    flips += 1;
                }
            }
            seen.extend(idx);
        }
        orders.push(seen.clone());
        seen.sort_unstable();
        assert_eq!(seen, (0..12).collect::<Vec<_>>(), "epoch {epoch}");
    }
    assert!(
        orders.windows(2).any(|w| w[0] != w[1]),
        "every epoch in the same order"
    );
    assert!((5..=43).contains(&flips), "{flips} of 48 samples mirrored");

    // Without flips allowed, every sample is written as stored.
    d.flip = false;
    let idx = a.fill(&d, 2, &mut out_a);
    for (j, &i) in idx.iter().enumerate() {
        let mut plain = vec![0.0; 36];
        d.write_image(i, false, &mut plain);
        assert_eq!(&out_a[j * 36..(j + 1) * 36], &plain[..]);
    }
}

#[test]
fn batch_spanning_epochs() {
    // 5 images, batch 3: step 1 covers samples 3..6, the last from epoch 1.
    let d = Dataset::synthetic_patterns(5, 1, 4, 4);
    let mut b = Batcher::new(1, 3);
    let mut out = Vec::new();
    let mut all = Vec::new();
    for step in 0..5 {
        all.extend(b.fill(&d, step, &mut out));
    }
    for epoch in all.chunks(5) {
        let mut e = epoch.to_vec();
        e.sort_unstable();
        assert_eq!(e, vec![0, 1, 2, 3, 4]);
    }
    let mut fresh = Batcher::new(1, 3);
    assert_eq!(fresh.fill(&d, 1, &mut out), all[3..6].to_vec());
}

#[test]
fn installed_fashion_mnist_test_split() {
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        eprintln!(
            "skipping: {FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let d = Dataset::load(&DataSpec::FashionMnist(None), Split::Test, Some(28)).unwrap();
    assert_eq!((d.len(), d.channels, d.height, d.width), (10000, 1, 28, 28));
    let labels = d.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 10000);
    assert!(labels.iter().all(|&l| l < 10));
    let mut counts = [0usize; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
}
