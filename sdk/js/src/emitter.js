// A tiny event emitter: on / off / once / emit. Works the same in browsers and Node.

/**
 * @template {Record<string, any>} Events map of event name to payload type
 */
export class EventEmitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener. Returns `this` for chaining.
   * @param {string} event
   * @param {(payload: any) => void} listener
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return this;
  }

  /**
   * Removes one listener, all listeners of an event (no listener), or every listener (no arguments).
   * @param {string} [event]
   * @param {(payload: any) => void} [listener]
   */
  off(event, listener) {
    if (event === undefined) this._listeners.clear();
    else if (listener === undefined) this._listeners.delete(event);
    else {
      const set = this._listeners.get(event);
      if (set) {
        set.delete(listener);
        // `once` wraps the listener: find the wrapper by its original
        for (const l of set) if (/** @type {any} */ (l)._original === listener) set.delete(l);
        if (set.size === 0) this._listeners.delete(event);
      }
    }
    return this;
  }

  /**
   * Adds a listener that runs at most once.
   * @param {string} event
   * @param {(payload: any) => void} listener
   */
  once(event, listener) {
    const wrapper = (/** @type {any} */ payload) => {
      this.off(event, wrapper);
      listener(payload);
    };
    wrapper._original = listener;
    return this.on(event, wrapper);
  }

  /**
   * Calls every listener of `event` in the order they were added. A listener that throws
   * does not stop the others or the SDK: the exception goes to `reportError` in browsers
   * (shows in the console and `window.onerror`) and to `console.error` elsewhere.
   * @param {string} event
   * @param {any} [payload]
   * @returns {boolean} whether anyone listened
   */
  emit(event, payload) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (err) {
        reportListenerError(err);
      }
    }
    return true;
  }

  /**
   * Number of listeners for an event.
   * @param {string} event
   */
  listenerCount(event) {
    return this._listeners.get(event)?.size ?? 0;
  }
}

function reportListenerError(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else console.error('kilat: an event listener threw', err);
}
