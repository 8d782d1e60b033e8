// Hand-written types for the kilat JavaScript SDK (src/kilat.js). Keep in step with the code.

export type State = 'disconnected' | 'connecting' | 'connected';
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';
export type TransportName = 'websocket' | 'sse' | 'http_stream';

/** A transport, by name (endpoint derived from the client URL) or with its own endpoint. */
export type TransportSpec = TransportName | { transport: TransportName; endpoint?: string };

/** What `getToken` receives: `{}` for the connection token, `{channel}` for a subscription token. */
export interface TokenContext {
  channel?: string;
}

/** A WebSocket constructor: the browser's, or `ws` from npm in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** Connection token (JWT). */
  token?: string;
  /** Called for a new token: before the first connect when `token` is absent, on a `refresh` push, when the ttl runs out, and on reconnect after expiry. */
  getToken?: (ctx: TokenContext) => Promise<string>;
  /** Client name sent in `connect` (default `"js"`). */
  name?: string;
  /** Application version sent in `connect`. */
  version?: string;
  /** Custom data sent in `connect`. */
  data?: unknown;
  /** WebSocket implementation; defaults to `globalThis.WebSocket`. */
  websocket?: WebSocketConstructor;
  /** fetch implementation for SSE and HTTP streaming; defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Transports in fallback order (default `['websocket', 'sse', 'http_stream']`). */
  transports?: TransportSpec[];
  /** Backoff floor and first ceiling, ms (default 500). */
  minReconnectDelay?: number;
  /** Backoff cap, ms (default 20000); also caps a server's `delay_ms` hint. */
  maxReconnectDelay?: number;
  /** How long a connection must stay up before the backoff starts over, ms (default 10000). */
  backoffResetAfter?: number;
  /** Timeout for command replies and for the connect reply, ms (default 5000). */
  timeout?: number;
  /** Extra wait beyond the server's ping interval before the connection counts as dead, ms (default 10000). */
  maxServerPingDelay?: number;
  /** Log frames and state changes with console.debug. */
  debug?: boolean;
  /**
   * Protocol encoding on WebSocket (default `'json'`). `'msgpack'` asks for the `kilat.msgpack`
   * subprotocol: frames travel as MessagePack in binary messages (smaller, and binary payloads
   * travel as raw bytes). A server that does not agree makes the WebSocket fail over to the
   * next transport; the emulated transports always speak JSON.
   */
  encoding?: 'json' | 'msgpack';
}

export interface SubscriptionOptions {
  /** Subscription token (JWT) for channels that need one. */
  token?: string;
  /** Called for a subscription token when needed and on expiry (`refresh` push carrying the channel). */
  getToken?: (ctx: { channel: string }) => Promise<string>;
  /** Track offset/epoch and recover on resubscribe (default true). */
  recoverable?: boolean;
  /** Ask for join/leave pushes (`join_leave` in subscribe). */
  joinLeave?: boolean;
  /** Custom data sent in `subscribe`. */
  data?: unknown;
  /**
   * `'fossil'`: receive publications as fossil deltas against the previous one when smaller
   * (channels with history only); the SDK applies them, `publication` events carry full data.
   */
  delta?: 'fossil';
  minResubscribeDelay?: number;
  maxResubscribeDelay?: number;
}

export interface ClientInfo {
  client: string;
  user: string;
  info?: unknown;
}

export interface Publication<T = any> {
  data: T;
  offset?: number;
  info?: ClientInfo;
}

export interface StreamPosition {
  offset: number;
  epoch: string;
}

export interface PublicationContext<T = any> {
  channel: string;
  /** The payload: the JSON value, or for a binary publication its bytes as a Uint8Array. */
  data: T;
  offset?: number;
  info?: ClientInfo;
  tags?: Record<string, string>;
}

export interface JoinLeaveContext {
  channel: string;
  info: ClientInfo;
}

export interface StateContext<S> {
  newState: S;
  oldState: S;
}

export interface ConnectingContext {
  /** Why the connection is being (re)made: 0 for `connect()`, a disconnect code 3000-3499, or one of the SDK's codes (1 transport closed on every transport, 2 no ping, 3 connect timeout). */
  code: number;
  reason: string;
}

export interface ConnectedContext {
  client: string;
  transport: TransportName;
  version?: string;
  ping?: number;
  expires?: boolean;
  ttl?: number;
  data?: unknown;
}

