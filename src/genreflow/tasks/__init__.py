"""The steps of one retraining run as plain functions; the DAG only wires them.

Each step takes and returns small JSON-able values (keys in the store, counts), so
Airflow passes them through XCom while data frames and models stay in the store.
"""
