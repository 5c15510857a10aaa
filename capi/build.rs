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
    symbol_versions(&dir);
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

/// The symbol versions (docs/ABI.md): every function gets the version of the first released
/// header that declares it (`abi/framecache-X.Y.h`), or the next version when no released header
/// has it yet; the script names each node's predecessor (rust-lld does not record it in the
/// library; the dynamic loader does not use it).
///
/// rustc links a cdylib with an anonymous version script of its own that lists every exported
/// function, and a version script cannot reassign those names. So each function is versioned
/// in the object that defines it, with `.symver fc_x, fc_x@@FRAMECACHE_X.Y, remove` (generated
/// here per module, `$OUT_DIR/symver_MODULE.rs`, included by the module), and our version
/// script only declares the nodes. `remove` leaves no unversioned twin, so `libframecache.a`
/// still links statically. It needs a linker that merges the two scripts: the rust-lld that
/// rustc uses by default on x86_64 Linux (GNU ld refuses anonymous and named versions
/// together), so other targets build without versions (`cfg(fc_symver)` unset).
fn symbol_versions(dir: &std::path::Path) {
    println!("cargo::rustc-check-cfg=cfg(fc_symver)");
    println!("cargo:rerun-if-changed=abi");
    println!("cargo:rerun-if-env-changed=FC_NO_SYMVER");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target = std::env::var("TARGET").unwrap();
    let on = target == "x86_64-unknown-linux-gnu" && std::env::var_os("FC_NO_SYMVER").is_none();

    // Released headers, oldest first: (major, minor, functions).
    let mut released: Vec<(u32, u32, Vec<String>)> = Vec::new();
    for e in std::fs::read_dir(dir.join("abi")).expect("capi/abi") {
        let name = e.unwrap().file_name().into_string().unwrap();
        let Some(v) = name
            .strip_prefix("framecache-")
            .and_then(|n| n.strip_suffix(".h"))
        else {
            continue;
        };
        let (ma, mi) = v.split_once('.').expect("abi/framecache-MAJOR.MINOR.h");
        let text = std::fs::read_to_string(dir.join("abi").join(&name)).unwrap();
        released.push((ma.parse().unwrap(), mi.parse().unwrap(), declared(&text)));
    }
    released.sort();
    let (ma, mi, _) = released.last().expect("at least the 0.1 header");
    let next = format!("FRAMECACHE_{ma}.{}", mi + 1);
    let version_of = |f: &str| {
        released
            .iter()
            .find(|(_, _, fns)| fns.iter().any(|g| g == f))
            .map(|(ma, mi, _)| format!("FRAMECACHE_{ma}.{mi}"))
            .unwrap_or_else(|| next.clone())
    };

    let mut used = Vec::new();
    for e in std::fs::read_dir(dir.join("src")).unwrap() {
        let path = e.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = Vec::new();
        for f in defined(&text) {
            let v = version_of(&f);
            lines.push(format!("    \".symver {f}, {f}@@{v}, remove\","));
            used.push(v);
        }
        let body = if lines.is_empty() {
            String::new()
        } else {
            format!(
                "// Generated by capi/build.rs: the symbol version of each function of this module.\n\
                 #[cfg(all(fc_symver, not(test)))]\nstd::arch::global_asm!(\n{}\n);\n",
                lines.join("\n")
            )
        };
        std::fs::write(out.join(format!("symver_{module}.rs")), body).unwrap();
    }

    // The nodes, each inheriting the previous one.
    let mut nodes: Vec<String> = released
        .iter()
        .map(|(ma, mi, _)| format!("FRAMECACHE_{ma}.{mi}"))
        .collect();
    if used.contains(&next) {
        nodes.push(next);
    }
    let mut script = String::from("/* Generated by capi/build.rs. */\n");
    for (i, n) in nodes.iter().enumerate() {
        match i {
            0 => script.push_str(&format!("{n} {{ }};\n")),
            _ => script.push_str(&format!("{n} {{ }} {};\n", nodes[i - 1])),
        }
    }
    let map = out.join("framecache.map");
    std::fs::write(&map, script).unwrap();
    if on {
        println!("cargo:rustc-cfg=fc_symver");
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            map.display()
        );
    }
}

/// The functions a C header declares: `fc_name(` (a function pointer typedef is `(*fc_x)(`).
fn declared(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    while let Some(at) = header[i..].find("fc_") {
        let s = i + at;
        let mut e = s;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            e += 1;
        }
        let word_start = s == 0 || !(b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_');
        let mut k = e;
        while k < b.len() && b[k] == b' ' {
            k += 1;
        }
        if word_start && k < b.len() && b[k] == b'(' {
            out.push(header[s..e].to_string());
        }
        i = e;
    }
    out.sort();
    out.dedup();
    out
}

/// The functions a source file exports: `extern "C" fn fc_name`.
fn defined(source: &str) -> Vec<String> {
    source
        .split("extern \"C\" fn ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|f| f.starts_with("fc_"))
        .collect()
}
