"""docker-compose.yaml, the production-shaped stack, stays valid, wired and free of secrets.

No Docker engine runs where the suite runs, so the file is checked as data:
loaded with PyYAML (anchors and merge keys resolved as Compose resolves them)
and interpolated with the values of ``.env.example`` by the same rules
Compose applies. Where a Compose CLI is installed (the ``docker compose``
plugin, or Debian's ``docker-compose``), its own ``config`` check runs too.
The helper scripts the stack runs (connector registration, the source
database's init scripts) are run for real against a stand-in Connect REST API
and a real PostgreSQL server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from articles import ARTICLE_COLUMNS

from cdc_iceberg.local.connect import slot_name
from cdc_iceberg.local.postgres import ARTICLES_DDL
from cdc_iceberg.settings import PROJECT_ROOT, Settings, jdbc_url

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKER_DIR = PROJECT_ROOT / "docker"
CONNECTOR_JSON = DOCKER_DIR / "connect" / "articles-connector.json"
REGISTER_SCRIPT = DOCKER_DIR / "connect" / "register-connector.sh"
ARTICLES_SQL = DOCKER_DIR / "postgres-init" / "01-articles.sql"
DEBEZIUM_ROLE_SCRIPT = DOCKER_DIR / "postgres-init" / "02-debezium-role.sh"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
SPARK_SERVICES = {"spark-master", "spark-worker"}
# Bind mounts the brief asks for in both Airflow and Spark: the code they run.
CODE_DIRS = {"./dags", "./plugins", "./jobs", "./cdc_iceberg"}
# Settings every Airflow container must get, whatever else it gets.
REQUIRED_PRODUCT_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC",
    "KAFKA_CONSUMER_GROUP",
    "CHECKPOINT_LOCATION",
    "STARTING_OFFSETS",
    "MAX_OFFSETS_PER_TRIGGER",
    "ICEBERG_CATALOG_URI",
    "ICEBERG_WAREHOUSE",
    "ICEBERG_TABLE",
    "ICEBERG_S3_ENDPOINT",
    "SPARK_MASTER",
}
# Variables an Airflow container may carry that are neither Airflow's own
# (AIRFLOW__*, _AIRFLOW_*) nor the product's: Python's and the AWS SDKs'.
RUNTIME_ENV = {
    "PYTHONPATH",
    "AIRFLOW_UID",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# A secret must come from .env, and Compose must refuse to start without it.
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
URL_PASSWORD = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/:@\s]+:(?P<password>\$\{[^}]*\}|[^@\s/]+)@", re.IGNORECASE
)
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"

# $$, ${NAME}, ${NAME<op><arg>} (op one of :- - :? ? :+ +), $NAME.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


# -- Compose's interpolation, for reading the file as Compose does ----------------


class MissingVariable(LookupError):
    """A ``${NAME:?message}`` (or ``${NAME?message}``) variable has no value."""


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments are skipped."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), (
            f"{path.name}:{number}: not a NAME=value line: {line!r}"
        )
        assert name not in values, f"{path.name}:{number}: {name} is set twice"
        values[name] = value
    return values


def substitute(text: str, env: Mapping[str, str]) -> str:
    """One string interpolated the way Compose does it."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        is_set = name in env
        non_empty = is_set and env[name] != ""
        if op in (":?", "?") and not (non_empty if op == ":?" else is_set):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-":
            return env[name] if non_empty else arg
        if op == "-":
            return env[name] if is_set else arg
        if op == ":+":
            return arg if non_empty else ""
        if op == "+":
            return arg if is_set else ""
        return env.get(name, "")

    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a loaded YAML document interpolated (keys are left alone)."""
    if isinstance(node, str):
        return substitute(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a loaded YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def referenced_variables(node: Any) -> set[str]:
    names: set[str] = set()
    for text in strings(node):
        for match in _VARIABLE.finditer(text):
            if not match["escaped"]:
                names.add(match["braced"] or match["named"])
    return names


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, from either of Compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Host path -> container path of a service's bind mounts (short syntax)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/")):
            mounts[source.rstrip("/")] = rest.split(":")[0]
    return mounts


def named_volume_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> volume name of a service's named volumes."""
    targets: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        source, _, rest = volume.partition(":")
        if not source.startswith((".", "/")):
            targets[rest.split(":")[0]] = source
    return targets


