import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A local stand-in for Slack and SMTP: one JSON line per notification in `<dir>/outbox.jsonl`. */
export class Outbox {
  readonly file: string;
  private tail: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, 'outbox.jsonl');
  }

  /** Appends in order; resolves when the line is written. */
  write(entry: Record<string, unknown>): Promise<void> {
    const line = JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n';
    const next = this.tail.then(() => appendFile(this.file, line, 'utf8'));
    this.tail = next.catch(() => undefined);
    return next;
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
