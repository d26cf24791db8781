//! The in-memory data set: every image as bytes, CHW, plus optional labels.

use std::fmt;

use super::{cifar, folder, idx, DataError, DataSpec, Split};

/// A whole split of a data set held in memory as bytes.
#[derive(Clone)]
pub struct Dataset {
    /// "fashion-mnist", "mnist", "cifar10", "images" (or a caller's name for `from_pixels`).
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// N * C * H * W bytes, each image CHW.
    pub pixels: Vec<u8>,
    pub labels: Option<Vec<u8>>,
    /// The classes' names in label order (empty when unlabelled).
    pub class_names: Vec<String>,
    /// Whether random horizontal flips are a valid augmentation (not for digits).
    pub flip: bool,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataset({}: {} images of {}x{}x{}, labels: {}, flip: {})",
            self.name,
            self.len(),
            self.channels,
            self.height,
            self.width,
            self.labels.is_some(),
            self.flip
        )
    }
}

impl Dataset {
    /// Reads one split of the data set `spec` names.
    ///
    /// `image_size` only resizes `images:DIR` (default 32); MNIST-style sets are fixed at their
    /// native size (28) and CIFAR-10 at 32, and asking for another size is an error.
    /// `images:DIR` has no held-out part: `Split::Test` gives the same images as `Split::Train`.
    pub fn load(
        spec: &DataSpec,
        split: Split,
        image_size: Option<usize>,
    ) -> Result<Dataset, DataError> {
        let dir = spec.dir();
        match spec {
            DataSpec::FashionMnist(_) => idx::load("fashion-mnist", &dir, split, image_size, true),
            DataSpec::Mnist(_) => idx::load("mnist", &dir, split, image_size, false),
            DataSpec::Cifar10(_) => cifar::load(&dir, split, image_size),
            DataSpec::Images(_) => folder::load(&dir, image_size),
        }
    }

    /// Wraps bytes already in memory. Panics unless `pixels` holds a whole number of
    /// `channels * height * width` images and `labels` (if any) one per image.
    pub fn from_pixels(
        name: &str,
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<u8>>,
        flip: bool,
    ) -> Dataset {
        let image_len = channels * height * width;
        assert!(
            image_len > 0,
            "Dataset::from_pixels: empty image shape {channels}x{height}x{width}"
        );
        assert_eq!(
            pixels.len() % image_len,
            0,
            "Dataset::from_pixels: {} bytes is not a whole number of {channels}x{height}x{width} images",
            pixels.len()
        );
        if let Some(l) = &labels {
            assert_eq!(
                l.len(),
                pixels.len() / image_len,
                "Dataset::from_pixels: label count differs from image count"
            );
        }
        Dataset {
            name: name.to_string(),
            channels,
            height,
            width,
            class_names: labels
                .as_ref()
                .map(|_| known_class_names(name))
                .unwrap_or_default(),
            pixels,
            labels,
            flip,
        }
    }

    /// The same data with these class names (label i is `names[i]`).
    pub fn with_class_names(mut self, names: Vec<String>) -> Dataset {
        self.class_names = names;
        self
    }

