#!/usr/bin/env bash
# Entrypoint of a synchronous standby or an asynchronous read replica of the compose stack
# (docker/compose.yaml) and of the Docker test backend (test/support/cluster-docker.ts), wrapping the
# official postgres image's docker-entrypoint.sh. On the first start (empty data directory) it makes
# the node the way RDS makes a read replica: a base backup of the primary through a replication slot
# of its own, then streaming replication (pg_basebackup -R writes standby.signal and primary_conninfo
# with application_name = NODE_NAME, which the primary's synchronous_standby_names refers to). Later
# starts go straight to the official entrypoint, which finds the data directory and starts postgres.
#
# Environment: NODE_NAME (slot and application_name: [a-z0-9_]), PRIMARY_HOST, PRIMARY_PORT (5432),
# REPLICATION_USER (replicator), REPLICATION_PASSWORD. Arguments: the postgres command line.
set -Eeuo pipefail

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
node_name="${NODE_NAME:?NODE_NAME must be set}"
primary_host="${PRIMARY_HOST:?PRIMARY_HOST must be set}"
primary_port="${PRIMARY_PORT:-5432}"
replication_user="${REPLICATION_USER:-replicator}"
if [ "$#" -eq 0 ]; then set -- postgres; fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  export PGPASSWORD="${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
  echo "pgrelay $node_name: waiting for the primary at $primary_host:$primary_port"
  attempts=0
  until pg_isready --quiet --host "$primary_host" --port "$primary_port"; do
    attempts=$((attempts + 1))
    if [ "$attempts" -ge 180 ]; then
      echo "pgrelay $node_name: the primary at $primary_host:$primary_port did not accept connections" >&2
      exit 1
    fi
    sleep 1
  done

  conninfo="host=$primary_host port=$primary_port user=$replication_user application_name=$node_name"
  # A slot of its own keeps the WAL this node still needs. It survives on the primary when this
  # node's volume is removed: reuse it then instead of failing to create it again.
  slot_exists="$(psql "$conninfo dbname=postgres" --no-psqlrc --tuples-only --no-align --quiet \
    --set slot="$node_name" <<'SQL'
SELECT count(*) FROM pg_replication_slots WHERE slot_name = :'slot';
SQL
  )"
  create_slot=(--create-slot)
  if [ "$slot_exists" = 1 ]; then create_slot=(); fi

  echo "pgrelay $node_name: base backup of $primary_host:$primary_port (slot $node_name)"
  pg_basebackup --pgdata="$PGDATA" --dbname="$conninfo" --slot="$node_name" "${create_slot[@]}" \
    --write-recovery-conf --wal-method=stream --checkpoint=fast
  # pg_basebackup copied the primary's postgresql.auto.conf, synchronous_standby_names included. A
  # standby keeps none of its own: promoted with it, every commit would wait for a partner that
  # never comes. Failover sets the new primary's synchronous standby.
  echo "synchronous_standby_names = ''" >> "$PGDATA/postgresql.auto.conf"
  unset PGPASSWORD
fi

exec docker-entrypoint.sh "$@"
