// kilat JavaScript client SDK: the entry module. Plain ES modules, no build step; every import
// is relative to this directory, so serving `src/` as-is (for example at `/sdk/`) is enough for
// `<script type="module">import { Kilat } from "/sdk/kilat.js"</script>`.

export { Kilat, createClient } from './client.js';
export { Subscription } from './subscription.js';
export { KilatError, ErrorCode, DisconnectCode, shouldReconnect } from './errors.js';
export { EventEmitter } from './emitter.js';
export { backoff } from './backoff.js';
export { encodeFrames, decodeFrames } from './codec.js';
export { encodeMsgpack, decodeMsgpack } from './msgpack.js';
export { TRANSPORTS } from './transports.js';
export { KilatYjsProvider, toBase64, fromBase64 } from './yjs-provider.js';
export { CommandSender, CommandReceiver, deviceChannel } from './commands.js';

export { VERSION } from './version.js';

export { Kilat as default } from './client.js';
