import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, truncateSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A local stand-in for Slack and SMTP: one JSON line per notification in `<dir>/outbox.jsonl`.
 * The handlers are idempotent durables, so the bus already skips an id it recorded as handled; this
 * file is still keyed by id because the inbox leaves one window open: a notifier killed after the
 * write and before the bus recorded the id (or before its ack) runs the handler again, once the
 * dead claim's 15 s lease expires. A real provider would take the request_id as its own
 * idempotency key for the same reason. The ids already written are read back at start.
 */
export class Outbox {
  readonly file: string;
  private readonly written = new Set<string>();
  private tail: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, 'outbox.jsonl');
    this.load();
  }

  /** Appends in order; resolves true when the line is written, false when `id` was already there. */
  write(id: string, entry: Record<string, unknown>): Promise<boolean> {
    // Checked and taken at once, before any await: two deliveries of one id never both write.
    if (this.written.has(id)) return Promise.resolve(false);
    this.written.add(id);
    const line = JSON.stringify({ time: new Date().toISOString(), request_id: id, ...entry }) + '\n';
    const next = this.tail.then(() => appendFile(this.file, line, 'utf8'));
    this.tail = next.catch(() => undefined);
    // A failed write frees the id: the handler throws, and the redelivery writes it.
    return next.then(
      () => true,
      (err: unknown) => {
        this.written.delete(id);
        throw err;
      },
    );
  }

  private load(): void {
    if (!existsSync(this.file)) return;
    const text = readFileSync(this.file, 'utf8');
    // A line cut short by a crash is dropped, so its notification is written whole when redelivered.
    const end = text.lastIndexOf('\n') + 1;
    if (end < text.length) truncateSync(this.file, Buffer.byteLength(text.slice(0, end), 'utf8'));
    for (const line of text.slice(0, end).split('\n')) {
      if (!line) continue;
      const id = (JSON.parse(line) as { request_id?: unknown }).request_id;
      if (typeof id === 'string') this.written.add(id);
    }
  }
}

/** Attachments go to the outbox as name, size and digest, not their content. */
export function describeAttachment(a: { filename: string; content_type: string; content_base64: string }) {
  const content = Buffer.from(a.content_base64, 'base64');
  return {
    filename: a.filename,
    content_type: a.content_type,
    bytes: content.byteLength,
    sha256: createHash('sha256').update(content).digest('hex'),
  };
}
