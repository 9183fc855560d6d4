#!/usr/bin/env bash
# `make cluster`: docker-compose.yaml's deployment without docker, on this machine.
# PostgreSQL and Redis from the Debian packages, an S3 server (moto on loopback, or the
# endpoint in GENREFLOW_CLUSTER_S3_ENDPOINT), then Airflow's api-server, scheduler,
# dag-processor, triggerer and two Celery workers with distinct hostnames, and
# `genreflow serve` on loopback reading the same bucket's latest model. Every Airflow
# process gets deploy/airflow.env (the file compose's Airflow services use) and then
# deploy/local-overlay.sh (loopback ports and local folders where compose has service
# names and volumes). Each process runs in a session of its own (so do the processes it
# starts), logs to $CLUSTER_DIR/logs/<name>.log and has its pid (= its session id) in
# $CLUSTER_DIR/pids/<name>.pid.
#
#   scripts/airflow-cluster.sh [start]   start, print the URL and login, run until Ctrl-C
#   scripts/airflow-cluster.sh stop      stop the cluster of $CLUSTER_DIR (another shell)
#   scripts/airflow-cluster.sh packages  install the Debian packages it needs (idempotent)
#
# Environment (all optional):
#   GENREFLOW_CLUSTER_DIR          state, logs and pids (default ./var/cluster); postgres
#                                  must be able to traverse it when run as root
#   GENREFLOW_CLUSTER_S3_ENDPOINT  an S3 endpoint to use instead of starting moto; keys
#                                  from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
#   GENREFLOW_CLUSTER_WORKERS      Celery workers (2); GENREFLOW_CLUSTER_CONCURRENCY tasks
#                                  each (1: extraction is CPU-bound)
#   GENREFLOW_CLUSTER_PASSWORD     the admin password (default: random, kept in the folder)
#   GENREFLOW_CLUSTER_DEMO         1 (default): upload demo tracks and valid.csv to the
#                                  bucket when it has no valid.csv yet; 0: leave it empty
#   GENREFLOW_CLUSTER_SERVE_PORT   port of `genreflow serve` on 127.0.0.1 (default: free)
# Anything else in the environment (GENREFLOW_CONFIG, AIRFLOW__... not set by the two
# files) reaches every process unchanged.
set -euo pipefail
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=$(mkdir -p "${GENREFLOW_CLUSTER_DIR:-$PROJECT/var/cluster}" && cd "${GENREFLOW_CLUSTER_DIR:-$PROJECT/var/cluster}" && pwd)
LOGS="$CLUSTER_DIR/logs"
PIDS="$CLUSTER_DIR/pids"
AIRFLOW_SERVICES=(api-server scheduler dag-processor triggerer)
STOP_TIMEOUT=20

say() { echo "genreflow cluster: $*" >&2; }
die() { say "$*"; exit 1; }

install_packages() {
  local missing=()
  compgen -G '/usr/lib/postgresql/*/bin/postgres' > /dev/null || missing+=(postgresql)
  command -v redis-server > /dev/null || missing+=(redis-server)
  command -v setpriv > /dev/null || missing+=(util-linux)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $EUID -eq 0 ]] || die "missing Debian packages; run: sudo apt-get install -y ${missing[*]}"
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

members() {  # sid...: live (non-zombie) processes of these sessions
  local sid
  for sid in "$@"; do
    { ps -o pid=,stat= -s "$sid" 2> /dev/null || true; } | awk '$2 !~ /^Z/ { print $1 }'
  done
}

alive() { [[ -n $(members "$@") ]]; }

sessions() {  # name...: session ids of the named components (each was started by setsid)
  local name
  for name in "$@"; do
    cat "$PIDS/$name.pid" 2> /dev/null || true
  done
}

