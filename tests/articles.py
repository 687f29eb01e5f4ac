"""The seed's table, ``public.articles``, as the project's pipelines.yaml declares it.

Most of the suite mirrors this one table; its key and columns are read from
the config file a user edits, not written again here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cdc_iceberg import pipelines
from cdc_iceberg.settings import PROJECT_ROOT
from cdc_iceberg.table_model import TableModel

TOPIC = "neuronews.public.articles"
_declared = pipelines.load(PROJECT_ROOT / "pipelines.yaml").declared_model(TOPIC)
assert _declared is not None, "pipelines.yaml declares public.articles"
ARTICLES: TableModel = _declared
ARTICLE_KEY = "article_id"
KEY = ARTICLES.key
ARTICLE_COLUMNS = ARTICLES.column_types


def write_pipelines(path: Path, tables: dict[str, dict[str, Any]]) -> str:
    """Write a pipelines file of ``tables`` (source table -> entry) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"tables": tables}, sort_keys=False), encoding="utf-8")
    return str(path)


def declare_articles(path: Path, topic: str, iceberg_table: str) -> str:
    """A pipelines file that mirrors ``topic`` into ``iceberg_table`` as articles."""
    entry = {"topic": topic, "iceberg_table": iceberg_table, "schema": ARTICLES.to_declared()}
    return write_pipelines(path, {"public.articles": entry})
