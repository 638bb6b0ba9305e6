// Source hashing: a client address sticks to one daemon, shares follow
// weights, and a change of one daemon moves only the sources it gains or loses.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hashPair } from '../../../src/dispatch/rng.js';
import { SH_TABLE_SIZE, SourceHashScheduler } from '../../../src/dispatch/schedulers/index.js';
import type { SchedulerDaemon } from '../../../src/dispatch/schedulers/index.js';

/** Every bucket's daemon: source hashes 0..size-1 cover the table once. */
function table(daemons: readonly SchedulerDaemon[]): Int32Array {
  const sh = new SourceHashScheduler();
  sh.setDaemons(daemons);
  return Int32Array.from({ length: SH_TABLE_SIZE }, (_, h) => sh.pick(0, h));
}

function daemons(n: number): SchedulerDaemon[] {
  return Array.from({ length: n }, (_, i) => ({ id: 20 + i * 5, weight: 1 + (i % 3) }));
}

describe('sh', () => {
  it('sends one source to one daemon, whatever the flow hash and across instances', () => {
    const set = daemons(7);
    const a = new SourceHashScheduler();
    const b = new SourceHashScheduler();
    a.setDaemons(set);
    b.setDaemons(set);
    for (let k = 0; k < 1000; k++) {
      const source = (k * 2654435761) >>> 0;
      const first = a.pick(k, source);
      assert.equal(a.pick(k * 31 + 7, source), first);
      assert.equal(b.pick(0, source), first);
    }
  });

  it('does not depend on the order the port lists its daemons in', () => {
    const set = daemons(7);
    assert.deepEqual(table(set), table([...set].reverse()));
  });

  it('quiescing one daemon moves its sources and no others; restoring it puts every source back', () => {
    const set = daemons(10);
    const before = table(set);
    const quiesced = set[4].id;
    const after = table(set.map((d) => (d.id === quiesced ? { ...d, weight: 0 } : d)));
    let own = 0;
    for (let b = 0; b < SH_TABLE_SIZE; b++) {
      if (before[b] === quiesced) {
        own++;
        assert.notEqual(after[b], quiesced);
      } else {
        assert.equal(after[b], before[b], `bucket ${b} moved`);
      }
    }
    assert.ok(own > 0);
    // Removing the daemon is the same as quiescing it.
    assert.deepEqual(table(set.filter((d) => d.id !== quiesced)), after);
    assert.deepEqual(table(set), before);
  });

  it('adding a daemon or raising one weight moves sources only to that daemon', () => {
    const set = daemons(8);
    const before = table(set);
    const added = table([...set, { id: 3, weight: 2 }]);
    const raised = table(set.map((d) => (d.id === set[2].id ? { ...d, weight: d.weight * 3 } : d)));
    for (let b = 0; b < SH_TABLE_SIZE; b++) {
      if (added[b] !== before[b]) assert.equal(added[b], 3);
      if (raised[b] !== before[b]) assert.equal(raised[b], set[2].id);
    }
  });

  it('gives each daemon its weight share of buckets within ±0.5 percentage point (weights 1,2,3,4)', () => {
    const set = [1, 2, 3, 4].map((weight, i) => ({ id: i, weight }));
    const t = table(set);
    for (const { id, weight } of set) {
      const share = t.filter((d) => d === id).length / SH_TABLE_SIZE;
      assert.ok(Math.abs(share - weight / 10) <= 0.005, `daemon ${id}: ${share}`);
    }
  });

  it('equals plain weighted rendezvous hashing, a logarithm for every daemon (the pruned build changes nothing)', () => {
    const seed = 0x53484153;
    for (const set of [daemons(6), [1, 10, 100, 1000, 10000].map((weight, i) => ({ id: 7 * i, weight })), [0, 1, 2].map((id) => ({ id, weight: 5 }))]) {
      const live = set.filter((d) => d.weight > 0).sort((a, b) => b.weight - a.weight || a.id - b.id);
      const t = table(set);
      for (let bucket = 0; bucket < SH_TABLE_SIZE; bucket += 7) {
        let best = -1;
        let bestScore = Infinity;
        for (const d of live) {
          const score = -Math.log((hashPair(bucket, d.id, seed) + 0.5) / 4294967296) * (1 / d.weight);
          if (score < bestScore) {
            best = d.id;
            bestScore = score;
          }
        }
        assert.equal(t[bucket], best, `bucket ${bucket}`);
      }
    }
  });

  it('rejects a table size that is not a positive integer', () => {
    for (const size of [0, -1, 2.5, NaN, 2 ** 25]) assert.throws(() => new SourceHashScheduler(size), RangeError);
  });
});
