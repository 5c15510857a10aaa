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
# Needs: apt-get source (deb-src entries are added for the run if missing), nasm, pkg-config,
# a C compiler, cargo. Set FC_FFMPEG_SOURCE=DIR to use an unpacked ffmpeg source instead.
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

# 1. The source, fetched once and kept pristine in $out/orig.
if [ ! -f "$out/orig/configure" ]; then
  rm -rf "$out/orig" "$out/fetch"
  mkdir -p "$out/fetch"
  if [ -n "${FC_FFMPEG_SOURCE:-}" ]; then
    cp -a "$FC_FFMPEG_SOURCE" "$out/orig"
  else
    # Source entries for the suite, only for this fetch.
    list=/etc/apt/sources.list.d/framecache-ffmpeg-src.sources
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$suite" "$suite" "$suite" | as_root tee "$list" >/dev/null
    trap 'as_root rm -f "$list"' EXIT
    as_root apt-get update -q >/dev/null 2>&1
    # The newest ffmpeg source of the suite; only its upstream tarball is used.
    pkgver=$(apt-cache madison ffmpeg | awk '/Sources/ {print $3}' |
      grep -E "^([0-9]+:)?${version//./\\.}\\." | sort -V -r | head -n1 || true)
    [ -n "$pkgver" ] || { echo "build.sh: no ffmpeg $version source in $suite" >&2; exit 1; }
    (cd "$out/fetch" && apt-get source -q --download-only "ffmpeg=$pkgver" >/dev/null)
    as_root rm -f "$list"
    trap - EXIT
    as_root apt-get update -q >/dev/null 2>&1 || true
    tarball=$(ls "$out"/fetch/ffmpeg_*.orig.tar.* | head -n1)
    mkdir -p "$out/orig"
    tar -xf "$tarball" -C "$out/orig" --strip-components=1
  fi
  rm -rf "$out/fetch"
fi

# 2. A fresh copy with the series applied (git apply, as a user would: fails on any fuzz).
stamp=$(cat "$series"/*.patch | sha256sum | cut -c1-16)
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
ffnv=()
if pkg-config --exists ffnvcodec; then ffnv=(--enable-ffnvcodec); fi
mkdir -p "$out/build"
cd "$out/build"
if [ ! -f ffbuild/config.mak ]; then
  "$out/src/configure" --prefix="$out" --disable-everything --disable-doc --disable-debug \
    --disable-autodetect --enable-pthreads "${ffnv[@]}" \
    --enable-ffmpeg --enable-ffprobe --enable-libframecache \
    --enable-indev=framecache,lavfi --enable-outdev=framecache \
    --enable-protocol=file,pipe \
    --enable-demuxer=rawvideo,mov,mpegts,flv,matroska \
    --enable-muxer=rawvideo,null,framemd5,framecrc,mp4,mov,mpegts,flv,matroska \
    --enable-decoder=rawvideo,wrapped_avframe --enable-encoder=rawvideo,wrapped_avframe \
    --enable-parser=h264,hevc,aac,opus \
    --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,aac_adtstoasc \
    --enable-filter=null,anull,scale,format,testsrc,testsrc2,sine,aresample,setpts \
    --extra-ldflags="-Wl,-rpath,$out/prefix/lib" >"$out/configure.log" 2>&1 ||
    { tail -n 30 "$out/configure.log" ffbuild/config.log >&2; rm -f ffbuild/config.mak; exit 1; }
fi
# FFmpeg's own warnings are many: keep them in make.log, show its end on failure.
make -j"$(nproc)" ffmpeg ffprobe >"$out/make.log" 2>&1 || { tail -n 40 "$out/make.log" >&2; exit 1; }
mkdir -p "$out/bin"
cp ffmpeg ffprobe "$out/bin/"
echo "build.sh: $out/bin/ffmpeg ($("$out/bin/ffmpeg" -hide_banner -version | head -n1))"