export interface DisconnectedContext {
  /** A disconnect code 3500-3999 (docs/protocol.md), 0 after `disconnect()`, or an SDK code for a failed connect. */
  code: number;
  reason: string;
}

export interface ErrorContext {
  type: 'connect' | 'transport' | 'token' | 'refresh' | 'protocol' | 'subscribe' | 'unsubscribe';
  error: KilatError | Error;
  channel?: string;
}

export interface SubscribedContext {
  channel: string;
  /** True when every publication since the sent position was returned (nothing lost). */
  recovered: boolean;
  /** True when the subscribe carried `recover: true` with an offset and epoch. */
  wasRecovering: boolean;
  recoverable: boolean;
  positioned: boolean;
  /**
   * True in a namespace with `latest` when the publications emitted right after this event
   * are the latest value of every key (the state to start from), not recovered ones.
   */
  latest: boolean;
  offset: number | null;
  epoch: string | null;
  data?: unknown;
}

export interface UnsubscribedContext {
  channel: string;
  code: number;
  reason: string;
}

export interface SubscribingContext {
  channel: string;
  /** 0 for `subscribe()`, 1 after the transport closed, or the server's unsubscribe code when it asked to resubscribe. */
  code: number;
  reason: string;
}

export interface ClientEvents {
  state: StateContext<State>;
  connecting: ConnectingContext;
  connected: ConnectedContext;
  disconnected: DisconnectedContext;
  error: ErrorContext;
  /** `message` pushes (server to this connection). */
  message: { data: any };
  /** Publications on server-side subscriptions. */
  publication: PublicationContext;
  join: JoinLeaveContext;
  leave: JoinLeaveContext;
  /** Counts instead of join/leave above `presence_diff_max` (server-side subscriptions). */
  count: { channel: string; num_clients: number; num_users: number };
  /** Server-side subscription added (connect result `subs` or `subscribe` push). */
  subscribed: SubscribedContext;
  /** Server-side subscription removed. */
  unsubscribed: UnsubscribedContext;
}

export interface SubscriptionEvents {
  state: StateContext<SubscriptionState> & { channel: string };
  subscribing: SubscribingContext;
  subscribed: SubscribedContext;
  unsubscribed: UnsubscribedContext;
  publication: PublicationContext;
  join: JoinLeaveContext;
  leave: JoinLeaveContext;
  /**
   * The channel's counts, sent once per join/leave window instead of the changes while it has
   * more subscribers than the namespace's `presence_diff_max`; `members` is not kept then.
   */
  count: { channel: string; num_clients: number; num_users: number };
  error: ErrorContext;
}

export class EventEmitter<E extends Record<string, any> = Record<string, any>> {
  on<K extends keyof E & string>(event: K, listener: (ctx: E[K]) => void): this;
  off<K extends keyof E & string>(event?: K, listener?: (ctx: E[K]) => void): this;
  once<K extends keyof E & string>(event: K, listener: (ctx: E[K]) => void): this;
  emit<K extends keyof E & string>(event: K, payload?: E[K]): boolean;
  listenerCount(event: keyof E & string): number;
}

export interface HistoryOptions {
  limit?: number;
  since?: StreamPosition;
  reverse?: boolean;
}

export interface HistoryResult<T = any> {
  publications: Publication<T>[];
  offset: number;
  epoch: string;
}

export interface PublishResult {
  offset?: number;
}

export interface PresenceResult {
  /** Keyed by client id. */
  clients: Record<string, { user: string; info?: unknown }>;
}

/** One page of a channel's members; `cursor` (absent on the last page) asks for the next. */
export interface PresencePage extends PresenceResult {
  cursor?: string;
}

export interface PresencePageOptions {
  /** The previous page's `cursor` (absent: the first page). */
  cursor?: string;
  /** Most members in the page (server default 1000, at most 5000). */
  limit?: number;
}

export interface PresenceStatsResult {
  num_clients: number;
  num_users: number;
}

export interface RpcResult<T = any> {
  data: T;
}

