"""DAG-file parse cost: what Airflow pays every 30 s for dags/genre_retrain.py.

Prints the parse time of the DAG file (with Airflow itself already imported, as in the
dag-processor) against a reference in the same process: parsing a trivial one-task DAG.
Also lists heavy libraries the parse pulled in (must be none).

    .venv/bin/python bench/bench_dag_parse.py
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("librosa", "sklearn", "imblearn", "umap", "numba", "pandas", "scipy", "boto3",
         "spotipy", "matplotlib")
TRIVIAL = '''
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def trivial():
    @task
    def one():
        return 1
    one()

trivial()
'''


def parse_seconds(path: Path, repeats: int = 20) -> float:
    times = []
    for i in range(repeats):
        spec = importlib.util.spec_from_file_location(f"dagfile_{path.stem}_{i}", path)
        module = importlib.util.module_from_spec(spec)
        start = time.perf_counter()
        spec.loader.exec_module(module)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    import airflow.sdk  # noqa: F401  (the dag-processor has it loaded already)

    project = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        trivial = Path(tmp) / "trivial.py"
        trivial.write_text(TRIVIAL)
        reference = parse_seconds(trivial)
    dag_file = project / "dags" / "genre_retrain.py"
    first = time.perf_counter()
    spec = importlib.util.spec_from_file_location("dagfile_cold", dag_file)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    cold = time.perf_counter() - first
    warm = parse_seconds(dag_file)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    print(f"trivial DAG parse (reference): {reference * 1000:7.1f} ms")
    print(f"genre_retrain first parse:     {cold * 1000:7.1f} ms (imports genreflow modules)")
    print(f"genre_retrain warm parse:      {warm * 1000:7.1f} ms  ratio {warm / reference:.1f}x")
    print(f"heavy libraries imported by parsing: {heavy or 'none'}")


if __name__ == "__main__":
    main()