def is_one_shot(service: Mapping[str, Any]) -> bool:
    """A job that runs to completion: the stack marks it by never restarting it."""
    return service.get("restart") == "no"


def depends_on(service: Mapping[str, Any]) -> dict[str, Any]:
    deps = service.get("depends_on") or {}
    return deps if isinstance(deps, dict) else dict.fromkeys(deps)


def command_words(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(word) for word in command]


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """The file as written: anchors resolved, ``${...}`` references still in place."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The file as Compose sees it with ``--env-file .env.example``."""
    resolved = interpolate(raw_compose, env_example)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict) and found
    return found


@pytest.fixture(scope="module")
def raw_services(raw_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = raw_compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def airflow_services(
    raw_compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The services built from the x-airflow-common block (they share its image)."""
    image = raw_compose["x-airflow-common"]["image"]
    return {name: svc for name, svc in services.items() if svc.get("image") == image}


@pytest.fixture(scope="module")
def connector() -> dict[str, str]:
    config = json.loads(CONNECTOR_JSON.read_text())
    assert isinstance(config, dict)
    return config


# -- the env file ----------------------------------------------------------------


def test_env_example_says_to_copy_it_and_holds_only_placeholders(
    env_example: dict[str, str],
) -> None:
    assert "cp .env.example .env" in ENV_EXAMPLE.read_text()
    for name, value in env_example.items():
        if re.search(r"PASSWORD|SECRET|FERNET", name):
            assert "change-me" in value or "change-me" in _base64_text(value), (
                f"{name} in .env.example must be an obvious placeholder (contain 'change-me')"
            )


def _base64_text(value: str) -> str:
    with contextlib.suppress(binascii.Error, UnicodeDecodeError):
        return base64.urlsafe_b64decode(value).decode()
    return ""


def test_every_variable_the_compose_file_uses_is_in_env_example(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    missing = referenced_variables(raw_compose) - set(env_example)
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_has_no_variable_the_compose_file_ignores(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    # COMPOSE_* variables are read by Compose itself, not through ${...}.
    unused = {n for n in env_example if not n.startswith("COMPOSE_")} - referenced_variables(
        raw_compose
    )
    assert not unused, f"unused in docker-compose.yaml: {sorted(unused)}"


def test_interpolation_refuses_a_missing_required_secret(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    without_password = {k: v for k, v in env_example.items() if k != "AIRFLOW_DB_PASSWORD"}
    with pytest.raises(MissingVariable, match="AIRFLOW_DB_PASSWORD"):
        interpolate(raw_compose, without_password)


# -- services, images, health ----------------------------------------------------------


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} floats on :latest"


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    long_running = {n: s for n, s in services.items() if not is_one_shot(s)}
    assert {"kafka", "connect", "source-db", "minio", "spark-master"} <= set(long_running)
    for name, service in long_running.items():
        check = service.get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name}: no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: test {test!r}"
        assert service.get("restart") in ("always", "unless-stopped"), (
            f"{name}: a long-running service should come back after a crash or reboot"
        )


def test_depends_on_waits_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        raw_deps = service.get("depends_on") or {}
        assert isinstance(raw_deps, dict), f"{name}: depends_on must name a condition per service"
        for target, spec in raw_deps.items():
            assert target in services, f"{name} depends on {target!r}, which does not exist"
            condition = (spec or {}).get("condition")
            assert condition in (HEALTHY, COMPLETED), (
                f"{name} -> {target}: condition {condition!r} does not wait for readiness"
            )
            if condition == HEALTHY:
                assert services[target].get("healthcheck"), f"{target} has no healthcheck"
            else:
                assert is_one_shot(services[target]), f"{target} is not a one-shot job"


def test_dependencies_have_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for target in depends_on(services[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


def test_one_shot_jobs_are_awaited_by_what_needs_them(
    services: dict[str, dict[str, Any]],
) -> None:
    awaited = {
        target
        for service in services.values()
        for target, spec in depends_on(service).items()
        if (spec or {}).get("condition") == COMPLETED
    }
    assert {"airflow-init", "minio-init"} <= awaited
    one_shots = {name for name, service in services.items() if is_one_shot(service)}
    # register-connector is the end of the source chain: nothing waits for it.
    assert one_shots == awaited | {"register-connector"}


# -- secrets ---------------------------------------------------------------------


def test_secret_environment_values_are_required_env_file_references(
    raw_services: dict[str, dict[str, Any]],
) -> None:
    # Services as loaded carry what they merged from the x-* blocks.
    checked = 0
    for where, service in raw_services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                checked += 1
                assert REQUIRED_REFERENCE.match(value), (
                    f"{where}: {key}={value!r} must be a ${{VAR:?message}} reference to .env"
                )
    assert checked >= 10


def test_no_password_is_written_into_a_url(raw_compose: dict[str, Any]) -> None:
    urls = 0
    for text in strings(raw_compose):
        for match in URL_PASSWORD.finditer(text):
            urls += 1
            assert REQUIRED_REFERENCE.match(match["password"]), (
                f"password written into {text!r}: use a ${{VAR:?message}} reference"
            )
    assert urls >= 2  # the Airflow metadata DB and the Iceberg catalog


def test_no_example_secret_appears_in_the_compose_file(env_example: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    for name, value in env_example.items():
        if SECRET_NAME.search(name) and len(value) >= 8:
            assert value not in text, f"the value of {name} is written in docker-compose.yaml"


# -- Airflow ---------------------------------------------------------------------


def test_airflow_has_its_components_on_a_postgres_metadata_database(
    airflow_services: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    assert set(airflow_services) == AIRFLOW_SERVICES
    commands = {name: " ".join(command_words(s)) for name, s in airflow_services.items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert component in commands.values(), f"no Airflow service runs {component}"
    for name, service in airflow_services.items():
        conn = environment(service)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        _assert_postgres_url_matches_service(conn, services, f"{name} metadata DB")
        assert environment(service)["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_airflow_ui_requires_a_login_with_the_env_file_password(
    airflow_services: dict[str, dict[str, Any]], raw_services: dict[str, dict[str, Any]]
) -> None:
    for name, service in airflow_services.items():
        env = environment(service)
        manager = env.get("AIRFLOW__CORE__AUTH_MANAGER", "")
        assert manager.endswith(("FabAuthManager", "SimpleAuthManager")), (
            f"{name}: no auth manager configured"
        )
        assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false") != "true"
    init = environment(raw_services["airflow-init"])
    assert init["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert REQUIRED_REFERENCE.match(init["_AIRFLOW_WWW_USER_USERNAME"])
    assert re.match(r"^\$\{AIRFLOW_ADMIN_PASSWORD:\?", init["_AIRFLOW_WWW_USER_PASSWORD"])


def test_airflow_components_share_their_signing_secrets(
    airflow_services: dict[str, dict[str, Any]],
) -> None:
    for key in (
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        values = {environment(s).get(key) for s in airflow_services.values()}
        assert len(values) == 1 and None not in values, f"{key} differs or is missing: {values}"


def test_airflow_gets_the_product_settings_and_the_product_accepts_them(
    airflow_services: dict[str, dict[str, Any]],
) -> None:
    seen: set[Settings] = set()
    for name, service in airflow_services.items():
        env = environment(service)
        missing = REQUIRED_PRODUCT_ENV - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        seen.add(Settings.from_env(env))
    assert len(seen) == 1, "Airflow components disagree on the pipeline's settings"
    settings = seen.pop()
    assert settings.kafka_topic == "neuronews.public.articles"
    assert settings.iceberg_warehouse.startswith("s3://")
    assert settings.spark_master.startswith("spark://")


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers which names were looked up."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def product_env_names() -> set[str]:
    """Every variable the product reads: its settings, and the few spark_conf reads itself."""
    recorder = _RecordingEnv()
    Settings.from_env(recorder)
    names = set(recorder.names)
    read = re.compile(
        r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']"""
        r"""|getenv\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    )
    for source in (PROJECT_ROOT / "cdc_iceberg").rglob("*.py"):
        for match in read.finditer(source.read_text()):
            names.add(match[1] or match[2])
    return names


def test_airflow_sets_no_variable_the_product_would_ignore(
    airflow_services: dict[str, dict[str, Any]],
) -> None:
    known = product_env_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "ICEBERG_CATALOG_URI", "ICEBERG_S3_ENDPOINT"} <= known
    for name, service in airflow_services.items():
        for key in environment(service):
            if key.startswith(("AIRFLOW__", "_AIRFLOW_")) or key in RUNTIME_ENV:
                continue
            assert key in known, f"{name}: {key} is read by nothing (a typo of a setting?)"


def test_product_settings_point_at_this_stack(
    airflow_services: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    env = environment(airflow_services["airflow-scheduler"])

    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        host, _, port = server.partition(":")
        assert host in services and f"//{host}:{port}" in advertised, server

    _assert_postgres_url_matches_service(env["ICEBERG_CATALOG_URI"], services, "Iceberg catalog")
    assert jdbc_url(env["ICEBERG_CATALOG_URI"]).startswith("jdbc:postgresql://iceberg-catalog-db:")

    master = urlparse(env["SPARK_MASTER"])
    master_words = command_words(services[str(master.hostname)])
    assert "org.apache.spark.deploy.master.Master" in master_words
    assert str(master.port) in master_words
    assert env["SPARK_MASTER"] in command_words(services["spark-worker"])

    endpoint = urlparse(env["ICEBERG_S3_ENDPOINT"])
    assert services[str(endpoint.hostname)]["image"].startswith("minio/minio:")
    bucket_job = environment(services["minio-init"])
    assert urlparse(env["ICEBERG_WAREHOUSE"]).netloc == bucket_job["ICEBERG_BUCKET"]
    for name in ("airflow-scheduler", "spark-worker"):
        client = environment(services[name])
        assert client["AWS_ACCESS_KEY_ID"] == bucket_job["ICEBERG_S3_ACCESS_KEY"], name
        assert client["AWS_SECRET_ACCESS_KEY"] == bucket_job["ICEBERG_S3_SECRET_KEY"], name


def _assert_postgres_url_matches_service(
    url: str, services: dict[str, dict[str, Any]], what: str
) -> None:
    parsed = urlparse(url)
    assert parsed.scheme.startswith("postgresql"), f"{what}: {url}"
    server = services.get(str(parsed.hostname))
    assert server is not None, f"{what}: host {parsed.hostname} is not a service"
    env = environment(server)
    assert (parsed.username, parsed.password, parsed.path.lstrip("/")) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    ), f"{what}: the URL's credentials are not those of {parsed.hostname}"


def test_checkpoints_live_on_a_named_volume(airflow_services: dict[str, dict[str, Any]]) -> None:
    for name, service in airflow_services.items():
        checkpoint = environment(service)["CHECKPOINT_LOCATION"]
        volumes = named_volume_targets(service)
        assert any(checkpoint.startswith(target + "/") for target in volumes), (
            f"{name}: {checkpoint} would vanish with the container"
        )


def test_code_is_mounted_into_airflow_and_spark(
    airflow_services: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    for name in (*airflow_services, *SPARK_SERVICES):
        mounts = bind_mounts(services[name])
        assert set(mounts) >= CODE_DIRS, f"{name} lacks {sorted(CODE_DIRS - set(mounts))}"
    for name, service in airflow_services.items():
        mounts = bind_mounts(service)
        # The product finds jobs/ next to cdc_iceberg/ (settings.PROJECT_ROOT).
        root = str(Path(mounts["./cdc_iceberg"]).parent)
        assert str(Path(mounts["./jobs"]).parent) == root, name
        assert root in environment(service)["PYTHONPATH"].split(":"), name
        assert mounts["./dags"] == "/opt/airflow/dags", name
        assert mounts["./plugins"] == "/opt/airflow/plugins", name


def test_files_the_stack_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source in bind_mounts(service):
            if source.startswith("./docker"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
    build = services["airflow-scheduler"]["build"]
    assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()


# -- the change source ---------------------------------------------------------------


def test_source_database_runs_with_logical_decoding(services: dict[str, dict[str, Any]]) -> None:
    source = services["source-db"]
    assert "wal_level=logical" in command_words(source)
    assert environment(source)["POSTGRES_DB"] == "neuronews"
    assert bind_mounts(source)["./docker/postgres-init"] == "/docker-entrypoint-initdb.d"


def _columns(ddl: str) -> list[tuple[str, str]]:
    """(name, type) of each column of a CREATE TABLE statement."""
    body = ddl[ddl.index("(") + 1 : ddl.rindex(")")]
    return [(words[0], words[1]) for words in (column.split() for column in body.split(","))]


def test_source_table_is_the_one_the_product_reads() -> None:
    sql = ARTICLES_SQL.read_text()
    create = re.search(r"CREATE TABLE IF NOT EXISTS public\.articles \((.*?)\n\);", sql, re.S)
    assert create, "01-articles.sql must create public.articles"
    columns = _columns(create[0])
    assert columns == _columns(ARTICLES_DDL)
    assert [name for name, _ in columns] == [name for name, _ in ARTICLE_COLUMNS]


def test_connector_config_matches_the_topic_the_pipeline_reads(
    connector: dict[str, str],
    airflow_services: dict[str, dict[str, Any]],
    services: dict[str, dict[str, Any]],
) -> None:
    assert connector["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert connector["plugin.name"] == "pgoutput"
    assert connector["topic.prefix"] == "neuronews"
    assert connector["table.include.list"] == "public.articles"
    json_converter = "org.apache.kafka.connect.json.JsonConverter"
    assert connector["key.converter"] == connector["value.converter"] == json_converter
    # The job's schema evolution reads the schema block of each event.
    assert connector["value.converter.schemas.enable"] == "true"
    topic = f"{connector['topic.prefix']}.{connector['table.include.list']}"
    for name, service in airflow_services.items():
        assert environment(service)["KAFKA_TOPIC"] == topic, name

    register = environment(services["register-connector"])
    name = register["CONNECTOR_NAME"]
    assert connector["slot.name"] == connector["publication.name"] == slot_name(name)
    assert connector["publication.autocreate.mode"] == "disabled"
    assert f"CREATE PUBLICATION {connector['publication.name']} FOR TABLE public.articles" in (
        ARTICLES_SQL.read_text()
    )
    mounted = bind_mounts(services["register-connector"])["./docker/connect"]
    assert register["CONNECTOR_CONFIG"] == f"{mounted}/{CONNECTOR_JSON.name}"


def test_connector_credentials_come_from_the_worker_environment(
    connector: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    worker = environment(services["connect"])
    assert worker["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert worker["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith(".EnvVarConfigProvider")
    assert connector["database.password"] == "${env:DEBEZIUM_DB_PASSWORD}"
    for key, value in connector.items():
        for reference in re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", value):
            assert reference in worker, f"{key} needs {reference} in the connect service"
    source = environment(services["source-db"])
    assert worker["SOURCE_DB_HOST"] == "source-db"
    assert worker["SOURCE_DB_NAME"] == source["POSTGRES_DB"]
    for key in ("DEBEZIUM_DB_USER", "DEBEZIUM_DB_PASSWORD"):
        assert worker[key] == source[key], f"connect and source-db disagree on {key}"


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert not any("ZOOKEEPER" in key for key in env)
    assert "zookeeper" not in services


# -- the Compose CLI ----------------------------------------------------------------


def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin answers, else Debian's ``docker-compose``."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def run_compose(env_file: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Compose CLI here: neither the `docker compose` plugin nor `docker-compose` "
            "(apt-get install docker-compose) is installed"
        )
    # Only PATH and HOME: a variable exported in the caller's shell would
    # otherwise win over the env file and hide a missing one.
    return subprocess.run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        check=False,
        timeout=120,
    )


def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    result = run_compose(ENV_EXAMPLE, "config", "-q", home=tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_cli_refuses_to_run_without_a_secret(tmp_path: Path) -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file = tmp_path / "incomplete.env"
    env_file.write_text(
        "\n".join(line for line in lines if not line.startswith("MINIO_ROOT_PASSWORD=")) + "\n"
    )
    result = run_compose(env_file, "config", "-q", home=tmp_path)
    assert result.returncode != 0
    assert "MINIO_ROOT_PASSWORD" in result.stderr


# -- register-connector.sh against a stand-in Connect REST API ---------------------------


class _FakeConnect(BaseHTTPRequestHandler):
    """Just enough of Kafka Connect's REST API for the registration script."""

    configs: dict[str, bytes]
    puts: list[tuple[str, bytes, str]]
    put_status: int
    task_state: str

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.puts.append((self.path, body, self.headers["Content-Type"]))
        name = self.path.split("/")[2]
        status = self.put_status or (200 if name in self.configs else 201)
        if status < 300:
            self.configs[name] = body
        self._reply(status, {"name": name} if status < 300 else {"message": "bad config"})

    def do_GET(self) -> None:
        name = self.path.split("/")[2]
        if name not in self.configs or not self.path.endswith("/status"):
            self._reply(404, {"message": f"connector {name} not found"})
            return
        self._reply(
            200,
            {
                "name": name,
                "connector": {"state": "RUNNING", "worker_id": "connect:8083"},
                "tasks": [{"id": 0, "state": self.task_state, "worker_id": "connect:8083"}],
                "type": "source",
            },
        )

    def _reply(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_connect() -> Iterator[tuple[str, type[_FakeConnect]]]:
    if not (shutil.which("bash") and shutil.which("curl")):
        pytest.skip("register-connector.sh needs bash and curl")
    handler = type(
        "Handler",
        (_FakeConnect,),
        {"configs": {}, "puts": [], "put_status": 0, "task_state": "RUNNING"},
    )
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_register(url: str, timeout_s: int = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REGISTER_SCRIPT)],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CONNECT_URL": url,
            "CONNECTOR_NAME": "neuronews-articles",
            "CONNECTOR_CONFIG": str(CONNECTOR_JSON),
            "RUNNING_TIMEOUT_S": str(timeout_s),
        },
        check=False,
        timeout=60,
    )


