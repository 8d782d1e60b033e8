import test from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrames, decodeFrames, isPing, LineSplitter, SseParser } from '../src/codec.js';

test('several frames are batched into one message separated by newlines', () => {
  const text = encodeFrames([{ id: 1, publish: { channel: 'a', data: 1 } }, { id: 2, presence: { channel: 'a' } }]);
  assert.equal(text, '{"id":1,"publish":{"channel":"a","data":1}}\n{"id":2,"presence":{"channel":"a"}}');
  assert.equal(text.split('\n').length, 2);
});

test('a message is split into frames; empty lines and CRLF are tolerated', () => {
  const frames = decodeFrames('{"id":1,"publish":{}}\r\n\n{"push":{"channel":"c","pub":{"data":"x\\ny"}}}\n');
  assert.deepEqual(frames, [{ id: 1, publish: {} }, { push: { channel: 'c', pub: { data: 'x\ny' } } }]);
});

test('a newline inside a JSON string does not split the frame', () => {
  const text = encodeFrames([{ push: { pub: { data: 'line1\nline2' } } }]);
  assert.deepEqual(decodeFrames(text), [{ push: { pub: { data: 'line1\nline2' } } }]);
});

test('malformed frames throw', () => {
  assert.throws(() => decodeFrames('{"id":1}\n{nope'), SyntaxError);
});

test('the application ping is exactly an empty object', () => {
  assert.equal(isPing({}), true);
  assert.equal(isPing({ id: 1 }), false);
  assert.equal(isPing([]), false);
  assert.equal(isPing(null), false);
});

test('LineSplitter joins lines split across chunks', () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push('{"a":'), []);
  assert.deepEqual(s.push('1}\n{"b"'), ['{"a":1}']);
  assert.deepEqual(s.push(':2}\r\n'), ['{"b":2}']);
  assert.equal(s.rest(), '');
});

test('SseParser dispatches at blank lines, joins data lines, skips comments', () => {
  const p = new SseParser();
  assert.deepEqual(p.push(': hello\n\ndata: {"id":1'), []);
  assert.deepEqual(p.push(',"connect":{}}\n\n'), [{ event: 'message', data: '{"id":1,"connect":{}}' }]);
  assert.deepEqual(p.push('event: x\ndata: {}\ndata:{"id":2}\n\n'), [{ event: 'x', data: '{}\n{"id":2}' }]);
  assert.deepEqual(decodeFrames('{}\n{"id":2}'), [{}, { id: 2 }]);
});
