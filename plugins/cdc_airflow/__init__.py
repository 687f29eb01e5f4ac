"""Airflow operators, sensors and hooks of the CDC pipeline.

The logic they run lives in :mod:`cdc_iceberg` as pure functions; these
classes only connect it to Airflow (connections, templating, XCom).
"""
