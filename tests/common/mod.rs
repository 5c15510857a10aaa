//! Helpers shared by the integration tests: private root directories, the CLI binary and
//! child processes killed on drop.
#![allow(dead_code)]

pub mod c;
pub mod rml_publisher;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Kills the child on drop, so a failing test leaves no server behind.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private slot root (under /dev/shm when it exists), removed on drop.
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    pub fn new(name: &str) -> TempRoot {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("fc-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The `framecache` CLI with FC_SHM_DIR pointing at this root.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_framecache"));
        c.env("FC_SHM_DIR", &self.0).stdin(Stdio::null());
        c
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
