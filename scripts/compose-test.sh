#!/usr/bin/env bash
# The container stack, built and run for real with podman (Debian 12, as root):
#   1. installs podman, runc and debootstrap (apt) and podman-compose (a venv), idempotently, and
#      sets podman's runtime to runc (/etc/containers/containers.conf.d/hyperflight.conf);
#   2. builds the base images the Dockerfiles and the compose file name, under those names, where
#      none can be pulled: debian:bookworm-slim (debootstrap), rust:1.95-slim-bookworm (the host's
#      rustup toolchain) and timescale/timescaledb:2.28.3-pg15 (docker/standins/, the official
#      entrypoint and init scripts from ../shared/vendor/container-images/). Each is rebuilt only
#      when its inputs change (a label holds their hash), so a warm machine reuses them;
#   3. `podman-compose up -d --build`, waits for both services' health checks, runs the loadgen
#      service and checks its report (`lost rows: 0`);
#   4. runs loadgen again while it restarts the database container and then the hyperflight
#      container, and checks that the run recovered (retries, `lost rows: 0`);
#   5. reads public.metrics from the host through the published port with the Python client and
#      compares row count and sums with SQL;
#   6. builds the Airbyte connector image (airbyte/Dockerfile) and runs spec, check, discover and a
#      small read the way Airbyte runs a connector: `podman run` with the config mounted read-only.
# Every wait is bounded; the whole run is cut after $COMPOSE_TEST_TIMEOUT seconds (default 3600).
# Containers, the network and the volume of the test project are removed on exit, even on failure.
# Tagged images stay (the cache of the next run), untagged ones are pruned; the cargo registry and
# target dir of the image builds stay in buildah's cache mounts (/var/tmp/buildah-cache/).
#
# Usage: scripts/compose-test.sh     (exit 0: every check passed)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
VENDOR=$REPO/../shared/vendor
CACHE=${HYPERFLIGHT_COMPOSE_CACHE:-/var/cache/hyperflight/compose}
PROJECT=hyperflight-compose-test
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-3600}
RUST_TOOLCHAIN=1.95.0
TSDB_VERSION=2.28.3
TSDB_SHA256=c80abd42995a317d9c046da6499a7a6e63c58e188124a2f20580f7c82fa4b801
TSDB_URL=https://github.com/timescale/timescaledb/archive/refs/tags/$TSDB_VERSION.tar.gz
# Where the vendored image scripts come from, for a machine without ../shared/vendor.
PG_IMAGE_URL=https://raw.githubusercontent.com/docker-library/postgres/6edb0a8c4def40c371514b34aef9037ec82d9110/15/bookworm
TS_IMAGE_URL=https://raw.githubusercontent.com/timescale/timescaledb-docker/029292c030646f1ce91e0aef88025b65dc6200b0/docker-entrypoint-initdb.d
declare -A SCRIPT_SHA256=(
  [docker-entrypoint.sh]=1a6ff568c79cb847cffc4172b22a1f501cef05001b0b09751f48323683fb64a2
  [docker-ensure-initdb.sh]=922ade6b23a312e65023349b36e873752b15ff38ae4c0ae461d74451e104f312
  [000_install_timescaledb.sh]=39426281f4747ddc7a22cb368b2da544d3ea552fbbe151f21ebdb8eccb3caee6
)
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
TSDB_IMAGE=docker.io/timescale/timescaledb:$TSDB_VERSION-pg15
LABEL=org.hyperflight.standin-inputs
START=$SECONDS

# The script's own messages go to fd 3, the original stderr, also from inside redirected commands.
exec 3>&2
log() { printf '[compose-test %4ds] %s\n' "$((SECONDS - START))" "$*" >&3; }
die() { log "FAILED: $*"; exit 1; }
left() { echo $((TIMEOUT - (SECONDS - START))); }
# bounded <what> <command...>: the command, cut when the run's time is up.
bounded() {
  local what=$1; shift
  local t; t=$(left)
  [ "$t" -gt 0 ] || die "out of time before: $what"
  timeout --kill-after=20 "$t" "$@" || { local rc=$?; [ "$rc" -ne 124 ] || die "timed out: $what"; return "$rc"; }
}

