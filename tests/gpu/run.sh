#!/usr/bin/env bash
# Every CUDA check of framecache in one command, for the first machine with an NVIDIA GPU:
# the cuframes tests on CUDA (tests/cuframes.rs `cuda_*`), the GPU ffmpeg filter test
# (tests/ffmpeg_devices.rs: two patched ffmpeg processes moving CUDA frames), the Python
# binding's CUDA DLPack test, and the cuframes benchmark (1080p and 2160p NV12, cuframes against
# DtoH + frame slot + HtoD). Prints one summary table: GPU, driver, each check, the figures.
#
#   tests/gpu/run.sh          run (from the repository root), within 8 minutes
#   tests/gpu/run.sh pack     build a kit here (target/gpu-kit/) for a GPU machine that has no
#                             Rust and no network: carry target/gpu-kit with the working tree
#
# With cargo on the GPU machine it builds what it needs (release profile). Without cargo it
# unpacks target/gpu-kit/kit.tar.xz, made by `pack` on a machine with the same CPU
# architecture (the binaries name the repository path they were built in; the script links it
# to this copy when that path is missing). Whatever cannot run is reported as SKIPPED with the
# reason; the exit status is 1 if a check failed, else 0.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
kit=target/gpu-kit
start=$(date +%s)
budget=${FC_GPU_BUDGET_S:-470}

# ------------------------------------------------------------------------------- pack
# The executables cargo builds for the checks, one path per line ("test:NAME" or "bench:NAME").
# The test executables go to target/gpu-exes.txt, the benchmark's to target/gpu-bench.txt (both
# are named cuframes-HASH, and running the benchmark to tell them apart would take minutes).
build_checks() {
  cargo build --release --quiet --bin framecache -p framecache-cli &&
    cargo build --release --quiet -p framecache-capi &&
    cargo test --release --no-run --message-format=json --test cuframes --test ffmpeg_devices \
      2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' >target/gpu-exes.txt &&
    cargo bench --no-run --message-format=json --bench cuframes 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/deps/cuframes-' >target/gpu-bench.txt
}

if [ "${1:-}" = pack ]; then
  command -v cargo >/dev/null || { echo "pack needs cargo" >&2; exit 2; }
  [ -x target/ffmpeg-5.1/bin/ffmpeg ] || ffmpeg-patches/build.sh 5.1 || exit 1
  build_checks || exit 1
  rm -rf "$kit" && mkdir -p "$kit/stage"
  # The files with the paths they have here, debug info stripped, in one archive.
  # The 7.1 build too when it was made (ffmpeg-patches/build.sh 7.1): the filter test runs
  # against every patched build it finds.
  list=$(cat target/gpu-exes.txt target/gpu-bench.txt; echo "$repo/target/release/framecache";
    ls "$repo"/target/release/libframecache.so*;
    for v in 5.1 7.1; do
      [ -x "$repo/target/ffmpeg-$v/bin/ffmpeg" ] || continue
      ls "$repo"/target/ffmpeg-$v/bin/* "$repo"/target/ffmpeg-$v/prefix/lib/libframecache.so*
    done)
  for f in $list; do
    mkdir -p "$kit/stage$(dirname "$f")"
    cp -a "$f" "$kit/stage$f"
    strip --strip-debug "$kit/stage$f" 2>/dev/null || true
  done
  echo "$repo" >"$kit/built-in"
  sed "s|^$repo/||" target/gpu-exes.txt >"$kit/exes"
  sed "s|^$repo/||" target/gpu-bench.txt >"$kit/bench"
  tar -C "$kit/stage$repo" -cJf "$kit/kit.tar.xz" . && rm -rf "$kit/stage"
  echo "gpu kit: $kit ($(du -sh "$kit" | cut -f1)); on the GPU machine: carry $kit, run tests/gpu/run.sh"
  exit 0
fi

# ------------------------------------------------------------------------------- run
rows=()
figures=()
failed=0
row() { rows+=("| $1 | $2 | $3 |"); [ "$2" = FAIL ] && failed=1; }
left() { echo $((budget - ($(date +%s) - start))); }
logdir=${OUT:-target/gpu-logs}
mkdir -p "$logdir"

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu="none (nvidia-smi found no NVIDIA GPU)"

exes=()
bench=""
if command -v cargo >/dev/null; then
  echo "gpu: building (release)"
  if build_checks; then
    mapfile -t exes <target/gpu-exes.txt
    bench=$(head -1 target/gpu-bench.txt)
  else
    row build FAIL "cargo build of the checks failed"
  fi
  if [ ! -x target/ffmpeg-5.1/bin/ffmpeg ]; then
    ffmpeg-patches/build.sh 5.1 >"$logdir/ffmpeg-build.log" 2>&1 ||
      echo "gpu: the patched ffmpeg 5.1 did not build (see $logdir/ffmpeg-build.log)"
  fi
elif [ -f "$kit/kit.tar.xz" ]; then
  echo "gpu: no cargo here; using the kit in $kit"
  built_in=$(cat "$kit/built-in")
  tar -C "$repo" -xJf "$kit/kit.tar.xz"
  # The binaries hold the path of the tree they were built in (tests find the CLI, the
  # patched ffmpeg and the library through it).
  if [ "$built_in" != "$repo" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$repo" "$built_in"
  fi
  while read -r e; do exes+=("$built_in/$e"); done <"$kit/exes"
  bench="$built_in/$(head -1 "$kit/bench")"
else
  row build SKIPPED "no cargo and no kit (make one with tests/gpu/run.sh pack, carry $kit)"
fi
# Libraries the binaries need that this machine lacks (a kit built on another distribution).
missing=$(for f in "${exes[@]}" $bench "$repo"/target/release/framecache "$repo"/target/ffmpeg-*/bin/ffmpeg; do
  [ -e "$f" ] && ldd "$f" 2>/dev/null | sed -n "s|^[[:space:]]*\([^ ]*\) => not found.*|$(basename "$f"): \1|p"
done | sort -u | tr '\n' ' ')
[ -z "$missing" ] || row libraries FAIL "missing: $missing"
exe_of() { # the built executable of test or bench target $1
  for e in "${exes[@]}"; do case "$(basename "$e")" in "$1"-*) echo "$e"; return;; esac; done
}

