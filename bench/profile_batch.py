"""Where one micro-batch's read-and-parse time goes, step by step.

The job's ``scan`` step (read the batch from Kafka, parse, type, cache, one
aggregation over it) is most of a batch's time in the W1/W2 benchmarks. This
script takes it apart on one batch of the W1 workload::

    cd /work/main && nice -n 19 .venv/bin/python bench/profile_batch.py --records 100000

Each step is timed on its own (the best of ``--repeats`` runs after one warm-up,
forcing every column with Spark's ``noop`` sink) and written to
``bench/results/batch_profile-<records>.json``:

* ``kafka_read``: the batch's records fetched from a local broker, nothing else;
* ``parse``: ``transforms.parse_events`` on the records (from a cached copy);
* ``spark_from_json``: the reference: Spark's own ``from_json`` of the same
  bytes into a typed envelope (lax: it checks neither duplicate keys, nor text
  after the object, nor lone surrogates, and turns what does not fit into nulls);
* ``variant_single_pass``: a lever measured, not the job's parse: one read of
  each value and key with Spark's strict ``try_parse_json`` (duplicate keys
  refused at every level) and the fields the job needs taken from it;
* ``parse_and_type``: the same plus ``transforms.type_columns``, as the job types it;
* ``one_pass``: the job's one pass over the batch (parse, type, group per key
  and cache, then add the groups up): what the job's ``scan`` step does after
  the fetch;
* ``collapse``: ``transforms.combine_newest``, the newest change per key from
  the cached groups.

Then the job itself drains the same records as one batch into an empty table
(``drain``), and its own step timings (``drain_steps_s``: ``scan``,
``collapse``, ``append-tombstones``, ``merge-live``) are recorded beside the
parts above.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BODY_BYTES,
    PARTITIONS,
    SCRATCH_DIR,
    SEED,
    TOPIC,
    kafka_broker,
    machine_info,
    write_result,
)
from bench.contenders import ROW_DDL


def _best(step: Any, repeats: int) -> float:
    step()  # warm-up: class loading and code generation are not the step's cost
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        step()
        times.append(time.monotonic() - started)
    return round(min(times), 3)


SPARK_ENVELOPE_DDL = (
    f"before struct<{ROW_DDL}>, after struct<{ROW_DDL}>, op string, "
    "source struct<ts_ms: bigint, lsn: bigint, snapshot: string>, ts_ms bigint"
)


def _variant_pass(raw: Any) -> Any:
    """What a one-pass parse with Spark's own strict reader costs (a lever, not the job's).

    ``try_parse_json`` reads each value once into a VARIANT and refuses
    duplicate keys at every level, single quotes and NaN; the value is read
    inside ``[...]`` so that text after the object fails too, and the fields
    the job needs (op, source.ts_ms, source.lsn, the row image as
    ``map<string,string>``, the key from the Kafka key) are taken from the
    variant. Its texts of numbers differ from the strict parse's in places
    (``-0.0``, ``1.0``, decimals past a double's precision), so it is measured here
    only, for what it would save.
    """
    from pyspark.sql import functions as F

    def read(column: str) -> Any:
        return F.try_parse_json(F.concat(F.lit("["), F.col(column).cast("string"), F.lit("]")))

    def get(root: Any, path: str, kind: str) -> Any:
        wrapped = F.try_variant_get(root, "$[0].schema", "variant").isNotNull()
        return F.when(wrapped, F.try_variant_get(root, f"$[0].payload{path}", kind)).otherwise(
            F.try_variant_get(root, f"$[0]{path}", kind)
        )

    value, key = F.col("_value"), F.col("_key")
    op = get(value, ".op", "string")
    image = F.when(op == "d", get(value, ".before", "map<string,string>")).otherwise(
        get(value, ".after", "map<string,string>")
    )
    one = F.try_variant_get(value, "$[1]", "variant").isNull()
    return raw.select(read("value").alias("_value"), read("key").alias("_key"), "value").select(
        (value.isNotNull() & one).alias("_one_object"),
        op.alias("op"),
        get(value, ".source.ts_ms", "bigint").alias("ts_ms"),
        get(value, ".source.lsn", "bigint").alias("lsn"),
        image.alias("_row"),
        get(key, ".article_id", "string").alias("_key_article_id"),
        F.col("value").cast("string").contains("\\ud").alias("_maybe_surrogate"),
    )


def profile(records: int, keys: int, repeats: int, work: Path) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from bench.contenders import run_product
    from cdc_iceberg import pipelines
    from cdc_iceberg.generator import ArticleSource, produce
    from cdc_iceberg.kafka_offsets import ensure_topic, read_tasks
    from cdc_iceberg.settings import Settings
    from jobs import transforms
    from jobs.batch_writer import BatchWriter
    from jobs.session import build_session

    steps: dict[str, float] = {}
    with kafka_broker(work / "kafka") as broker:
        settings = Settings.from_env().replace(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_topic=TOPIC,  # the workload's table, as pipelines.yaml declares it
            kafka_consumer_group="bench_profile",
            iceberg_catalog_uri=f"sqlite:///{work}/catalog.db",
            iceberg_warehouse=f"file://{work}/warehouse",
            iceberg_table="bench.profile",
            checkpoint_location=str(work / "checkpoint"),
            max_offsets_per_trigger=records + records // 5,  # the whole topic in one batch
        )
        ensure_topic(settings, partitions=PARTITIONS)
        source = ArticleSource(
            seed=SEED, partitions=PARTITIONS, wrapper=False, body_bytes=BODY_BYTES
        )
        sent = 0
        while sent < records:
            messages = source.random_history(min(25_000, records - sent), keys)[: records - sent]
            produce(settings, messages)
            sent += len(messages)

        spark = build_session(settings, app_name="bench_profile_batch")
        try:
            reader = (
                spark.read.format("kafka")
                .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
                .option("subscribe", settings.kafka_topic)
                .option("startingOffsets", "earliest")
                .option("endingOffsets", "latest")
            )
            tasks = read_tasks(PARTITIONS, spark.sparkContext.defaultParallelism)
            if tasks:  # split as the job reads it
                reader = reader.option("minPartitions", str(tasks))
            kafka = reader.load()

            def force(frame: Any) -> None:
                frame.write.format("noop").mode("overwrite").save()

            steps["kafka_read"] = _best(lambda: force(kafka), repeats)
            raw = kafka.persist()
            raw.count()

            # the job's own typing step, on the table's columns, nothing committed yet
            writer = BatchWriter.__new__(BatchWriter)
            writer.settings, writer.spark, writer.stop_offsets = settings, spark, {}
            writer.replay, writer.replay_cutoff_ms = None, None
            model = pipelines.load(settings.pipelines_file).declared_model(settings.kafka_topic)
            assert model is not None, "pipelines.yaml declares the workload's table"
            writer.key = model.key
            columns = [(c.name, c.spark_type, c.codec) for c in model.columns]
            parsed = transforms.parse_events(raw, settings.event_format, model.key)
            typed = writer._type(parsed, {}, columns, {})
            steps["parse"] = _best(lambda: force(parsed), repeats)
            # the reference: Spark's own from_json of the same bytes into a typed envelope,
            # lax (no check of duplicate keys, trailing text or lone surrogates)
            lax = raw.select(
                F.from_json(F.col("value").cast("string"), SPARK_ENVELOPE_DDL).alias("e")
            ).select("e.op", "e.source.ts_ms", "e.source.lsn", "e.before.*", "e.after.*")
            steps["spark_from_json"] = _best(lambda: force(lax), repeats)
            steps["variant_single_pass"] = _best(lambda: force(_variant_pass(raw)), repeats)
            steps["parse_and_type"] = _best(lambda: force(typed), repeats)

            names = [c[0] for c in columns]
            # as the job learns them: the columns the batch leaves unavailable (TOAST)
            writer.toasted = frozenset()
            learned: list[Any] = []
            writer.toasted = writer._scan(writer._partials(typed, names, learned)).unavailable
            for frame in learned:
                frame.unpersist(blocking=True)

            def one_pass() -> None:
                cached: list[Any] = []
                writer._scan(writer._partials(typed, names, cached))
                for frame in cached:
                    frame.unpersist(blocking=True)

            steps["one_pass"] = _best(one_pass, repeats)
            partials = writer._partials(typed, names, [])
            writer._scan(partials)
            collapsed = writer._newest(partials, names)
            steps["collapse"] = _best(lambda: force(collapsed), repeats)
            partials.unpersist()
            raw.unpersist()
            batches = run_product(spark, settings)
        finally:
            spark.stop()
    drained = [b for b in batches if not b.get("skipped")]
    return {
        "records": sent,
        "keys": keys,
        "repeats": repeats,
        "steps_s": steps,
        "drain_batches": len(drained),
        "drain_steps_s": drained[0]["steps"] if drained else {},
        "drain_batch_s": drained[0]["duration_s"] if drained else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    work = SCRATCH_DIR / "profile_batch"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    machine = machine_info()
    try:
        result = profile(args.records, args.keys, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_result(f"batch_profile-{args.records}", result, machine)
    for step, seconds in result["steps_s"].items():
        print(f"{step:18s} {seconds:7.2f} s")
    for step, seconds in result["drain_steps_s"].items():
        print(f"drain: {step:11s} {seconds:7.2f} s")
    print(f"drain: whole batch {result['drain_batch_s']} s ({result['drain_batches']} batch)")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