[ "$(id -u)" -eq 0 ] || { echo "compose-test: run as root (apt-get, podman)" >&2; exit 2; }

# --- 1. tools -------------------------------------------------------------------------------------
install_tools() {
  export DEBIAN_FRONTEND=noninteractive
  local need=() p
  for p in podman runc debootstrap uidmap slirp4netns python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    bounded "apt-get update" apt-get update -qq
    bounded "apt-get install" apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # crun fails on this machine kind (cgroups hybrid mode), and podman's default ulimits exceed the
  # hard limits there (../shared/vendor/README.md).
  local conf=/etc/containers/containers.conf.d/hyperflight.conf
  local want='[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"'
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    log "writing $conf (runtime runc, default ulimits)"
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" >"$conf"
  fi
  local venv=$CACHE/podman-compose-venv
  if ! "$venv/bin/podman-compose" --version 2>/dev/null | grep -q 'podman-compose version 1.6.0'; then
    log "installing podman-compose 1.6.0 into $venv"
    python3 -m venv "$venv"
    bounded "pip install podman-compose" "$venv/bin/pip" install -q --disable-pip-version-check podman-compose==1.6.0
  fi
  COMPOSE=("$venv/bin/podman-compose" -p "$PROJECT" -f "$REPO/docker-compose.yml")
}

# --- 2. base images -------------------------------------------------------------------------------
# inputs_hash <files...>: what a stand-in is built from, including the image it is built on.
inputs_hash() {
  { podman image inspect --format '{{.Id}}' "$DEBIAN_IMAGE" 2>/dev/null || true; cat "$@"; } | sha256sum | cut -c1-16
}
up_to_date() {  # up_to_date <image> <hash>
  [ "$(podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$2" ]
}
# build_log <name> <command...>: a build's output goes to a log file, shown (its end) only on failure.
build_log() {
  local name=$1; shift
  bounded "$name" "$@" >"$WORK/$name.log" 2>&1 || { tail -n 40 "$WORK/$name.log" >&2; die "$name (log above)"; }
}
# fetch <dest> <sha256> <vendored file> <url>: the vendored copy, or a download; sha256 checked.
fetch() {
  local dest=$1 sha=$2 vendored=$3 url=$4
  if [ -f "$vendored" ]; then cp "$vendored" "$dest"
  else log "downloading $url"; bounded "download $url" curl -fsSL "$url" -o "$dest"; fi
  echo "$sha  $dest" | sha256sum -c --quiet - || die "sha256 mismatch: $(basename "$dest")"
}

build_debian() {
  local hash; hash=$(echo "debootstrap minbase bookworm v1" | sha256sum | cut -c1-16)
  if up_to_date "$DEBIAN_IMAGE" "$hash"; then log "$DEBIAN_IMAGE: up to date"; return; fi
  log "$DEBIAN_IMAGE: debootstrap --variant=minbase bookworm (1-2 min)"
  local root; root=$(mktemp -d /var/tmp/hyperflight-rootfs.XXXXXX)
  CLEAN_DIRS+=("$root")
  build_log debootstrap debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
  # As the official slim image: security updates in sources, no docs, man pages or translations,
  # no apt caches.
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar -C "$root" -c . | podman import --change 'CMD ["bash"]' --change "LABEL $LABEL=$hash" - "$DEBIAN_IMAGE" \
    >"$WORK/import-debian.log" 2>&1 || { cat "$WORK/import-debian.log" >&2; die "podman import"; }
  rm -rf "$root"
}

