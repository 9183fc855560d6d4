"""Worker processes from inside an Airflow task that a Celery worker runs.

Celery's prefork pool marks its processes daemonic, and the Airflow task process forked
from one inherits the mark. A daemonic process may not start children: multiprocessing
raises ``AssertionError: daemonic processes are not allowed to have children`` (the
extractor's pool) and joblib quietly runs ``n_jobs=1`` (model selection on one core of
two). The mark exists so a daemon killed with its parent leaves no orphans; genreflow's
pools are context-managed, joined before the task returns, and their workers exit when
the task process dies (their pipe to it closes), so the task clears it before it starts
any.
"""

from __future__ import annotations

import logging
import multiprocessing

log = logging.getLogger(__name__)


def allow_child_processes() -> None:
    """Let this process start worker processes even if it was forked from a daemon."""
    process = multiprocessing.current_process()
    if process.daemon:
        log.info("running in a daemonic process (a Celery worker's pool): allowing it "
                 "worker processes of its own")
        process.daemon = False
