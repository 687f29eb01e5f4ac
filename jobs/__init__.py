"""Spark jobs. Each job module runs with ``spark-submit``; transforms are pure."""
