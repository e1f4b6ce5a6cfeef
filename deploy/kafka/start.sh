#!/usr/bin/env bash
# Apache Kafka (KRaft, one node) with SASL/SCRAM-SHA-512 for clients and the StandardAuthorizer.
# The broker settings come from the KAFKA_* variables of docker-compose.yml (KAFKA_FOO_BAR -> foo.bar,
# `__` -> `_`, `___` -> `-`, as the apache/kafka image does); this script adds what holds secrets:
# the JAAS lines of the broker's own logins, and the SCRAM users created when the storage is formatted
# (`kafka-storage format --add-scram`, KIP-900: KRaft keeps SCRAM credentials in its metadata log, so
# the bus's user must exist before the first start). Passwords: hex or base64url (no quotes, commas or ]).
set -euo pipefail
: "${BROKER_PASSWORD:?set BROKER_PASSWORD (the broker's own SASL password)}"
: "${BUS_KAFKA_SASL_USERNAME:?set BUS_KAFKA_SASL_USERNAME (the bus's SCRAM user, a super user)}"
: "${BUS_KAFKA_SASL_PASSWORD:?set BUS_KAFKA_SASL_PASSWORD}"
CONFIG=/tmp/databus-kafka.properties
CLIENT=/tmp/databus-client.properties  # for the health check
umask 077

: > "$CONFIG"
env | grep '^KAFKA_' | while IFS= read -r line; do
  name=${line%%=*}
  case "$name" in
    KAFKA_OPTS|KAFKA_HEAP_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_JMX_OPTS|KAFKA_LOG4J_OPTS|KAFKA_GC_LOG_OPTS) continue ;;
  esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  printf '%s=%s\n' "$key" "${line#*=}" >> "$CONFIG"
done
cat >> "$CONFIG" <<PROPS
listener.name.clients.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${BROKER_PASSWORD}";
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="${BROKER_PASSWORD}" user_broker="${BROKER_PASSWORD}";
PROPS
cat > "$CLIENT" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${BROKER_PASSWORD}";
PROPS

if [ "${1:-}" = "--print-config" ]; then  # show the rendered broker config and stop (tests/unit/test_compose.py)
  cat "$CONFIG"
  exit 0
fi
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --config "$CONFIG" \
  --cluster-id "${CLUSTER_ID:-$(/opt/kafka/bin/kafka-storage.sh random-uuid)}" \
  --add-scram "SCRAM-SHA-512=[name=broker,password=${BROKER_PASSWORD}]" \
  --add-scram "SCRAM-SHA-512=[name=${BUS_KAFKA_SASL_USERNAME},password=${BUS_KAFKA_SASL_PASSWORD}]"
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
