# genreflow: what differs from docker-compose.yaml's `environment:` when the same
# deployment runs on one machine without docker (scripts/airflow-cluster.sh sources this
# after deploy/airflow.env, once it has chosen free loopback ports). Compose reaches
# services by name (postgres, redis, minio, airflow-apiserver) and keeps state in volumes;
# here they are 127.0.0.1 ports and folders under $CLUSTER_DIR. Each key compose sets in
# `environment:` has its value here; the rest are settings compose leaves at the image's
# defaults (paths under /opt/airflow, ports every container has to itself).
# shellcheck shell=bash disable=SC2154

export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:airflow@127.0.0.1:$PG_PORT/airflow"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://airflow:airflow@127.0.0.1:$PG_PORT/airflow"
export AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
export AIRFLOW__CELERY__WORKER_CONCURRENCY="${GENREFLOW_CLUSTER_CONCURRENCY:-1}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$CLUSTER_DIR/simple_auth_manager_passwords.json"
# Random per cluster folder (kept in it), the same for every process of this machine.
export AIRFLOW__API_AUTH__JWT_SECRET="$JWT_SECRET"
export AIRFLOW__API__SECRET_KEY="$API_SECRET"
export GENREFLOW_HOME="$PROJECT"
# numba compiles the feature extractor once per host and caches it here (shared by this
# host's workers; the source tree may be read-only where the package is installed).
export NUMBA_CACHE_DIR="$CLUSTER_DIR/numba-cache"
export AWS_ENDPOINT_URL="$S3_ENDPOINT"
export AWS_ACCESS_KEY_ID="$S3_KEY"
export AWS_SECRET_ACCESS_KEY="$S3_SECRET"
export AIRFLOW_CONN_GENREFLOW_S3="{\"conn_type\":\"aws\",\"login\":\"$S3_KEY\",\"password\":\"$S3_SECRET\",\"extra\":{\"endpoint_url\":\"$S3_ENDPOINT\",\"region_name\":\"$AWS_DEFAULT_REGION\"}}"

# Image defaults in compose (/opt/airflow/...), this checkout and cluster folder here.
export AIRFLOW_HOME="$CLUSTER_DIR/airflow-home"
export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PROJECT/plugins"
# Every container has these ports to itself; processes sharing a machine need their own.
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$API_PORT"
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT="$SCHEDULER_HEALTH_PORT"
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$TRIGGER_LOG_PORT"
