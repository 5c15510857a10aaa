//! Generates the C header with cbindgen into `$OUT_DIR/framecache.h`: the functions and handle
//! types of this crate, and the constants and wire structs that live in the layers below it
//! (error codes, pixel formats and ring layouts in framecache-shm, the cuframes control block in
//! framecache-cuda, the SRT reject codes of framecache-ingest).
//!
//! The files are parsed in the order the single crate of 0.1 declared its modules, so the header
//! keeps its order and a new release only adds to it. cbindgen takes constants only from the
//! crate it generates for, hence source files rather than `parse_deps`.
//!
//! The checked-in `include/framecache.h` must equal it (a unit test fails on drift). Regenerate
//! the checked-in copy with `FC_UPDATE_HEADER=1 cargo build`.

use std::path::PathBuf;

/// Relative to this crate, in the order of the header (cbindgen would visit the modules of
/// lib.rs alphabetically, so they are named one by one); each file's `mod` declarations are
/// followed.
const SOURCES: &[&str] = &[
    "src/errors.rs",
    "src/frame.rs",
    "src/slot.rs",
    "src/packet.rs",
    "src/ingest.rs",
    "src/cuframes.rs",
    "src/log.rs",
    "src/whep.rs",
    "../crates/cuda/src/layout.rs",
    "../crates/shm/src/error.rs",
    "../crates/shm/src/format.rs",
    "../crates/ingest/src/srt.rs",
    "../crates/shm/src/packet/mod.rs",
    "../crates/shm/src/ring/mod.rs",
    "../crates/shm/src/slot.rs",
];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("framecache.h");
    println!("cargo:rerun-if-changed=src");
    for d in [
        "../crates/shm/src",
        "../crates/cuda/src",
        "../crates/ingest/src/srt.rs",
    ] {
        println!("cargo:rerun-if-changed={d}");
    }
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=FC_UPDATE_HEADER");
    // A soname lets installed programs survive compatible library upgrades (ABI major 0).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libframecache.so.0");
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // The version a program was compiled against, beside fc_version() (the library it runs on).
    let v = |k: &str| std::env::var(k).unwrap();
    let after = config.after_includes.take().unwrap_or_default();
    config.after_includes = Some(format!(
        "{after}\n\n/* The version of this header (fc_version() gives the library's). */\n\
         #define FC_VERSION_MAJOR {}\n#define FC_VERSION_MINOR {}\n#define FC_VERSION_PATCH {}",
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH")
    ));
    let mut b = cbindgen::Builder::new().with_config(config);
    for s in SOURCES {
        b = b.with_src(dir.join(s));
    }
    let bindings = b
        .generate()
        .expect("cbindgen could not generate the header");
    bindings.write_to_file(&out);
    if std::env::var_os("FC_UPDATE_HEADER").is_some() {
        bindings.write_to_file(dir.join("../include/framecache.h"));
    }
}
