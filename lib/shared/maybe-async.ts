/** A value that is ready now, or a Promise of it. Small bodies are ready: awaiting them would cost a microtask hop. */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return value !== null && typeof value === 'object' && typeof (value as Promise<T>).then === 'function';
}
