// MemoryLink keeps the Link contract the TUN link keeps: slots, offsets,
// truncation, level-triggered readiness, close. No privileges needed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createBatch } from '../../src/link/link.js';
import { MemoryLink } from '../../src/link/memory-link.js';

const bytes = (...values: number[]) => Uint8Array.from(values);

test('read fills slot i of the caller\'s batch and resets offsets written elsewhere', () => {
  const link = new MemoryLink();
  const batch = createBatch(4, 64);
  batch.offsets[0] = 200; // left pointing elsewhere by an earlier write
  batch.flags[1] = 1;
  link.inject(bytes(0x45, 1, 2));
  link.inject(bytes(0x60, 3));
  assert.equal(link.read(batch), 2);
  assert.equal(batch.count, 2);
  assert.deepEqual([...batch.offsets.subarray(0, 2)], [0, 64]);
  assert.deepEqual([...batch.lengths.subarray(0, 2)], [3, 2]);
  assert.deepEqual([...batch.flags.subarray(0, 2)], [0, 0]);
  assert.deepEqual([...batch.buffer.subarray(0, 3)], [0x45, 1, 2]);
  assert.deepEqual([...batch.buffer.subarray(64, 66)], [0x60, 3]);
  assert.equal(link.read(batch), 0, 'nothing left');
  assert.equal(batch.count, 0);
});

test('read takes at most capacity packets; the rest wait in order', () => {
  const link = new MemoryLink();
  for (let i = 0; i < 5; i++) link.inject(bytes(i));
  const batch = createBatch(2, 64);
  const seen: number[] = [];
  for (let n; (n = link.read(batch)) > 0; ) {
    assert.ok(n <= 2);
    for (let i = 0; i < n; i++) seen.push(batch.buffer[batch.offsets[i]]);
  }
  assert.deepEqual(seen, [0, 1, 2, 3, 4]);
});

test('inject copies: changing the caller\'s array afterwards changes nothing', () => {
  const link = new MemoryLink();
  const packet = bytes(1, 2, 3);
  link.inject(packet);
  packet[0] = 99;
  const batch = createBatch(1, 64);
  link.read(batch);
  assert.equal(batch.buffer[0], 1);
});

test('a packet larger than the slot is cut to the slot, as TUN does', () => {
  const link = new MemoryLink();
  link.inject(new Uint8Array(100).fill(7));
  const batch = createBatch(2, 64);
  batch.buffer.fill(0xee);
  assert.equal(link.read(batch), 1);
  assert.equal(batch.lengths[0], 64);
  assert.equal(batch.buffer[64], 0xee, 'slot 1 untouched');
});

test('write sends count packets from wherever offsets point; drain takes them once', () => {
  const link = new MemoryLink();
  const batch = createBatch(4, 64);
  batch.buffer.set([0x45, 9], 10);
  batch.buffer.set([0x60, 8, 7], 130);
  batch.offsets[0] = 10;
  batch.lengths[0] = 2;
  batch.offsets[1] = 130;
  batch.lengths[1] = 3;
  batch.count = 2;
  assert.equal(link.write(batch), 2);
  batch.buffer.fill(0); // the link keeps copies, not views of the caller's buffer
  assert.deepEqual(link.drain().map((p) => [...p]), [[0x45, 9], [0x60, 8, 7]]);
  assert.deepEqual(link.drain(), []);
});

test('a pair delivers what one side writes to the other side\'s read', () => {
  const [a, b] = MemoryLink.pair();
  assert.notEqual(a.name, b.name);
  const batch = createBatch(2, 64);
  batch.buffer.set([0x45, 1], 0);
  batch.lengths[0] = 2;
  batch.count = 1;
  assert.equal(a.write(batch), 1);
  assert.equal(a.queued, 0);
  assert.equal(b.queued, 1);
  const into = createBatch(2, 64);
  assert.equal(b.read(into), 1);
  assert.deepEqual([...into.buffer.subarray(0, 2)], [0x45, 1]);
  assert.deepEqual(a.drain(), [], 'a paired link keeps nothing for drain');
});

test('a full queue drops and counts; write reports only what was accepted', () => {
  const [a, b] = MemoryLink.pair({ b: { queueLimit: 2 } });
  const batch = createBatch(3, 64);
  for (let i = 0; i < 3; i++) {
    batch.buffer[i * 64] = 0x45;
    batch.lengths[i] = 1;
  }
  batch.count = 3;
  assert.equal(a.write(batch), 2);
  assert.equal(b.dropped, 1);
  assert.equal(b.queued, 2);
});

test('onReadable fires on a later turn after inject, once per burst', async () => {
  const link = new MemoryLink();
  let calls = 0;
  link.onReadable(() => {
    calls++;
    link.read(createBatch(8, 64));
  });
  link.inject(bytes(1));
  link.inject(bytes(2));
  assert.equal(calls, 0, 'not synchronously inside inject');
  await nextTurn();
  await nextTurn();
  assert.equal(calls, 1, 'two injects, one callback that read both');
  link.inject(bytes(3));
  await nextTurn();
  assert.equal(calls, 2);
});

test('onReadable is level-triggered: it fires again while packets remain, and stops when replaced by null', async () => {
  const link = new MemoryLink();
  for (let i = 0; i < 3; i++) link.inject(bytes(i));
  let calls = 0;
  const one = createBatch(1, 64);
  link.onReadable(() => {
    calls++;
    link.read(one); // one packet per callback
  });
  for (let i = 0; i < 6; i++) await nextTurn();
  assert.equal(calls, 3);
  assert.equal(link.queued, 0);

  link.onReadable(null);
  link.inject(bytes(9));
  for (let i = 0; i < 3; i++) await nextTurn();
  assert.equal(calls, 3, 'no callback after onReadable(null)');
});

test('setting onReadable while packets wait fires it', async () => {
  const link = new MemoryLink();
  link.inject(bytes(1));
  let fired = false;
  link.onReadable(() => {
    fired = true;
    link.read(createBatch(1, 64));
  });
  await nextTurn();
  assert.equal(fired, true);
});

test('after close, reads return 0, writes accept 0, inject refuses', async () => {
  const [a, b] = MemoryLink.pair();
  let calls = 0;
  b.onReadable(() => calls++);
  b.inject(bytes(1));
  b.close();
  await nextTurn();
  assert.equal(calls, 0, 'a closed link does not call back');
  const batch = createBatch(2, 64);
  assert.equal(b.read(batch), 0);
  batch.lengths[0] = 1;
  batch.count = 1;
  assert.equal(b.write(batch), 0);
  assert.equal(b.inject(bytes(2)), false);
  assert.equal(a.write(batch), 0, 'the peer refuses, so nothing is accepted');
  assert.equal(b.closed, true);
});
