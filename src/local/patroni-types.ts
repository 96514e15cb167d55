/** The shapes a PatroniCluster speaks in: its options, a member as Patroni reports it, and its record of one. */

export interface PatroniClusterOptions {
  /** Patroni members; default 3 (leader, synchronous standby, replica). */
  members?: number;
  /** DCS timing; defaults ttl 10, loop_wait 2, retry_timeout 4 (loop_wait + 2 × retry_timeout ≤ ttl). */
  ttl?: number;
  loopWait?: number;
  retryTimeout?: number;
  /** Extra PostgreSQL parameters for every member. */
  parameters?: Record<string, string | number | boolean>;
  onProgress?: (step: string) => void;
}

/** One member as Patroni's `GET /cluster` reports it. */
export interface PatroniMember {
  name: string;
  role: 'leader' | 'sync_standby' | 'replica' | 'standby_leader' | string;
  state: string;
  api_url?: string;
  host?: string;
  port?: number;
  timeline?: number;
  lag?: number | string;
  tags?: Record<string, unknown>;
}

export interface MemberRecord {
  name: string;
  pgPort: number;
  apiPort: number;
  dir: string;
  dataDir: string;
  configFile: string;
  logFile: string;
  /** the running patroni daemon, if this process started it and it has not been killed */
  patroniPid: number | undefined;
}
