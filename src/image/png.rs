//! PNG files written atomically: a temporary file in the same directory, fsynced, renamed into place.

use std::io::{BufWriter, Write};
use std::path::Path;

use ::image::{ImageEncoder, RgbImage};
use anyhow::Context;

/// Writes a PNG atomically: to a temporary file in the same directory, then renamed into place;
/// creates the parent directory. Errors name the path.
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| {
        format!(
            "cannot create the directory {} for {}",
            parent.display(),
            path.display()
        )
    })?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name to write the PNG to", path.display()))?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> anyhow::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut writer = BufWriter::new(file);
        ::image::codecs::png::PngEncoder::new(&mut writer).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ::image::ExtendedColorType::Rgb8,
        )?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!(
            "cannot write the PNG {} (via {})",
            path.display(),
            tmp.display()
        )));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!(
            "cannot move the PNG into place at {}",
            path.display()
        )));
    }
    Ok(())
}
