//! Interpolation between two seeds (src/diffusion/interpolate.rs, `fewstep sample
//! --interpolate`, the app's strip): the arc against an f64 reference, its ends exact, and the
//! strip's ends equal to the two seeds' own first images.

use crate::common;

use common::bin::{fewstep, stderr};
use common::*;
use fewstep::diffusion::interpolate::{parse_seeds, slerp, strip_position};
use rand::Rng;

/// f32 rounding of values of size ~3 through a handful of f64 operations.
const SLERP_TOL: f64 = 1e-6;

/// The textbook form: sin((1-s) angle)/sin(angle) a + sin(s angle)/sin(angle) b for unit a, b,
/// scaled to the interpolated norm; in f64 from the f32 inputs.
fn reference(a: &[f32], b: &[f32], s: f64) -> Vec<f64> {
    let (a, b) = (to_f64(a), to_f64(b));
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(&a), norm(&b));
    let angle = (a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (na * nb)).acos();
    let (wa, wb) = (
        ((1.0 - s) * angle).sin() / angle.sin(),
        (s * angle).sin() / angle.sin(),
    );
    let n = (1.0 - s) * na + s * nb;
    a.iter()
        .zip(&b)
        .map(|(x, y)| n * (wa * x / na + wb * y / nb))
        .collect()
}

#[test]
fn slerp_follows_the_arc_and_keeps_the_norm() {
    let mut r = rng("slerp");
    let n = 784;
    let draw = |r: &mut rand::rngs::StdRng| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // A Box-Muller normal: the interpolation is meant for N(0, I) draws.
                let (u, v): (f64, f64) = (r.random::<f64>().max(1e-12), r.random());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    };
    let (a, b) = (draw(&mut r), draw(&mut r));
    assert_eq!(slerp(&a, &b, 0.0), a, "s = 0 is A exactly");
    assert_eq!(slerp(&a, &b, 1.0), b, "s = 1 is B exactly");
    let norm = |v: &[f32]| dot64(v, v).sqrt();
    for s in [0.1, 0.25, 0.5, 0.8, r.random::<f64>()] {
        let z = slerp(&a, &b, s);
        assert_close(
            &format!("slerp at {s}"),
            &z,
            &reference(&a, &b, s),
            SLERP_TOL,
            SLERP_TOL,
        );
        // The norm stays between the ends' (a straight mix would lose ~29% half-way).
        let (lo, hi) = (norm(&a).min(norm(&b)), norm(&a).max(norm(&b)));
        assert!(
            norm(&z) >= lo * (1.0 - 1e-6) && norm(&z) <= hi * (1.0 + 1e-6),
            "norm at {s}"
        );
        // On the arc: the angle to A grows in proportion to s.
        let angle = |x: &[f32], y: &[f32]| (dot64(x, y) / (norm(x) * norm(y))).acos();
        let whole = angle(&a, &b);
        assert!(
            (angle(&a, &z) - s * whole).abs() < 1e-5,
            "angle from A at {s}"
        );
    }
    // The same seed twice is a point, not a division by zero.
    assert_eq!(slerp(&a, &a, 0.5), a);
    assert_eq!(strip_position(0, 5), 0.0);
    assert_eq!(strip_position(4, 5), 1.0);
    assert_eq!(parse_seeds(" 3, 5"), Ok((3, 5)));
    assert!(parse_seeds("3").unwrap_err().contains("A,B"));
    assert!(parse_seeds("3,x").is_err());
}

fn values(path: &std::path::Path) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn a_strip_runs_from_one_seeds_image_to_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |f: &str| tmp.path().join(f).to_str().unwrap().to_string();
    let sample = |extra: &[&str], out: &str| {
        let mut args = vec!["sample", "--model", "fmnist-4step", "--out"];
        let png = p(&format!("{out}.png"));
        let json = p(&format!("{out}.json"));
        args.push(&png);
        args.extend(["--values", &json]);
        args.extend(extra);
        let o = fewstep(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        (
            values(tmp.path().join(format!("{out}.json")).as_path()),
            stderr(&o),
        )
    };
    let (strip, log) = sample(&["--interpolate", "3,5", "--count", "5"], "strip");
    assert!(log.contains("5 images from seed 3 to seed 5"), "{log}");
    let (a, _) = sample(&["--seed", "3", "--count", "1"], "a");
    let (b, _) = sample(&["--seed", "5", "--count", "1"], "b");
    let per = a.len();
    assert_eq!(strip.len(), 5 * per);
    let max_diff = |x: &[f64], y: &[f64]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max)
    };
    // The ends start from exactly the two seeds' noise, so they are those seeds' first images.
    assert!(
        max_diff(&strip[..per], &a) <= 1e-6,
        "first image is seed 3's"
    );
    assert!(
        max_diff(&strip[4 * per..], &b) <= 1e-6,
        "last image is seed 5's"
    );
    // The middle is neither, and neighbours are closer than the ends (a morph, not a cut).
    let mid = &strip[2 * per..3 * per];
    let ends = max_diff(&a, &b);
    assert!(
        max_diff(mid, &a) > 0.1 && max_diff(mid, &b) > 0.1,
        "the middle is its own image"
    );
    let l1 = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).sum::<f64>();
    let step = (0..4).map(|k| {
        l1(
            &strip[k * per..(k + 1) * per],
            &strip[(k + 1) * per..(k + 2) * per],
        )
    });
    let ends_l1 = l1(&a, &b);
    assert!(
        step.clone().all(|d| d < ends_l1),
        "steps {:?} vs ends {ends_l1} (max {ends})",
        step.collect::<Vec<_>>()
    );
    let img = image::open(tmp.path().join("strip.png")).unwrap();
    assert!(
        img.width() > 4 * img.height(),
        "one row: {}x{}",
        img.width(),
        img.height()
    );
    // Refusals name the fix.
    for (args, says) in [
        (vec!["--interpolate", "3", "--count", "5"], "A,B"),
        (
            vec!["--interpolate", "3,5", "--count", "1"],
            "--count 2 to 64",
        ),
        (
            vec!["--interpolate", "3,5", "--seed", "2"],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["sample", "--out"];
        let png = p("x.png");
        all.push(&png);
        all.extend(args);
        let o = fewstep(&all);
        assert!(
            !o.status.success() && stderr(&o).contains(says),
            "{all:?}: {}",
            stderr(&o)
        );
    }
}
