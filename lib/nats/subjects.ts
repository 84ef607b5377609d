import { InvalidSubjectError } from '../errors/event-bus.errors';
import { asText } from '../shared/as-text';

/**
 * Longest topic or queue name accepted, in UTF-8 bytes. A NATS protocol line (`PUB subject reply
 * size`) must fit the server's `max_control_line` (4 KiB by default) with the reply inbox in it.
 */
export const MAX_SUBJECT_BYTES = 3072;

// Whitespace and control characters end or corrupt a protocol line (`publish('a b')` would be a
// publish to `a` with reply subject `b`).
// eslint-disable-next-line no-control-regex -- control characters are what this looks for
const BREAKS_PROTOCOL = /[\s\u0000-\u001f\u007f]/;

// A lone surrogate has no UTF-8 form: the encoder writes U+FFFD, so '\ud800' and '\udc00' would be one subject.
export const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Checks a topic before it reaches the wire. `subscribe` allows the wildcards `*` (one token) and
 * `>` (the last token); a publish or request allows none.
 */
export function checkTopic(topic: unknown, use: 'publish' | 'subscribe'): string {
  if (typeof topic !== 'string') throw new InvalidSubjectError('topic', asText(topic), `must be a string, got ${typeof topic}`);
  checkCommon('topic', topic);
  const tokens = topic.split('.');
  tokens.forEach((token, i) => {
    if (token === '') throw new InvalidSubjectError('topic', topic, 'has an empty token (leading, trailing or double dot)');
    if (token === '*' || token === '>') {
      if (use === 'publish') throw new InvalidSubjectError('topic', topic, `wildcard "${token}" is only allowed when subscribing`);
      if (token === '>' && i !== tokens.length - 1) throw new InvalidSubjectError('topic', topic, '">" must be the last token');
    }
  });
  return topic;
}

/**
 * Checks a queue group name: one token of plain characters. With its topic, it must fit one
 * `SUB topic queue sid` line: a line over the server's limit makes it drop the connection, and the
 * client would send the same line again at every reconnect.
 */
export function checkQueue(queue: unknown, topic = ''): string | undefined {
  if (queue === undefined) return undefined;
  if (typeof queue !== 'string') throw new InvalidSubjectError('queue', asText(queue), `must be a string, got ${typeof queue}`);
  checkCommon('queue', queue);
  if (/[*>]/.test(queue)) throw new InvalidSubjectError('queue', queue, 'must not contain wildcards');
  if (Buffer.byteLength(topic, 'utf8') + Buffer.byteLength(queue, 'utf8') > MAX_SUBJECT_BYTES)
    throw new InvalidSubjectError('queue', queue, `and its topic together are longer than ${MAX_SUBJECT_BYTES} bytes`);
  return queue;
}

function checkCommon(kind: 'topic' | 'queue', value: string): void {
  if (value.length === 0) throw new InvalidSubjectError(kind, value, 'must not be empty');
  if (BREAKS_PROTOCOL.test(value)) throw new InvalidSubjectError(kind, value, 'must not contain whitespace or control characters');
  if (LONE_SURROGATE.test(value)) throw new InvalidSubjectError(kind, value, 'must be well-formed Unicode (it has a lone surrogate)');
  if (Buffer.byteLength(value, 'utf8') > MAX_SUBJECT_BYTES) {
    throw new InvalidSubjectError(kind, value, `is longer than ${MAX_SUBJECT_BYTES} bytes`);
  }
}

/** Whether the literal `subject` is matched by `pattern` (NATS wildcards: `*` one token, a final `>` one or more). */
export function subjectMatches(pattern: string, subject: string): boolean {
  return tokensMatch(pattern.split('.'), subject.split('.'));
}

/** `subjectMatches` on subjects already split into tokens (a broker matching many subscriptions splits once). */
export function tokensMatch(pattern: readonly string[], subject: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '>') return subject.length > i;
    if (i >= subject.length || (pattern[i] !== '*' && pattern[i] !== subject[i])) return false;
  }
  return pattern.length === subject.length;
}
