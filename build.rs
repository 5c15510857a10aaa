//! Generates the C header from `src/` with cbindgen into `$OUT_DIR/framecache.h`.
//!
//! The checked-in `include/framecache.h` must equal it (a unit test fails on drift). Regenerate
//! the checked-in copy with `FC_UPDATE_HEADER=1 cargo build`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("framecache.h");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=FC_UPDATE_HEADER");
    // A soname lets installed programs survive compatible library upgrades (ABI major 0).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libframecache.so.0");
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    bindings.write_to_file(&out);
    if std::env::var_os("FC_UPDATE_HEADER").is_some() {
        bindings.write_to_file(dir.join("include/framecache.h"));
    }
}
