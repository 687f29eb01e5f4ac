#!/usr/bin/env bash
# Kafka's own consumer-group tool, from the broker jars `make jars` fetched.
#   scripts/kafka-consumer-groups.sh --describe --group cdc_to_iceberg
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec java -Xmx256m -cp "$root/build/jars/kafka/*" \
  -Dlog4j2.level=WARN \
  org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
  --bootstrap-server "${KAFKA_BOOTSTRAP_SERVERS:-localhost:9092}" "$@"