stop_components() {
  # TERM to each process group (postgres: INT to the postmaster, its fast shutdown),
  # then KILL to whatever is left in their sessions: task processes put themselves in
  # process groups of their own, and may have outlived a killed worker, but never
  # leave the worker's session.
  local names=("$@") sids name
  sids=$(sessions "${names[@]}")
  [[ -z $sids ]] && return 0
  for name in "${names[@]}"; do
    if [[ $name == postgres ]]; then
      kill -INT "$(sessions postgres)" 2> /dev/null || true
    else
      kill -TERM -- "-$(sessions "$name")" 2> /dev/null || true
    fi
  done
  for _ in $(seq 1 "$STOP_TIMEOUT"); do
    # shellcheck disable=SC2086
    alive $sids || break
    sleep 1
  done
  local left
  # shellcheck disable=SC2086
  left=$(members $sids)
  if [[ -n $left ]]; then
    say "SIGKILL to what outlived the stop signal (${names[*]}): ${left//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $left 2> /dev/null || true
  fi
  for name in "${names[@]}"; do rm -f "$PIDS/$name.pid"; done
}

stop_all() {
  say "stopping everything started in $CLUSTER_DIR"
  local workers=() file
  for file in "$PIDS"/worker-*.pid; do
    [[ -e $file ]] && workers+=("$(basename "$file" .pid)")
  done
  stop_components serve "${workers[@]}" "${AIRFLOW_SERVICES[@]}"
  stop_components s3 redis postgres
  say "stopped"
}

stop_command() {
  local owner
  owner=$(cat "$PIDS/cluster.pid" 2> /dev/null) || owner=""
  if [[ -n $owner ]] && kill -0 "$owner" 2> /dev/null; then
    kill -TERM "$owner"  # the foreground script stops what it started, then exits
    for _ in $(seq 1 $((3 * STOP_TIMEOUT + 10))); do
      kill -0 "$owner" 2> /dev/null || return 0
      sleep 1
    done
    say "the cluster script ($owner) did not exit; stopping its processes here"
  fi
  stop_all
}

