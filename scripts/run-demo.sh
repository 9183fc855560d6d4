#!/usr/bin/env bash
# One retraining run through Airflow on the embedded default: SQLite Airflow in
# $AIRFLOW_HOME, local store, demo data synthesised unless GENREFLOW_INBOX is set.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p "$AIRFLOW_HOME"
if [[ -z "${GENREFLOW_INBOX:-}" ]]; then
  genreflow demo
fi
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 \
  || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
log="$AIRFLOW_HOME/last-run.log"
echo "running genre_retrain through Airflow (airflow dags test); full log: $log"
if ! airflow dags test genre_retrain > "$log" 2>&1; then
  grep -E "ERROR|Error|error" "$log" | tail -20
  exit 1
fi
# genreflow's records, multi-line ones (metrics, checks) whole: a record starts with a
# timestamp and ends with its logger's name
awk '/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ { if (rec ~ /\[genreflow/) print rec; rec = $0; next }
     { rec = rec "\n" $0 }
     END { if (rec ~ /\[genreflow/) print rec }' "$log" \
  | sed -E 's/^([^ ]+) \[[a-z ]+\] /\1 /; s/ \[genreflow[^]]*\].*$//'
grep -q "state=success" "$log" || { echo "the DAG run did not succeed; see $log"; exit 1; }
genreflow models
