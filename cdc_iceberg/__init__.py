"""Exactly-once change data capture from Debezium on Kafka into Apache Iceberg.

The package holds what the Spark job, the Airflow plugins and the command line
tools share: settings, Kafka offset bookkeeping, the Iceberg catalog, the event
generator and the local development stack. It never imports pyspark or airflow
at module level, so DAG files that import it stay cheap to parse.
"""
