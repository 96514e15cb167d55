#!/usr/bin/env bash
# The primary of the compose stack (docker/compose.yaml), and of the Docker test backend
# (test/support/cluster-docker.ts). Mounted into /docker-entrypoint-initdb.d/ of the official
# postgres image, whose entrypoint runs it once, on the first start of an empty data directory, as
# the postgres OS user, while a server listening only on its Unix socket is up. It creates the
# application role and database owner, the replication role, allows replication over TCP, and makes
# SYNC_STANDBY the synchronous standby (RDS Multi-AZ). Settings written with ALTER SYSTEM take effect
# at the real start that follows, and pg_basebackup copies them into every standby and replica.
#
# Environment: POSTGRES_USER, POSTGRES_DB (the image's own), APP_USER (app), APP_PASSWORD,
# REPLICATION_USER (replicator), REPLICATION_PASSWORD, SYNC_STANDBY (the application_name of the
# synchronous standby; empty: no synchronous replication).
set -Eeuo pipefail

app_user="${APP_USER:-app}"
app_password="${APP_PASSWORD:?APP_PASSWORD must be set}"
replication_user="${REPLICATION_USER:-replicator}"
replication_password="${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
sync_names=""
if [ -n "${SYNC_STANDBY:-}" ]; then sync_names="FIRST 1 (${SYNC_STANDBY})"; fi

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set app_user="$app_user" --set app_password="$app_password" --set app_db="${POSTGRES_DB:-$app_user}" \
  --set replication_user="$replication_user" --set replication_password="$replication_password" \
  --set sync_names="$sync_names" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
-- lets the application and pgrelay's health checks and lag monitor read pg_stat_replication & co
GRANT pg_monitor TO :"app_user";
ALTER DATABASE :"app_db" OWNER TO :"app_user";
CREATE ROLE :"replication_user" LOGIN REPLICATION PASSWORD :'replication_password';
-- pg_rewind (rejoining a former primary after a failover) needs hint-bit changes in the WAL
ALTER SYSTEM SET wal_log_hints = on;
ALTER SYSTEM SET wal_keep_size = '256MB';
ALTER SYSTEM SET hot_standby_feedback = on;
ALTER SYSTEM SET recovery_target_timeline = 'latest';
-- fresh replay positions in pg_stat_replication
ALTER SYSTEM SET wal_receiver_status_interval = '1s';
ALTER SYSTEM SET synchronous_standby_names = :'sync_names';
SQL

# The image's entrypoint allowed `host all all all scram-sha-256`, which does not cover replication.
printf 'host replication %s all scram-sha-256\n' "$replication_user" >> "$PGDATA/pg_hba.conf"
echo "pgrelay primary: roles $app_user and $replication_user, synchronous_standby_names = '$sync_names'"
