#!/usr/bin/env bash
# `make airflow`: Airflow 3 standalone (api-server, scheduler, dag-processor, triggerer,
# LocalExecutor, SQLite in $AIRFLOW_HOME) serving genreflow's DAG and plugin on the
# embedded default: local store, demo data synthesised unless GENREFLOW_INBOX is set.
# Prints the URL and the login once the API server answers; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${AIRFLOW_HOME:?set AIRFLOW_HOME (make airflow sets it to ./airflow-home)}"
command -v airflow > /dev/null || { echo "airflow is not on PATH (run: make airflow)" >&2; exit 1; }
mkdir -p "$AIRFLOW_HOME"

if [[ -z "${GENREFLOW_INBOX:-}" ]]; then
  genreflow demo
fi

port="${AIRFLOW__API__PORT:-8080}"
url="http://localhost:$port"
# Task processes report to the execution API, which defaults to port 8080.
if [[ -z "${AIRFLOW__API__BASE_URL:-}" ]]; then
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-$url/execution/}"
fi
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

announce &
exec airflow standalone
