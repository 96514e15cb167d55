import pg from 'pg';

/**
 * Client load through pgrelay for failover tests and the drill: writers insert rows as fast as
 * they can and record every acknowledged id (with the port of the server that acknowledged it);
 * readers keep counting rows. Errors are recorded, never thrown; a writer whose connection is gone
 * opens a new one (and that is counted).
 */
export interface Ack {
  id: number;
  writer: number;
  /** inet_server_port() of the node that committed it */
  port: number;
  /** performance.now() when the query was sent and when its answer came */
  sentAt: number;
  at: number;
}

export interface LoadError {
  who: 'writer' | 'reader';
  code: string | undefined;
  message: string;
  at: number;
}

export class Load {
  readonly acks: Ack[] = [];
  readonly errors: LoadError[] = [];
  reads = 0;
  reconnects = 0;
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private readonly clients = new Set<pg.Client>();
  /** clients whose connection to pgrelay ended */
  private readonly gone = new WeakSet<pg.Client>();

  constructor(
    private readonly url: string,
    private readonly table: string,
  ) {}

  /** Creates the table through a direct connection string (to the primary), once. */
  static createTableSql(table: string): string {
    return `DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id bigserial PRIMARY KEY, writer int NOT NULL, seq int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`;
  }

  start(writers: number, readers: number): void {
    for (let i = 0; i < writers; i++) this.loops.push(this.writer(i));
    for (let i = 0; i < readers; i++) this.loops.push(this.reader());
  }

  /** Stops the loops (each finishes its query) and closes the clients. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await Promise.all([...this.clients].map((c) => c.end().catch(() => {})));
  }

  errorsOf(who: 'writer' | 'reader'): LoadError[] {
    return this.errors.filter((e) => e.who === who);
  }

  /** Acknowledgements of queries sent after a moment (performance.now()). */
  acksAfter(at: number): Ack[] {
    return this.acks.filter((a) => a.sentAt > at);
  }

  private async connect(): Promise<pg.Client> {
    for (;;) {
      const client = new pg.Client({ connectionString: this.url });
      client.on('error', () => {}); // reported through the next query
      client.on('end', () => this.gone.add(client));
      try {
        await client.connect();
        this.clients.add(client);
        return client;
      } catch (error) {
        this.record('writer', error);
        await client.end().catch(() => {});
        if (this.stopped) throw error;
        await sleep(50);
      }
    }
  }

  private async writer(index: number): Promise<void> {
    let client = await this.connect();
    let seq = 0;
    while (!this.stopped) {
      const sentAt = performance.now();
      try {
        const result = await client.query<{ id: string; port: number }>(`INSERT INTO ${this.table} (writer, seq) VALUES ($1, $2) RETURNING id, inet_server_port() AS port`, [index, ++seq]);
        this.acks.push({ id: Number(result.rows[0]!.id), writer: index, port: result.rows[0]!.port, sentAt, at: performance.now() });
      } catch (error) {
        this.record('writer', error);
        if (this.gone.has(client)) {
          this.clients.delete(client);
          await client.end().catch(() => {});
          if (this.stopped) return;
          this.reconnects++;
          client = await this.connect().catch(() => client);
        }
        await sleep(5);
      }
    }
  }

  private async reader(): Promise<void> {
    const client = await this.connect();
    while (!this.stopped) {
      try {
        await client.query(`SELECT count(*) FROM ${this.table}`);
        this.reads++;
      } catch (error) {
        this.record('reader', error);
        await sleep(5);
      }
    }
  }

  private record(who: 'writer' | 'reader', error: unknown): void {
    const e = error as { code?: string; message?: string };
    this.errors.push({ who, code: e.code, message: e.message ?? String(error), at: performance.now() });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
