"""Errors that retrying cannot fix: the DAG fails such a task at once instead of retrying."""


class PermanentError(Exception):
    """Bad data or configuration: a person must act before a rerun can succeed."""
