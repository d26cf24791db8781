//! A folder of PNG/JPEG files: each converted to RGB, centre-cropped to a square and resized.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};

use super::{DataError, Dataset};

/// The side length used when no image size is given.
pub const DEFAULT_SIZE: usize = 32;

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// The image files directly in `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NotFound {
            what: "image folder".to_string(),
            path: dir.to_path_buf(),
            hint: "Pass `--data images:DIR` with DIR an existing folder of .png/.jpg/.jpeg files."
                .to_string(),
        });
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(DataError::NoImages {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Reads one image as `size` x `size` RGB, appending its CHW bytes to `out`.
fn load_one(path: &Path, size: u32, out: &mut Vec<u8>) -> Result<(), DataError> {
    // The one reading rule (a regular file, bounded), then decoded from memory.
    let bytes = crate::input_file::read(path, crate::input_file::DATA_MAX)
        .map_err(|e| DataError::io(path, e))?;
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|err| DataError::Image {
            path: path.to_path_buf(),
            err,
        })?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    if side == 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            detail: "the image is empty (0 pixels wide or high)".to_string(),
        });
    }
    let square = imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let resized = if side == size {
        square
    } else {
        imageops::resize(&square, size, size, FilterType::Lanczos3)
    };
    let plane = (size * size) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0);
    for (i, p) in resized.pixels().enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = p.0[c];
        }
    }
    Ok(())
}

/// One class of a folder of class folders: its name and its image files.
pub type ClassFolder = (String, Vec<PathBuf>);

/// The class subfolders of `dir` (sorted by name) when `dir` holds no image files itself but
/// folders that do: one class per subfolder, its name the class's name.
pub fn class_folders(dir: &Path) -> Result<Option<Vec<ClassFolder>>, DataError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut direct = false;
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_file() && is_image(&path) {
            direct = true;
        } else if path.is_dir() {
            subdirs.push(path);
        }
    }
    if direct || subdirs.is_empty() {
        return Ok(None);
    }
    subdirs.sort();
    let mut classes = Vec::new();
    for sub in subdirs {
        let name = sub
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| DataError::Format {
                path: sub.clone(),
                detail: "a class folder's name must be UTF-8 text (it becomes the class's name)"
                    .to_string(),
            })?;
        if name.starts_with('.') {
            continue;
        }
        classes.push((name, list_images(&sub)?));
    }
    if classes.len() > 256 {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            detail: format!(
                "{} class folders; fewstep conditions on at most 256 classes: merge some",
                classes.len()
            ),
        });
    }
    Ok((!classes.is_empty()).then_some(classes))
}

/// Loads every image in `dir` at `image_size` (default [`DEFAULT_SIZE`]) pixels square. A
/// folder of class folders (`dir/CLASS/*.png`, no images directly in `dir`) gives labelled data
/// whose class names are the folder names.
pub fn load(dir: &Path, image_size: Option<usize>) -> Result<Dataset, DataError> {
    let size = image_size.unwrap_or(DEFAULT_SIZE);
    if size == 0 || size > 4096 {
        return Err(DataError::BadImageSize(size));
    }
    if let Some(classes) = class_folders(dir)? {
        let count: usize = classes.iter().map(|(_, f)| f.len()).sum();
        let mut pixels = Vec::with_capacity(count * 3 * size * size);
        let mut labels = Vec::with_capacity(count);
        for (label, (_, files)) in classes.iter().enumerate() {
            for path in files {
                load_one(path, size as u32, &mut pixels)?;
                labels.push(label as u8);
            }
        }
        let names = classes.into_iter().map(|(n, _)| n).collect();
        return Ok(
            Dataset::from_pixels("images", 3, size, size, pixels, Some(labels), true)
                .with_class_names(names),
        );
    }
    let files = list_images(dir)?;
    let mut pixels = Vec::with_capacity(files.len() * 3 * size * size);
    for path in &files {
        load_one(path, size as u32, &mut pixels)?;
    }
    Ok(Dataset::from_pixels(
        "images", 3, size, size, pixels, None, true,
    ))
}
