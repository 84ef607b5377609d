// The few shapes of node-postgres (`pg`) the outbox uses, written here so that the library's types
// need neither `pg` nor `@types/pg` in an app that does not use the outbox.

/** What `publish(tx, …)` writes through: a `pg` client inside BEGIN, a TypeORM QueryRunner or EntityManager, … */
export interface OutboxTransaction {
  // `pg` answers `{ rows }`, TypeORM the rows themselves: both are read.
  query(text: string, values?: unknown[]): Promise<unknown>;
}

export interface PgQueryResult<R> {
  rows: R[];
}

/** A client checked out of a `pg` Pool. */
export interface PgPoolClientLike {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<PgQueryResult<R>>;
  release(destroy?: boolean | Error): void;
  on(event: 'notification', listener: (msg: { channel: string; payload?: string }) => void): unknown;
  on(event: 'error' | 'end', listener: (err?: Error) => void): unknown;
  removeListener(event: 'error', listener: (err?: Error) => void): unknown;
}

/** A `pg` Pool. */
export interface PgPoolLike {
  connect(): Promise<PgPoolClientLike>;
  end(): Promise<void>;
  on?(event: 'error', listener: (err: Error) => void): unknown;
}
