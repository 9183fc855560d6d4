#!/usr/bin/env bash
# The Debian packages the test suite needs, skipped when present (idempotent):
# PostgreSQL and Redis for the cluster test (scripts/airflow-cluster.sh packages) and
# chromium for the browser test (tests/test_browser.py drives /usr/bin/chromium with the
# playwright package from PyPI; no browser download). Installing needs root; without it
# this says what is missing and the tests that need it skip.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  command -v chromium > /dev/null ||
    echo "install-test-deps: chromium missing (sudo apt-get install -y chromium); the browser test skips" >&2
  exit 0
fi
bash scripts/airflow-cluster.sh packages
if ! command -v chromium > /dev/null; then
  echo "install-test-deps: installing chromium (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 chromium fonts-dejavu-core
fi