    /// How many classes the labels use: the named classes, else 1 + the largest label; 0
    /// without labels.
    pub fn class_count(&self) -> usize {
        match &self.labels {
            None => 0,
            Some(_) if !self.class_names.is_empty() => self.class_names.len(),
            Some(l) => l.iter().max().map_or(0, |&m| m as usize + 1),
        }
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// C * H * W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i`, CHW.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Writes image i scaled to [-1, 1] (p/127.5 - 1), mirrored left-right when `flip`.
    /// `out` must hold exactly `image_len()` values.
    pub fn write_image(&self, i: usize, flip: bool, out: &mut [f32]) {
        assert_eq!(out.len(), self.image_len(), "write_image: output length");
        let src = self.image(i);
        let w = self.width;
        for (src_row, dst_row) in src.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            if flip {
                for (d, &p) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                    *d = f32::from(p) / 127.5 - 1.0;
                }
            } else {
                for (d, &p) in dst_row.iter_mut().zip(src_row) {
                    *d = f32::from(p) / 127.5 - 1.0;
                }
            }
        }
    }

    /// A small synthetic set for tests: `count` fixed, distinct, smooth-edged patterns (disc, bars,
    /// ring, cross, square, diagonal, two dots; later ones shifted, resized and on lighter
    /// backgrounds) of `channels` x `height` x `width`, labels 0..count, `flip` false.
    pub fn synthetic_patterns(
        count: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Dataset {
        let image_len = channels * height * width;
        let mut pixels = Vec::with_capacity(count * image_len);
        let mut coverage = vec![0f32; height * width];
        for i in 0..count {
            let shape = i % 8;
            let variant = i / 8;
            // Later variants: smaller shapes, moved centres, brighter backgrounds.
            let s = 1.0 - 0.12 * (variant % 4) as f32;
            let (cx, cy) = [(0.0, 0.0), (0.2, -0.15), (-0.2, 0.15), (0.15, 0.2)][variant % 4];
            let bg = 40.0 * ((variant / 4) % 4) as f32;
            // About one pixel of soft edge.
            let sharp = 0.5 * height.min(width) as f32;
            for y in 0..height {
                for x in 0..width {
                    let u = ((x as f32 + 0.5) / width as f32) * 2.0 - 1.0 - cx;
                    let v = ((y as f32 + 0.5) / height as f32) * 2.0 - 1.0 - cy;
                    let d = signed_distance(shape, u, v, s);
                    coverage[y * width + x] = (0.5 - d * sharp).clamp(0.0, 1.0);
                }
            }
            for c in 0..channels {
                let fg = pattern_colour(i, c, channels);
                pixels.extend(
                    coverage
                        .iter()
                        .map(|&a| (bg + (fg - bg) * a).round().clamp(0.0, 255.0) as u8),
                );
            }
        }
        let labels = (0..count).map(|i| i as u8).collect();
        Dataset::from_pixels(
            "synthetic",
            channels,
            height,
            width,
            pixels,
            Some(labels),
            false,
        )
    }
}

/// The class names of the data sets fewstep knows by name (label order); empty for others.
pub fn known_class_names(name: &str) -> Vec<String> {
    let names: &[&str] = match name {
        "fashion-mnist" => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "mnist" => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "cifar10" => &[
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        _ => &[],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Signed distance (negative inside) from (u, v) in [-1, 1]^2 to pattern `shape` at scale `s`.
fn signed_distance(shape: usize, u: f32, v: f32, s: f32) -> f32 {
    let bar = |across: f32, along: f32, half_width: f32| {
        (across.abs() - half_width).max(along.abs() - 0.8 * s)
    };
    match shape {
        0 => (u * u + v * v).sqrt() - 0.6 * s,
        1 => bar(v, u, 0.22 * s),
        2 => bar(u, v, 0.22 * s),
        3 => ((u * u + v * v).sqrt() - 0.55 * s).abs() - 0.16 * s,
        4 => bar(v, u, 0.14 * s).min(bar(u, v, 0.14 * s)),
        5 => u.abs().max(v.abs()) - 0.5 * s,
        6 => ((u - v).abs() / std::f32::consts::SQRT_2 - 0.2 * s).max(u.abs().max(v.abs()) - 0.85),
        _ => {
            let dot = |du: f32| ((u - du) * (u - du) + v * v).sqrt() - 0.3 * s;
            dot(-0.45 * s).min(dot(0.45 * s))
        }
    }
}

/// Foreground level of channel `c` for pattern `i`: white for one channel, a hue from a small
/// palette for three or more.
fn pattern_colour(i: usize, c: usize, channels: usize) -> f32 {
    if channels < 3 {
        return 255.0;
    }
    const PALETTE: [[f32; 3]; 6] = [
        [255.0, 90.0, 70.0],
        [80.0, 230.0, 90.0],
        [90.0, 120.0, 255.0],
        [250.0, 230.0, 80.0],
        [70.0, 230.0, 240.0],
        [240.0, 90.0, 230.0],
    ];
    PALETTE[i % PALETTE.len()].get(c).copied().unwrap_or(200.0)
}
