#!/usr/bin/env bash
# `make airflow`: Airflow 3 standalone (api-server, scheduler, dag-processor, triggerer,
# LocalExecutor, SQLite in $AIRFLOW_HOME) serving genreflow's DAG and plugin on the
# embedded default: local store, demo data synthesised unless GENREFLOW_INBOX is set.
# Prints the URL and the login once the API server answers. Ctrl-C (or SIGTERM) stops
# every process it started, by pid: `airflow standalone` itself can hang on Ctrl-C after
# its components exit, and the scheduler may ignore SIGTERM while idle.
# Airflow inherits this environment: source credentials (JAMENDO_CLIENT_ID,
# GENREFLOW_JAMENDO_CONN_ID, SPOTIPY_CLIENT_ID/SECRET, ...) set before `make airflow` reach
# the tasks; the source check below only says which are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${AIRFLOW_HOME:?set AIRFLOW_HOME (make airflow sets it to ./airflow-home)}"
command -v airflow > /dev/null || { echo "airflow is not on PATH (run: make airflow)" >&2; exit 1; }
mkdir -p "$AIRFLOW_HOME"

if [[ -z "${GENREFLOW_INBOX:-}" ]]; then
  genreflow demo
fi

for source in "JAMENDO_CLIENT_ID:GENREFLOW_JAMENDO_CONN_ID:jamendo" \
              "SPOTIPY_CLIENT_ID:GENREFLOW_SPOTIFY_CONN_ID:spotify"; do
  IFS=: read -r key conn name <<< "$source"
  if [[ -z "${!key:-}" && -z "${!conn:-}" ]]; then
    echo "genreflow: $key (or $conn) not set: the $name source will fail if a run asks for it" >&2
  fi
done

port="${AIRFLOW__API__PORT:-8080}"
url="http://localhost:$port"
# Task processes report to the execution API, which defaults to port 8080.
if [[ -z "${AIRFLOW__API__BASE_URL:-}" ]]; then
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-$url/execution/}"
fi
# LocalExecutor starts one worker process per slot (default 32): a few are plenty here.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
passwords="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"

announce() {
  for _ in $(seq 1 300); do
    if [[ -s "$passwords" ]] && curl -fsS -o /dev/null "$url/api/v2/monitor/health" 2> /dev/null; then
      password=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$passwords")
      printf '\n==== genreflow: Airflow is up ====\n'
      printf '  UI:             %s  (user admin, password %s)\n' "$url" "$password"
      printf '  Model registry: %s/genreflow/registry/  (Browse > Model registry)\n' "$url"
      printf '  DAG:            %s/dags/genre_retrain  (Trigger to run with params)\n' "$url"
      printf '  passwords file: %s\n==================================\n\n' "$passwords"
      return
    fi
    sleep 1
  done
  echo "genreflow: Airflow did not answer on $url within 300 s; see the output above" >&2
}

descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}

any_alive() {  # zombies do not count: they are dead, just not reaped yet
  local pid
  for pid in "$@"; do
    [[ "$(ps -o stat= -p "$pid" 2> /dev/null)" =~ ^[^Z] ]] && return 0
  done
  return 1
}

stop() {
  trap - INT TERM
  echo "genreflow: stopping Airflow" >&2
  local pids
  pids=$(descendants $$)
  kill -TERM $pids 2> /dev/null || true
  for _ in $(seq 1 15); do
    any_alive $pids || exit 0
    sleep 1
  done
  echo "genreflow: SIGKILL to what ignored SIGTERM" >&2
  kill -KILL $pids 2> /dev/null || true
  exit 0
}

trap stop INT TERM
airflow standalone &
standalone=$!
announce &
announcer=$!
status=0
wait "$standalone" || status=$?
kill "$announcer" 2> /dev/null || true
exit "$status"
