//! The rule of imports (docs/ARCHITECTURE.md), checked on the sources: inside each library crate
//! no two top-level modules import each other, directly or around a circle; library crates do
//! not print; each says in its top doc what it owns and what it may import. (Between crates,
//! Cargo already refuses circles and undeclared imports.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(crate name, src dir)` of every library crate.
fn library_crates() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src/lib.rs").is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                p.join("src"),
            )
        })
        .collect();
    v.push(("capi".into(), workspace().join("capi/src")));
    v.sort();
    v
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without its unit tests (`#[cfg(test)] mod tests { … }` runs to the end of a file
/// in this code base) and without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.as_str() {
        "lib.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules `code` (in top-level module `me`) names through `crate::X` or, from a
/// file directly in `src/`, `super::X`.
fn imports(
    code: &str,
    me: &str,
    modules: &BTreeSet<String>,
    in_root_dir: bool,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut scan = |prefix: &str| {
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let rest = rest.trim_start_matches('{').trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != me && modules.contains(&name) {
                found.insert(name);
            }
        }
    };
    scan("crate::");
    if in_root_dir {
        scan("super::");
    }
    found
}

fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search with colours; returns the first cycle found.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut c = path[start..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The module graph of one crate: top-level module → the top-level modules it imports.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(me) = top_module(src, f) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(f).unwrap());
        let in_root_dir = f.parent() == Some(src);
        graph
            .entry(me.clone())
            .or_default()
            .extend(imports(&text, &me, &modules, in_root_dir));
    }
    graph
}

#[test]
fn no_module_imports_in_a_circle() {
    let mut report = Vec::new();
    for (name, src) in library_crates() {
        let graph = module_graph(&src);
        let edges: usize = graph.values().map(BTreeSet::len).sum();
        report.push(format!("{name}: {} modules, {edges} imports", graph.len()));
        if let Some(c) = cycle(&graph) {
            panic!(
                "crate {name}: modules import each other in a circle: {}",
                c.join(" -> ")
            );
        }
    }
    eprintln!("{}", report.join("; "));
}

#[test]
fn the_circle_check_finds_a_circle() {
    // The check itself, on a graph with the shape the ingest crate had (mp4 -> pull -> srt ->
    // pull), so a broken checker cannot pass the test above by finding nothing.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
    };
    edge(&mut g, "mp4", "pull");
    edge(&mut g, "pull", "srt");
    edge(&mut g, "srt", "sink");
    assert_eq!(cycle(&g), None);
    edge(&mut g, "srt", "pull");
    assert_eq!(cycle(&g).unwrap(), ["pull", "srt", "pull"]);
    let modules: BTreeSet<String> = ["pull", "srt", "sink"].map(String::from).into();
    let code = "use crate::pull::{demux, X};\nuse super::sink::Sink;\nlet a = my_crate::srt::x;";
    assert_eq!(
        imports(code, "mp4", &modules, true),
        ["pull", "sink"].map(String::from).into()
    );
}

#[test]
fn library_crates_do_not_print_and_say_what_they_own() {
    for (name, src) in library_crates() {
        if name == "testkit" {
            continue; // the tests' helpers, never linked into a host: they may print
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in &files {
            let text = code(&std::fs::read_to_string(f).unwrap());
            for bad in ["println!(", "eprintln!(", "print!(", "eprint!(", "dbg!("] {
                let hit = text.match_indices(bad).any(|(i, _)| {
                    !text[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                assert!(!hit, "{} prints ({bad}); log instead", f.display());
            }
        }
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let doc: String = lib
            .lines()
            .take_while(|l| l.starts_with("//!") || l.is_empty())
            .collect();
        let owns = doc.contains("**Owns**") || doc.contains("owns");
        assert!(
            owns && doc.contains("**May import**"),
            "{name}: its lib.rs doc must say what it owns and may import"
        );
    }
}

/// The shared-memory core stays small: a program that only moves frames links libc, thiserror
/// and log (serde only behind its off-by-default feature).
#[test]
fn the_shm_crate_depends_on_libc_thiserror_and_log_only() {
    let manifest = std::fs::read_to_string(workspace().join("crates/shm/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let names: Vec<&str> = deps
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['=', '.']).next().unwrap().trim())
        .collect();
    assert_eq!(names, ["libc", "log", "thiserror", "serde"], "{deps}");
    assert!(
        deps.lines()
            .any(|l| l.starts_with("serde") && l.contains("optional = true")),
        "serde must stay optional: {deps}"
    );
}
