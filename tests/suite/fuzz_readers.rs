//! Reader fuzzing with a fixed seed (issue 13): thousands of mutated model files (header bytes,
//! the header length, metadata fields, tensor shapes and offsets, sizes up to 2^64-1) and
//! hundreds of mutated IDX, CIFAR-10 and image-folder inputs. Each must give an error or a
//! valid result, never a panic, within bounded time and memory. No GPU: only the readers run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde_json::{json, Value};

use fewstep::data::{DataSpec, Dataset, Split};
use fewstep::diffusion::{parse_model, save_model, ModelMeta};
use fewstep::nn::{HostTensor, Layout, StoreAs, UNetConfig};

const SEED: u64 = 0x5EED_F00D;

/// Values that break size arithmetic.
fn nasty_number(rng: &mut Pcg64) -> Value {
    let picks = [
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(7),
        json!(1000),
        json!(1_000_000),
        json!(65535),
        json!(65536),
        json!(u32::MAX),
        json!(1u64 << 32),
        json!((1u64 << 32) + 1),
        json!(1u64 << 63),
        json!(u64::MAX - 1),
        json!(u64::MAX),
        json!(-1),
        json!(-9_223_372_036_854_775_808i64),
        json!(1.5),
        json!(1e300),
        json!("12"),
        json!(null),
        json!([]),
        json!([u64::MAX]),
        json!({}),
    ];
    picks[rng.random_range(0..picks.len())].clone()
}

