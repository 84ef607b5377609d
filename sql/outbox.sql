-- nestjs-nats-eventbus transactional outbox. Idempotent: safe to run on every deploy.
CREATE TABLE IF NOT EXISTS "eventbus_outbox" (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id         uuid        NOT NULL,
  topic      text        NOT NULL,
  payload    json        NOT NULL,
  msg_id     text,
  headers    json,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- Tables made before headers were kept (trace context, publish headers) get the column.
ALTER TABLE "eventbus_outbox" ADD COLUMN IF NOT EXISTS headers json;