build_rust() {
  local sysroot
  rustup toolchain list | grep -q "^$RUST_TOOLCHAIN-" \
    || bounded "rustup toolchain install" rustup toolchain install "$RUST_TOOLCHAIN" --profile minimal
  sysroot=$(rustup run "$RUST_TOOLCHAIN" rustc --print sysroot)
  local cas=(/usr/local/share/ca-certificates/*.crt)
  [ -e "${cas[0]}" ] || cas=()
  local hash; hash=$(inputs_hash docker/standins/rust.Dockerfile "${cas[@]}" <(echo "$RUST_TOOLCHAIN"; rustup run "$RUST_TOOLCHAIN" rustc -vV))
  if up_to_date "$RUST_IMAGE" "$hash"; then log "$RUST_IMAGE: up to date"; return; fi
  log "$RUST_IMAGE: Rust $RUST_TOOLCHAIN from $sysroot"
  local ctx; ctx=$(mktemp -d /var/tmp/hyperflight-rust.XXXXXX)
  CLEAN_DIRS+=("$ctx")
  mkdir "$ctx/toolchain" "$ctx/local-ca-certificates"
  [ ${#cas[@]} -eq 0 ] || cp "${cas[@]}" "$ctx/local-ca-certificates/"
  # Compiler, cargo and the x86_64 standard library; not the docs (share/) or rust-src.
  tar -C "$sysroot" -c --exclude=./share --exclude=./lib/rustlib/src . | tar -C "$ctx/toolchain" -x
  build_log build-rust podman build --format docker -f docker/standins/rust.Dockerfile \
    --build-arg RUST_TOOLCHAIN="$RUST_TOOLCHAIN" --label "$LABEL=$hash" -t "$RUST_IMAGE" "$ctx"
  rm -rf "$ctx"
}

build_timescaledb() {
  local ctx; ctx=$(mktemp -d /var/tmp/hyperflight-tsdb.XXXXXX)
  CLEAN_DIRS+=("$ctx")
  fetch "$ctx/docker-entrypoint.sh" "${SCRIPT_SHA256[docker-entrypoint.sh]}" \
    "$VENDOR/container-images/postgres-15-bookworm/docker-entrypoint.sh" "$PG_IMAGE_URL/docker-entrypoint.sh"
  fetch "$ctx/docker-ensure-initdb.sh" "${SCRIPT_SHA256[docker-ensure-initdb.sh]}" \
    "$VENDOR/container-images/postgres-15-bookworm/docker-ensure-initdb.sh" "$PG_IMAGE_URL/docker-ensure-initdb.sh"
  fetch "$ctx/000_install_timescaledb.sh" "${SCRIPT_SHA256[000_install_timescaledb.sh]}" \
    "$VENDOR/container-images/timescaledb-docker/docker-entrypoint-initdb.d/000_install_timescaledb.sh" \
    "$TS_IMAGE_URL/000_install_timescaledb.sh"
  chmod 755 "$ctx"/*.sh
  local hash; hash=$(inputs_hash docker/standins/timescaledb.Dockerfile "$ctx"/*.sh <(echo "$TSDB_SHA256"))
  if up_to_date "$TSDB_IMAGE" "$hash"; then log "$TSDB_IMAGE: up to date"; rm -rf "$ctx"; return; fi
  log "$TSDB_IMAGE: PostgreSQL 15 + TimescaleDB $TSDB_VERSION built from source (several minutes)"
  local tarball=$CACHE/timescaledb-$TSDB_VERSION.tar.gz
  [ -f "$tarball" ] || { fetch "$tarball.part" "$TSDB_SHA256" "$VENDOR/timescaledb-$TSDB_VERSION.tar.gz" "$TSDB_URL" && mv "$tarball.part" "$tarball"; }
  echo "$TSDB_SHA256  $tarball" | sha256sum -c --quiet - || die "sha256 mismatch: $tarball"
  cp "$tarball" "$ctx/timescaledb.tar.gz"
  build_log build-timescaledb podman build --format docker -f docker/standins/timescaledb.Dockerfile \
    --label "$LABEL=$hash" -t "$TSDB_IMAGE" "$ctx"
  rm -rf "$ctx"
}

# --- cleanup --------------------------------------------------------------------------------------
CLEAN_DIRS=()
WORK=$(mktemp -d /tmp/hyperflight-compose-test.XXXXXX)
BG_PIDS=()
STACK_STARTED=0
cleanup() {
  local rc=$? pid dir ids
  trap - EXIT INT TERM
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$STACK_STARTED" -eq 1 ]; then
    if [ "$rc" -ne 0 ]; then
      log "last log lines of the stack:"
      timeout 30 "${COMPOSE[@]}" logs --tail 30 >&2 2>/dev/null || true
    fi
    log "removing the test project's containers, network and volume"
    timeout 120 "${COMPOSE[@]}" --profile loadtest down -v -t 5 >/dev/null 2>&1 || true
  fi
  # Whatever compose did not remove: its run containers, the connector's containers.
  ids="$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null || true)"
  ids+=" $(podman ps -aq --filter "label=org.hyperflight.compose-test" 2>/dev/null || true)"
  [ -z "${ids// /}" ] || podman rm -f -t 5 $ids >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  podman network ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null | xargs -r podman network rm -f >/dev/null 2>&1 || true
  # Untagged images: stand-ins replaced by a rebuild, builder stages of earlier sources (a few
  # hundred MB per source change). The next build's cargo step finds its work in the cache mount.
  podman image prune -f >/dev/null 2>&1 || true
  for dir in "${CLEAN_DIRS[@]}"; do rm -rf "$dir"; done
  rm -rf "$WORK"
  log "$([ "$rc" -eq 0 ] && echo "passed" || echo "FAILED (exit $rc)") in $((SECONDS - START)) s"
  exit "$rc"
}
COMPOSE=()
trap cleanup EXIT
trap 'exit 130' INT TERM

step_start=$SECONDS
step() { log "step done in $((SECONDS - step_start)) s"; step_start=$SECONDS; log "== $*"; }

log "== tools"
install_tools
mkdir -p "$CACHE"
step "base images"
build_debian
build_rust
build_timescaledb

# --- 3. the stack as a user runs it -----------------------------------------------------------------
# Images built with podman keep their HEALTHCHECK only in the docker format.
export BUILDAH_FORMAT=docker
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
FLIGHT_HOST_PORT=$(free_port) METRICS_HOST_PORT=$(free_port)
export FLIGHT_HOST_PORT METRICS_HOST_PORT
export HYPERFLIGHT_SAMPLE_ROWS=1000000 HYPERFLIGHT_SAMPLE_DAYS=14
PSQL_DB=hyperflight

container() {  # container <service>: the id of the service's container in the test project
  local id
  id=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1")
  [ -n "$id" ] && [ "$(wc -w <<<"$id")" -eq 1 ] || die "no single container for service $1: '$id'"
  echo "$id"
}
# wait_healthy <service> <seconds>: runs the container's health check every 2 s until it passes.
# podman 4.3 schedules health checks with systemd timers, which this machine kind does not have, and
# podman-compose 1.6.0 ignores `condition: service_healthy` before podman 4.6: this loop does both.
wait_healthy() {
  local id; id=$(container "$1")
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ] && [ "$(left)" -gt 0 ]; do
    if podman healthcheck run "$id" >/dev/null 2>&1; then
      log "$1 is healthy"
      return 0
    fi
    [ "$(podman inspect --format '{{.State.Running}}' "$id")" = true ] \
      || log "$1 is not running (restart policy: $(podman inspect --format '{{.HostConfig.RestartPolicy.Name}}' "$id"))"
    sleep 2
  done
  podman logs --tail 30 "$id" >&2 || true
  die "$1 not healthy within $2 s"
}
sql() {  # sql <query>: one psql query in the database container, unaligned output
  podman exec "$(container timescaledb)" psql -X -v ON_ERROR_STOP=1 -U postgres -d "$PSQL_DB" -At -c "$1"
}
# check_report <file>: the load test passed and its report says so.
check_report() {
  grep -qx 'lost rows: 0' "$1" || { cat "$1" >&2; die "load test report in $1 has no 'lost rows: 0'"; }
  grep -E '^(requests|rows|retries|errors)' "$1" | sed 's/^/    /' >&2
}

step "compose up --build (a cold image build compiles the whole workspace)"
STACK_STARTED=1
build_log compose-up "${COMPOSE[@]}" up -d --build
wait_healthy timescaledb 600
wait_healthy hyperflight 180
rows=$(sql "SELECT count(*) FROM public.metrics")
[ "$rows" -eq "$HYPERFLIGHT_SAMPLE_ROWS" ] || die "public.metrics holds $rows rows, not $HYPERFLIGHT_SAMPLE_ROWS"
[ "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")" = "$TSDB_VERSION" ] \
  || die "the database does not run TimescaleDB $TSDB_VERSION"
log "TimescaleDB $TSDB_VERSION, public.metrics: $rows sample rows"

step "loadgen (8 clients, 20 s)"
bounded loadgen "${COMPOSE[@]}" --profile loadtest run --rm -T loadgen --url http://hyperflight:50051 --table public.metrics \
  --clients 8 --duration 20s >"$WORK/loadgen.txt" 2>"$WORK/loadgen.err" \
  || { cat "$WORK/loadgen.txt" "$WORK/loadgen.err" >&2; die "loadgen exited non-zero"; }
check_report "$WORK/loadgen.txt"

step "loadgen while the database and then the server container restart"
"${COMPOSE[@]}" --profile loadtest run --rm -T loadgen --url http://hyperflight:50051 --table public.metrics \
  --clients 8 --duration 60s >"$WORK/faults.txt" 2>"$WORK/faults.err" &
LOADGEN=$!
BG_PIDS+=("$LOADGEN")
sleep 15
log "restarting the timescaledb container"
podman restart -t 10 "$(container timescaledb)" >>"$WORK/podman.log" 2>&1 \
  || { cat "$WORK/podman.log" >&2; die "podman restart timescaledb"; }
wait_healthy timescaledb 120
sleep 5
log "restarting the hyperflight container"
podman restart -t 10 "$(container hyperflight)" >>"$WORK/podman.log" 2>&1 \
  || { cat "$WORK/podman.log" >&2; die "podman restart hyperflight"; }
wait_healthy hyperflight 120
kill -0 "$LOADGEN" 2>/dev/null || die "the load run ended before both restarts were over: nothing tested after them"
# The run ends at 60 s, plus at most its drain time.
rc=0
bounded "loadgen with restarts" bash -c "while kill -0 $LOADGEN 2>/dev/null; do sleep 1; done" || true
wait "$LOADGEN" || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/faults.txt" "$WORK/faults.err" >&2; die "loadgen exited $rc"; }
check_report "$WORK/faults.txt"
retries=$(sed -n 's/^retries: \([0-9]*\) .*/\1/p' "$WORK/faults.txt")
[ "${retries:-0}" -gt 0 ] || die "no retries: the restarts did not reach the load run"

step "the Python client, from the host through the published port, against SQL"
VENV=$(bash scripts/python-env.sh)
got=$(bounded "python client" "$VENV/bin/python" - "grpc://127.0.0.1:$FLIGHT_HOST_PORT" <<'PY'
import sys
import hyperflight
with hyperflight.connect(sys.argv[1]) as client:
    t = client.read("public.metrics")
def total(col):
    return sum(v for v in t.column(col).to_pylist() if v is not None)
print(t.num_rows, t.column("device_id").null_count, total("device_id"), total("status"), total("reading"),
      sum(1 for v in t.column("ok").to_pylist() if v), t.column("time").null_count)
PY
)
want=$(sql "SELECT count(*), count(*) - count(device_id), sum(device_id), sum(status), sum(reading),
                   count(*) FILTER (WHERE ok), count(*) - count(time) FROM public.metrics" | tr '|' ' ')
[ "$got" = "$want" ] || die "Python client read '$got', SQL says '$want' (rows, NULL device_id, sums, ok, NULL time)"
log "Python client matches SQL: $got"

# --- 6. the Airbyte connector image, run as Airbyte runs it -----------------------------------------
step "the Airbyte connector image: build, spec, check, discover, read"
meta() { sed -n "s/^  $1: *//p" airbyte/metadata.yaml; }
connector=docker.io/$(meta dockerRepository):$(meta dockerImageTag)
build_log build-connector podman build --format docker -f airbyte/Dockerfile -t "$connector" .
labels=$(podman image inspect --format '{{index .Labels "io.airbyte.name"}}:{{index .Labels "io.airbyte.version"}} {{range .Config.Env}}{{.}} {{end}}' "$connector")
[[ "$labels" == "$(meta dockerRepository):$(meta dockerImageTag) "* ]] || die "labels $labels differ from metadata.yaml"
[[ " $labels " == *" AIRBYTE_ENTRYPOINT="* ]] || die "no AIRBYTE_ENTRYPOINT in the image's environment"
# The config and catalog, mounted read-only, readable by the connector's user (uid 1000).
secrets=$WORK/secrets
mkdir -p "$secrets"
chmod 755 "$WORK" "$secrets"
printf '{"host": "timescaledb", "port": 5432, "database": "%s", "username": "postgres", "password": "%s", "schemas": ["public"]}\n' \
  "$PSQL_DB" "${POSTGRES_PASSWORD:-hyperflight}" >"$secrets/config.json"
printf '{"flight_url": "grpc://hyperflight:50051"}\n' >"$secrets/flight.json"
chmod 644 "$secrets"/*.json
network=$(podman inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(container hyperflight)")
airbyte() {  # airbyte <output file> <connector arguments...>
  local out=$1; shift
  bounded "connector $1" podman run --rm -i --label org.hyperflight.compose-test --network "$network" \
    -v "$secrets:/secrets:ro" "$connector" "$@" </dev/null >"$WORK/$out" 2>"$WORK/$out.err" \
    || { tail -n 20 "$WORK/$out" "$WORK/$out.err" >&2; die "connector $* exited non-zero"; }
}
# message <file> <type>: the one message of that type, as JSON.
message() { python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; t=[x for x in m if x.get("type")==sys.argv[2]]; assert len(t)==1, (sys.argv[2], [x.get("type") for x in m]); print(json.dumps(t[0]))' "$1" "$2"; }
airbyte spec.jsonl spec
message "$WORK/spec.jsonl" SPEC | grep -q '"connectionSpecification"' || die "spec: no connectionSpecification"
for config in config.json flight.json; do
  airbyte "check-$config.jsonl" check --config "/secrets/$config"
  message "$WORK/check-$config.jsonl" CONNECTION_STATUS | grep -q '"status": "SUCCEEDED"' \
    || die "check with $config: $(cat "$WORK/check-$config.jsonl")"
done
airbyte catalog.jsonl discover --config /secrets/config.json
message "$WORK/catalog.jsonl" CATALOG | python3 -c '
import json, sys
streams = {(s["namespace"], s["name"]): s for s in json.load(sys.stdin)["catalog"]["streams"]}
assert ("public", "metrics") in streams, sorted(streams)
print(json.dumps({"streams": [{"stream": streams[("public", "devices")], "sync_mode": "full_refresh",
                              "destination_sync_mode": "overwrite"}]}))' >"$secrets/catalog.json"
chmod 644 "$secrets/catalog.json"
airbyte read.jsonl read --config /secrets/config.json --catalog /secrets/catalog.json
got=$(python3 -c '
import json, sys
recs = [m["record"]["data"] for m in map(json.loads, open(sys.argv[1])) if m.get("type") == "RECORD"]
print(len(recs), sum(r["device_id"] for r in recs), sum(1 for r in recs if r["location"] is None))' "$WORK/read.jsonl")
want=$(sql "SELECT count(*), sum(device_id), count(*) - count(location) FROM public.devices" | tr '|' ' ')
[ "$got" = "$want" ] || die "connector read '$got' from public.devices, SQL says '$want' (rows, sum, NULL locations)"
log "connector read public.devices: $got (rows, sum of device_id, NULL locations) as SQL"
step "cleanup"
