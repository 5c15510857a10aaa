//! Helpers shared by the integration tests: private root directories, the CLI binary and
//! child processes killed on drop.
#![allow(dead_code)]

pub mod c;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[allow(unused_imports)] // not every test uses every helper
pub use framecache_testkit::{rml_publisher, skip, Reaper};

/// A private slot root (the test kit's), with the CLI bound to it.
pub struct TempRoot(framecache_testkit::TempRoot);

impl TempRoot {
    pub fn new(name: &str) -> TempRoot {
        TempRoot(framecache_testkit::TempRoot::new(name))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The `framecache` CLI with FC_SHM_DIR pointing at this root.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_framecache"));
        c.env("FC_SHM_DIR", self.path()).stdin(Stdio::null());
        c
    }
}

/// Directory of the built artefacts (libframecache.so lives beside the CLI binary).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_framecache"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Parses the JSON line `framecache verify --json` prints.
pub fn verify_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "verify printed nothing; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// Field tables of a protocol document: rows `| offset | size | `field` | ...` under headings
/// that `tag_of` maps to a struct tag (other headings end a table). Keyed by (tag, field).
pub fn doc_field_tables(
    doc: &str,
    tag_of: impl Fn(&str) -> Option<String>,
) -> std::collections::BTreeMap<(String, String), (usize, usize)> {
    let mut m = std::collections::BTreeMap::new();
    let mut tag = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            tag = tag_of(line.trim());
            continue;
        }
        let Some(tag) = &tag else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Ok(off), Ok(size)) = (cells[1].parse::<usize>(), cells[2].parse::<usize>()) else {
            continue;
        };
        let name = cells[3].trim_matches('`').to_string();
        assert!(
            m.insert((tag.clone(), name.clone()), (off, size)).is_none(),
            "{name} twice in the document"
        );
    }
    m
}
