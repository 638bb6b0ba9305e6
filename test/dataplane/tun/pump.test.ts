// TunPump over a link that can write one batch and read the next in one
// step (Link.cycle, as the TUN link does through io_uring): packets go out in
// order, the two batches take turns, a batch with nothing to send falls back
// to read, and the pump still yields after batchesPerTurn.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Dispatcher } from '../../../src/dispatch/dispatcher.js';
import type { CycleResult, PacketBatch } from '../../../src/link/link.js';
import { MemoryLink } from '../../../src/link/memory-link.js';
import { TunPump } from '../../../src/dataplane/tun/pump.js';

/** A MemoryLink with Link.cycle, recording each call. */
class CyclingLink extends MemoryLink {
  reads = 0;
  cycles: Array<{ written: number; read: number; sameBuffer: boolean }> = [];

  override read(batch: PacketBatch): number {
    this.reads++;
    return super.read(batch);
  }

  cycle(output: PacketBatch, input: PacketBatch, result: CycleResult): void {
    const sameBuffer = output.buffer === input.buffer;
    if (sameBuffer) throw new RangeError('cycle: the written and the read batch share a buffer');
    result.written = this.write(output);
    result.read = super.read(input);
    this.cycles.push({ written: result.written, read: result.read, sameBuffer });
  }
}

/** Forwards every packet as it is, or none (`drop`); what a translation does to a batch's lists. */
function passThrough(drop = false): Dispatcher {
  return {
    process(input: PacketBatch, output: PacketBatch): void {
      output.count = 0;
      if (drop) return;
      for (let i = 0; i < input.count; i++) {
        output.offsets[output.count] = input.offsets[i];
        output.lengths[output.count] = input.lengths[i];
        output.flags[output.count] = input.flags[i];
        output.count++;
      }
    },
    collect(): void {},
  } as unknown as Dispatcher;
}

function packet(n: number): Uint8Array {
  const p = new Uint8Array(40);
  p[0] = 0x45;
  p[39] = n;
  return p;
}

/** Resolves once `check` holds, looking after each event-loop turn (bounded by the test's own timeout). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
}

/** The numbers of the first `count` packets the link was given to write, in order. */
async function writtenPackets(link: MemoryLink, count: number): Promise<number[]> {
  const written: number[] = [];
  await until(() => {
    for (const p of link.drain()) written.push(p[39]);
    return written.length >= count;
  });
  return written;
}

test('TunPump with Link.cycle writes every packet in order, out of one batch while reading into the other', async () => {
  const link = new CyclingLink();
  const pump = new TunPump(link, passThrough(), { batchSize: 2 });
  for (let n = 0; n < 5; n++) link.inject(packet(n));
  pump.start();
  const written = await writtenPackets(link, 5);
  pump.stop();
  assert.deepEqual(written, [0, 1, 2, 3, 4]);
  assert.equal(link.reads, 1, 'one read to start; each later batch came in with the write before it');
  assert.deepEqual(link.cycles.map((c) => [c.written, c.read]), [[2, 2], [2, 1], [1, 0]]);
  assert.equal(pump.packetsRead, 5);
  assert.equal(pump.packetsWritten, 5);
  assert.equal(pump.writeShortfall, 0);
});

test('TunPump with Link.cycle reads plainly when a batch sends nothing, and counts what it read', async () => {
  const link = new CyclingLink();
  const pump = new TunPump(link, passThrough(true), { batchSize: 2 });
  for (let n = 0; n < 3; n++) link.inject(packet(n));
  pump.start();
  await until(() => pump.packetsRead === 3);
  pump.stop();
  assert.equal(link.cycles.length, 0, 'nothing to write: no cycle');
  assert.deepEqual(link.drain(), []);
});

test('TunPump with Link.cycle yields after batchesPerTurn and carries on from there', async () => {
  const link = new CyclingLink();
  const pump = new TunPump(link, passThrough(), { batchSize: 2, batchesPerTurn: 2 });
  for (let n = 0; n < 9; n++) link.inject(packet(n));
  pump.start();
  const written = await writtenPackets(link, 9);
  pump.stop();
  assert.deepEqual(written, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  // Each turn: a read, a cycle (writes the first batch, reads the second), then the second batch written plainly.
  assert.ok(link.reads >= 3, `a read at the start of each turn: ${link.reads}`);
  assert.ok(link.cycles.every((c) => !c.sameBuffer));
  assert.equal(pump.packetsWritten, 9);
});
