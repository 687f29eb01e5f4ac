"""OpenLineage datasets of the drain: each table's Kafka topic in, its Iceberg tables out.

With ``apache-airflow-providers-openlineage`` and a transport configured
(``[openlineage] transport``), the provider's listener asks each operator for
its lineage when it completes; the drain answers with these datasets, named
as OpenLineage names them: a topic ``kafka://<first bootstrap server>`` /
``<topic>``, a table by its location in the warehouse (``file`` /
``<path>``, ``s3://<bucket>`` / ``<key>``), with the catalog's own name as a
symlink (``iceberg://<catalog>`` / ``<namespace>.<table>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from cdc_iceberg.settings import Settings


def kafka_name(settings: Settings) -> tuple[str, str]:
    """(namespace, name) of a table's topic."""
    server = settings.kafka_bootstrap_servers.split(",")[0].strip()
    return f"kafka://{server}", settings.kafka_topic


def iceberg_name(settings: Settings, table: str) -> tuple[str, str]:
    """(namespace, name) of an Iceberg table, by where the warehouse keeps it."""
    warehouse = urlparse(settings.iceberg_warehouse)
    path = "/".join((warehouse.path.rstrip("/"), *table.split(".")))
    scheme = "s3" if warehouse.scheme in ("s3", "s3a", "s3n") else warehouse.scheme or "file"
    if scheme == "file":
        return "file", path
    return f"{scheme}://{warehouse.netloc}", path.lstrip("/")


def _dataset(namespace: str, name: str, catalog: str | None = None, table: str = "") -> Any:
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import symlinks_dataset

    facets: dict[str, Any] = {}
    if catalog:
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[symlinks_dataset.Identifier(f"iceberg://{catalog}", table, "TABLE")]
        )
    return Dataset(namespace=namespace, name=name, facets=facets)


def drain_lineage(tables: Iterable[tuple[Settings, bool]]) -> Any:
    """The OperatorLineage of a drain: per table its topic in and, where the drain
    committed to it, the table out."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs, outputs = [], []
    for settings, wrote in tables:
        inputs.append(_dataset(*kafka_name(settings)))
        if wrote:
            table = settings.iceberg_table
            catalog = settings.iceberg_catalog_name
            outputs.append(_dataset(*iceberg_name(settings, table), catalog, table))
    return OperatorLineage(inputs=inputs, outputs=outputs)
