#!/bin/sh
# Patroni's post_bootstrap (docker/patroni.yml): runs once, on the node that bootstraps the cluster,
# with a superuser connection string as $1. Creates the application role that pgrelay and the
# applications log in as (pg_monitor lets pgrelay's health checks and lag monitor read the
# replication views) and its database. The password comes from APP_PASSWORD (compose sets it).
set -eu
psql "$1" --no-psqlrc -v ON_ERROR_STOP=1 -v app_password="${APP_PASSWORD:?APP_PASSWORD must be set}" <<'SQL'
CREATE ROLE app LOGIN PASSWORD :'app_password';
GRANT pg_monitor TO app;
CREATE DATABASE app OWNER app;
SQL
