//! PNG files written atomically: a temporary file in the same directory, fsynced, renamed into place.

use std::path::Path;

use ::image::{ImageEncoder, RgbImage};
use anyhow::Context;

/// Writes a PNG atomically (`atomic_file::write`: a temporary file in the same
/// directory, fsynced, renamed into place, the directory fsynced); creates the parent directory.
/// Errors name the path.
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    ::image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ::image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("cannot encode the PNG for {}", path.display()))?;
    crate::atomic_file::write(path, &bytes)
        .with_context(|| format!("cannot write the PNG {}", path.display()))
}
