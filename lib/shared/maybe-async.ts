/** A value that is ready now, or a Promise of it. Small bodies are ready: awaiting them would cost a microtask hop. */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return value !== null && typeof value === 'object' && typeof (value as Promise<T>).then === 'function';
}

/**
 * `then` for a value that may be ready: runs `next` at once when it is, so the common (small,
 * inline) case pays no microtask. Errors thrown by `next` on the ready path are returned as a
 * rejected Promise, as they would be on the async path.
 */
export function thenMaybe<T, R>(
  value: MaybePromise<T>,
  next: (v: T) => MaybePromise<R>,
  onError: (err: unknown) => MaybePromise<R>,
): MaybePromise<R> {
  if (isPromise(value)) return value.then(next, onError);
  return next(value);
}