# One test binary with a name filter; the row says pass, fail or skip (with the reason the test
# printed: tests that cannot run say "SKIPPED name: reason").
run_test() { # label exe filter
  local label=$1 exe=$2 filter=$3 log="$logdir/$1.log" t
  if [ -z "$exe" ]; then row "$label" SKIPPED "not built"; return; fi
  t=$(left); [ "$t" -gt 20 ] || { row "$label" SKIPPED "out of time"; return; }
  # Tests that cannot run append "test: reason" to $FC_SKIP_LOG (the test kit's skip()).
  local skips="$logdir/$label.skips"
  : >"$skips"
  FC_SKIP_LOG=$skips timeout "$((t < 180 ? t : 180))" "$exe" "$filter" --skip without_cuda \
    --test-threads 1 --nocapture >"$log" 2>&1
  local rc=$? passed
  passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    row "$label" FAIL "exit $rc, see $log: $(grep -m1 -E 'panicked|error' "$log" | cut -c1-120)"
  elif [ -s "$skips" ]; then
    row "$label" SKIPPED "$(wc -l <"$skips") of ${passed:-0}: $(head -1 "$skips" | cut -c1-140)"
  elif [ "${passed:-0}" = 0 ]; then
    row "$label" FAIL "no test matched $filter"
  else
    row "$label" pass "$passed passed"
  fi
}

run_test cuframes-cuda "$(exe_of cuframes)" cuda_
run_test ffmpeg-cuframes-cuda "$(exe_of ffmpeg_devices)" cuframes_filters_move_cuda_frames
# The 7.1 build is only there if made (and packed); the test runs against every patched build
# it finds and names each in its log.

# Python: the CUDA DLPack planes (torch or cupy consume them).
py=${FC_PYTHON:-$(command -v python3 || true)}  # FC_PYTHON: one with numpy and pytest
if [ -z "$py" ]; then
  row python-dlpack-cuda SKIPPED "no python3"
elif ! "$py" -c 'import numpy, pytest' 2>/dev/null; then
  row python-dlpack-cuda SKIPPED "python3 lacks numpy or pytest"
elif [ "$(left)" -lt 30 ]; then
  row python-dlpack-cuda SKIPPED "out of time"
else
  log="$logdir/python-dlpack-cuda.log"
  FRAMECACHE_LIB=$repo/target/release/libframecache.so FRAMECACHE_CLI=$repo/target/release/framecache \
    PYTHONPATH=$repo/bindings/python timeout 120 "$py" -m pytest -q -rs -s \
    bindings/python/tests/test_framecache.py -k 'cuframes' >"$log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then row python-dlpack-cuda FAIL "exit $rc, see $log"
  elif grep -q 'SKIPPED.*gpu_planes\|SKIPPED.*CUDA' "$log"; then
    row python-dlpack-cuda SKIPPED "$(grep -m1 SKIPPED "$log" | cut -c1-140)"
  else row python-dlpack-cuda pass "$(tail -1 "$log")"; fi
fi

# The benchmark: its table rows become figures.
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
  row cuframes-bench SKIPPED "not built"
elif [ "$(left)" -lt 60 ]; then
  row cuframes-bench SKIPPED "out of time"
else
  log="$logdir/cuframes-bench.log"
  t=$(left)
  timeout "$((t - 10))" "$bench" 600 >"$log" 2>&1
  rc=$?
  if grep -q SKIPPED "$log"; then row cuframes-bench SKIPPED "$(grep -m1 SKIPPED "$log")"
  elif [ $rc -ne 0 ]; then row cuframes-bench FAIL "exit $rc, see $log"
  else
    row cuframes-bench pass "$(grep -c '^| [0-9]' "$log") rows"
    mapfile -t figures < <(grep -e '^|' -e 'p50 of each part' "$log")
  fi
fi

echo
echo "## framecache GPU checks ($(date -u +%Y-%m-%d), $(( $(date +%s) - start )) s)"
echo
echo "GPU: $gpu"
echo
echo "| check | result | detail |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ ${#figures[@]} -gt 0 ]; then
  echo
  printf '%s\n' "${figures[@]}"
fi
exit $failed
