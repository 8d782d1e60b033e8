// Errors and numeric codes (docs/protocol.md section 10), plus the client-side codes the SDK adds.

/**
 * Error codes. 400-599 come from the server (HTTP meaning, docs/protocol.md section 10);
 * 1-99 are raised by the SDK itself and never appear on the wire.
 * @readonly
 * @enum {number}
 */
export const ErrorCode = Object.freeze({
  // client side
  TIMEOUT: 1,
  TRANSPORT_CLOSED: 2,
  CLIENT_DISCONNECTED: 3,
  SUBSCRIPTION_UNSUBSCRIBED: 4,
  BAD_CONFIGURATION: 5,
  TOKEN_UNAVAILABLE: 6,
  // server side
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  ALREADY_SUBSCRIBED: 409,
  TOKEN_EXPIRED: 410,
  TOO_LARGE: 413,
  LIMIT_EXCEEDED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
});

/**
 * Disconnect codes: also the WebSocket close code. 3000-3499 reconnect, 3500-3999 do not.
 * @readonly
 * @enum {number}
 */
export const DisconnectCode = Object.freeze({
  SHUTDOWN: 3000,
  SLOW_CONSUMER: 3001,
  NO_PONG: 3002,
  HANDSHAKE_TIMEOUT: 3003,
  FORCE_RECONNECT: 3004,
  TOKEN_EXPIRED: 3005,
  BAD_REQUEST: 3500,
  UNAUTHORIZED: 3501,
  CONNECTION_LIMIT: 3502,
  FORCE_NO_RECONNECT: 3503,
  BANNED: 3504,
  TOKEN_REVOKED: 3505,
  // client side (never sent by a server): the reason the client itself closed a transport
  DISCONNECT_CALLED: 0,
  /** Every transport, for a close without a kilat code: a WebSocket close 1000-2999, a network
   * failure, a stream that ended, a failed emulation POST. Also a subscription's `subscribing`
   * code after such a close. */
  TRANSPORT_CLOSED: 1,
  NO_PING: 2,
  CONNECT_TIMEOUT: 3,
});

/**
 * Whether a disconnect with this code should be followed by a reconnect.
 * 3500-3999 are terminal (docs/protocol.md section 10); everything else (3000-3499, the SDK's own codes
 * such as 1 for a transport closed) is retried with backoff. `hint` is the
 * `reconnect` field of a `disconnect` push and only matters outside the 3000-3999 range.
 * @param {number} code
 * @param {boolean} [hint]
 * @returns {boolean}
 */
export function shouldReconnect(code, hint) {
  if (code >= 3000 && code <= 3499) return true;
  if (code >= 3500 && code <= 3999) return false;
  return hint !== false;
}

/** An error answered by the server or raised by the SDK. */
export class KilatError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message);
    this.name = 'KilatError';
    /** @type {number} */
    this.code = code;
    /** @type {boolean} */
    this.temporary = temporary;
  }

  /**
   * Builds an error from the wire object `{code, message, temporary}`.
   * @param {{code?: number, message?: string, temporary?: boolean}} e
   */
  static fromWire(e) {
    return new KilatError(Number(e?.code ?? 0), String(e?.message ?? 'unknown error'), Boolean(e?.temporary));
  }
}
