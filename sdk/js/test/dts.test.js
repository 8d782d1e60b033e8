// The hand-written src/kilat.d.ts against the module it describes: every runtime export is
// declared, and the code tables have the same values. (`npm test` also type-checks a usage file
// against the declarations with tsc: see test/types.)
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as sdk from '../src/kilat.js';

const dts = readFileSync(new URL('../src/kilat.d.ts', import.meta.url), 'utf8');

test('every export of kilat.js is declared in kilat.d.ts', () => {
  const declared = new Set([...dts.matchAll(/^export (?:declare )?(?:abstract )?(?:class|function|const|let|interface|type|enum) (\w+)/gm)].map((m) => m[1]));
  if (/^export default /m.test(dts)) declared.add('default');
  const missing = Object.keys(sdk).filter((name) => !declared.has(name));
  assert.deepEqual(missing, [], 'runtime exports without a declaration');
});

for (const table of ['ErrorCode', 'DisconnectCode']) {
  test(`${table} in kilat.d.ts has the runtime values`, () => {
    const block = dts.match(new RegExp(`export const ${table}: Readonly<\\{([^}]*)\\}>`));
    assert.ok(block, `${table} is declared`);
    const declared = Object.fromEntries([...block[1].matchAll(/(\w+): (\d+);/g)].map((m) => [m[1], Number(m[2])]));
    assert.deepEqual(declared, { ...sdk[table] });
  });
}

test("the SDK's error codes (1-99) are listed, with their names, in sdk/js/README.md and docs/client.md", () => {
  const sdkCodes = Object.entries(sdk.ErrorCode).filter(([, code]) => code < 100);
  assert.ok(sdkCodes.length >= 6);
  for (const doc of ['../README.md', '../../../docs/client.md']) {
    const text = readFileSync(new URL(doc, import.meta.url), 'utf8');
    const listed = Object.fromEntries([...text.matchAll(/^\| (\d{1,2}) `(\w+)` \|/gm)].map((m) => [m[2], Number(m[1])]));
    assert.deepEqual(listed, Object.fromEntries(sdkCodes), `${doc} lists the SDK's error codes`);
  }
});
