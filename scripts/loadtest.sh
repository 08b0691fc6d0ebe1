#!/usr/bin/env bash
# The load test without Docker: starts the project's cluster, loads the sample data into database
# hyperflight_load, builds the release binaries, and runs hyperflight-loadtest, which starts the
# server (fixed ticket secret) at a free loopback port, runs N clients against it, verifies every
# read's row count and time checksum, and stops the server. Prints the load test's report; exits
# with its code (0: every read verified, 1: not, 2: could not run). Everything it started is
# stopped on exit, even on Ctrl-C.
#
# Usage: scripts/loadtest.sh [--clients 32] [--duration 60] [--rows 5000000] [--days 14]
#                            [--fault none|restart-db|drop-chunk|restart-server] [--fault-at SECONDS]
#                            [--seed N] [-- more hyperflight-loadtest flags]
#
# --fault restart-db stops and starts the database mid-run. It uses a cluster of its own
# (.hyperflight/loadtest-cluster, or $HYPERFLIGHT_CLUSTER_DIR) so that restarting it cannot break
# anyone else using the shared development cluster; the data is loaded there on first use.
# All traffic stays on 127.0.0.1.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DB=hyperflight_load
CLIENTS=32 DURATION=60 ROWS=5000000 DAYS=14 FAULT=none FAULT_AT="" SEED=""
EXTRA=()

log() { printf '[loadtest] %s\n' "$*" >&2; }
usage() {
  sed -n '9,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { log "$1 must be a positive integer"; exit 2; }; }

while [ $# -gt 0 ]; do
  case "$1" in
    --clients) [ $# -ge 2 ] || usage; CLIENTS=$2; shift 2 ;;
    --duration) [ $# -ge 2 ] || usage; DURATION=$2; shift 2 ;;
    --rows) [ $# -ge 2 ] || usage; ROWS=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage; DAYS=$2; shift 2 ;;
    --fault) [ $# -ge 2 ] || usage; FAULT=$2; shift 2 ;;
    --fault-at) [ $# -ge 2 ] || usage; FAULT_AT=$2; shift 2 ;;
    --seed) [ $# -ge 2 ] || usage; SEED=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
positive --clients "$CLIENTS"
positive --duration "$DURATION"
positive --rows "$ROWS"
positive --days "$DAYS"
[ -z "$FAULT_AT" ] || positive --fault-at "$FAULT_AT"
[ -z "$SEED" ] || [[ "$SEED" =~ ^[0-9]+$ ]] || { log "--seed must be a number"; exit 2; }
case "$FAULT" in none|restart-db|drop-chunk|restart-server) ;; *) log "unknown --fault $FAULT"; usage ;; esac

if [ "$FAULT" = restart-db ]; then
  export HYPERFLIGHT_CLUSTER_DIR=${HYPERFLIGHT_CLUSTER_DIR:-$REPO/.hyperflight/loadtest-cluster}
  log "restart-db: using the cluster in $HYPERFLIGHT_CLUSTER_DIR"
fi

# Stop only what this script started: the cluster, if it was not running before.
STARTED_CLUSTER=0
LOADTEST_PID=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$LOADTEST_PID" ] && kill -0 "$LOADTEST_PID" 2>/dev/null; then
    # SIGTERM: the load test stops its clients, its server and drops its private copy.
    kill -TERM "$LOADTEST_PID" 2>/dev/null || true
    wait "$LOADTEST_PID" 2>/dev/null || true
  fi
  if [ "$STARTED_CLUSTER" -eq 1 ]; then
    log "stopping the cluster this script started"
    bash scripts/cluster.sh stop >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash scripts/cluster.sh status >/dev/null 2>&1 || STARTED_CLUSTER=1
URL=$(bash scripts/cluster.sh start)
BASE=${URL%/*}
log "cluster: $URL"
bash scripts/load-sample-data.sh --database "$DB" --rows "$ROWS" --days "$DAYS" --if-missing >&2

log "building release binaries"
cargo build --release --workspace --bins >&2
BIN=$(scripts/target-dir.sh)/release

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Fixed for the run, so resume tickets stay valid when --fault restart-server restarts the server.
SECRET=loadtest-ticket-secret-$(date +%s)-$$
mkdir -p .hyperflight
SERVER_LOG=$REPO/.hyperflight/loadtest-server.log
: >"$SERVER_LOG"

args=(
  --url "http://127.0.0.1:$PORT"
  --database-url "$BASE/$DB"
  --table public.metrics
  --clients "$CLIENTS"
  --duration "${DURATION}s"
  --fault "$FAULT"
  --server-cmd "$BIN/hyperflight serve --database-url $BASE/$DB --listen 127.0.0.1:$PORT --metrics-listen '' --ticket-secret $SECRET"
  --server-log "$SERVER_LOG"
)
[ -z "$FAULT_AT" ] || args+=(--fault-at "${FAULT_AT}s")
[ -z "$SEED" ] || args+=(--seed "$SEED")
if [ "$FAULT" = restart-db ]; then
  args+=(--db-restart-cmd "bash '$REPO/scripts/cluster.sh' stop && bash '$REPO/scripts/cluster.sh' start >/dev/null")
fi

log "running: $CLIENTS clients for ${DURATION}s against 127.0.0.1:$PORT, fault $FAULT (server log: $SERVER_LOG)"
set +e
"$BIN/hyperflight-loadtest" "${args[@]}" "${EXTRA[@]}" &
LOADTEST_PID=$!
wait "$LOADTEST_PID"
status=$?
LOADTEST_PID=""
set -e
exit "$status"
