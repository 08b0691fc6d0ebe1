#!/usr/bin/env bash
# Installs PostgreSQL 15 and TimescaleDB 2.19.x (Apache-2 edition) on Debian 12, as root.
#
# TimescaleDB is not packaged for bookworm, so it is built from Debian trixie's *source* package
# against PostgreSQL 15. Only a deb-src entry is added: a trixie `deb` entry would pull in trixie's libc.
# Idempotent: every step is skipped when its result is already there, so a warm machine takes seconds.
set -euo pipefail

PG_MAJOR=15
TSDB_SERIES=${TSDB_SERIES:-2.19}
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
BUILD_ROOT=${TSDB_BUILD_ROOT:-/var/cache/hyperflight/timescaledb-src}

log() { printf '[install-timescaledb] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (apt-get and make install into the PostgreSQL tree)"; exit 1
fi
export DEBIAN_FRONTEND=noninteractive

installed_version() {
  local ctl
  ctl=$("$PG_CONFIG" --sharedir 2>/dev/null)/extension/timescaledb.control
  [ -f "$ctl" ] && sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$ctl"
}

need_pkgs=()
for p in postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR cmake build-essential dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
v=$(installed_version || true)
if [ ${#need_pkgs[@]} -eq 0 ] && [[ "$v" == "$TSDB_SERIES".* ]] \
   && [ -f "$("$PG_CONFIG" --pkglibdir)/timescaledb-$v.so" ]; then
  log "TimescaleDB $v already installed for PostgreSQL $PG_MAJOR"; exit 0
fi

src_list=/etc/apt/sources.list.d/hyperflight-trixie-src.list
if [ ! -f "$src_list" ]; then
  log "adding a deb-src entry for trixie (sources only)"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$src_list"
fi
log "apt-get update"
apt-get update -qq
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

mkdir -p "$BUILD_ROOT"
cd "$BUILD_ROOT"
srcdir=$(find . -maxdepth 1 -type d -name "timescaledb-$TSDB_SERIES.*" | sort -V | tail -n1)
if [ -z "$srcdir" ]; then
  log "fetching the timescaledb source package from trixie"
  apt-get source -qq --download-only timescaledb >/dev/null
  dsc=$(ls timescaledb_"$TSDB_SERIES".*.dsc | sort -V | tail -n1)
  dpkg-source --no-check -x "$dsc" >/dev/null
  srcdir=$(find . -maxdepth 1 -type d -name "timescaledb-$TSDB_SERIES.*" | sort -V | tail -n1)
fi
[ -n "$srcdir" ] || { log "no timescaledb $TSDB_SERIES.x source found in trixie"; exit 1; }
cd "$srcdir"
log "building $(basename "$srcdir") (Apache-2 edition) against PostgreSQL $PG_MAJOR"
if [ ! -f build/CMakeCache.txt ]; then
  ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DPG_CONFIG="$PG_CONFIG" >/dev/null
fi
make -C build -j"$(nproc)" install >/dev/null
log "installed TimescaleDB $(installed_version) for PostgreSQL $PG_MAJOR"