def test_register_connector_creates_then_updates_the_same_connector(
    fake_connect: tuple[str, type[_FakeConnect]],
) -> None:
    url, connect = fake_connect
    first = run_register(url)
    second = run_register(url)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "created" in first.stdout and "updated" in second.stdout
    assert len(connect.puts) == 2
    for path, body, content_type in connect.puts:
        assert path == "/connectors/neuronews-articles/config"
        assert content_type == "application/json"
        assert body == CONNECTOR_JSON.read_bytes()


def test_register_connector_fails_when_connect_rejects_the_config(
    fake_connect: tuple[str, type[_FakeConnect]],
) -> None:
    url, connect = fake_connect
    connect.put_status = 400
    result = run_register(url)
    assert result.returncode != 0
    assert "HTTP 400" in result.stderr and "bad config" in result.stderr


def test_register_connector_fails_when_the_task_fails(
    fake_connect: tuple[str, type[_FakeConnect]],
) -> None:
    url, connect = fake_connect
    connect.task_state = "FAILED"
    result = run_register(url)
    assert result.returncode != 0
    assert "failed" in result.stderr


def test_register_connector_gives_up_when_connect_never_answers() -> None:
    if not (shutil.which("bash") and shutil.which("curl")):
        pytest.skip("register-connector.sh needs bash and curl")
    result = run_register(f"http://127.0.0.1:{_free_port()}", timeout_s=1)
    assert result.returncode != 0
    assert "cannot reach" in result.stderr