export class Kilat extends EventEmitter<ClientEvents> {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: State;
  /** Client id from the last connect result. */
  readonly clientId: string | null;
  /** Transport in use once connected. */
  readonly transportName: TransportName | null;
  connect(): void;
  disconnect(): void;
  /** Resolves when connected; rejects on `disconnected` or after `timeout` ms. */
  ready(timeout?: number): Promise<void>;
  newSubscription(channel: string, options?: SubscriptionOptions): Subscription;
  getSubscription(channel: string): Subscription | null;
  removeSubscription(sub: Subscription): void;
  subscriptions(): Record<string, Subscription>;
  /** JSON data, or binary data (Uint8Array, ArrayBuffer, typed array) sent as bytes. */
  publish(channel: string, data: unknown | Uint8Array | ArrayBuffer | ArrayBufferView): Promise<PublishResult>;
  /** Every member, all pages merged. */
  presence(channel: string): Promise<PresenceResult>;
  presencePage(channel: string, options?: PresencePageOptions): Promise<PresencePage>;
  presenceStats(channel: string): Promise<PresenceStatsResult>;
  history<T = any>(channel: string, options?: HistoryOptions): Promise<HistoryResult<T>>;
  rpc<T = any>(method: string, data?: unknown): Promise<RpcResult<T>>;
  /** Fire-and-forget (`send` has no id and no reply); resolves once queued. */
  send(data: unknown): Promise<void>;
}

export function createClient(url: string, options?: ClientOptions): Kilat;
export default Kilat;

export class Subscription extends EventEmitter<SubscriptionEvents> {
  readonly channel: string;
  readonly state: SubscriptionState;
  /** Last delivered offset (recovery position), or null. */
  readonly offset: number | null;
  readonly epoch: string | null;
  /** Who is in the channel by client id, kept from join/leave since this subscription joined. */
  readonly members: Map<string, ClientInfo>;
  subscribe(): void;
  unsubscribe(): void;
  ready(timeout?: number): Promise<void>;
  /** JSON data, or binary data (Uint8Array, ArrayBuffer, typed array) sent as bytes. */
  publish(data: unknown | Uint8Array | ArrayBuffer | ArrayBufferView): Promise<PublishResult>;
  /** Every member, all pages merged. */
  presence(): Promise<PresenceResult>;
  presencePage(options?: PresencePageOptions): Promise<PresencePage>;
  presenceStats(): Promise<PresenceStatsResult>;
  /** Loads the current member list into `members`; joins and leaves meanwhile win. */
  syncMembers(): Promise<Map<string, ClientInfo>>;
  history<T = any>(options?: HistoryOptions): Promise<HistoryResult<T>>;
}

export interface YjsProviderOptions {
  /** The application's `yjs` namespace (`import * as Y from 'yjs'`): the SDK bundles no Yjs. */
  Y: any;
  /** A y-protocols `Awareness` for the doc: cursors and names, sent over `awarenessChannel`. */
  awareness?: any;
  /** The application's `y-protocols/awareness` module; needed with `awareness`. */
  awarenessProtocol?: any;
  /** Channel for awareness (default `awareness:<channel>`; a namespace without history fits). */
  awarenessChannel?: string;
  /** Updates between snapshots published to the channel (default 100). */
  snapshotEvery?: number;
  /** How long local changes are gathered into one publication, ms (default 20). */
  flushMs?: number;
  /** Largest publication `data` in bytes (default 65024: the namespace default less room for the frame). */
  maxPublishBytes?: number;
  /** Subscribe at once (default true); otherwise call `connect()`. */
  connect?: boolean;
}

export interface YjsProviderEvents {
  status: { status: 'offline' | 'syncing' | 'synced' };
  /** The document holds what the channel's history and the peers had (after each full sync). */
  synced: { synced: true };
  /** `malformed` (a publication was ignored), `forbidden` (403 on publish), `too-large`, `snapshot-too-large`, `history`. */
  error: { kind: string; message: string };
}

/**
 * Syncs a Y.Doc over a kilat channel: updates as publications, recovery from history after a
 * reconnect, snapshots and state requests for late joiners, awareness over a second channel.
 * The wire format and the late-joiner algorithm are in docs/use-cases.md (Co-editing).
 */
export class KilatYjsProvider extends EventEmitter<YjsProviderEvents> {
  constructor(client: Kilat, channel: string, doc: any, options: YjsProviderOptions);
  readonly client: Kilat;
  readonly channel: string;
  readonly doc: any;
  /** Random id of this provider; its own publications carry it as `r`. */
  readonly id: string;
  readonly synced: boolean;
  readonly readOnly: boolean;
  readonly status: 'offline' | 'syncing' | 'synced';
  /** Publications ignored as malformed. */
  readonly rejected: number;
  readonly sub: Subscription;
  readonly awarenessSub?: Subscription;
  connect(): void;
  destroy(): void;
}

