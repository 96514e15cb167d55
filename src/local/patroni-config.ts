/**
 * What a Patroni member is started with: its patroni.yml (DCS timing, synchronous mode, pg_rewind,
 * the PostgreSQL parameters of a throwaway cluster) and the post_bootstrap script.
 */
import path from 'node:path';
import type { MemberRecord, PatroniClusterOptions } from './patroni-types.js';

export const HOST = '127.0.0.1';
export const SCOPE = 'pgrelay';
export const NAMESPACE = '/service/';

/** The cluster-wide inputs of a member's configuration. */
export interface ConfigInputs {
  options: PatroniClusterOptions;
  etcdUrl: string;
  baseDir: string;
  binDir: string;
  superuser: string;
  superuserPassword: string;
  replicationPassword: string;
}

/** A member's patroni.yml; refuses DCS timing where loop_wait + 2 × retry_timeout exceeds ttl. */
export function patroniConfig(member: MemberRecord, env: ConfigInputs): Record<string, unknown> {
  const ttl = env.options.ttl ?? 10;
  const loopWait = env.options.loopWait ?? 2;
  const retryTimeout = env.options.retryTimeout ?? 4;
  if (loopWait + 2 * retryTimeout > ttl) throw new Error(`loop_wait + 2 × retry_timeout must not exceed ttl (${loopWait} + 2 × ${retryTimeout} > ${ttl})`);
  return {
    scope: SCOPE,
    namespace: NAMESPACE,
    name: member.name,
    restapi: { listen: `${HOST}:${member.apiPort}`, connect_address: `${HOST}:${member.apiPort}` },
    etcd3: { hosts: [env.etcdUrl.replace('http://', '')], protocol: 'http' },
    bootstrap: {
      dcs: {
        ttl,
        loop_wait: loopWait,
        retry_timeout: retryTimeout,
        maximum_lag_on_failover: 16 * 1024 * 1024,
        synchronous_mode: true,
        postgresql: {
          use_pg_rewind: true,
          use_slots: true,
          parameters: {
            max_connections: 200,
            max_wal_senders: 10,
            max_replication_slots: 10,
            wal_level: 'replica',
            wal_log_hints: 'on',
            hot_standby: 'on',
            wal_keep_size: '256MB',
          },
        },
      },
      initdb: [{ encoding: 'UTF8' }, { locale: 'C' }],
      post_bootstrap: path.join(env.baseDir, 'post-bootstrap.sh'),
    },
    postgresql: {
      listen: `${HOST}:${member.pgPort}`,
      connect_address: `${HOST}:${member.pgPort}`,
      data_dir: member.dataDir,
      bin_dir: env.binDir,
      pgpass: path.join(member.dir, 'pgpass'),
      authentication: {
        superuser: { username: env.superuser, password: env.superuserPassword },
        replication: { username: 'replicator', password: env.replicationPassword },
      },
      pg_hba: [
        'host all all 127.0.0.1/32 scram-sha-256',
        'host replication replicator 127.0.0.1/32 scram-sha-256',
      ],
      basebackup: [{ checkpoint: 'fast' }],
      remove_data_directory_on_rewind_failure: true,
      parameters: {
        unix_socket_directories: member.dir,
        password_encryption: 'scram-sha-256',
        shared_buffers: '32MB',
        // throwaway clusters: a killed process loses nothing the OS has, torn pages are still guarded
        fsync: 'off',
        full_page_writes: 'on',
        hot_standby_feedback: 'on',
        wal_receiver_status_interval: '1s',
        wal_retrieve_retry_interval: '500ms',
        wal_sender_timeout: '10s',
        wal_receiver_timeout: '10s',
        dynamic_shared_memory_type: 'mmap',
        logging_collector: 'off',
        log_line_prefix: '%m [%p] %q%u@%d ',
        ...env.options.parameters,
      },
    },
    watchdog: { mode: 'off' },
  };
}

/** The post_bootstrap script: creates the application role (with pg_monitor) and its database. */
export function postBootstrapScript(psql: string, app: { user: string; password: string; database: string }): string {
  // Patroni calls it with a connection string as $1 (superuser; password through PGPASSFILE).
  return [
    '#!/bin/sh',
    'set -e',
    `"${psql}" "$1" --no-psqlrc -v ON_ERROR_STOP=1 -q <<'SQL'`,
    `CREATE ROLE ${app.user} LOGIN PASSWORD '${app.password}';`,
    `GRANT pg_monitor TO ${app.user};`,
    `CREATE DATABASE ${app.database} OWNER ${app.user};`,
    'SQL',
    '',
  ].join('\n');
}
