"""Operators: drain (spark-submit of the job), validate, reset, dead-letter replay,
maintenance."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from cdc_airflow import assets, metrics
from cdc_airflow.hooks import CdcKafkaHook, settings_for_table
from cdc_iceberg.settings import PROJECT_ROOT, Settings, SettingsError

JOBS = PROJECT_ROOT / "jobs"


def _overrides(**values: Any) -> dict[str, Any]:
    """Operator arguments that were given (templated strings may arrive empty)."""
    return {k: v for k, v in values.items() if v not in (None, "")}


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def flag(value: bool | str | None, name: str, default: bool) -> bool:
    """A yes/no argument (templates render booleans as text); anything else is refused."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AirflowFailException(f"{name}: {str(value)[:40]!r} is neither true nor false")


def _with_table(settings: Settings, table: str | None) -> Settings:
    """Settings for another table, refusing a name that is not ``namespace.table``."""
    try:
        return settings.replace(**_overrides(iceberg_table=table))
    except SettingsError as error:
        raise AirflowFailException(str(error)) from None


class _DriverGroupSparkSubmitHook(SparkSubmitHook):
    """spark-submit in a process group of its own; ``on_kill`` ends the whole group.

    The provider's hook kills only the spark-submit JVM. In client mode the
    Python driver is a child of that JVM: it would outlive a task timeout,
    still holding the checkpoint lock (the retry would then be refused) and
    possibly still writing. Here the JVM, the Python driver and its workers
    are stopped together (SIGTERM, then SIGKILL after a grace period), and
    ``on_kill`` returns only once they are gone.
    """

    kill_grace_s: float = 10.0

    def submit(self, application: str = "", **kwargs: Any) -> str | None:
        kwargs.setdefault("start_new_session", True)
        return super().submit(application, **kwargs)

    def on_kill(self) -> None:
        process = self._submit_sp
        group = process.pid if process is not None else None
        if process is not None and group is not None and _group_alive(group):
            self.log.info("Stopping the spark-submit process group %s", group)
            _signal_group(group, signal.SIGTERM)
            if not _wait_group_gone(process, self.kill_grace_s):
                self.log.warning("spark-submit group %s still running: SIGKILL", group)
                _signal_group(group, signal.SIGKILL)
                _wait_group_gone(process, 30.0)
        super().on_kill()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _wait_group_gone(process: Any, timeout: float) -> bool:
    """Wait until no process of the group led by ``process`` is left (reaping the leader)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None or _group_alive(process.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class _SparkJobOperator(SparkSubmitOperator):
    """spark-submit of one of the product's jobs with Settings as its only configuration."""

    job_file: Path = JOBS / "cdc_to_iceberg.py"

    def __init__(
        self,
        *,
        kafka_conn_id: str = CdcKafkaHook.default_conn_name,
        spark_conn_id: str = "spark_default",
        table: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", self.job_file.stem)
        super().__init__(application=str(self.job_file), conn_id=spark_conn_id, **kwargs)
        self.kafka_conn_id = kafka_conn_id
        self.table = table

    def _get_hook(self) -> SparkSubmitHook:
        hook = super()._get_hook()
        # same configuration, with a driver that a timeout or a mark-failed really stops
        hook.__class__ = _DriverGroupSparkSubmitHook
        return hook

    def job_settings(self) -> Settings:
        settings = CdcKafkaHook(self.kafka_conn_id).settings()
        return _with_table(settings, self.table)

    def submit(self, context: Any, settings: Settings, args: list[str]) -> None:
        from cdc_iceberg.spark_conf import spark_conf, spark_env, spark_jars

        conf = spark_conf(settings)
        self.driver_memory = conf.pop("spark.driver.memory", None)
        self.conf = conf
        self.jars = ",".join(spark_jars(settings))
        child = spark_env()
        # the job reads the same Settings from its environment
        self.env_vars = {
            **{k: child[k] for k in ("SPARK_HOME", "PATH", "PYTHONPATH", "PYSPARK_PYTHON")},
            **settings.to_env(),
        }
        self.application_args = args
        # the hook is built from these attributes on execute
        self._hook = None
        super().execute(context)


class CdcDrainOperator(_SparkJobOperator):
    """One availableNow drain of the topic into the table, as a spark-submit.

    With ``tables`` (``"all"``, or source tables separated by commas) one
    spark-submit drains those tables of ``CDC_PIPELINES_FILE``, each with its
    own checkpoint (``jobs.drain_tables``).

    Before paying for a Spark start it compares the topics' end offsets with
    the offsets the tables record: when nothing is new the task ends at once.
    Returns (XCom) the batch metrics the job recorded in the snapshot summaries
    (per table under ``tables`` for a drain of many). Each table it committed
    to gets an asset event through :data:`cdc_airflow.assets.TABLES`, the
    operator's outlet unless ``outlets`` says otherwise.

    ``pipeline_id``, ``consumer_group`` and ``checkpoint_location`` make the run
    a pipeline of its own, as a backfill is: its commits carry its id, and its
    progress goes to its group, not to the scheduled pipeline's.
    """

    template_fields: Sequence[str] = (
        *SparkSubmitOperator.template_fields,
        "table",
        "tables",
        "topic",
        "pipeline_id",
        "consumer_group",
        "checkpoint_location",
        "starting_offsets",
        "stop_offsets",
        "dry_run_arg",
    )

    def __init__(
        self,
        *,
        pipeline_id: str | None = None,
        consumer_group: str | None = None,
        checkpoint_location: str | None = None,
        starting_offsets: str | None = None,
        stop_offsets: str | None = None,
        dry_run: bool | str = False,
        skip_when_idle: bool = True,
        tables: str | None = None,
        topic: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [assets.TABLES])
        super().__init__(**kwargs)
        self.tables = tables
        self.topic = topic
        self.pipeline_id = pipeline_id
        self.consumer_group = consumer_group
        self.checkpoint_location = checkpoint_location
        self.starting_offsets = starting_offsets
        self.stop_offsets = stop_offsets
        # not self.dry_run: that name is BaseOperator's method
        self.dry_run_arg = dry_run
        self.skip_when_idle = skip_when_idle
        # (table settings, committed to it) of the last execute, for OpenLineage
        self.lineage_tables: list[tuple[Settings, bool]] = []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Each table's topic in, each table the drain committed to out (OpenLineage)."""
        from cdc_airflow.lineage import drain_lineage

        return drain_lineage(self.lineage_tables)

    def job_settings(self) -> Settings:
        return (
            super()
            .job_settings()
            .replace(
                **_overrides(
                    kafka_consumer_group=self.consumer_group,
                    pipeline_id=self.pipeline_id,
                    checkpoint_location=self.checkpoint_location,
                    kafka_topic=self.topic,
                )
            )
        )

    def execute(self, context: Any) -> dict[str, Any]:  # type: ignore[override]  # the XCom
        if self.tables:
            return self._execute_tables(context)
        from cdc_iceberg import kafka_offsets, table_state

        settings = self.job_settings()
        started_ms = int(time.time() * 1000)
        dry_run = flag(self.dry_run_arg, "dry_run", default=False)
        if self.skip_when_idle and not self.starting_offsets:
            end = kafka_offsets.end_offsets(settings)
            recorded = table_state.committed_offsets(settings)
            pending = kafka_offsets.lag(end, recorded) if recorded else end
            if recorded and sum(pending.values()) == 0:
                self.lineage_tables = [(settings, False)]
                self.log.info(
                    "nothing new in %s since the last commit: Spark not started",
                    settings.kafka_topic,
                )
                return {
                    "skipped": True,
                    "started_ms": started_ms,
                    "batches": [],
                    "table_offsets": {str(p): o for p, o in recorded.items()},
                }
        args: list[str] = []
        if dry_run:
            args.append("--dry-run")
        if self.starting_offsets:
            args += ["--starting-offsets", str(self.starting_offsets)]
        if self.stop_offsets:
            args += ["--stop-offsets", str(self.stop_offsets)]
        before = table_state.current_snapshot_id(settings)
        self.submit(context, settings, args)
        batches = table_state.batches_since(settings, before)
        totals = _totals(batches)
        result = {
            "skipped": False,
            "dry_run": dry_run,
            "started_ms": started_ms,
            "batches": batches,
            "totals": totals,
            "table_offsets": {
                str(p): o for p, o in table_state.committed_offsets(settings).items()
            },
        }
        self.log.info("drain: %s", json.dumps(totals))
        self.lineage_tables = [(settings, bool(batches))]
        if batches:
            assets.announce(context, settings.iceberg_catalog_name, settings.iceberg_table, totals)
            metrics.emit_drain(settings.iceberg_table, batches)
        return result

    def _execute_tables(self, context: Any) -> dict[str, Any]:
        """One spark-submit for the configured tables; per table what it committed."""
        from cdc_iceberg import kafka_offsets, pipelines, table_state

        hook = CdcKafkaHook(self.kafka_conn_id)
        base = hook.settings()
        started_ms = int(time.time() * 1000)
        dry_run = flag(self.dry_run_arg, "dry_run", default=False)
        try:
            config = pipelines.load(base.pipelines_file)
            resolved = config.resolve(kafka_offsets.topics(base) if config.topics else ())
            which = str(self.tables).strip()
            if which != "all":
                resolved = tuple(
                    config.find(n.strip(), [t.topic for t in resolved])
                    for n in which.split(",")
                    if n.strip()
                )
        except pipelines.PipelinesError as error:
            raise AirflowFailException(str(error)) from None
        tables = {t.iceberg_table: t.settings(base) for t in resolved}
        before: dict[str, Any] = {}
        pending = 0
        existing = set(kafka_offsets.topics(base))
        for name, settings in tables.items():
            before[name] = table_state.current_snapshot_id(settings)
            if settings.kafka_topic not in existing:
                continue
            end = kafka_offsets.end_offsets(settings)
            recorded = table_state.committed_offsets(settings)
            pending += sum((kafka_offsets.lag(end, recorded) if recorded else end).values())
        skipped = self.skip_when_idle and pending == 0
        if skipped:
            self.log.info("nothing new in the topics of %d tables: Spark not started", len(tables))
        else:
            args = ["--tables", which if which != "all" else "all"]
            if dry_run:
                args.append("--dry-run")
            try:
                self.submit(context, base, args)
            finally:
                # what each table committed, also when some table failed the run
                per_table = self._per_table(tables, before, skipped)
        if skipped:
            per_table = self._per_table(tables, before, skipped)
        self.lineage_tables = [(tables[n], bool(d["batches"])) for n, d in per_table.items()]
        for name, drained in per_table.items():
            if drained["batches"]:
                assets.announce(context, base.iceberg_catalog_name, name, drained["totals"])
                metrics.emit_drain(name, drained["batches"])
        batches = [b for t in per_table.values() for b in t["batches"]]
        totals = _totals(batches)
        self.log.info("drain of %d tables: %s", len(tables), json.dumps(totals))
        return {
            "skipped": skipped,
            "dry_run": dry_run,
            "started_ms": started_ms,
            "batches": batches,
            "totals": totals,
            "tables": per_table,
        }

    @staticmethod
    def _per_table(
        tables: dict[str, Settings], before: dict[str, Any], skipped: bool
    ) -> dict[str, Any]:
        from cdc_iceberg import table_state

        out: dict[str, Any] = {}
        for name, settings in tables.items():
            batches = [] if skipped else table_state.batches_since(settings, before[name])
            out[name] = {
                "skipped": skipped,
                "batches": batches,
                "totals": _totals(batches),
                "table_offsets": {
                    str(p): o for p, o in table_state.committed_offsets(settings).items()
                },
            }
        return out


def _totals(batches: Sequence[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for batch in batches:
        for key in (
            "events_in",
            "dead_lettered",
            "collapsed_in_batch",
            "inserted",
            "updated",
            "deleted",
        ):
            totals[key] = totals.get(key, 0) + int(batch.get(key, 0) or 0)
    return totals


class CdcValidateOperator(BaseOperator):
    """Check the table after a drain and fail with the reasons when something is wrong.

    The seed's queries (no duplicate ``article_id``) and more: no null keys,
    dead-letter growth in this run, incompatible schema changes, freshness of
    the newest change, and the batch metrics of the drain. Freshness fails the
    task when the newest change is older than ``max_staleness_s`` (default
    ``CDC_MAX_STALENESS_S``) while records wait in Kafka.
    """

    template_fields: Sequence[str] = ("table", "max_staleness_s", "max_new_dead_letters")

    def __init__(
        self,
        *,
        drain_task_id: str = "drain",
        table: str | None = None,
        max_staleness_s: int | str | None = None,
        max_new_dead_letters: int | str = 0,
        kafka_conn_id: str = CdcKafkaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.drain_task_id = drain_task_id
        self.table = table
        self.max_staleness_s = max_staleness_s
        self.max_new_dead_letters = max_new_dead_letters
        self.kafka_conn_id = kafka_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from cdc_iceberg import kafka_offsets, table_state
        from cdc_iceberg.checks import validate

        settings = settings_for_table(CdcKafkaHook(self.kafka_conn_id), self.table)
        drain = context["ti"].xcom_pull(task_ids=self.drain_task_id) or {}
        if "tables" in drain:  # a drain of every table: this table's part of it
            drain = {
                "started_ms": drain.get("started_ms"),
                **(drain["tables"].get(settings.iceberg_table) or {}),
            }
        since_ms = int(drain.get("started_ms") or time.time() * 1000)
        if not table_state.table_exists(settings):
            raise AirflowFailException(
                f"table {settings.iceberg_table} does not exist: no drain has run yet"
            )
        stats = table_state.table_stats(settings, since_ms)
        staleness = (
            settings.max_staleness_s
            if self.max_staleness_s in (None, "", "None")
            else int(self.max_staleness_s)
        )
        waiting = None
        try:
            # as the status counts it: a partition the table never committed from its
            # first retained record
            lag = kafka_offsets.lag_with_floor(
                kafka_offsets.end_offsets(settings),
                table_state.committed_offsets(settings),
                kafka_offsets.beginning_offsets(settings),
            )
            waiting = sum(lag.values())
        except Exception as error:  # freshness then fails safe: records may be waiting
            self.log.warning("Kafka cannot be read for the records waiting: %s", error)
        report = validate(
            stats,
            now_ms=int(time.time() * 1000),
            max_staleness_s=staleness,
            max_new_dead_letters=int(self.max_new_dead_letters),
            batches=drain.get("batches") or [],
            waiting=waiting,
        )
        self.log.info("%s", report.message())
        metrics.emit_gauges(
            settings.iceberg_table,
            {
                "rows": stats.rows,
                "staleness_s": report.facts["staleness_s"],
                "last_commit_age_s": report.facts["last_commit_age_s"],
                "dead_letters": stats.dead_letters,
            },
        )
        if not report.ok:
            raise AirflowFailException(report.message())
        return report.facts


RESET_SCOPES = ("checkpoint", "offsets", "full-rebuild")


class CdcResetOperator(BaseOperator):
    """Reset a pipeline, leaving checkpoint, group offsets and table in agreement.

    * ``checkpoint``: archive the checkpoint; the next drain resumes from the
      offsets the table records (nothing is reprocessed).
    * ``offsets``: archive the checkpoint and move the pipeline's position to
      ``reset_to`` (earliest retained or latest) in the table and the group.
      Reprocessing is safe: the writer is idempotent.
    * ``full-rebuild``: archive the checkpoint, empty the live and tombstone
      tables and start again from the earliest retained offsets.

    The checkpoint is renamed, never deleted. ``confirm`` must repeat the table
    name, and ``dry_run`` only reports what would change.
    """

    template_fields: Sequence[str] = ("scope", "confirm", "reset_to", "table", "dry_run_arg")

    def __init__(
        self,
        *,
        scope: str,
        confirm: str,
        reset_to: str = "earliest",
        table: str | None = None,
        dry_run: bool | str = True,
        kafka_conn_id: str = CdcKafkaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.scope = scope
        self.confirm = confirm
        self.reset_to = reset_to
        self.table = table
        # not self.dry_run: that name is BaseOperator's method
        self.dry_run_arg = dry_run
        self.kafka_conn_id = kafka_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from cdc_iceberg import reset

        settings = settings_for_table(CdcKafkaHook(self.kafka_conn_id), self.table)
        # a reset changes state: anything but a clear "false" keeps it a dry run
        dry_run = flag(self.dry_run_arg, "dry_run", default=True)
        try:
            plan = reset.plan_reset(
                settings, str(self.scope), str(self.confirm), str(self.reset_to)
            )
        except ValueError as error:
            raise AirflowFailException(str(error)) from error
        self.log.info("reset plan%s: %s", " (dry run)" if dry_run else "", plan.describe())
        if not dry_run:
            reset.apply_reset(settings, plan)
        return {"dry_run": dry_run, **plan.as_dict()}


class CdcDlqReplayOperator(_SparkJobOperator):
    """Re-apply a table's dead letters (``jobs/dlq_replay.py``) as a spark-submit.

    ``params`` is the replay form (reason, partition, from/to offset, from/to
    time, dry run, ignore retention), checked by
    :func:`cdc_airflow.replay_form.replay_args` before anything reaches Spark;
    ``table`` must be one of ``CDC_PIPELINES_FILE``. A dry run unless the form
    says ``dry_run`` false. Returns (XCom) what the replay did: dead letters
    selected, applied, failed again by reason, and the table's changes.
    """

    job_file = JOBS / "dlq_replay.py"
    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "table")

    def __init__(self, *, form: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.form = form

    def execute(self, context: Any) -> dict[str, Any]:  # type: ignore[override]  # the XCom
        import tempfile

        from cdc_airflow.replay_form import ReplayFormError, replay_args

        hook = CdcKafkaHook(self.kafka_conn_id)
        form = self.form if self.form is not None else dict(context.get("params") or {})
        table = self.table if self.table not in (None, "", "None") else form.get("table")
        if table is not None and not isinstance(table, str):
            raise AirflowFailException("table: expected the name of a table")
        settings = settings_for_table(hook, table)
        try:
            args = replay_args(form, str(context.get("run_id") or "manual"))
        except ReplayFormError as error:
            raise AirflowFailException(str(error)) from None
        with tempfile.TemporaryDirectory(prefix="cdc-replay-") as scratch:
            result_file = Path(scratch) / "result.json"
            self.submit(
                context,
                hook.settings(),
                ["--table", settings.iceberg_table, *args, "--result-file", str(result_file)],
            )
            if not result_file.is_file():
                raise AirflowFailException("the replay ended without a result; see its log")
            result = json.loads(result_file.read_text(encoding="utf-8"))
        self.log.info("dead-letter replay of %s: %s", settings.iceberg_table, json.dumps(result))
        return result


class IcebergMaintenanceOperator(_SparkJobOperator):
    """Table maintenance as a spark-submit of ``jobs/iceberg_maintenance.py``."""

    job_file = JOBS / "iceberg_maintenance.py"
    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "table")

    def execute(self, context: Any) -> None:
        settings = self.job_settings()
        self.submit(context, settings, [])
