import pg from 'pg';
import { inject } from 'vitest';

export interface SharedCluster {
  nodes: { name: string; role: 'primary' | 'standby' | 'replica'; host: string; port: number }[];
  user: string;
  password: string;
  database: string;
  superuser: string;
  superuserPassword: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    sharedCluster: SharedCluster;
  }
}

/** The cluster built once for the whole run (see cluster-global-setup.ts). */
export function sharedCluster(): SharedCluster {
  return inject('sharedCluster');
}

/** A one-shot query straight to a node (not through pgrelay). */
export async function queryNode<T = Record<string, unknown>>(cluster: SharedCluster, nodeName: string, sql: string, params: unknown[] = [], superuser = false): Promise<T[]> {
  const node = cluster.nodes.find((n) => n.name === nodeName);
  if (!node) throw new Error(`no node ${nodeName}`);
  const client = new pg.Client({
    host: node.host,
    port: node.port,
    user: superuser ? cluster.superuser : cluster.user,
    password: superuser ? cluster.superuserPassword : cluster.password,
    database: superuser ? 'postgres' : cluster.database,
  });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}

export function nodePort(cluster: SharedCluster, name: string): number {
  return cluster.nodes.find((n) => n.name === name)!.port;
}
