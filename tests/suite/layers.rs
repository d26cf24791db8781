//! The layer table of ARCHITECTURE.md, checked against the code. Every `crate::`, `super::` and
//! `self::` path in `src/` (use lines, grouped uses and paths inside code; comments and strings
//! left out; inline `mod` blocks followed) is resolved to the module it names:
//!
//! - an import from one top-level module into another must be one its row of the table allows
//!   (the table's last column, read from ARCHITECTURE.md itself, so the two cannot drift);
//! - the files of one module must not import each other in a circle (a module's `mod.rs` may use
//!   its own children; a child using what its parent defines is an edge like any other), except
//!   the circles ARCHITECTURE.md lists under "Known circles", which must still exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Source files by path relative to `src/` ("diffusion/model.rs").
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The module a file is: "diffusion/model.rs" -> [diffusion, model]; "app/mod.rs" -> [app].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `text` with comments and string literals blanked (same length, newlines kept).
fn code_only(text: &str) -> Vec<u8> {
    let t = text.as_bytes();
    let mut out = t.to_vec();
    let blank = |out: &mut Vec<u8>, a: usize, b: usize| {
        for c in &mut out[a..b.min(t.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < t.len() {
        if t[i..].starts_with(b"//") {
            let end = t[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(t.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if t[i..].starts_with(b"/*") {
            let end = find(t, b"*/", i + 2).map_or(t.len(), |p| p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if t[i..].starts_with(b"r#\"") {
            let end = find(t, b"\"#", i + 3).map_or(t.len(), |p| p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if t[i] == b'"' && (i == 0 || t[i - 1] != b'\'') {
            let mut j = i + 1;
            while j < t.len() && t[j] != b'"' {
                j += if t[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn find(t: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    (from..t.len().saturating_sub(pat.len() - 1)).find(|&k| t[k..].starts_with(pat))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_space(t: &[u8], mut k: usize) -> usize {
    while k < t.len() && t[k].is_ascii_whitespace() {
        k += 1;
    }
    k
}

fn ident_at(t: &[u8], k: usize) -> Option<(String, usize)> {
    let k = skip_space(t, k);
    let end = (k..t.len()).find(|&j| !is_ident(t[j])).unwrap_or(t.len());
    (end > k && !t[k].is_ascii_digit())
        .then(|| (String::from_utf8_lossy(&t[k..end]).into_owned(), end))
}

/// The paths of a use tree (or a plain path) starting at `k`: `a::b::{c, d::e}` gives
/// [a, b, c] and [a, b, d, e].
fn tree_at(t: &[u8], mut k: usize, end: usize) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    loop {
        let Some((name, after)) = ident_at(t, k).filter(|(_, a)| *a <= end) else {
            return vec![segs];
        };
        segs.push(name);
        k = skip_space(t, after);
        if !(k + 1 < end && t[k] == b':' && t[k + 1] == b':') {
            return vec![segs];
        }
        k = skip_space(t, k + 2);
        if k < end && t[k] == b'{' {
            let mut items = Vec::new();
            let (mut depth, mut start) = (0, k + 1);
            let mut j = k + 1;
            while j < end {
                match t[j] {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => {
                        items.push((start, j));
                        break;
                    }
                    b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        items.push((start, j));
                        start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            let mut out = Vec::new();
            for (a, b) in items {
                for sub in tree_at(t, a, b) {
                    if sub.first().map(String::as_str) == Some("self") || sub.is_empty() {
                        out.push(segs.clone());
                    } else {
                        out.push([segs.clone(), sub].concat());
                    }
                }
            }
            return out;
        }
    }
}

/// Every module path `file` names through `crate::`, `super::` or `self::`, resolved.
fn references(file: &str, text: &str) -> Vec<Vec<String>> {
    let t = code_only(text);
    let module = module_of(file);
    // Inline `mod NAME {` blocks: (first byte, end, name).
    let mut inline = Vec::new();
    let mut k = 0;
    while let Some(at) = find(&t, b"mod ", k) {
        k = at + 4;
        if at > 0 && is_ident(t[at - 1]) {
            continue;
        }
        let Some((name, after)) = ident_at(&t, k) else {
            continue;
        };
        let open = skip_space(&t, after);
        if open < t.len() && t[open] == b'{' {
            let (mut depth, mut j) = (1, open + 1);
            while depth > 0 && j < t.len() {
                match t[j] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            inline.push((open, j, name));
        }
    }
    let mut out = Vec::new();
    for head in ["crate", "super", "self"] {
        let mut k = 0;
        while let Some(at) = find(&t, head.as_bytes(), k) {
            k = at + head.len();
            if (at > 0 && (is_ident(t[at - 1]) || t[at - 1] == b':')) || !t[k..].starts_with(b"::")
            {
                continue;
            }
            let mut here = module.clone();
            for (a, b, name) in &inline {
                if *a <= at && at < *b {
                    here.push(name.clone());
                }
            }
            for segs in tree_at(&t, k + 2, t.len()) {
                let mut base = match head {
                    "crate" => Vec::new(),
                    "super" => here[..here.len().saturating_sub(1)].to_vec(),
                    _ => here.clone(),
                };
                let mut rest = segs.as_slice();
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                out.push([base, rest.to_vec()].concat());
            }
        }
    }
    out
}

/// The layer table: each top-level module and the modules it may import.
fn layer_table(modules: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let section = arch
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has ## Layers");
    let section = section.split("\n## ").next().unwrap();
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|w| {
                w.split("::")
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .filter(|w| modules.contains(w))
            .collect()
    };
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(name) = ticked(cells[0]).into_iter().next() else {
            continue;
        };
        let last = cells.last().unwrap().trim_end_matches(" |");
        let allowed_text = last.split("never").next().unwrap();
        let mut allowed: BTreeSet<String> = ticked(allowed_text).into_iter().collect();
        if allowed_text.contains("every layer above") {
            allowed.extend(table.keys().cloned());
        }
        table.insert(name, allowed);
    }
    table
}

/// The circles ARCHITECTURE.md lists as known (each a list item "- circle: `a.rs`, `b.rs`, ...":
/// the files of the circle, relative to `src/`).
fn known_circles() -> BTreeSet<BTreeSet<String>> {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let Some(section) = arch.split("\n### Known circles").nth(1) else {
        return BTreeSet::new();
    };
    let section = section.split("\n#").next().unwrap();
    // A list item goes on over the indented lines below it.
    let mut items: Vec<String> = Vec::new();
    for line in section.lines() {
        if line.starts_with("- ") {
            items.push(line.to_string());
        } else if line.starts_with("  ") {
            if let Some(last) = items.last_mut() {
                last.push_str(line);
            }
        }
    }
    items
        .iter()
        .filter(|l| l.starts_with("- circle:"))
        .map(|l| {
            l.split('`')
                .skip(1)
                .step_by(2)
                .filter(|w| w.ends_with(".rs"))
                .map(String::from)
                .collect()
        })
        .collect()
}

/// Circles (strongly connected sets of two or more files) of a file graph.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<BTreeSet<String>> {
    // Two files are in one circle when each reaches the other.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(f) = todo.pop() {
            for g in edges.get(&f).into_iter().flatten() {
                if seen.insert(g.clone()) {
                    todo.push(g.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|f| (f, reach(f))).collect();
    let mut out = BTreeSet::new();
    for (f, r) in &reaches {
        let circle: BTreeSet<String> = r
            .iter()
            .filter(|g| reaches.get(g).is_some_and(|back| back.contains(*f)))
            .cloned()
            .chain([(*f).clone()])
            .collect();
        if circle.len() > 1 {
            out.insert(circle);
        }
    }
    out
}

#[test]
fn imports_follow_the_layer_table_and_files_of_a_module_form_no_new_circle() {
    let files = sources();
    let modules: BTreeSet<String> = files
        .keys()
        .filter_map(|f| module_of(f).first().cloned())
        .collect();
    let table = layer_table(&modules);
    let mut wrong = Vec::new();
    for m in &modules {
        if !table.contains_key(m) {
            wrong.push(format!(
                "module `{m}` has no row in ARCHITECTURE.md's layer table"
            ));
        }
    }
    let file_of: BTreeMap<Vec<String>, &String> = files.keys().map(|f| (module_of(f), f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in &files {
        let module = module_of(file);
        let Some(top) = module.first() else { continue };
        for path in references(file, text) {
            let Some(target) = path.first() else { continue };
            if target != top {
                if modules.contains(target)
                    && !table
                        .get(top)
                        .is_some_and(|allowed| allowed.contains(target))
                {
                    wrong.push(format!(
                        "src/{file} imports `{}`: the layer table lets `{top}` import only {:?}",
                        path.join("::"),
                        table.get(top).cloned().unwrap_or_default()
                    ));
                }
                continue;
            }
            // The file the path lands in: the longest prefix that is a file's module.
            let Some(to) = (1..=path.len()).rev().find_map(|n| file_of.get(&path[..n])) else {
                continue;
            };
            let to_module = module_of(to);
            let own_child = to_module.len() > module.len() && to_module.starts_with(&module);
            if *to != file && !own_child {
                edges.entry(file.clone()).or_default().insert((*to).clone());
            }
        }
    }
    let found = circles(&edges);
    let known = known_circles();
    for c in found.difference(&known) {
        let show: Vec<String> = c
            .iter()
            .map(|f| {
                let to: Vec<&String> = edges[f].iter().filter(|g| c.contains(*g)).collect();
                format!("{f} -> {to:?}")
            })
            .collect();
        wrong.push(format!(
            "files import each other in a circle: {}",
            show.join("; ")
        ));
    }
    for c in known.difference(&found) {
        wrong.push(format!(
            "ARCHITECTURE.md lists the circle {c:?} under Known circles, but it is gone: delete its line"
        ));
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
