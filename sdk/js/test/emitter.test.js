import test from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from '../src/emitter.js';

test('on / emit / off', () => {
  const e = new EventEmitter();
  const got = [];
  const a = (x) => got.push(['a', x]);
  const b = (x) => got.push(['b', x]);
  e.on('x', a).on('x', b);
  assert.equal(e.emit('x', 1), true);
  e.off('x', a);
  e.emit('x', 2);
  e.off('x');
  assert.equal(e.emit('x', 3), false);
  assert.deepEqual(got, [['a', 1], ['b', 1], ['b', 2]]);
});

test('once runs one time and can be removed by the original listener', () => {
  const e = new EventEmitter();
  let n = 0;
  const l = () => n++;
  e.once('x', l);
  e.emit('x');
  e.emit('x');
  assert.equal(n, 1);
  e.once('y', l);
  e.off('y', l);
  e.emit('y');
  assert.equal(n, 1);
  assert.equal(e.listenerCount('y'), 0);
});

test('a throwing listener does not stop the others and is reported', (t) => {
  const e = new EventEmitter();
  let reached = false;
  const errors = [];
  t.mock.method(console, 'error', (_msg, err) => errors.push(err));
  e.on('x', () => {
    throw new Error('boom');
  });
  e.on('x', () => {
    reached = true;
  });
  e.emit('x');
  assert.equal(reached, true);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].message, 'boom');
});

test('off() with no arguments removes everything', () => {
  const e = new EventEmitter();
  e.on('a', () => {}).on('b', () => {});
  e.off();
  assert.equal(e.listenerCount('a') + e.listenerCount('b'), 0);
});
