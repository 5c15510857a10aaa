#!/usr/bin/env bash
# Builds ffmpeg + ffprobe with the framecache patches, minimal and quick (a few minutes on
# 2 cores), for the tests and for trying the device out.
#
#   ffmpeg-patches/build.sh VERSION [OUT_DIR]
#
# VERSION: 5.1 (Debian 12's 5.1.x source, from deb-src) or 7.1 (Debian 13's 7.1.x source).
# OUT_DIR (default target/ffmpeg-VERSION) receives src/ (the patched source), build/ and
# bin/ffmpeg, bin/ffprobe. The library is built and installed under OUT_DIR/prefix and found
# through pkg-config, as a distribution build would; the binaries find it through an rpath.
# A second run with the same patches and library rebuilds only what changed.
#
# Needs: apt-get source (deb-src entries, derived from the machine's deb entries, are added for
# the run), nasm, pkg-config,
# make, a C compiler, cargo, and for 5.1 libffmpeg-nvenc-dev. Set FC_FFMPEG_SOURCE=DIR to use
# an unpacked ffmpeg source instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
version=${1:?usage: build.sh 5.1|7.1 [OUT_DIR]}
case "$version" in
  5.1) suite=bookworm ;;
  7.1) suite=trixie ;;
  *) echo "build.sh: version must be 5.1 or 7.1" >&2; exit 2 ;;
