#!/usr/bin/env bash
# Installs libframecache (shared + static), its header, pkg-config file and the CLI.
#
#   capi/install.sh [--prefix DIR] [--libdir lib] [--profile release|debug] [--no-build]
#
# DESTDIR is honoured for packaging. Afterwards: pkg-config --cflags --libs framecache
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local libdir=lib profile=release build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then cargo build --release; else cargo build; fi
fi
t=${CARGO_TARGET_DIR:-target}/$profile
dest=${DESTDIR:-}$prefix
install -d "$dest/$libdir/pkgconfig" "$dest/include" "$dest/bin"
install -m 0755 "$t/libframecache.so" "$dest/$libdir/libframecache.so.$version"
ln -sf "libframecache.so.$version" "$dest/$libdir/libframecache.so.0"
ln -sf "libframecache.so.0" "$dest/$libdir/libframecache.so"
install -m 0644 "$t/libframecache.a" "$dest/$libdir/libframecache.a"
install -m 0644 include/framecache.h "$dest/include/framecache.h"
install -m 0755 "$t/framecache" "$dest/bin/framecache"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@VERSION@|$version|" \
  capi/framecache.pc.in > "$dest/$libdir/pkgconfig/framecache.pc"
echo "installed framecache $version into $dest"
