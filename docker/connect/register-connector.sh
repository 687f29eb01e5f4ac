#!/usr/bin/env bash
# Registers (or updates) the Debezium connector for public.articles, then waits
# until the connector and its task run.
#
# PUT /connectors/NAME/config creates the connector or replaces its config, so
# running this again after a change to the JSON file, or after a restart of
# the stack, is safe. The JSON holds no credentials: it names them as
# ${env:...} references that the Connect worker resolves from its own
# environment (EnvVarConfigProvider), so the REST API and the connect-configs
# topic only ever see the references.
#
# Environment:
#   CONNECT_URL        Kafka Connect REST endpoint, e.g. http://connect:8083
#   CONNECTOR_NAME     connector name (default neuronews-articles)
#   CONNECTOR_CONFIG   path of the connector's JSON config
#   RUNNING_TIMEOUT_S  how long to wait for RUNNING (default 120)
set -euo pipefail

: "${CONNECT_URL:?CONNECT_URL must name the Kafka Connect REST endpoint}"
: "${CONNECTOR_CONFIG:?CONNECTOR_CONFIG must name the connector JSON file}"
name="${CONNECTOR_NAME:-neuronews-articles}"
timeout_s="${RUNNING_TIMEOUT_S:-120}"

if [[ ! -r "${CONNECTOR_CONFIG}" ]]; then
    echo "register-connector: cannot read ${CONNECTOR_CONFIG}" >&2
    exit 2
fi

response="$(mktemp)"
trap 'rm -f "${response}"' EXIT

if ! status="$(curl --silent --show-error --output "${response}" --write-out '%{http_code}' \
    --request PUT --header 'Content-Type: application/json' \
    --data-binary "@${CONNECTOR_CONFIG}" \
    "${CONNECT_URL}/connectors/${name}/config")"; then
    echo "register-connector: cannot reach Kafka Connect at ${CONNECT_URL}" >&2
    exit 1
fi
case "${status}" in
    200) echo "register-connector: ${name} updated" ;;
    201) echo "register-connector: ${name} created" ;;
    *)
        echo "register-connector: PUT ${name} config answered HTTP ${status}:" >&2
        cat "${response}" >&2
        echo >&2
        exit 1
        ;;
esac

# Connect reports the state without spaces in its JSON; one RUNNING for the
# connector and one per task means everything started. A FAILED state is final
# until someone fixes the config, so stop waiting and show the trace.
deadline=$((SECONDS + timeout_s))
while ((SECONDS < deadline)); do
    if curl --silent --fail --output "${response}" "${CONNECT_URL}/connectors/${name}/status"; then
        compact="$(tr -d ' \n\t' <"${response}")"
        if [[ "${compact}" == *'"state":"FAILED"'* ]]; then
            echo "register-connector: ${name} failed:" >&2
            cat "${response}" >&2
            echo >&2
            exit 1
        fi
        running="$(grep -o '"state":"RUNNING"' <<<"${compact}" | wc -l)"
        if [[ "${compact}" == *'"tasks":[{'* ]] && ((running >= 2)); then
            echo "register-connector: ${name} is running"
            exit 0
        fi
    fi
    sleep 2
done
echo "register-connector: ${name} not running after ${timeout_s}s; last status:" >&2
cat "${response}" >&2
echo >&2
exit 1
