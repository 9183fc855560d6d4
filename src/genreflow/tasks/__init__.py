"""The steps of one retraining run as plain functions; the DAG only wires them.

Each step takes and returns small JSON-able values (keys in the store, counts), so
Airflow passes them through XCom while data frames and models stay in the store.
"""

from __future__ import annotations

import re


def run_key(run_id: str) -> str:
    """An Airflow run id made safe as one path segment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")
