/** UTF-8 text to bytes and back, for raw nats.js clients in tests (v3 has no StringCodec). */
export const sc = {
  encode: (text: string): Uint8Array => new TextEncoder().encode(text),
  decode: (bytes: Uint8Array): string => new TextDecoder().decode(bytes),
};
