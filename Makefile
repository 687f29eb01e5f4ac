# Exactly-once CDC from Debezium on Kafka into Apache Iceberg.
#   make demo   - install, start Kafka, feed changes, run the DAG once, print the result
#   make test   - install and run the whole test suite (what CI runs)
# Everything runs as plain processes on 127.0.0.1; state lives under .local/.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
MVN ?= mvn -q -B
ROOT := $(abspath .)
LOCAL := $(ROOT)/.local

# CLUSTER=1: the production-shaped topology, each part a local process on 127.0.0.1
# (README, "Running on a cluster"): three Kafka brokers, a Spark master with two workers,
# an S3 object store for the warehouse and the checkpoint, the catalog on Postgres.
ifdef CLUSTER
export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096
export SPARK_MASTER ?= spark://127.0.0.1:7077
export AIRFLOW_CONN_SPARK_DEFAULT ?= {"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077}
export ICEBERG_S3_ENDPOINT ?= http://127.0.0.1:9000
export ICEBERG_WAREHOUSE ?= s3://lakehouse/warehouse
export CHECKPOINT_LOCATION ?= s3a://lakehouse/checkpoints/cdc_to_iceberg
export ICEBERG_CATALOG_URI ?= postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/iceberg
# the local store takes any key pair; against a real store, set your own
export AWS_ACCESS_KEY_ID ?= local-demo
export AWS_SECRET_ACCESS_KEY ?= local-demo-secret
KAFKA_NODES := --brokers 3
endif

# Local defaults; any of them can be overridden from the environment.
export KAFKA_BOOTSTRAP_SERVERS ?= localhost:9092
export KAFKA_TOPIC ?= neuronews.public.articles
export KAFKA_CONSUMER_GROUP ?= cdc_to_iceberg
export CHECKPOINT_LOCATION ?= $(LOCAL)/checkpoints/cdc_to_iceberg
export STARTING_OFFSETS ?= earliest
export ICEBERG_CATALOG_NAME ?= lakehouse
export ICEBERG_CATALOG_URI ?= sqlite:///$(LOCAL)/iceberg/catalog.db
export ICEBERG_WAREHOUSE ?= file://$(LOCAL)/iceberg/warehouse
export ICEBERG_TABLE ?= neuronews.articles
export KAFKA_DATA_DIR ?= $(LOCAL)/kafka
export PATH := $(abspath $(VENV))/bin:$(PATH)
export SPARK_LOCAL_IP := 127.0.0.1

# Airflow 3 on SQLite, with this project's DAGs and plugins.
export AIRFLOW_HOME ?= $(LOCAL)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW_CONN_SPARK_DEFAULT ?= {"conn_type": "spark", "host": "local[*]"}
export PYTHONPATH := $(ROOT):$(ROOT)/plugins

JARS := build/jars
STAMP_PY := $(VENV)/.installed
STAMP_SPARK := $(JARS)/spark/.fetched
STAMP_KAFKA := $(JARS)/kafka/.fetched
STAMP_REST := $(JARS)/rest-catalog/.fetched
STAMP_APT := build/.system-packages

.PHONY: setup jars class-archive system-packages kafka-up kafka-down cluster-up cluster-down \
        drain generate airflow-init demo \
        test test-faults lint clean airflow-ui maintain status dlq-replay bench bench-full \
        bench-cluster bench-freshness

setup: $(STAMP_APT) $(STAMP_PY) jars class-archive

$(STAMP_APT): scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	@mkdir -p build && touch $@

$(STAMP_PY): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

jars: $(STAMP_SPARK) $(STAMP_KAFKA) $(STAMP_REST) connect-jars

$(STAMP_SPARK): jvm/spark/pom.xml
	rm -rf $(JARS)/spark
	$(MVN) -f jvm/spark/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(ROOT)/$(JARS)/spark -DincludeScope=runtime
	touch $@

$(STAMP_KAFKA): jvm/kafka/pom.xml
	rm -rf $(JARS)/kafka
	$(MVN) -f jvm/kafka/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(ROOT)/$(JARS)/kafka -DincludeScope=runtime
	touch $@

# Iceberg's REST catalog server (cdc_iceberg/local/rest_catalog.py runs it)
$(STAMP_REST): jvm/rest-catalog/pom.xml
	rm -rf $(JARS)/rest-catalog
	$(MVN) -f jvm/rest-catalog/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(ROOT)/$(JARS)/rest-catalog -DincludeScope=runtime
	touch $@

# the local Spark driver's class-data archive (named and found by cdc_iceberg/class_archive.py,
# built by jobs/class_archive_build.py): built once per java and set of jars, found again
# in a fraction of a second
class-archive: $(STAMP_PY) jars
	$(PY) -m jobs.class_archive_build

kafka-up: setup
	$(PY) -m cdc_iceberg.local.kafka_broker up $(KAFKA_NODES)

kafka-down:
	@if [ -x $(PY) ]; then $(PY) -m cdc_iceberg.local.kafka_broker down $(KAFKA_NODES); fi

# CLUSTER=1's other parts: the catalog's Postgres database, the object store, Spark
cluster-up: setup
	PGDATABASE=iceberg $(PY) -m cdc_iceberg.local.postgres up
	$(PY) -m cdc_iceberg.local.object_store up
	$(PY) -m cdc_iceberg.local.spark_cluster up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m cdc_iceberg.local.spark_cluster down; \
	  $(PY) -m cdc_iceberg.local.object_store down; $(PY) -m cdc_iceberg.local.postgres down; fi

generate: kafka-up
	$(PY) -m cdc_iceberg.generator --events $${EVENTS:-5000} --keys $${KEYS:-500} --seed $${SEED:-7}

drain: setup
	$(PY) -m cdc_iceberg.submit

drain-all: setup
	$(PY) -m cdc_iceberg.submit -- --tables all

# dead letters re-applied once their cause is fixed: TABLE=, REASON=, APPLY=1 to write
dlq-replay: setup
	$(PY) -m cdc_iceberg.submit --job dlq_replay -- $(if $(TABLE),--table "$(TABLE)") \
	  $(if $(REASON),--reason "$(REASON)") $(if $(APPLY),--apply)

status: setup
	$(PY) -m cdc_iceberg status

maintain: setup
	$(PY) -m cdc_iceberg.submit --job iceberg_maintenance

airflow-init: setup
	@mkdir -p $(AIRFLOW_HOME)
	$(PY) -m airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log
	$(PY) -m airflow pools set cdc_iceberg_writer 1 "one writer per Iceberg table" > /dev/null

# SOURCE=postgres: real SQL changes captured by Debezium instead of generated events
SOURCE ?= generator
export SOURCE
demo: setup kafka-up $(if $(CLUSTER),cluster-up) airflow-init $(if $(filter postgres,$(SOURCE)),cdc-up)
	$(PY) -m cdc_iceberg.demo

airflow-ui: airflow-init kafka-up
	$(PY) -m airflow standalone

# the harness's figures, freshness through Postgres and Debezium, and the strict parse
# against Spark's own from_json on the same bytes (batch_profile-<records>.json)
bench: setup
	$(PY) bench/run.py --quick
	$(PY) bench/freshness.py --quick
	$(PY) bench/profile_batch.py --records 20000

bench-full: setup
	$(PY) bench/run.py --full
	$(PY) bench/freshness.py --full
	$(PY) bench/profile_batch.py --records 100000

# commit in Postgres to visible in Iceberg, through Debezium, at a sweep of rates
bench-freshness: setup
	$(PY) bench/freshness.py --quick

# the drain on local[2], a standalone cluster of 1 and 2 workers, and 2 workers on S3
bench-cluster: setup
	$(PY) bench/cluster.py --quick

# ruff, and mypy over the product's code (cdc_iceberg, jobs, plugins: pyproject.toml)
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -m "not faults" $(PYTEST_ARGS)

test-faults: setup
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

include mk/cdc.mk
cdc-up: setup

clean: kafka-down
	rm -rf $(LOCAL) build
