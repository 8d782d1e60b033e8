/** SDK version, sent as `version` in `connect` unless the `version` option overrides it. */
export const VERSION = '0.1.0';
