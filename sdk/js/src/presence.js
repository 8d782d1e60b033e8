// Paged presence lists (docs/protocol.md, `presence`): the server answers at most one page of
// a big channel's members with a `cursor` for the next; these helpers ask for one page or walk
// them all, so `presence()` still resolves to every member whatever the channel's size.

/**
 * One page: `{clients, cursor?}`; `cursor` is absent on the last page.
 * @param {(method: string, params: object) => Promise<any>} call
 * @param {string} channel
 * @param {{cursor?: string, limit?: number}} [opts]
 */
export function presencePage(call, channel, opts = {}) {
  const params = { channel };
  if (opts.cursor) params.cursor = opts.cursor;
  if (opts.limit !== undefined) params.limit = opts.limit;
  return call('presence', params);
}

/**
 * Every page merged into `{clients}`, keyed by client id (a member listed on two pages, which a
 * Redis channel that shrinks meanwhile can cause, appears once).
 * @param {(method: string, params: object) => Promise<any>} call
 * @param {string} channel
 */
export async function presenceAll(call, channel) {
  const clients = {};
  let cursor;
  do {
    const page = await presencePage(call, channel, { cursor });
    Object.assign(clients, page?.clients ?? {});
    cursor = page?.cursor;
  } while (cursor);
  return { clients };
}
