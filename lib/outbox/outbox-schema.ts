import { InvalidOptionsError } from '../errors/event-bus.errors';

/** `name` or `schema.name`, lower case: quoted in SQL, so a mixed-case name would not match the migration's unquoted one. */
const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/;

export function checkTableName(option: string, table: unknown): string {
  if (typeof table !== 'string' || !TABLE_NAME.test(table)) {
    throw new InvalidOptionsError(option, `must be a lower-case table name, "name" or "schema.name", got ${JSON.stringify(table)}`);
  }
  return table;
}

/** The table as an SQL identifier, each part quoted. */
export function quotedTable(table: string): string {
  return table
    .split('.')
    .map((part) => `"${part}"`)
    .join('.');
}

/**
 * The outbox table's DDL for `table`. Idempotent (IF NOT EXISTS), so a migration or a test may run
 * it again. `seq` orders the relay; `id` is the row's `msgId` on the bus (a UUID, so outboxes of
 * two databases publishing into one stream never dedupe each other's rows); `payload` is the JSON
 * text as `publish` encoded it (`json` keeps it byte for byte, `jsonb` would not); `headers` the
 * message's headers, the writer's trace context among them.
 */
export function outboxSchemaSql(table = 'eventbus_outbox'): string {
  const t = quotedTable(checkTableName('table', table));
  return `-- nestjs-nats-eventbus transactional outbox. Idempotent: safe to run on every deploy.
CREATE TABLE IF NOT EXISTS ${t} (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id         uuid        NOT NULL,
  topic      text        NOT NULL,
  payload    json        NOT NULL,
  msg_id     text,
  headers    json,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- Tables made before headers were kept (trace context, publish headers) get the column.
ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS headers json;
`;
}

/** The DDL of the default table `eventbus_outbox`; the package ships the same text as `sql/outbox.sql`. */
export const OUTBOX_SCHEMA_SQL = outboxSchemaSql();

/** The NOTIFY channel of a table: its name, so several outboxes in one database wake only their own relays. */
export function notifyChannel(table: string): string {
  return table;
}
