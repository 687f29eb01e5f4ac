"""Benchmarks of the CDC job against the naive pattern, pyiceberg and an append-only ceiling.

Run them with::

    cd /work/main && SPARK_LOCAL_IP=127.0.0.1 nice -n 19 .venv/bin/python bench/run.py --quick

See ``bench/README.md`` for the figures and the results.
"""
