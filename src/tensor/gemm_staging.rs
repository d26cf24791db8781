//! How a blocked or cooperative-matrix core's invocations stage one K slice of A and B: the
//! register loads both cores share (a leaf, so the two cores' files need not import each other).

/// What one invocation stages of one operand per K slice: the distinct local k values and
/// row (A) / column (B) offsets it touches, as WGSL expressions of the invocation index `t`, and
/// its elements as (index into ks, index into mns). `x` is BM (A) or BN (B).
pub(crate) struct Staging {
    ks: Vec<String>,
    mns: Vec<String>,
    pub elems: Vec<(usize, usize)>,
}

fn staging(x: u32, bk: u32, t: u32, k_fast: bool) -> Staging {
    if k_fast {
        // Neighbouring invocations take neighbouring k: one k, x / (t / bk) rows or columns.
        let p = t / bk;
        let rows = x / p;
        Staging {
            ks: vec![format!("t % {bk}u")],
            mns: (0..rows)
                .map(|r| format!("t / {bk}u + {}u", r * p))
                .collect(),
            elems: (0..rows as usize).map(|r| (0, r)).collect(),
        }
    } else if t >= x {
        // Neighbouring invocations take neighbouring rows / columns: one of them, bk / q k's.
        let q = t / x;
        let kn = bk / q;
        Staging {
            ks: (0..kn).map(|r| format!("t / {x}u + {}u", r * q)).collect(),
            mns: vec![format!("t % {x}u")],
            elems: (0..kn as usize).map(|r| (r, 0)).collect(),
        }
    } else {
        // Fewer invocations than rows / columns: x / t of them, every k of the slice.
        let nc = x / t;
        Staging {
            ks: (0..bk).map(|k| format!("{k}u")).collect(),
            mns: (0..nc).map(|c| format!("t + {}u", c * t)).collect(),
            elems: (0..bk as usize)
                .flat_map(|k| (0..nc as usize).map(move |c| (k, c)))
                .collect(),
        }
    }
}

/// The register loads of one K slice, shared by the blocked and cooperative-matrix cores: the
/// setup before the K loop (staging indices, column parts of B, the value registers) and the
/// loads of the slice starting at `kb` (zero outside the matrices); `sa`, `sb` say which value
/// register holds which element, for the core's own staging stores.
pub(crate) struct SliceLoads {
    pub setup: String,
    pub load: String,
    pub sa: Staging,
    pub sb: Staging,
}

pub(crate) fn slice_loads(
    (bm, bn, bk): (u32, u32, u32),
    t: u32,
    a_k_fast: bool,
    b_n_fast: bool,
) -> SliceLoads {
    use std::fmt::Write;
    let sa = staging(bm, bk, t, a_k_fast);
    let sb = staging(bn, bk, t, !b_n_fast);
    let mut setup = String::new();
    for (i, k) in sa.ks.iter().enumerate() {
        let _ = writeln!(setup, "    let a_k{i} = {k};");
    }
    for (j, mn) in sa.mns.iter().enumerate() {
        let _ = writeln!(
            setup,
            "    let a_l{j} = {mn};\n    let a_m{j} = row0 + a_l{j};"
        );
    }
    for (i, k) in sb.ks.iter().enumerate() {
        let _ = writeln!(setup, "    let b_k{i} = {k};");
    }
    for (j, mn) in sb.mns.iter().enumerate() {
        let _ = writeln!(
            setup,
            "    let b_l{j} = {mn};\n    let b_n{j} = col0 + b_l{j};\n    let b_c{j} = col_state(b, min(b_n{j}, P.n - 1u));"
        );
    }
    for e in 0..sa.elems.len() {
        let _ = writeln!(setup, "    var a_v{e} = 0.0;");
    }
    for e in 0..sb.elems.len() {
        let _ = writeln!(setup, "    var b_v{e} = 0.0;");
    }

    let mut load = String::from("        {\n");
    for i in 0..sa.ks.len() {
        let _ = writeln!(
            load,
            "        let kg{i} = kb + a_k{i};\n        let ks{i} = k_state(b, kg{i});"
        );
    }
    for (e, &(ki, j)) in sa.elems.iter().enumerate() {
        let _ = writeln!(
            load,
            "        a_v{e} = 0.0;\n        if (kg{ki} < P.k && a_m{j} < P.m) {{ a_v{e} = load_ak(b, ks{ki}, a_m{j}); }}"
        );
    }
    load += "        }\n        {\n";
    for i in 0..sb.ks.len() {
        let _ = writeln!(
            load,
            "        let kg{i} = kb + b_k{i};\n        let ks{i} = k_state(b, kg{i});"
        );
    }
    for (e, &(ki, j)) in sb.elems.iter().enumerate() {
        let _ = writeln!(
            load,
            "        b_v{e} = 0.0;\n        if (kg{ki} < P.k && b_n{j} < P.n) {{ b_v{e} = load_bk(ks{ki}, b_c{j}); }}"
        );
    }
    load += "        }\n";
    SliceLoads {
        setup,
        load,
        sa,
        sb,
    }
}

/// Whether [`staging`] can map `t` invocations onto an `x` x `bk` slice.
pub(crate) fn staging_fits(x: u32, bk: u32, t: u32, k_fast: bool) -> bool {
    if k_fast {
        t >= bk && t.is_multiple_of(bk) && x.is_multiple_of(t / bk)
    } else if t >= x {
        t.is_multiple_of(x) && bk.is_multiple_of(t / x)
    } else {
        x.is_multiple_of(t)
    }
}
