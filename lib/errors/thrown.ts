import { HttpException } from '@nestjs/common';
import { asText } from '../shared/as-text';
import { httpExceptionMessage, replyStatusOf } from './reply-status';

// A handler may throw anything: a revoked Proxy (whose `instanceof` throws), an Error whose
// `message` is not a string or whose getters throw. Reading what was thrown must never throw, or
// the requester would get no answer at all.

/** What a handler threw, as text, whatever it threw. */
export function describeThrown(err: unknown): string {
  try {
    if (err instanceof HttpException) return httpExceptionMessage(err);
    if (err instanceof Error) return asText(err.message);
    return asText(err);
  } catch {
    return `a thrown ${typeof err}`;
  }
}

export function isNestException(err: unknown): boolean {
  try {
    return err instanceof HttpException;
  } catch {
    return false;
  }
}

export function statusOfThrown(err: unknown): number {
  try {
    return replyStatusOf(err);
  } catch {
    return 500;
  }
}

export function stackOf(err: unknown): string | undefined {
  try {
    return err instanceof Error && typeof err.stack === 'string' ? err.stack : undefined;
  } catch {
    return undefined;
  }
}
