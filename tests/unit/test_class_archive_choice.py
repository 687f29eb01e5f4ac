"""Which class-data archive a driver maps, and when none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdc_iceberg import class_archive
from cdc_iceberg.settings import Settings
from cdc_iceberg.spark_conf import spark_conf


@pytest.fixture
def jars(tmp_path: Path) -> Path:
    folder = tmp_path / "jars"
    folder.mkdir()
    (folder / "iceberg.jar").write_bytes(b"one")
    (folder / "kafka.jar").write_bytes(b"two")
    return folder


@pytest.fixture
def settings(jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(class_archive, "ARCHIVE_DIR", tmp_path / "jvm")
    return Settings(jars_dir=str(jars), spark_master="local[2]")


def _build_fake(settings: Settings) -> Path:
    path = class_archive.archive_path(settings)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"archive")
    return path


def test_no_archive_built_means_no_option(settings: Settings) -> None:
    assert class_archive.driver_java_options(settings) == ""
    assert "spark.driver.defaultJavaOptions" not in spark_conf(settings)


def test_a_built_archive_is_mapped_by_a_local_driver(settings: Settings) -> None:
    path = _build_fake(settings)

    options = class_archive.driver_java_options(settings)

    assert options == f"-XX:SharedArchiveFile={path} -Xshare:auto"
    # the default options, so that spark.driver.extraJavaOptions stays the user's
    assert spark_conf(settings)["spark.driver.defaultJavaOptions"] == options


def test_a_changed_jar_names_another_archive(settings: Settings, jars: Path) -> None:
    built = _build_fake(settings)
    jar = jars / "kafka.jar"
    stat = jar.stat()
    os.utime(jar, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    assert class_archive.archive_path(settings) != built
    assert class_archive.driver_java_options(settings) == ""  # never a stale archive


def test_an_added_jar_names_another_archive(settings: Settings, jars: Path) -> None:
    built = _build_fake(settings)
    (jars / "extra.jar").write_bytes(b"three")

    assert class_archive.archive_path(settings) != built


def test_off_and_cluster_masters_map_nothing(settings: Settings) -> None:
    _build_fake(settings)

    assert class_archive.driver_java_options(settings.replace(spark_class_archive="off")) == ""
    cluster = settings.replace(spark_master="spark://spark-master:7077")
    assert class_archive.driver_java_options(cluster) == ""


def test_an_explicit_path_is_used_when_it_exists(settings: Settings, tmp_path: Path) -> None:
    chosen = tmp_path / "mine.jsa"
    explicit = settings.replace(spark_class_archive=str(chosen), spark_master="yarn")
    assert class_archive.driver_java_options(explicit) == ""

    chosen.write_bytes(b"archive")

    assert class_archive.driver_java_options(explicit) == (
        f"-XX:SharedArchiveFile={chosen} -Xshare:auto"
    )


def test_the_setting_comes_from_the_environment() -> None:
    assert Settings.from_env({}).spark_class_archive == "auto"
    assert Settings.from_env({"SPARK_CLASS_ARCHIVE": "off"}).spark_class_archive == "off"


def test_a_spark_conf_dir_names_another_archive(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spark-submit puts SPARK_CONF_DIR first on the class path: another archive's."""
    built = _build_fake(settings)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "conf"))

    assert class_archive.archive_path(settings) != built
