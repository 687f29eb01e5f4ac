"""The class-data archive make setup builds is valid for this JVM and is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cdc_iceberg.settings import PROJECT_ROOT, Settings
from cdc_iceberg.spark_conf import spark_env
from jobs import class_archive_build

pytestmark = pytest.mark.integration

_DRIVER = textwrap.dedent(
    """
    import sys
    from cdc_iceberg.settings import Settings
    from jobs.session import build_session

    settings = Settings.from_env().replace(
        iceberg_catalog_uri=f"sqlite:///{sys.argv[1]}/catalog.db",
        iceberg_warehouse=f"file://{sys.argv[1]}/warehouse",
        spark_master="local[1]",
    )
    # -Xshare:on: the JVM refuses to start unless it can map the archive
    options = f"-Xshare:on -Xlog:class+load=info:file={sys.argv[2]}"
    check = {"spark.driver.extraJavaOptions": options}
    spark = build_session(settings, "class-archive-check", check)
    spark.sql("SELECT 1").collect()
    spark.stop()
    """
)


def test_a_local_driver_maps_its_classes_from_the_archive(tmp_path: Path) -> None:
    settings = Settings.from_env()
    archive = class_archive_build.build(settings)  # make setup has built it: then only found
    assert archive is not None and archive.is_file()
    log = tmp_path / "classes.log"

    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(tmp_path), str(log)],
        env=spark_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    lines = log.read_text().splitlines()
    # "top": the archive built for the project, above the JDK's own base archive
    mapped = [line for line in lines if "source: shared objects file (top)" in line]
    spark = [line for line in mapped if " org.apache.spark." in line]
    assert len(spark) > 2000, f"{len(spark)} Spark classes of {len(lines)} came from the archive"
