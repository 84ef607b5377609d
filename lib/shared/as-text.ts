/**
 * Any value as text for a log line or an error message, never throwing: `String()` throws for an
 * object without `toString` (`Object.create(null)`) or with one that throws, and for a revoked Proxy.
 */
export function asText(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return String(value);
  } catch {
    try {
      return JSON.stringify(value) ?? typeof value;
    } catch {
      return `(${typeof value} that cannot be shown as text)`;
    }
  }
}
