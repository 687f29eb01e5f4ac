#!/usr/bin/env bash
# The role the Debezium connector logs in as: replication and read access to
# public.articles, nothing else. A shell step rather than SQL because its name
# and password come from the container's environment (the stack's env file).
# No `set -u`: the image sources this file instead of running it when the
# executable bit is lost, and -u would then leak into its entrypoint.
set -eo pipefail

: "${DEBEZIUM_DB_USER:?DEBEZIUM_DB_USER must be set}"
: "${DEBEZIUM_DB_PASSWORD:?DEBEZIUM_DB_PASSWORD must be set}"

# psql variables (:"name" and :'value') quote the identifier and the literal,
# so no value from the environment is ever spliced into SQL text.
psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
    -v role_name="${DEBEZIUM_DB_USER}" \
    -v role_password="${DEBEZIUM_DB_PASSWORD}" \
    -v db_name="${POSTGRES_DB}" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role_name') AS role_missing \gset
\if :role_missing
    CREATE ROLE :"role_name" WITH LOGIN REPLICATION PASSWORD :'role_password';
\else
    ALTER ROLE :"role_name" WITH LOGIN REPLICATION PASSWORD :'role_password';
\endif
GRANT CONNECT ON DATABASE :"db_name" TO :"role_name";
GRANT USAGE ON SCHEMA public TO :"role_name";
-- SELECT is what the initial snapshot needs; the change stream itself comes
-- through the replication slot and the publication.
GRANT SELECT ON public.articles TO :"role_name";
SQL