start_bg() {  # name command...: own session (setsid; its id = the pid), log, pid file
  local name=$1
  shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

wait_for() {  # what component timeout command...: poll until the command succeeds
  local what=$1 component=$2 timeout=$3
  shift 3
  for _ in $(seq 1 "$timeout"); do
    "$@" > /dev/null 2>&1 && return 0
    alive "$(cat "$PIDS/$component.pid")" || break
    sleep 1
  done
  tail -n 30 "$LOGS/$component.log" >&2 || true
  die "$what did not come up (log: $LOGS/$component.log)"
}

load_env_file() {  # KEY=value lines, literally (the format compose's env_file reads)
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    export "${line?}"
  done < "$1"
}

free_ports() {  # n distinct free ports on 127.0.0.1
  python - "$1" << 'PY'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
PY
}

start_postgres() {
  local bin data="$CLUSTER_DIR/postgres" as_pg=()
  bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
  [[ -x $bin/postgres ]] || die "PostgreSQL not found under /usr/lib/postgresql"
  if [[ $EUID -eq 0 ]]; then  # postgres refuses to run as root: its own user owns its data
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  if [[ ! -s $data/PG_VERSION ]]; then
    mkdir -p "$data"
    chmod 700 "$data"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$data"
    "${as_pg[@]}" test -w "$data" \
      || die "user postgres cannot reach $data: choose a GENREFLOW_CLUSTER_DIR every user can traverse"
    local pwfile="$CLUSTER_DIR/.pgpass-init"
    echo airflow > "$pwfile"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$pwfile"
    "${as_pg[@]}" "$bin/initdb" -D "$data" -U airflow --pwfile="$pwfile" -E UTF8 \
      --auth=scram-sha-256 > "$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
  fi
  start_bg postgres "${as_pg[@]}" "$bin/postgres" -D "$data" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories=
  wait_for "PostgreSQL" postgres 60 "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  export PGPASSWORD=airflow
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U airflow -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'airflow'" | grep -q 1; then
    createdb -h 127.0.0.1 -p "$PG_PORT" -U airflow airflow
  fi
  unset PGPASSWORD
}

prepare_bucket() {  # the bucket of GENREFLOW_STORE; demo data unless it has a valid.csv
  python - "$CLUSTER_DIR/demo" "${GENREFLOW_CLUSTER_DEMO:-1}" << 'PY'
import os, subprocess, sys
from pathlib import Path
from urllib.parse import urlparse

from genreflow.storage import make_s3_client, open_store, split_uri

client = make_s3_client()
bucket = urlparse(os.environ["GENREFLOW_STORE"]).netloc
if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
    client.create_bucket(Bucket=bucket)
valid_store, valid_key = split_uri(os.environ["GENREFLOW_VALID_CSV"])
if sys.argv[2] == "1" and not valid_store.exists(valid_key):
    demo = Path(sys.argv[1])  # `genreflow demo` skips what a previous start made
    subprocess.run(["genreflow", "demo", "--dest", str(demo)], check=True)
    inbox = open_store(os.environ["GENREFLOW_INBOX"])
    files = sorted(p for p in (demo / "inbox").rglob("*") if p.is_file())
    for path in files:
        inbox.write_bytes(path.relative_to(demo / "inbox").as_posix(), path.read_bytes())
    valid_store.write_bytes(valid_key, (demo / "valid.csv").read_bytes())
    print(f"uploaded {len(files)} demo tracks to {inbox.uri} and valid.csv")
PY
}

start() {
  install_packages
  command -v airflow > /dev/null || die "airflow is not on PATH (run: make cluster)"
  if [[ -f $PIDS/cluster.pid ]] && kill -0 "$(cat "$PIDS/cluster.pid")" 2> /dev/null; then
    die "a cluster is already running from $CLUSTER_DIR (stop it: $0 stop)"
  fi
  mkdir -p "$LOGS" "$PIDS" "$CLUSTER_DIR/redis" "$CLUSTER_DIR/numba-cache"
  rm -f "$PIDS"/*.pid
  echo $$ > "$PIDS/cluster.pid"
  export GENREFLOW_CLUSTER_DIR="$CLUSTER_DIR"
  trap 'trap - EXIT; stop_all; exit 0' INT TERM
  trap 'stop_all' EXIT

  local workers=${GENREFLOW_CLUSTER_WORKERS:-2} ports
  read -r -a ports <<< "$(free_ports $((7 + workers)))"
  PG_PORT=${ports[0]} REDIS_PORT=${ports[1]} API_PORT=${ports[2]} S3_PORT=${ports[3]}
  SCHEDULER_HEALTH_PORT=${ports[4]} TRIGGER_LOG_PORT=${ports[5]}
  SERVE_PORT=${GENREFLOW_CLUSTER_SERVE_PORT:-${ports[6]}}
  local worker_log_ports=("${ports[@]:7}")

  start_postgres
  start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$CLUSTER_DIR/redis" \
    --save "" --appendonly no --daemonize no
  wait_for "Redis" redis 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  if [[ -n ${GENREFLOW_CLUSTER_S3_ENDPOINT:-} ]]; then
    S3_ENDPOINT=$GENREFLOW_CLUSTER_S3_ENDPOINT
    S3_KEY=${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID for $S3_ENDPOINT}
    S3_SECRET=${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY for $S3_ENDPOINT}
  else  # moto keeps objects in memory: the bucket is new on every start
    S3_ENDPOINT="http://127.0.0.1:$S3_PORT" S3_KEY=genreflow S3_SECRET=genreflow
    start_bg s3 moto_server -H 127.0.0.1 -p "$S3_PORT"
    wait_for "the S3 server (moto)" s3 60 curl -fsS "$S3_ENDPOINT/moto-api/"
  fi
  [[ -s $CLUSTER_DIR/secrets ]] || python -c 'import secrets
for _ in range(3): print(secrets.token_urlsafe(24))' > "$CLUSTER_DIR/secrets"
  local password
  { read -r JWT_SECRET; read -r API_SECRET; read -r password; } < "$CLUSTER_DIR/secrets"
  password=${GENREFLOW_CLUSTER_PASSWORD:-$password}

  load_env_file "$PROJECT/deploy/airflow.env"
  # shellcheck source=../deploy/local-overlay.sh
  source "$PROJECT/deploy/local-overlay.sh"
  export -p | grep -E '^declare -x (AIRFLOW|GENREFLOW|AWS_|NUMBA_)' > "$CLUSTER_DIR/cluster.env"
  prepare_bucket > "$LOGS/bucket.log" 2>&1 || { cat "$LOGS/bucket.log" >&2; exit 1; }

  mkdir -p "$AIRFLOW_HOME"
  # both workers share NUMBA_CACHE_DIR: compile into it once, not twice at the same time
  genreflow warm-cache > "$LOGS/warm-cache.log" 2>&1 || { cat "$LOGS/warm-cache.log" >&2; exit 1; }
  airflow db migrate > "$LOGS/db-migrate.log" 2>&1 || { tail -n 40 "$LOGS/db-migrate.log" >&2; exit 1; }
  python -c 'import json, sys; json.dump({"admin": sys.argv[2]}, open(sys.argv[1], "w"))' \
    "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" "$password"
  local service i
  for service in "${AIRFLOW_SERVICES[@]}"; do
    start_bg "$service" airflow "$service"
  done
  for i in $(seq 1 "$workers"); do
    start_bg "worker-$i" env GENREFLOW_WORKER_HOSTNAME="genreflow-worker-$i" \
      AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${worker_log_ports[$((i - 1))]}" \
      airflow celery worker --celery-hostname "worker-$i@%h"
  done
  # Answers 503 until the first run publishes a model, then follows latest.json.
  start_bg serve genreflow serve --host 127.0.0.1 --port "$SERVE_PORT" --workers 1
  local url="http://127.0.0.1:$API_PORT"
  wait_for "the API server" api-server 180 curl -fsS "$url/api/v2/monitor/health"
  wait_for "genreflow serve" serve 180 curl -sS "http://127.0.0.1:$SERVE_PORT/health"
  for i in $(seq 1 "$workers"); do
    wait_for "Celery worker $i" "worker-$i" 180 grep -q "ready\." "$LOGS/worker-$i.log"
  done
  {
    echo "GENREFLOW_CLUSTER_URL=$url"
    echo "GENREFLOW_CLUSTER_PASSWORD=$password"
    echo "GENREFLOW_CLUSTER_WORKERS=$workers"
    echo "GENREFLOW_CLUSTER_SERVE_URL=http://127.0.0.1:$SERVE_PORT"
  } >> "$CLUSTER_DIR/cluster.env"

  printf '\n==== genreflow: Airflow cluster is up (CeleryExecutor, %s workers) ====\n' "$workers"
  printf '  UI:        %s  (user admin, password %s)\n' "$url" "$password"
  printf '  S3:        %s  (keys %s / %s), bucket %s\n' "$S3_ENDPOINT" "$S3_KEY" "$S3_SECRET" \
    "$(python -c 'import sys; from urllib.parse import urlparse; print(urlparse(sys.argv[1]).netloc)' "$GENREFLOW_STORE")"
  printf '  Postgres:  127.0.0.1:%s   Redis: 127.0.0.1:%s\n' "$PG_PORT" "$REDIS_PORT"
  printf '  Serve:     http://127.0.0.1:%s  (POST /predict, GET /health: docs/models.md)\n' \
    "$SERVE_PORT"
  printf '  Logs:      %s/<process>.log (Airflow task logs: %s/logs)\n' "$LOGS" "$AIRFLOW_HOME"
  printf '  CLI:       set -a; . %s; set +a; airflow dags list\n' "$CLUSTER_DIR/cluster.env"
  printf '  Stop:      Ctrl-C here, or %s stop\n' "$0"
  printf '=====================================================================\n\n'
  local name warned=" "
  while true; do
    for file in "$PIDS"/*.pid; do
      name=$(basename "$file" .pid)
      [[ $name == cluster || $warned == *" $name "* ]] && continue
      if ! alive "$(cat "$file" 2> /dev/null || echo 0)"; then
        say "$name exited (log: $LOGS/$name.log)"
        warned+="$name "
      fi
    done
    sleep 2 &
    wait $! || true
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop_command ;;
  packages) install_packages ;;
  *) die "usage: $0 [start|stop|packages]" ;;
esac