# -- the source database's init scripts, on a real PostgreSQL ---------------------------


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Any]:
    """A throw-away PostgreSQL with wal_level=logical, as the source-db service runs."""
    from cdc_iceberg.local.postgres import PostgresServer, postgres_bin_dir

    try:
        postgres_bin_dir()
    except RuntimeError as missing:
        pytest.skip(str(missing))
    # Under /tmp itself: pytest's own temp root is private to root, and the
    # server runs as the postgres OS user when the suite runs as root.
    data_dir = Path(tempfile.mkdtemp(prefix="compose-source-db-"))
    data_dir.chmod(0o755)
    server = PostgresServer(data_dir=data_dir, port=_free_port(), password="example-superuser")
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_init_scripts(server: Any, database: str) -> None:
    """What the postgres image's entrypoint does with docker/postgres-init, in order."""
    server.sql(ARTICLES_SQL.read_text(), database=database)
    result = subprocess.run(
        ["bash", str(DEBEZIUM_ROLE_SCRIPT)],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": server.host,
            "PGPORT": str(server.port),
            "PGPASSWORD": server.password,
            "POSTGRES_USER": server.user,
            "POSTGRES_DB": database,
            "DEBEZIUM_DB_USER": "debezium",
            "DEBEZIUM_DB_PASSWORD": "example-debezium",
        },
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_init_scripts_give_debezium_a_publication_and_a_least_privilege_role(
    postgres_server: Any,
) -> None:
    from cdc_iceberg.local.postgres import SqlError

    server = postgres_server
    database = "compose_source"
    server.sql(f'CREATE DATABASE "{database}"', database="postgres")
    run_init_scripts(server, database)
    run_init_scripts(server, database)  # a re-run changes nothing and fails on nothing

    publication = slot_name("neuronews-articles")
    tables = server.scalar(
        "SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables "
        f"WHERE pubname = '{publication}'",
        database=database,
    )
    assert tables == "public.articles"

    debezium = type(server)(
        data_dir=server.data_dir,
        port=server.port,
        user="debezium",
        password="example-debezium",
        database=database,
    )
    slot = "compose_test_slot"
    debezium.sql(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    try:
        # Decoding reads flushed WAL only, and the local server commits asynchronously.
        server.sql(
            "SET synchronous_commit = on; "
            "INSERT INTO public.articles (article_id, title, word_count) VALUES ('a1', 't', 3)",
            database=database,
        )
        changes = debezium.scalar(
            f"SELECT count(*) FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, "
            f"'proto_version', '1', 'publication_names', '{publication}')"
        )
        assert int(changes) >= 3  # BEGIN, RELATION, INSERT, COMMIT
        assert debezium.scalar("SELECT count(*) FROM public.articles") == "1"
        with pytest.raises(SqlError, match="permission denied"):
            debezium.sql("DELETE FROM public.articles")
    finally:
        debezium.sql(f"SELECT pg_drop_replication_slot('{slot}')")