/// A valid small model file (the tiny preset at 8x8, f16) and its header split out.
fn seed_model() -> (Value, Vec<u8>) {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-steps-4.f16.safetensors");
    let bytes = std::fs::read(asset).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut meta: Value =
        serde_json::from_str(header["__metadata__"]["fewstep"].as_str().unwrap()).unwrap();
    let heads = match meta["parameterization"].as_str() {
        Some("both") => 2,
        _ => 1,
    };
    let arch = UNetConfig::preset("tiny", 1, 8, 8, heads).unwrap();
    meta["arch"] = serde_json::to_value(&arch).unwrap();
    meta["image"] = json!([1, 8, 8]);
    let meta: ModelMeta = serde_json::from_value(meta).unwrap();
    let tensors: Vec<HostTensor> = Layout::new(&arch)
        .unwrap()
        .specs
        .iter()
        .map(|s| HostTensor {
            name: s.name.clone(),
            shape: s.shape.clone(),
            data: vec![0.01; s.numel()],
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seed.safetensors");
    save_model(&p, &meta, &tensors, StoreAs::F16).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    parse_model(&p, &bytes).expect("the seed model parses");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn assemble(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut json = serde_json::to_vec(header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Runs `f`, failing the test on a panic; returns whether it gave an error.
fn no_panic<T, E: std::fmt::Display>(what: &str, f: impl FnOnce() -> Result<T, E>) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(_)) => false,
        Ok(Err(e)) => {
            let text = e.to_string();
            assert!(!text.is_empty(), "{what}: an empty error message");
            true
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: the reader panicked: {msg}");
        }
    }
}

const ARCH_FIELDS: [&str; 11] = [
    "ch",
    "mult",
    "res_blocks",
    "attn_res",
    "groups",
    "in_channels",
    "out_channels",
    "height",
    "width",
    "dropout",
    "preset",
];
const META_FIELDS: [&str; 8] = [
    "format_version",
    "image",
    "parameterization",
    "schedule",
    "steps",
    "lineage",
    "training_steps",
    "dataset",
];

#[test]
fn mutated_model_files_give_errors_never_panics() {
    let start = Instant::now();
    let (header, data) = seed_model();
    let mut rng = Pcg64::seed_from_u64(SEED);
    let path = Path::new("fuzz.safetensors");
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let (mut cases, mut errors) = (0, 0);
    for i in 0..2400 {
        let kind = i % 6;
        let bytes = match kind {
            // A metadata field of the architecture, then of the description.
            0 | 1 => {
                let mut h = header.clone();
                let mut meta: Value =
                    serde_json::from_str(h["__metadata__"]["fewstep"].as_str().unwrap()).unwrap();
                for _ in 0..rng.random_range(1..=3) {
                    if kind == 0 {
                        let f = ARCH_FIELDS[rng.random_range(0..ARCH_FIELDS.len())];
                        meta["arch"][f] = match (f, rng.random_range(0..3)) {
                            ("mult" | "attn_res", 0) => {
                                let len = rng.random_range(0..40);
                                Value::Array((0..len).map(|_| nasty_number(&mut rng)).collect())
                            }
                            _ => nasty_number(&mut rng),
                        };
                    } else {
                        let f = META_FIELDS[rng.random_range(0..META_FIELDS.len())];
                        meta[f] = match f {
                            "image" => json!([
                                nasty_number(&mut rng),
                                nasty_number(&mut rng),
                                nasty_number(&mut rng)
                            ]),
                            "lineage" => json!({
                                "parent_sha256": null,
                                "halvings": nasty_number(&mut rng),
                                "steps_path": [nasty_number(&mut rng), nasty_number(&mut rng)],
                            }),
                            _ => nasty_number(&mut rng),
                        };
                    }
                }
                h["__metadata__"]["fewstep"] = Value::String(meta.to_string());
                assemble(&h, &data)
            }
            // A tensor's shape, offsets or dtype.
            2 => {
                let mut h = header.clone();
                let name = &names[rng.random_range(0..names.len())];
                match rng.random_range(0..4) {
                    0 => {
                        let len = rng.random_range(0..6);
                        h[name]["shape"] =
                            Value::Array((0..len).map(|_| nasty_number(&mut rng)).collect());
                    }
                    1 => {
                        h[name]["data_offsets"] =
                            json!([nasty_number(&mut rng), nasty_number(&mut rng)])
                    }
                    2 => {
                        let d = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "XX"];
                        h[name]["dtype"] = json!(d[rng.random_range(0..d.len())]);
                    }
                    _ => {
                        h.as_object_mut().unwrap().remove(name.as_str());
                    }
                }
                assemble(&h, &data)
            }
            // Random bytes of the header overwritten.
            3 => {
                let mut b = assemble(&header, &data);
                let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                for _ in 0..rng.random_range(1..=8) {
                    let at = rng.random_range(8..8 + n);
                    b[at] = rng.random();
                }
                b
            }
            // The header length.
            4 => {
                let mut b = assemble(&header, &data);
                let v: u64 = match rng.random_range(0..4) {
                    0 => u64::MAX - rng.random_range(0..16),
                    1 => rng.random_range(0..64),
                    2 => 1 << rng.random_range(8..64),
                    _ => rng.random(),
                };
                b[..8].copy_from_slice(&v.to_le_bytes());
                b
            }
            // Truncated, or with garbage appended.
            _ => {
                let mut b = assemble(&header, &data);
                if rng.random_bool(0.7) {
                    let keep = rng.random_range(0..b.len());
                    b.truncate(keep);
                } else {
                    let extra = rng.random_range(1..64);
                    b.extend((0..extra).map(|_| rng.random::<u8>()));
                }
                b
            }
        };
        cases += 1;
        if no_panic(&format!("model case {i} (kind {kind})"), || {
            parse_model(path, &bytes)
        }) {
            errors += 1;
        }
    }
    eprintln!(
        "{cases} mutated model files, {errors} refused, in {:?}; peak memory {:?} MiB",
        start.elapsed(),
        peak_rss_mib()
    );
    assert!(cases >= 2000);
    assert!(errors >= cases * 9 / 10, "most mutations must be refused");
    assert!(start.elapsed() < Duration::from_secs(60), "too slow");
    if let Some(mib) = peak_rss_mib() {
        assert!(mib < 2048, "peak memory {mib} MiB");
    }
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

fn nasty_u32(rng: &mut Pcg64) -> u32 {
    let picks = [
        0,
        1,
        2,
        3,
        27,
        28,
        29,
        255,
        65535,
        65536,
        1 << 24,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
    ];
    if rng.random_bool(0.8) {
        picks[rng.random_range(0..picks.len())]
    } else {
        rng.random()
    }
}

#[test]
fn mutated_data_files_give_errors_never_panics() {
    let start = Instant::now();
    let mut rng = Pcg64::seed_from_u64(SEED + 1);
    let tmp = tempfile::tempdir().unwrap();
    let (mut cases, mut errors) = (0, 0);
    // IDX (MNIST-style): header fields, magic numbers, lengths, gzip.
    for i in 0..400 {
        let dir = tmp.path().join(format!("idx{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (n, r, c) = (
            nasty_u32(&mut rng),
            nasty_u32(&mut rng),
            nasty_u32(&mut rng),
        );
        let magic = if rng.random_bool(0.9) {
            2051
        } else {
            rng.random()
        };
        let mut images = idx_header(magic, &[n, r, c]);
        let body = if rng.random_bool(0.5) {
            // What the header asks for when small, else a random amount.
            let want = (n as u64)
                .checked_mul(r as u64)
                .and_then(|v| v.checked_mul(c as u64))
                .filter(|&v| v < 4096);
            want.unwrap_or(rng.random_range(0..4096)) as usize
        } else {
            rng.random_range(0..4096)
        };
        images.extend((0..body).map(|_| rng.random::<u8>()));
        if rng.random_bool(0.2) {
            images.truncate(rng.random_range(0..images.len().max(1)));
        }
        let ln = if rng.random_bool(0.5) {
            n
        } else {
            nasty_u32(&mut rng)
        };
        let mut labels = idx_header(2049, &[ln]);
        let lbody = (ln as usize).min(4096);
        labels.extend((0..lbody).map(|_| rng.random::<u8>()));
        let gz = rng.random_bool(0.2);
        let write = |name: &str, bytes: &[u8]| {
            if gz {
                use std::io::Write;
                let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
                let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                let cut = bytes.len() - bytes.len() / 3;
                e.write_all(&bytes[..cut]).unwrap();
                e.write_all(&bytes[cut..]).unwrap();
                let mut f = e.finish().unwrap();
                if bytes.len().is_multiple_of(5) {
                    // A damaged stream.
                    f.write_all(b"\x1f\x8b\x08garbage").unwrap();
                }
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        };
        write("train-images-idx3-ubyte", &images);
        write("train-labels-idx1-ubyte", &labels);
        let spec: DataSpec = format!("mnist:{}", dir.display()).parse().unwrap();
        cases += 1;
        if no_panic(&format!("idx case {i} ({n}x{r}x{c})"), || {
            let d = Dataset::load(&spec, Split::Train, None)?;
            assert!(!d.is_empty(), "an empty data set was accepted");
            Ok::<_, fewstep::data::DataError>(d)
        }) {
            errors += 1;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // CIFAR-10 binary batches: lengths and label bytes.
    for i in 0..150 {
        let dir = tmp.path().join(format!("cifar{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let len = match rng.random_range(0..4) {
            0 => 0,
            1 => 3073 * rng.random_range(1..3),
            2 => 3073 * rng.random_range(1..3) + rng.random_range(1..3073),
            _ => rng.random_range(0..8000),
        };
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random_range(0..10)).collect();
        if len > 0 && rng.random_bool(0.5) {
            let at = rng.random_range(0..len);
            bytes[at] = rng.random();
        }
        std::fs::write(dir.join("test_batch.bin"), &bytes).unwrap();
        let spec: DataSpec = format!("cifar10:{}", dir.display()).parse().unwrap();
        cases += 1;
        if no_panic(&format!("cifar case {i} ({len} bytes)"), || {
            Dataset::load(&spec, Split::Test, None)
        }) {
            errors += 1;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Image folders: damaged PNG/JPEG files, PNG headers claiming huge sizes.
    let mut png = Vec::new();
    image::RgbImage::from_pixel(5, 4, image::Rgb([1, 2, 3]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for i in 0..60 {
        let dir = tmp.path().join(format!("imgs{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = png.clone();
        match i % 4 {
            0 => b.truncate(rng.random_range(0..b.len())),
            1 => {
                // IHDR width and height (bytes 16..24).
                let w = nasty_u32(&mut rng).to_be_bytes();
                let h = nasty_u32(&mut rng).to_be_bytes();
                b[16..20].copy_from_slice(&w);
                b[20..24].copy_from_slice(&h);
            }
            2 => {
                for _ in 0..4 {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
            }
            _ => {
                b = (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect()
            }
        }
        let ext = if i % 3 == 0 { "jpg" } else { "png" };
        std::fs::write(dir.join(format!("a.{ext}")), &b).unwrap();
        let spec: DataSpec = format!("images:{}", dir.display()).parse().unwrap();
        cases += 1;
        if no_panic(&format!("image case {i}"), || {
            Dataset::load(&spec, Split::Train, Some(8))
        }) {
            errors += 1;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "{cases} mutated data inputs, {errors} refused, in {:?}; peak memory {:?} MiB",
        start.elapsed(),
        peak_rss_mib()
    );
    assert!(cases >= 500);
    assert!(start.elapsed() < Duration::from_secs(60), "too slow");
    if let Some(mib) = peak_rss_mib() {
        assert!(mib < 2048, "peak memory {mib} MiB");
    }
}
