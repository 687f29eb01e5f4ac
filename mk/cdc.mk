# system-packages: apt-get install -y postgresql
#
# Real change capture on this machine: PostgreSQL (Debian's package, run as a
# plain process with wal_level=logical) -> Debezium on a Kafka Connect worker
# -> the local Kafka broker, topic neuronews.public.articles. Included by the
# main Makefile, which defines PY (the venv's python) and MVN.
#
#   make cdc-up      start Postgres, Kafka and Connect; register the connector
#   make cdc-down    stop Connect and Postgres (Kafka keeps running for the rest
#                    of the stack: `$(PY) -m cdc_iceberg.local.kafka_broker down`)
#
# Ports and credentials come from PGHOST/PGPORT/PGUSER/PGPASSWORD (127.0.0.1,
# 5432, postgres, postgres), KAFKA_BOOTSTRAP_SERVERS and CONNECT_PORT (8083).

MVN ?= mvn
CONNECT_JARS := build/jars/connect
CONNECT_STAMP := $(CONNECT_JARS)/.fetched

.PHONY: connect-jars cdc-up cdc-down

connect-jars: $(CONNECT_STAMP)

# The stamp makes a second run free; a changed pom fetches afresh (no stale jars).
$(CONNECT_STAMP): jvm/connect/pom.xml
	rm -rf $(CONNECT_JARS)
	$(MVN) -q -B -f jvm/connect/pom.xml dependency:copy-dependencies \
		-DoutputDirectory=$(CURDIR)/$(CONNECT_JARS) -DincludeScope=runtime
	touch $@

cdc-up: connect-jars
	$(PY) -m cdc_iceberg.local.postgres up
	$(PY) -m cdc_iceberg.local.kafka_broker up
	$(PY) -m cdc_iceberg.local.connect up

cdc-down:
	$(PY) -m cdc_iceberg.local.connect down
	$(PY) -m cdc_iceberg.local.postgres down
