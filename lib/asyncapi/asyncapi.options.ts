/** A topic the app publishes to, for the document's `send` operations (the bus cannot discover publishes). */
export interface AsyncApiSend {
  topic: string;
  /** The payload's Standard Schema (Zod 4, Valibot, ArkType with JSON Schema support). Default: any JSON. */
  schema?: unknown;
  /** Sent with `rpcRequest`: a reply is expected. Default false. */
  request?: boolean;
  description?: string;
}

/** `forRoot({ asyncapi })`: serve the AsyncAPI 3.0 document, and what it cannot discover. */
export interface AsyncApiRouteOptions {
  /** Route path of the JSON document, e.g. `'asyncapi'` or `'docs/asyncapi.json'`. Default: not served. */
  path?: string;
  /** Topics the app publishes to, as `send` operations. Default none. */
  sends?: AsyncApiSend[];
}
