//! Building the C test programs (capi/tests/*.c) against include/framecache.h and the built
//! libframecache.so.

use std::path::PathBuf;
use std::process::Command;

use super::target_dir;

pub const STRICT: &[&str] = &["-Wall", "-Wextra", "-Werror", "-std=c11", "-pedantic"];
pub const ASAN: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=all",
    "-g",
];

pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` builds the library as an rlib for the tests, not the cdylib and staticlib a C
/// program links: build them once, with the same cargo, target dir and profile.
pub fn ensure_libraries() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-p",
            "framecache-capi",
            "--lib",
            "--quiet",
            "--manifest-path",
        ])
        .arg(manifest().join("Cargo.toml"));
        // Cargo gives the test the package's build-time variables; a build script that watches
        // one (ring's watches CARGO_MANIFEST_DIR) would see it change between this build and the
        // next `cargo test` and rebuild half the dependency tree each time.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_MANIFEST")
                || k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_CRATE")
                || k.starts_with("CARGO_BIN")
                || k == "CARGO_TARGET_TMPDIR"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "OUT_DIR"
            {
                cmd.env_remove(k);
            }
        }
        if target_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo");
        assert!(st.success(), "cargo build --lib failed");
    });
}

/// A directory with `libframecache.so` and its soname `libframecache.so.0` pointing at the
/// built library, as an installed copy would look (cargo's output has no soname link).
pub fn lib_dir() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libframecache.so", "libframecache.so.0"] {
        let link = dir.join(name);
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(target_dir().join("libframecache.so"), &link);
        }
    }
    dir
}

/// Compiles capi/tests/NAME.c with the strict flags (plus `extra`) into the test's temp dir.
pub fn compile(name: &str, extra: &[&str]) -> PathBuf {
    compile_against(name, extra, &manifest().join("include"), "")
}

/// As [`compile`], against the `framecache.h` in `include` (an older header); `tag` tells the
/// executables apart.
pub fn compile_against(
    name: &str,
    extra: &[&str],
    include: &std::path::Path,
    tag: &str,
) -> PathBuf {
    ensure_libraries();
    let so = target_dir().join("libframecache.so");
    assert!(so.exists(), "{} is missing after building it", so.display());
    let suffix = if extra.is_empty() { "" } else { "-asan" };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}{tag}{suffix}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(STRICT)
        .args(extra)
        .arg("-I")
        .arg(include)
        .arg(manifest().join(format!("capi/tests/{name}.c")))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(lib_dir())
        .arg("-lframecache")
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e} (install gcc)"));
    assert!(status.success(), "compiling {name}.c failed");
    out
}