esac
out=$(mkdir -p "${2:-$repo/target/ffmpeg-$version}" && cd "${2:-$repo/target/ffmpeg-$version}" && pwd)
series="$here/$version"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Downloads the upstream tarball of Debian source package $1 (newest version starting with
# $2) from $suite, found through temporary deb-src entries, checks its SHA-256 against the
# archive's index and unpacks it into $3. (Only the upstream tarball: Debian's patches are
# not wanted, and some mirrors lack the .debian.tar that `apt-get source` insists on.)
srcdir=/etc/apt/sources.list.d
srclist=$srcdir/framecache-ffmpeg-src.sources
srclist_legacy=$srcdir/framecache-ffmpeg-src.list

# The deb-src entries for $suite, derived from the machine's own `deb` entries (whatever
# mirror it is set up with): the same URIs, components and keys, with this machine's release
# name in each suite replaced by $suite (bookworm-updates -> trixie-updates, ...). Both the
# deb822 *.sources files and the one-line sources.list format are read.
derive_deb_src() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || { echo "build.sh: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
  as_root rm -f "$srclist" "$srclist_legacy"
  shopt -s nullglob
  local f
  for f in "$srcdir"/*.sources; do
    awk -v from="$codename" -v to="$suite" '
      function flush() {
        if (deb && uris != "" && suites != "") {
          printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", uris, suites, comps
          if (signed != "") printf "Signed-By: %s\n", signed
          printf "\n"
        }
        deb = 0; uris = ""; suites = ""; comps = ""; signed = ""; enabled = 1
      }
      BEGIN { flush() }
      /^[ \t]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/ { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
      /^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris) }
      /^Components:/ { comps = $0; sub(/^Components:[ \t]*/, "", comps) }
      /^Signed-By:/ { signed = $0; sub(/^Signed-By:[ \t]*/, "", signed) }
      /^Enabled:[ \t]*no/ { deb = 0 }
      /^Suites:/ {
        s = $0; sub(/^Suites:[ \t]*/, "", s); n = split(s, a, /[ \t]+/); suites = ""
        for (i = 1; i <= n; i++) if (index(a[i], from) == 1) {
          suites = suites (suites == "" ? "" : " ") to substr(a[i], length(from) + 1)
        }
      }
      END { flush() }' "$f"
  done | as_root tee "$srclist" >/dev/null
  local legacy=(/etc/apt/sources.list "$srcdir"/*.list)
  for f in "${legacy[@]}"; do
    [ -f "$f" ] || continue
    awk -v from="$codename" -v to="$suite" '
      $1 == "deb" {
        i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (index($(i + 1), from) != 1) next
        $(i + 1) = to substr($(i + 1), length(from) + 1); $1 = "deb-src"; print
      }' "$f"
  done | as_root tee "$srclist_legacy" >/dev/null
  shopt -u nullglob
  if [ ! -s "$srclist" ] && [ ! -s "$srclist_legacy" ]; then
    as_root rm -f "$srclist" "$srclist_legacy"
    echo "build.sh: no 'deb' entry for $codename in /etc/apt to derive deb-src entries from" >&2
    exit 1
  fi
  [ -s "$srclist_legacy" ] || as_root rm -f "$srclist_legacy"
}

fetch_debian_source() {
  local pkg=$1 prefix=$2 dest=$3 pkgver uri file sum
  rm -rf "$dest" "$dest.fetch"
  mkdir -p "$dest.fetch"
  trap 'as_root rm -f "$srclist" "$srclist_legacy"' EXIT
  derive_deb_src
  as_root apt-get update -q >/dev/null 2>&1
  pkgver=$(apt-cache madison "$pkg" | awk '/Sources/ {print $3}' |
    grep -E "^([0-9]+:)?${prefix//./\\.}" | sort -V -r | head -n1 || true)
  [ -n "$pkgver" ] || { echo "build.sh: no $pkg $prefix source in $suite" >&2; exit 1; }
  read -r uri file sum < <(apt-get source --print-uris -q "$pkg=$pkgver" |
    awk '$2 ~ /\.orig\.tar\.[a-z0-9]+$/ {gsub("\047", "", $1); print $1, $2, $4; exit}')
  as_root rm -f "$srclist" "$srclist_legacy"
  trap - EXIT
  as_root apt-get update -q >/dev/null 2>&1 || true
  [ -n "${uri:-}" ] || { echo "build.sh: no upstream tarball for $pkg $pkgver" >&2; exit 1; }
  curl -fsSL --retry 3 -o "$dest.fetch/$file" "$uri"
  echo "${sum#SHA256:}  $dest.fetch/$file" | sha256sum -c --quiet ||
    { echo "build.sh: $file does not match the archive's SHA-256" >&2; exit 1; }
  mkdir -p "$dest"
  tar -xf "$dest.fetch/$file" -C "$dest" --strip-components=1
  rm -rf "$dest.fetch"
}

# 1. The source, fetched once and kept pristine in $out/orig.
if [ ! -f "$out/orig/configure" ]; then
  if [ -n "${FC_FFMPEG_SOURCE:-}" ]; then
    rm -rf "$out/orig"
    cp -a "$FC_FFMPEG_SOURCE" "$out/orig"
  else
    # Only the upstream tarball is used, not Debian's patches.
    fetch_debian_source ffmpeg "$version." "$out/orig"
  fi
fi

# 1b. CUDA headers (nv-codec-headers: dynamically loaded, no CUDA SDK) for the cuframes
# filters. 5.1 takes Debian 12's libffmpeg-nvenc-dev; 7.1 needs >= 11.1.5.3, so it builds
# trixie's nv-codec-headers source into $out/nvcodec.
if [ "$version" = 7.1 ]; then
  if [ ! -f "$out/nvcodec/lib/pkgconfig/ffnvcodec.pc" ]; then
    fetch_debian_source nv-codec-headers 12. "$out/nvcodec-src"
    make -C "$out/nvcodec-src" PREFIX="$out/nvcodec" install >/dev/null
  fi
  export PKG_CONFIG_PATH="$out/nvcodec/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
pkg-config --exists ffnvcodec ||
  { echo "build.sh: ffnvcodec headers missing (apt-get install libffmpeg-nvenc-dev)" >&2; exit 1; }

# 2. A fresh copy with the series applied (git apply, as a user would: fails on any fuzz).
# (this script is part of the stamp: a changed configure line needs a fresh build)
stamp=$(cat "$series"/*.patch "$here/build.sh" | sha256sum | cut -c1-16)
if [ "$(cat "$out/src/.framecache-series" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$out/src" "$out/build"
  cp -a "$out/orig" "$out/src"
  for p in "$series"/*.patch; do
    echo "build.sh: applying $(basename "$p")"
    # (outside any enclosing git repository, so that git apply behaves like patch -p1)
    (cd "$out/src" && GIT_CEILING_DIRECTORIES="$out" git apply --whitespace=error-all "$p")
  done
  echo "$stamp" > "$out/src/.framecache-series"
fi

# 3. libframecache, installed where pkg-config finds it.
(cd "$repo" && capi/install.sh --prefix "$out/prefix" >/dev/null)
export PKG_CONFIG_PATH="$out/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# 4. Configure (once per series) a build with what the tests use, and make.
mkdir -p "$out/build"
cd "$out/build"
if [ ! -f ffbuild/config.mak ]; then
  "$out/src/configure" --prefix="$out" --disable-everything --disable-doc --disable-debug \
    --disable-autodetect --enable-pthreads --enable-ffnvcodec \
    --enable-ffmpeg --enable-ffprobe --enable-libframecache \
    --enable-indev=framecache,lavfi --enable-outdev=framecache \
    --enable-protocol=file,pipe \
    --enable-demuxer=rawvideo,mov,mpegts,flv,matroska \
    --enable-muxer=rawvideo,null,framemd5,framecrc,mp4,mov,mpegts,flv,matroska \
    --enable-decoder=rawvideo,wrapped_avframe --enable-encoder=rawvideo,wrapped_avframe \
    --enable-parser=h264,hevc,aac,opus \
    --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,aac_adtstoasc \
    --enable-filter=null,anull,scale,format,testsrc,testsrc2,sine,aresample,setpts \
    --enable-filter=hwupload,hwdownload,hwupload_cuda,cuframes_pub,cuframes_sub \
    --extra-ldflags="-Wl,-rpath,$out/prefix/lib" >"$out/configure.log" 2>&1 ||
    { tail -n 30 "$out/configure.log" ffbuild/config.log >&2; rm -f ffbuild/config.mak; exit 1; }
fi
# FFmpeg's own warnings are many: keep them in make.log, show its end on failure.
make -j"$(nproc)" ffmpeg ffprobe >"$out/make.log" 2>&1 || { tail -n 40 "$out/make.log" >&2; exit 1; }
mkdir -p "$out/bin"
cp ffmpeg ffprobe "$out/bin/"
echo "build.sh: $out/bin/ffmpeg ($("$out/bin/ffmpeg" -hide_banner -version | head -n1))"
