#!/usr/bin/env bash
# The whole test suite with its real peers (README: "The two commands"; CI runs it through
# .ci/run). On a fresh Debian 12 machine it installs what the build and the tests need (apt
# packages, Rust with rustfmt and clippy, aiortc from PyPI, the patched ffmpeg builds), then
# checks format and lints, builds the ring-only configuration, runs every test of the
# workspace and prints how many passed, failed and skipped, and why each skip happened.
# Safe to run again: it installs only what is missing.
#   scripts/test.sh [ARGS for cargo test, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# C compiler and sanitizer runtimes (C ABI tests), pkg-config (install test), ffmpeg/ffprobe
# (real streams and peers: RTMP/SRT pushes, UDP/HLS sources, RTMP play; brings libsrt),
# nginx with the RTMP module (a real RTMP server to pull from), python3 (HLS over HTTP),
# chromium (the WHEP browser test), python3-venv (aiortc, the second WebRTC client), libopus0
# (AAC -> Opus for WebRTC viewers; ffmpeg brings it too), make + nasm (the patched ffmpeg
# builds of ffmpeg-patches/build.sh; it fetches the sources through deb-src),
# libffmpeg-nvenc-dev (CUDA headers, no SDK: the cuframes filters of the 5.1 build), and
# srt-tools (srt-live-transmit, an SRT play reader), and GStreamer's RTSP server with its
# encoders and payloaders (the RTSP cameras of tests/rtsp.rs), and iproute2 (`ip netns`: the
# origin and edge hosts of tests/edge.rs, which need root and skip without it).
packages=(gcc libc6-dev libasan8 libubsan1 pkgconf ca-certificates curl ffmpeg
  nginx-light libnginx-mod-rtmp python3 python3-venv chromium libopus0 make nasm xz-utils
  libffmpeg-nvenc-dev srt-tools gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  iproute2)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust: the lock file needs Rust >= 1.89 (Debian 12's own rustc is too old); use rustup's.
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: installing Rust with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
cargo --version

# aiortc (PyPI wheels) in a venv of its own; tests/whep.rs finds it through FC_AIORTC_PYTHON.
venv="${FC_AIORTC_VENV:-$HOME/.cache/framecache/aiortc-venv}"
if ! "$venv/bin/python" -c 'import aiortc' >/dev/null 2>&1; then
  echo "test.sh: installing aiortc into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'aiortc>=1.9,<2'
fi
export FC_AIORTC_PYTHON="$venv/bin/python"

echo "test.sh: format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "test.sh: the rings alone build without the engines (framecache, default-features = false)"
cargo build --quiet -p framecache --no-default-features --example ring_only

# ffmpeg with the framecache devices, for tests/ffmpeg_devices.rs: both supported versions
# (Debian 12's 5.1 and Debian 13's 7.1). Kept in target/, so a cached target/ rebuilds only
# what changed.
echo "test.sh: patched ffmpeg builds"
ffmpeg-patches/build.sh 5.1
ffmpeg-patches/build.sh 7.1

echo "test.sh: the test suite"
# Tests that cannot run here (no GPU, a peer missing) append "test: reason" to this file.
export FC_SKIP_LOG="$PWD/target/test-skips.txt"
mkdir -p target
: > "$FC_SKIP_LOG"
log="$PWD/target/test-output.txt"
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo "test.sh: the Python binding (pytest, numpy) against the library just built"
pyvenv="${FC_PY_VENV:-$HOME/.cache/framecache/py-venv}"
if ! "$pyvenv/bin/python" -c 'import numpy, pytest' >/dev/null 2>&1; then
  echo "test.sh: installing numpy and pytest into $pyvenv"
  python3 -m venv "$pyvenv"
  "$pyvenv/bin/pip" install -q 'numpy>=1.22' 'pytest>=7'
fi
"$pyvenv/bin/pip" install -q --force-reinstall --no-deps ./bindings/python
set +e
FRAMECACHE_LIB="$PWD/target/debug/libframecache.so" FRAMECACHE_CLI="$PWD/target/debug/framecache" \
  "$pyvenv/bin/python" -m pytest -q -rs -p no:cacheprovider bindings/python/tests 2>&1 | tee "$PWD/target/pytest-output.txt"
pystatus=${PIPESTATUS[0]}
set -e
[ "$status" -ne 0 ] || status=$pystatus

echo "test.sh: the Node binding (node --test, koffi from npm) against the library just built"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "test.sh: installing nodejs and npm"
  as_root apt-get install -y -q --no-install-recommends nodejs npm
fi
(cd bindings/node && npm ci --no-audit --no-fund --loglevel=error)
set +e
FRAMECACHE_LIB="$PWD/target/debug/libframecache.so" FRAMECACHE_CLI="$PWD/target/debug/framecache" \
  node --test bindings/node/test/ 2>&1 | tee "$PWD/target/node-output.txt"
nodestatus=${PIPESTATUS[0]}
set -e
[ "$status" -ne 0 ] || status=$nodestatus

echo "test.sh: the benchmarks still build"
cargo bench --workspace --no-run --quiet

# One closing line over every test binary, and what was skipped.
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' "$log")
skipped=$(grep -c . "$FC_SKIP_LOG" || true)
# pytest's own closing line: "N passed, N failed, N skipped in S".
pyline=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$PWD/target/pytest-output.txt" | tail -n 1)
for kind in passed failed skipped; do
  n=$(echo "$pyline" | grep -oE "[0-9]+ $kind" | grep -oE '^[0-9]+' || true)
  case $kind in
    passed) passed=$((passed + ${n:-0})) ;;
    failed) failed=$((failed + ${n:-0})) ;;
    skipped) skipped=$((skipped + ${n:-0})) ;;
  esac
done
grep -E '^SKIPPED ' "$PWD/target/pytest-output.txt" | sed 's/^SKIPPED [^ ]* /pytest: /' >> "$FC_SKIP_LOG" || true
# node --test's own summary: "# pass N", "# fail N", "# skipped N".
for kind in pass fail skipped; do
  n=$(grep -E "^# $kind [0-9]+" "$PWD/target/node-output.txt" | tail -n 1 | grep -oE '[0-9]+' || true)
  case $kind in
    pass) passed=$((passed + ${n:-0})) ;;
    fail) failed=$((failed + ${n:-0})) ;;
    skipped) skipped=$((skipped + ${n:-0})) ;;
  esac
done
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (they passed without doing their work here):"
  sort "$FC_SKIP_LOG" | sed 's/^/  /'
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
