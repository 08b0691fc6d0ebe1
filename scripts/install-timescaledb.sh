#!/usr/bin/env bash
# Installs PostgreSQL 15 and two TimescaleDB editions side by side on Debian 12, as root:
#
#   * 2.19.3, Apache-2 only, built from Debian trixie's *source* package. Only a deb-src entry is
#     added: a trixie `deb` entry would pull in trixie's libc.
#   * 2.28.3, the full edition (Apache-2 + TSL: compression/columnstore, continuous aggregates), built
#     from ../shared/vendor/timescaledb-2.28.3.tar.gz when present, else from the upstream tag's
#     tarball; the sha256 is checked either way.
#
# 2.19.3 is built first and 2.28.3 second, so 2.28.3's loader and control file are the defaults while
# 2.19.3's versioned library and SQL stay installed beside them. A database gets 2.19.3 with
# `ALTER DATABASE d SET timescaledb.license = 'apache'` and then, in a new session,
# `CREATE EXTENSION timescaledb VERSION '2.19.3'` (see scripts/cluster.sh `createdb-compat`).
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
BUILD_ROOT=${TSDB_BUILD_ROOT:-/var/cache/hyperflight/timescaledb-src}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPAT_VERSION=2.19.3
FULL_VERSION=2.28.3
FULL_SHA256=c80abd42995a317d9c046da6499a7a6e63c58e188124a2f20580f7c82fa4b801
FULL_URL=https://github.com/timescale/timescaledb/archive/refs/tags/$FULL_VERSION.tar.gz

log() { printf '[install-timescaledb] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (apt-get and make install into the PostgreSQL tree)"; exit 1
fi
export DEBIAN_FRONTEND=noninteractive

pkglibdir() { "$PG_CONFIG" --pkglibdir; }
has_version() { [ -f "$(pkglibdir)/timescaledb-$1.so" ] && [ -f "$("$PG_CONFIG" --sharedir)/extension/timescaledb--$1.sql" ]; }
has_full() { has_version "$FULL_VERSION" && [ -f "$(pkglibdir)/timescaledb-tsl-$FULL_VERSION.so" ]; }

need_pkgs=()
for p in postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib cmake build-essential dpkg-dev \
         libssl-dev openssl curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -eq 0 ] && has_version "$COMPAT_VERSION" && has_full; then
  log "TimescaleDB $FULL_VERSION (full) and $COMPAT_VERSION (Apache) already installed for PostgreSQL $PG_MAJOR"
  exit 0
fi

src_list=/etc/apt/sources.list.d/hyperflight-trixie-src.list
if [ ! -f "$src_list" ]; then
  log "adding a deb-src entry for trixie (sources only)"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$src_list"
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "apt-get update; installing ${need_pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
mkdir -p "$BUILD_ROOT"

build() {   # build <srcdir> <extra cmake args...>
  local dir=$1; shift
  log "building $(basename "$dir") against PostgreSQL $PG_MAJOR"
  if [ ! -f "$dir/build/CMakeCache.txt" ]; then
    (cd "$dir" && ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DPG_CONFIG="$PG_CONFIG" "$@" >/dev/null)
  fi
  make -C "$dir/build" -j"$(nproc)" install >/dev/null
}

# 1. The Apache-only compat version (and, as it is installed first, its loader is replaced below).
if ! has_version "$COMPAT_VERSION"; then
  cd "$BUILD_ROOT"
  # Debian names the tree after the upstream version plus a repack suffix (2.19.3+dfsg).
  srcdir=$(find . -maxdepth 1 -type d -name "timescaledb-$COMPAT_VERSION*" | head -n1)
  if [ -z "$srcdir" ]; then
    log "fetching the timescaledb $COMPAT_VERSION source package from trixie"
    apt-get update -qq
    apt-get source -qq --download-only "timescaledb=$COMPAT_VERSION*" >/dev/null 2>&1 \
      || apt-get source -qq --download-only timescaledb >/dev/null
    dsc=$(ls timescaledb_"$COMPAT_VERSION"*.dsc | sort -V | tail -n1)
    dpkg-source --no-check -x "$dsc" >/dev/null
    srcdir=$(find . -maxdepth 1 -type d -name "timescaledb-$COMPAT_VERSION*" | head -n1)
  fi
  [ -n "$srcdir" ] && [ -d "$srcdir" ] || { log "no timescaledb $COMPAT_VERSION source found in trixie"; exit 1; }
  build "$BUILD_ROOT/${srcdir#./}" -DAPACHE_ONLY=1
  # 2.19.3's loader is now the default: the full build below must replace it.
  rm -f "$(pkglibdir)/timescaledb-tsl-$FULL_VERSION.so"
fi

# 2. The full edition, the default for new databases.
if ! has_full || [ "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$("$PG_CONFIG" --sharedir)/extension/timescaledb.control")" != "$FULL_VERSION" ]; then
  tarball=$BUILD_ROOT/timescaledb-$FULL_VERSION.tar.gz
  vendored=$REPO/../shared/vendor/timescaledb-$FULL_VERSION.tar.gz
  if [ ! -f "$tarball" ]; then
    if [ -f "$vendored" ]; then
      cp "$vendored" "$tarball.part"
    else
      log "downloading $FULL_URL"
      curl -fsSL "$FULL_URL" -o "$tarball.part"
    fi
    mv "$tarball.part" "$tarball"
  fi
  echo "$FULL_SHA256  $tarball" | sha256sum -c --quiet - \
    || { rm -f "$tarball"; log "sha256 mismatch for $tarball"; exit 1; }
  dir=$BUILD_ROOT/timescaledb-$FULL_VERSION
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir.part"
    tar -xzf "$tarball" -C "$dir.part" --strip-components=1
    mv "$dir.part" "$dir"
  fi
  build "$dir"
fi
has_version "$COMPAT_VERSION" && has_full || { log "install incomplete"; exit 1; }
log "installed TimescaleDB $FULL_VERSION (full, default) and $COMPAT_VERSION (Apache) for PostgreSQL $PG_MAJOR"