/** A command as the device receives it (docs/use-cases.md, "Commands with acknowledgement"). */
export interface Command {
  id: string;
  name: string;
  args: unknown;
  /** When the sender sent it (ms since 1970). */
  sent: number;
}

export interface CommandStatus {
  device: string;
  id: string;
  name: string;
  status: 'sent' | 'delivered' | 'done' | 'failed' | 'timeout';
  rttMs?: number;
  result?: unknown;
  error?: string;
  /** True for a `done`/`failed` that arrived after the sender's timeout. */
  late?: boolean;
}

export interface CommandSenderEvents {
  status: CommandStatus;
}

/** `namespace:id`, the channel of a device (default namespace `device`). */
export function deviceChannel(id: string, namespace?: string): string;

/** Sends commands to devices over their channels and follows the acknowledgements. */
export class CommandSender extends EventEmitter<CommandSenderEvents> {
  constructor(client: Kilat, options?: { namespace?: string; timeout?: number });
  /** Subscribes to the device's channel to see its acknowledgements. */
  watch(device: string): Promise<Subscription>;
  /**
   * Resolves when the device reports `done`; rejects with a KilatError: code 400 for
   * `failed` (the device's message), code 1 (timeout) with `delivered` set otherwise.
   */
  send(device: string, name: string, args?: unknown, options?: { timeout?: number }): Promise<{ id: string; delivered: true; rttMs: number; result: unknown }>;
}

export interface CommandReceiverEvents {
  command: Command;
  error: Error;
}

/** Receives one device's commands (once per id, including those sent while it was offline) and acknowledges them. */
export class CommandReceiver extends EventEmitter<CommandReceiverEvents> {
  constructor(client: Kilat, device: string, handler: (command: Command) => unknown, options?: { namespace?: string });
  readonly channel: string;
  ready(timeout?: number): Promise<void>;
}

export function toBase64(bytes: Uint8Array): string;
export function fromBase64(text: string): Uint8Array;

export class KilatError extends Error {
  constructor(code: number, message: string, temporary?: boolean);
  readonly code: number;
  readonly temporary: boolean;
  static fromWire(e: { code?: number; message?: string; temporary?: boolean }): KilatError;
}

export const ErrorCode: Readonly<{
  TIMEOUT: 1;
  TRANSPORT_CLOSED: 2;
  CLIENT_DISCONNECTED: 3;
  SUBSCRIPTION_UNSUBSCRIBED: 4;
  BAD_CONFIGURATION: 5;
  TOKEN_UNAVAILABLE: 6;
  BAD_REQUEST: 400;
  UNAUTHORIZED: 401;
  PERMISSION_DENIED: 403;
  NOT_FOUND: 404;
  ALREADY_SUBSCRIBED: 409;
  TOKEN_EXPIRED: 410;
  TOO_LARGE: 413;
  LIMIT_EXCEEDED: 429;
  INTERNAL: 500;
  UNAVAILABLE: 503;
}>;

export const DisconnectCode: Readonly<{
  SHUTDOWN: 3000;
  SLOW_CONSUMER: 3001;
  NO_PONG: 3002;
  HANDSHAKE_TIMEOUT: 3003;
  FORCE_RECONNECT: 3004;
  TOKEN_EXPIRED: 3005;
  BAD_REQUEST: 3500;
  UNAUTHORIZED: 3501;
  CONNECTION_LIMIT: 3502;
  FORCE_NO_RECONNECT: 3503;
  BANNED: 3504;
  TOKEN_REVOKED: 3505;
  DISCONNECT_CALLED: 0;
  TRANSPORT_CLOSED: 1;
  NO_PING: 2;
  CONNECT_TIMEOUT: 3;
}>;

/** 3000-3499 reconnect, 3500-3999 do not; other codes reconnect unless `hint` is false. */
export function shouldReconnect(code: number, hint?: boolean): boolean;
/** Reconnect delay in ms: uniform in [min, min(max, min * 2^attempt)]. */
export function backoff(attempt: number, min: number, max: number, random?: () => number): number;
export function encodeFrames(frames: object[]): string;
/** Encodes frames as MessagePack values one after another (the binary encoding's batch). */
export function encodeMsgpack(values: unknown[]): Uint8Array;
/** Decodes MessagePack values written one after another; `bin` values become Uint8Array. */
export function decodeMsgpack(input: Uint8Array | ArrayBuffer): any[];
export function decodeFrames(text: string): any[];
export const TRANSPORTS: readonly TransportName[];
export const VERSION: string;
