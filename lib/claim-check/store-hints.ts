/** What the bus tells a store about a body it stores (`MessageStorageManager.storeMessage`). */
export interface StoreHints {
  /**
   * The body is a reply to one requester, which reads it within its request timeout. Stores keep
   * replies for a short TTL (Redis: `replyTtlSeconds`, default 60 s) and the requester does not
   * delete them: a responder must not be able to make it delete another message's body.
   */
  reply?: boolean;
  /**
   * Keep the body at least this many seconds: it belongs to a message a JetStream stream keeps that
   * long (`publish(…, { persist: true })`). A store whose expiry is shorter takes the longer one;
   * a store that cannot keep it that long must reject with `MessageStorageError`.
   */
  minTtlSeconds?: number;
  /**
   * Keep the body under this token (a fresh UUID) rather than one of the store's own. Given only to
   * a store that declares `honoursTokenHint`: the body codec binds an encrypted body to its token,
   * so that a body copied under another message's token fails authentication.
   */
  token?: string;
}
