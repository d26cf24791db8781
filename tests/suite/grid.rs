//! Sample grids, labelled rows, the bitmap font and atomic PNG writes.

use fewstep::image::font::{draw_text, glyph, glyph_table, text_height, text_width};
use fewstep::image::{image_grid, labelled_rows, save_png, BACKGROUND};
use image::{Rgb, RgbImage};

#[test]
fn grid_dimensions_and_values() {
    // 5 gray 3x2 images (h=3, w=2) in 2 columns, scale 2, pad 1: 3 rows.
    let (n, c, h, w) = (5, 1, 3, 2);
    let data: Vec<f32> = (0..n * c * h * w)
        .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
        .collect();
    let g = image_grid(&data, n, c, h, w, 2, 2, 1);
    assert_eq!(g.dimensions(), (2 * (2 * 2 + 1) + 1, 3 * (3 * 2 + 1) + 1));
    // Image 0, pixel (0,0) = -1 -> black, pixel (1,0) = 1 -> white; both scaled 2x.
    for (dx, dy) in [(0, 0), (1, 1)] {
        assert_eq!(g.get_pixel(1 + dx, 1 + dy), &Rgb([0, 0, 0]));
        assert_eq!(g.get_pixel(3 + dx, 1 + dy), &Rgb([255, 255, 255]));
    }
    // Gaps and the empty sixth cell are background.
    assert_eq!(g.get_pixel(0, 0), &Rgb(BACKGROUND));
    assert_eq!(g.get_pixel(5, 3), &Rgb(BACKGROUND));
    assert_eq!(g.get_pixel(7, 16), &Rgb(BACKGROUND));

    // Out-of-range values clamp; RGB channels land in their own colour.
    let rgb = [5.0, -3.0, 0.0];
    let g = image_grid(&rgb, 1, 3, 1, 1, 4, 1, 0);
    assert_eq!(g.dimensions(), (1, 1));
    assert_eq!(g.get_pixel(0, 0), &Rgb([255, 0, 128]));
}

#[test]
fn labelled_rows_have_labels() {
    let (c, h, w, scale) = (1, 8, 8, 2);
    let row = |v: f32| vec![v; 3 * c * h * w];
    let rows = vec![
        ("1 step".to_string(), row(-1.0)),
        ("4 steps".to_string(), row(1.0)),
    ];
    let bare = image_grid(&row(0.0), 3, c, h, w, 3, scale, 2 + scale);
    let img = labelled_rows(Some("teacher vs student (64%)"), &rows, c, h, w, scale);
    assert!(
        img.width() > bare.width(),
        "{} vs {}",
        img.width(),
        bare.width()
    );
    assert!(img.height() > bare.height());

    // The label column (left of the first image) holds some text pixels.
    let text_px = (0..img.height())
        .flat_map(|y| (0..12).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y) != &Rgb(BACKGROUND))
        .count();
    assert!(
        text_px > 20,
        "{text_px} non-background pixels in the label area"
    );

    // Without a title the picture is shorter.
    let untitled = labelled_rows(None, &rows, c, h, w, scale);
    assert!(untitled.height() < img.height());
}

#[test]
fn font_draws_and_measures() {
    assert_eq!(text_width("", 3), 0);
    assert_eq!(text_width("ab", 1), 11);
    assert_eq!(text_width("ab", 2), 22);
    assert_eq!(text_height(2), 18);
    let mut img = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
    draw_text(&mut img, 1, 1, "Hi", 2, [255, 0, 0]);
    let inked = img.pixels().filter(|p| p.0 == [255, 0, 0]).count();
    assert!(inked > 0 && inked % 4 == 0, "{inked}");
    // An unknown character draws a box; text past the edge is clipped without panicking.
    let mut boxed = RgbImage::new(10, 10);
    draw_text(&mut boxed, 0, 0, "\u{2603}", 1, [9, 9, 9]);
    assert_eq!(
        boxed.pixels().filter(|p| p.0 == [9, 9, 9]).count(),
        2 * 5 + 2 * 5
    );
    draw_text(&mut boxed, 8, 8, "WWW", 3, [1, 1, 1]);
}

#[test]
fn save_png_round_trips() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data: Vec<f32> = (0..2 * 3 * 4 * 4)
        .map(|i| (i as f32 / 48.0) * 2.0 - 1.0)
        .collect();
    let img = image_grid(&data, 2, 3, 4, 4, 2, 3, 1);
    let path = tmp.path().join("new/dir/grid.png");
    save_png(&img, &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, img);
    // Overwriting works and leaves no temporary file behind.
    save_png(&img, &path).unwrap();
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("grid.png")]);

    // A parent that is a file cannot be created: the error names the path.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let bad = blocker.join("grid.png");
    let msg = format!("{:#}", save_png(&img, &bad).unwrap_err());
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
}

#[test]
fn glyphs_are_well_formed_and_unique() {
    let table = glyph_table();
    for (i, (c, rows)) in table.iter().enumerate() {
        for row in rows {
            assert_eq!(row.len(), 5, "glyph {c:?}");
            assert!(row.bytes().all(|b| b == b'#' || b == b'.'), "glyph {c:?}");
        }
        assert!(
            table[..i].iter().all(|(d, _)| d != c),
            "duplicate glyph {c:?}"
        );
        if *c != ' ' {
            assert!(rows.iter().any(|r| r.contains('#')), "blank glyph {c:?}");
        }
        // No two glyphs look the same.
        assert!(
            table[..i].iter().all(|(_, g)| g != rows),
            "glyph {c:?} repeats another"
        );
    }
    for c in ('0'..='9')
        .chain('A'..='Z')
        .chain('a'..='z')
        .chain(" .,:-=/()%#".chars())
    {
        assert!(glyph(c).is_some(), "missing glyph {c:?}");
    }
}
